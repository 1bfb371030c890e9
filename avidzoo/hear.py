"""The HEAR API (Holistic Evaluation of Audio Representations) over every audio tower: import this module as a HEAR
module, so that hear-eval-kit scores the zoo's audio towers on HEAR's tasks without code.

    python -m heareval.embeddings.runner avidzoo.hear --model "" \\
        --model-options '{"weights": "cross_avid_r2plus1d.audioset2m"}'

- :func:`load_model` gives the tower of ``weights`` (a registry name, or any source :func:`avidzoo.from_pretrained`
  accepts as ``model_file_path``) wrapped as a :class:`HearModel`, whose ``sample_rate`` is one HEAR accepts: the
  tower's own rate where HEAR lists it (16 kHz: CrissCross), else the smallest listed multiple of it (48 kHz for the
  24-kHz towers of AVID and GDT, which halve it exactly), else 48 kHz; audio is resampled to the tower's rate inside
  (torchaudio's windowed-sinc resampler, once per sound).
- :func:`get_timestamp_embeddings`: audio ``(n_sounds, n_samples)`` float32 at ``model.sample_rate`` ->
  ``(n_sounds, n_timestamps, 512)`` float32 and timestamps ``(n_sounds, n_timestamps)`` in milliseconds, ``0, hop,
  2 hop, ...`` (``hop_ms``, 50 by default) up to the sound's end: row ``k`` is the pooled tower output of the
  tower's own clip (2 s for AVID and CrissCross, 1 s for GDT) centred at ``k * hop``, zero-padded where it passes
  either end of the sound.
- :func:`get_scene_embeddings`: ``(n_sounds, 512)``, the mean of the embeddings of clips centred every half clip
  length over the sound (one clip, centred, for a sound shorter than that).

Each clip goes through the tower in chunks of a fixed size (the last one zero-padded), so a sound's embeddings are
the same, bit for bit, whatever else is in the batch.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
import torchaudio.functional as AF

from .factory import create_transforms, from_pretrained
from .models.avid import AVIDModel

__all__ = ["HEAR_SAMPLE_RATES", "HearModel", "load_model", "get_scene_embeddings", "get_timestamp_embeddings"]

HEAR_SAMPLE_RATES = (16000, 22050, 44100, 48000)  # the rates hearvalidator 2021.0.2 accepts
DEFAULT_WEIGHTS = "cross_avid_r2plus1d.audioset2m"


def hear_sample_rate(rate: int) -> int:
    """The rate HEAR feeds a tower running at ``rate`` Hz: ``rate`` itself where HEAR accepts it, else the smallest
    accepted multiple of it (an exact integer decimation), else 48 kHz."""
    return next((r for r in HEAR_SAMPLE_RATES if r % rate == 0), 48000)


class HearModel(torch.nn.Module):
    """One audio tower with its preprocessing, as HEAR sees it: ``sample_rate`` (of the audio it is given),
    ``scene_embedding_size`` and ``timestamp_embedding_size`` (512, the pooled tower output), ``hop_ms``;
    ``tower_rate`` and ``clip_seconds`` are the tower's own."""

    def __init__(self, model: AVIDModel, *, hop_ms: float = 50.0, chunk: int = 32) -> None:
        super().__init__()
        if "audio" not in model.modalities:
            raise ValueError(f"{model.config.get('weights') or 'this model'} has no audio tower "
                             f"(towers: {', '.join(model.modalities)})")
        self.model = model.eval()
        self.transform = create_transforms(model).audio
        self.tower_rate = self.transform.sample_rate
        self.clip_samples = self.transform.num_samples
        self.clip_seconds = self.clip_samples / self.tower_rate
        self.sample_rate = hear_sample_rate(self.tower_rate)
        hop = hop_ms * self.tower_rate / 1000.0
        if hop <= 0 or abs(hop - round(hop)) > 1e-9:
            raise ValueError(f"hop_ms={hop_ms} is not a whole number of samples at the tower's {self.tower_rate} Hz")
        self.hop_ms, self.hop_samples = float(hop_ms), int(round(hop))
        self.chunk = int(chunk)
        self.scene_embedding_size = self.timestamp_embedding_size = model.num_features

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _resampled(self, audio: torch.Tensor) -> list[torch.Tensor]:
        """``(n_sounds, n_samples)`` at ``sample_rate`` -> each sound at the tower's rate, one at a time (the same
        arithmetic whatever the batch)."""
        if audio.ndim != 2:
            raise ValueError(f"audio must be (n_sounds, n_samples), got shape {tuple(audio.shape)}")
        audio = audio.to(self.device, torch.float32)
        if self.sample_rate == self.tower_rate:
            return list(audio)
        return [AF.resample(sound[None], self.sample_rate, self.tower_rate)[0] for sound in audio]

    @torch.inference_mode()
    def embed_clips(self, sound: torch.Tensor, centres: list[int]) -> torch.Tensor:
        """``(N,)`` samples at the tower's rate, clip centres in samples -> ``(len(centres), 512)`` float32."""
        half = self.clip_samples // 2
        padded = F.pad(sound, (half, self.clip_samples))  # every clip lies inside, zeros past either end
        windows = torch.stack([padded[c:c + self.clip_samples] for c in centres])  # centre c sits at c + half
        out = []
        for s in range(0, len(windows), self.chunk):
            batch = windows[s:s + self.chunk]
            n = len(batch)
            if n < self.chunk:  # one shape for every forward: no result depends on what else is in the batch
                batch = F.pad(batch, (0, 0, 0, self.chunk - n))
            spec = self.transform.spectrogram(batch)
            out.append(self.model.encode_audio(spec)[:n].float())
        return torch.cat(out)


def load_model(model_file_path: str = "", *, weights: str = DEFAULT_WEIGHTS, hop_ms: float = 50.0,
               device: str | torch.device | None = None) -> HearModel:
    """The HEAR model of an audio tower: ``model_file_path`` (any source :func:`avidzoo.from_pretrained` accepts: a
    saved folder, a release file, ``hf-hub:``), or, when it is empty, the registry weights ``weights``."""
    source = os.fspath(model_file_path) if model_file_path else weights
    model = from_pretrained(source, modalities=("audio",), device=device)
    return HearModel(model, hop_ms=hop_ms)


def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n_sounds, n_samples)`` at ``model.sample_rate`` -> embeddings ``(n_sounds, n_timestamps, 512)`` and their
    centres ``(n_sounds, n_timestamps)`` in ms (``0, hop_ms, ...``, up to the sound's length), both float32."""
    sounds = model._resampled(audio)
    n = sounds[0].shape[-1] if sounds else 0
    count = n // model.hop_samples + 1
    centres = [k * model.hop_samples for k in range(count)]
    emb = torch.stack([model.embed_clips(s, centres) for s in sounds]) if sounds else \
        torch.zeros(0, count, model.timestamp_embedding_size)
    stamps = torch.arange(count, dtype=torch.float32, device=emb.device) * model.hop_ms
    return emb, stamps.expand(len(sounds), count).contiguous()


def get_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    """``(n_sounds, n_samples)`` at ``model.sample_rate`` -> ``(n_sounds, 512)`` float32: the mean over clips centred
    every half clip from half a clip in (one centred clip for a sound shorter than a clip)."""
    sounds = model._resampled(audio)
    if not sounds:
        return torch.zeros(0, model.scene_embedding_size)
    n, clip = sounds[0].shape[-1], model.clip_samples
    if n <= clip:
        centres = [n // 2]
    else:
        step = clip // 2
        centres = [clip // 2 + k * step for k in range(math.ceil((n - clip) / step) + 1)]
    return torch.stack([model.embed_clips(s, centres).mean(0) for s in sounds])
