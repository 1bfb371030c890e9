"""Preprocessing bound to the weights' config: decoded frames / waveforms in, model inputs out.

Accepted layouts:

* video: uint8 or float frames ``(T, H, W, 3)`` (what PyAV, torchcodec and numpy decoders give) or a batch
  ``(B, T, H, W, 3)``; float input is taken to be in [0, 255]. Output ``(3, T, S, S)`` or ``(B, 3, T, S, S)`` float32,
  S = ``crop_size``. Works on any device: move the frames to CUDA first to run it there.
* audio: a waveform ``(N,)``, ``(C, N)`` or a batch ``(B, C, N)``, float in [-1, 1]. Output ``(1, T, F)`` or
  ``(B, 1, T, F)`` float32 normalised log-spectrograms (the released weights: ``(1, 200, 257)``).
"""

from __future__ import annotations

import functools
import hashlib
import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, reduce

__all__ = ["VideoTransform", "AudioTransform", "Transforms", "clip_seconds"]


def clip_seconds(config: Mapping[str, Any], modality: str) -> float:
    """Seconds one clip covers, from a modality's preprocessing config: video ``num_frames / fps`` (the frames it
    decodes), audio ``clip_duration``. Configs also store the video's ``clip_duration``; this is the rule it follows."""
    if modality == "video":
        return int(config["num_frames"]) / float(config["fps"])
    return float(config["clip_duration"])


class VideoTransform:
    """Video preprocessing: frames ``(..., T, H, W, 3)`` uint8 -> ``(..., 3, T, S, S)`` float32, S = ``crop_size``.

    Evaluation (``train=False``): short side to ``resize`` (bilinear, antialiased), centre crop, scale to [0, 1],
    normalise with ``mean``/``std``. Training: RandomResizedCrop(S, ``crop_scale``, ``crop_ratio``), horizontal flip
    and colour jitter (brightness, contrast, saturation, hue) in random order, every parameter drawn once per clip so
    that all its frames change alike (torchvision.transforms.v2 on a video tensor), then the same scaling.
    """

    def __init__(self, config: Mapping[str, Any], *, train: bool = False) -> None:
        self.config = dict(config)
        self.train = train
        self.resize = int(config["resize"])
        self.crop_size = int(config["crop_size"])
        self.mean = tuple(float(m) for m in config["mean"])
        self.std = tuple(float(s) for s in config["std"])
        self._augment = None
        if train:
            from torchvision.transforms import v2

            aug = config["train"]
            self._augment = v2.Compose([
                v2.RandomResizedCrop(self.crop_size, scale=tuple(aug["crop_scale"]), ratio=tuple(aug["crop_ratio"]),
                                     antialias=True),
                v2.RandomHorizontalFlip(float(aug["hflip"])),
                v2.ColorJitter(*aug["color_jitter"]),
            ])

    def __repr__(self) -> str:
        mode = "train" if self.train else f"resize={self.resize}"
        return f"VideoTransform({mode}, crop_size={self.crop_size}, mean={self.mean}, std={self.std})"

    def __call__(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(frames)
        if x.ndim not in (4, 5) or x.shape[-1] != 3:
            raise ValueError(f"video frames must be (T, H, W, 3) or (B, T, H, W, 3), got shape {tuple(x.shape)}")
        if x.is_floating_point() and x.numel() and 0 < float(x.amax()) <= 1.0:
            # torchvision's float convention is [0, 1]; ours follows uint8 decoders. A silent mix-up gives black clips.
            warnings.warn("float video frames are all <= 1: avidzoo expects values in [0, 255] (uint8 scale); "
                          "multiply [0, 1] frames by 255", stacklevel=2)
        batched = x.ndim == 5
        if not batched:
            x = x.unsqueeze(0)
        x = rearrange(x, "b t h w c -> b t c h w")
        x = self._random_views(x) if self.train else self._center_views(x)
        x = self._normalize(x)
        return x if batched else x[0]

    def crop(self, frames: torch.Tensor) -> torch.Tensor | None:
        """The evaluation view of uint8 frames ``(B, T, H, W, 3)`` whose short side is already ``resize`` (a decoder
        scaled them): the centre crop ``(B, T, S, S, 3)``, still uint8, exactly the pixels :meth:`__call__` would
        normalise; ``None`` when the frames need resizing first. Cropping before the frames cross to a GPU makes them
        4x smaller than the float inputs."""
        b, t, h, w, _ = frames.shape
        if self.train or frames.dtype != torch.uint8 or self._resized_size(h, w) != (h, w):
            return None
        top, left = self._crop_origin(h, w)
        return frames[:, :, top:top + self.crop_size, left:left + self.crop_size]

    def normalize(self, crops: torch.Tensor) -> torch.Tensor:
        """Crops from :meth:`crop`, ``(B, T, S, S, 3)`` uint8 (on any device) -> ``(B, 3, T, S, S)`` float32."""
        return self._normalize(rearrange(crops, "b t h w c -> b t c h w").float())

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, S, S)`` float in [0, 255] -> ``(B, 3, T, S, S)`` normalised."""
        mean = torch.tensor(self.mean, device=x.device).view(1, 1, 3, 1, 1) * 255.0
        std = torch.tensor(self.std, device=x.device).view(1, 1, 3, 1, 1) * 255.0
        return rearrange((x - mean) / std, "b t c h w -> b c t h w").contiguous()

    def _resized_size(self, h: int, w: int) -> tuple[int, int]:
        """Short side to ``resize``, the long side scaled and truncated as PIL/torchvision Resize(int) does."""
        return (self.resize, int(self.resize * w / h)) if h <= w else (int(self.resize * h / w), self.resize)

    def _crop_origin(self, h: int, w: int) -> tuple[int, int]:
        return int(round((h - self.crop_size) / 2.0)), int(round((w - self.crop_size) / 2.0))

    def _center_views(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _, h, w = x.shape
        x = rearrange(x, "b t c h w -> (b t) c h w").float()
        size = self._resized_size(h, w)
        if size != (h, w):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).clamp_(0, 255)
        top, left = self._crop_origin(*size)
        x = x[:, :, top:top + self.crop_size, left:left + self.crop_size]
        return rearrange(x, "(b t) c h w -> b t c h w", b=b)

    def _random_views(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision import tv_tensors

        if x.dtype != torch.uint8:
            x = x.clamp(0, 255).round().to(torch.uint8)
        # One call per clip: v2 draws the parameters once for the whole video tensor.
        return torch.stack([self._augment(tv_tensors.Video(clip)).float() for clip in x])


@functools.lru_cache(maxsize=4)
def load_norm_stats(file: str, sha256: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frequency dB mean and std shipped in ``avidzoo/assets`` (checked against the manifest's sha256)."""
    data = resources.files("avidzoo.assets").joinpath(file).read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise RuntimeError(f"avidzoo/assets/{file}: sha256 {actual} differs from the manifest's {sha256}")
    with np.load(io.BytesIO(data)) as npz:
        return torch.from_numpy(npz["mean"].astype(np.float32)), torch.from_numpy(npz["std"].astype(np.float32))


class AudioTransform:
    """The original log-spectrogram: mono, trim/pad to ``clip_duration``, power STFT (``n_fft``, ``hop_length``,
    periodic Hann, centred, reflect-padded), keep bin 0 and average the other bins in adjacent pairs, first
    ``num_frames`` frames, ``10 log10(max(S, amin))`` floored at the clip's max minus ``top_db``, then per-frequency
    ``(x - mean) / (std + eps)``. With ``train=True`` a volume gain drawn per clip from ``volume_gain`` comes first.
    Waveforms ``(N,)``, ``(C, N)`` or ``(B, C, N)`` -> ``(1, T, F)`` / ``(B, 1, T, F)``.
    """

    def __init__(self, config: Mapping[str, Any], *, train: bool = False) -> None:
        self.config = dict(config)
        self.train = train
        c = self.config
        self.gain_range = tuple(c["train"]["volume_gain"]) if train else (1.0, 1.0)
        self.sample_rate = int(c["sample_rate"])
        self.num_samples = int(round(float(c["clip_duration"]) * self.sample_rate))
        self.n_fft, self.hop_length = int(c["n_fft"]), int(c["hop_length"])
        self.num_frames, self.freq_bins = int(c["num_frames"]), int(c["freq_bins"])
        if c.get("bin_pooling") != "keep_dc_mean_pairs" or (self.n_fft // 2) != 2 * (self.freq_bins - 1):
            raise ValueError(f"unsupported spectrogram config: n_fft {self.n_fft} with {self.freq_bins} bins")
        stats = c["norm_stats"]
        self.mean, self.std = load_norm_stats(stats["file"], stats["sha256"])
        self.eps = float(stats["eps"])

    def __repr__(self) -> str:
        return (f"AudioTransform(sample_rate={self.sample_rate}, samples={self.num_samples}, n_fft={self.n_fft}, "
                f"hop={self.hop_length}, out=(1, {self.num_frames}, {self.freq_bins}))")

    def __call__(self, waveform: torch.Tensor | np.ndarray, sample_rate: int | None = None) -> torch.Tensor:
        x = torch.as_tensor(waveform)
        if x.ndim not in (1, 2, 3):
            raise ValueError(f"waveform must be (N,), (C, N) or (B, C, N), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"waveform must be float samples in [-1, 1], got {x.dtype} (for 16-bit PCM, divide "
                             f"by 32767 as the original pipeline did)")
        batched = x.ndim == 3
        x = x.float().reshape(-1, *x.shape[-2:]) if x.ndim > 1 else x.float().view(1, 1, -1)
        if sample_rate is not None and sample_rate != self.sample_rate:
            import torchaudio.functional as AF

            x = AF.resample(x, sample_rate, self.sample_rate)
        x = x.mean(dim=1)  # (B, N) mono
        n = x.shape[-1]
        x = x[:, : self.num_samples] if n >= self.num_samples else F.pad(x, (0, self.num_samples - n))
        if self.train:  # volume gain drawn per clip
            lo, hi = self.gain_range
            x = x * torch.empty(x.shape[0], 1, device=x.device).uniform_(lo, hi)
        spec = self.spectrogram(x)
        return spec if batched else spec[0]

    def spectrogram(self, mono: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` mono waveforms of the configured length -> ``(B, 1, T, F)`` normalised log-spectrograms."""
        window = torch.hann_window(self.n_fft, periodic=True, device=mono.device)
        stft = torch.stft(mono, self.n_fft, self.hop_length, window=window, center=True, pad_mode="reflect",
                          return_complex=True)
        power = stft.real.square() + stft.imag.square()  # (B, n_fft/2 + 1, frames)
        # DC kept, then each pair of neighbouring bins averaged: 513 -> 257 bins.
        pooled = torch.cat([power[:, :1], reduce(power[:, 1:], "b (f two) t -> b f t", "mean", two=2)], dim=1)
        pooled = pooled[:, :, : self.num_frames]
        db = 10.0 * torch.log10(pooled.clamp_min(float(self.config["db_amin"])))
        floor = db.amax(dim=(1, 2), keepdim=True) - float(self.config["top_db"])
        db = torch.maximum(db, floor)
        mean, std = self.mean.to(db.device), self.std.to(db.device)
        db = (db - mean[:, None]) / (std[:, None] + self.eps)
        return rearrange(db, "b f t -> b 1 t f").contiguous()

    @property
    def output_shape(self) -> tuple[int, int, int]:
        frames = min(self.num_frames, 1 + self.num_samples // self.hop_length)
        return 1, frames, self.freq_bins


@dataclass(frozen=True)
class Transforms:
    """The preprocessing of one model's weights: ``.video`` and ``.audio`` callables (``None`` for a missing tower)."""

    video: VideoTransform | None
    audio: AudioTransform | None
    config: Mapping[str, Any]
