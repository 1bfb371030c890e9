"""Audio-visual pairs for pretraining: a 2-s audio window and a short video clip inside it, one instance per file."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from ..io import MediaFile
from ..io.colour import preset_colour
from ..transforms import Transforms, clip_seconds

log = logging.getLogger("avidzoo")

__all__ = ["AVPairDataset", "GlobalBatchSampler"]


class AVPairDataset(torch.utils.data.Dataset):
    """``clips_per_video`` random audio-visual clips per file and epoch.

    Item ``k`` is instance ``k % N`` (its memory-bank index): an audio window of the audio config's
    ``clip_duration`` at a random start, and a video clip of the video config's ``clip_duration`` whose start is
    within ``max_offsync`` seconds of the audio start (0 at test time); missing audio is zeros. Returns
    ``(video (3, T, S, S), audio (1, T', F), index)``. All randomness derives from ``(seed, epoch, k)``, so a resumed
    run sees the same samples.
    """

    def __init__(self, paths: Sequence[Path], transforms: Transforms, *, clips_per_video: int = 1,
                 max_offsync: float = 0.5, train: bool = True, seed: int = 0) -> None:
        self.paths = list(paths)
        self.transforms = transforms
        self.clips_per_video, self.max_offsync, self.train, self.seed = clips_per_video, max_offsync, train, seed
        self.epoch = 0
        v, a = transforms.config["video"], transforms.config["audio"]
        self.num_frames, self.fps = int(v["num_frames"]), float(v["fps"])
        self.video_duration, self.audio_duration = clip_seconds(v, "video"), clip_seconds(a, "audio")
        self.sample_rate = int(a["sample_rate"])
        self.colour = preset_colour(v)  # the rule the saved weights' config records, so extraction decodes alike
        self._durations: dict[int, float] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths) * self.clips_per_video

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        i = k % len(self.paths)
        seed = hash((self.seed, self.epoch, k)) & 0x7FFFFFFF if self.train else hash((self.seed, k)) & 0x7FFFFFFF
        rng = random.Random(seed)
        torch.manual_seed(seed)  # the torchvision v2 augmentations draw from torch's generator
        with MediaFile(self.paths[i], threads=1, colour=self.colour) as f:
            duration = f.info.duration
            window = max(self.audio_duration, self.video_duration)
            a_start = rng.uniform(0, max(duration - window, 0.0)) if self.train else max(duration - window, 0) / 2
            offset = rng.uniform(-self.max_offsync, self.max_offsync) if self.train else 0.0
            v_start = min(max(a_start + offset, 0.0), max(duration - self.video_duration, 0.0))
            frames = f.read_video([v_start], num_frames=self.num_frames, fps=self.fps)[0]
            wave = f.read_audio([a_start], self.audio_duration, sample_rate=self.sample_rate)[0]
        return self.transforms.video(frames), self.transforms.audio(wave), i


class GlobalBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Shuffled global batches of ``global_batch`` items; rank r takes the r-th contiguous part of each.

    Gathering the ranks' embeddings in rank order then rebuilds the global batch in exactly the order one process
    would see it, which is what makes N ranks reproduce a single-process run. Incomplete batches are dropped.
    """

    def __init__(self, size: int, global_batch: int, *, rank: int = 0, world: int = 1, seed: int = 0,
                 shuffle: bool = True) -> None:
        if global_batch % world:
            raise ValueError(f"batch size {global_batch} must be divisible by the number of processes {world}")
        if size < global_batch:
            raise ValueError(f"the dataset has {size} items, fewer than one batch of {global_batch}")
        self.size, self.global_batch, self.rank, self.world = size, global_batch, rank, world
        self.seed, self.shuffle, self.epoch = seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size // self.global_batch

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        order = torch.randperm(self.size, generator=g) if self.shuffle else torch.arange(self.size)
        local = self.global_batch // self.world
        for b in range(len(self)):
            start = b * self.global_batch + self.rank * local
            yield order[start:start + local].tolist()
