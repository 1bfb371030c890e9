"""Preprocessing bound to the weights' config: decoded frames / waveforms in, model inputs out.

Accepted layouts:

* video: uint8 or float frames ``(T, H, W, 3)`` (what PyAV, torchcodec and numpy decoders give) or a batch
  ``(B, T, H, W, 3)``; float input is taken to be in [0, 255]. Output ``(3, T, S, S)`` or ``(B, 3, T, S, S)`` float32,
  S = ``crop_size``. Works on any device: move the frames to CUDA first to run it there.
* audio: a waveform ``(N,)``, ``(C, N)`` or a batch ``(B, C, N)``, float in [-1, 1]. Output ``(1, T, F)`` or
  ``(B, 1, T, F)`` float32 normalised log-spectrograms for AVID (the released weights: ``(1, 200, 257)``); the
  siblings' log-mel (CrissCross) and log-filterbank (GDT) inputs are frequency first, ``(B, 1, F, T)``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, reduce

__all__ = ["VideoTransform", "AudioTransform", "LogMelTransform", "LogFbankTransform", "audio_transform", "Transforms",
           "clip_seconds", "filterbank_matrix"]


def clip_seconds(config: Mapping[str, Any], modality: str) -> float:
    """Seconds one clip covers, from a modality's preprocessing config: video ``num_frames / fps`` (the frames it
    decodes), audio ``clip_duration``. Configs also store the video's ``clip_duration``; this is the rule it follows."""
    if modality == "video":
        return int(config["num_frames"]) / float(config["fps"])
    return float(config["clip_duration"])


class VideoTransform:
    """Video preprocessing: frames ``(..., T, H, W, 3)`` uint8 -> ``(..., 3, T, S, S)`` float32, S = ``crop_size``.

    Evaluation (``train=False``): short side to ``resize`` (bilinear, antialiased; ``antialias: false`` in the
    config for GDT's ``F.interpolate`` without it; a ``[height, width]`` pair resizes to that size, aspect ignored,
    as VMZ's input op for XDC), centre crop (offset rounded; ``crop_rounding: "ceil"`` as GDT's ``uniform_crop``,
    ``"floor"`` as VMZ's integer division), scale to [0, 1], normalise with ``mean``/``std``. Training:
    RandomResizedCrop(S, ``crop_scale``, ``crop_ratio``), horizontal flip and colour jitter (brightness, contrast,
    saturation, hue) in random order, every parameter drawn once per clip so that all its frames change alike
    (torchvision.transforms.v2 on a video tensor), then the same scaling; ``train.grayscale`` (a probability) and
    ``train.cutout`` (a side in pixels, applied after normalisation) add CrissCross's grayscale and cutout;
    ``train.jitter_p`` applies the colour jitter with that probability. ``train.style: "gdt"`` is GDT's finetuning
    view instead: normalise first, RandomResizedCrop by bilinear interpolation without antialiasing and a flip on
    the normalised frames, then (with ``jitter_p``) brightness, contrast and saturation jitter there, in random
    order, as pyslowfast's ``color_jitter`` that GDT used (its grayscale weights are for BGR frames, and GDT's
    were RGB: kept so).

    :meth:`views` gives ``test_crops`` spatial crops per clip (3: GDT's left, centre and right at its offsets).
    """

    def __init__(self, config: Mapping[str, Any], *, train: bool = False) -> None:
        self.config = dict(config)
        self.train = train
        resize = config["resize"]
        # int: the short side; [height, width]: a fixed size, aspect ignored
        self.resize: int | tuple[int, int] = (int(resize[0]), int(resize[1])) if isinstance(resize, (list, tuple)) \
            else int(resize)
        self.crop_size = int(config["crop_size"])
        self.mean = tuple(float(m) for m in config["mean"])
        self.std = tuple(float(s) for s in config["std"])
        self.antialias = bool(config.get("antialias", True))
        self.crop_rounding = config.get("crop_rounding", "round")
        if self.crop_rounding not in ("round", "ceil", "floor"):
            raise ValueError(f"crop_rounding must be 'round', 'ceil' or 'floor', got {self.crop_rounding!r}")
        self.test_crops = int(config.get("test_crops") or 1)
        self._augment = None
        self.cutout, self.grayscale, self.style, self.jitter = 0, 0.0, "avid", (0.0, 0.0, 0.0)
        if train:
            from torchvision.transforms import v2

            aug = config["train"]
            self.style = aug.get("style", "avid")
            if self.style not in ("avid", "gdt"):
                raise ValueError(f"train.style must be 'avid' or 'gdt', got {self.style!r}")
            jitter_p = float(aug.get("jitter_p", 1.0))
            steps = [
                v2.RandomResizedCrop(self.crop_size, scale=tuple(aug["crop_scale"]), ratio=tuple(aug["crop_ratio"]),
                                     antialias=self.style != "gdt"),
                v2.RandomHorizontalFlip(float(aug["hflip"])),
            ]
            if self.style == "gdt":  # the jitter runs after, on normalised frames (_gdt_jitter)
                self.jitter, self.jitter_p = tuple(float(v) for v in aug["color_jitter"][:3]), jitter_p
            else:
                jitter = v2.ColorJitter(*aug["color_jitter"])
                steps.append(jitter if jitter_p >= 1.0 else v2.RandomApply([jitter], p=jitter_p))
            self._augment = v2.Compose(steps)
            self.grayscale = float(aug.get("grayscale") or 0.0)
            self.cutout = int(aug.get("cutout") or 0)

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
        if self.train and self.style == "gdt":
            x = self._gdt_views(x)
            return x if batched else x[0]
        x = self._random_views(x) if self.train else self._center_views(x)
        x = self._normalize(x)
        if self.train and self.cutout:
            x = torch.stack([self._cutout(clip) for clip in x])
        return x if batched else x[0]

    def views(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Evaluation views of clips ``(B, T, H, W, 3)``: ``(B, V, 3, T, S, S)``, V = ``test_crops``. One view is
        the centre crop of :meth:`__call__`; three are GDT's ``uniform_crop``: along the long side, at 0, at the
        centre offset and at the far end (the short side fills the crop when ``resize == crop_size``)."""
        x = torch.as_tensor(frames)
        if self.test_crops == 1:
            return self(x).unsqueeze(1)
        if self.test_crops != 3:
            raise ValueError(f"test_crops must be 1 or 3, got {self.test_crops}")
        b, t = x.shape[:2]
        x = rearrange(x, "b t h w c -> (b t) c h w").float()
        size = self._resized_size(*x.shape[-2:])
        if size != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                              antialias=self.antialias).clamp_(0, 255)
        (h, w), s = size, self.crop_size
        top, left = self._crop_origin(h, w)
        origins = [(0, left), (top, left), (h - s, left)] if h > w else [(top, 0), (top, left), (top, w - s)]
        crops = [rearrange(x[:, :, y:y + s, x0:x0 + s], "(b t) c h w -> b t c h w", b=b) for y, x0 in origins]
        return torch.stack([self._normalize(c) for c in crops], dim=1)

    def _gdt_views(self, x: torch.Tensor) -> torch.Tensor:
        """GDT's training view of ``(B, T, 3, H, W)`` in [0, 255] -> ``(B, 3, T, S, S)``: normalise, crop and flip
        (parameters drawn once per clip), then the colour jitter on the normalised values with ``jitter_p``."""
        from torchvision import tv_tensors

        x = rearrange(self._normalize(x.float()), "b c t h w -> b t c h w")
        out = []
        for clip in x:
            clip = self._augment(tv_tensors.Video(clip)).as_subclass(torch.Tensor)
            if any(self.jitter) and float(torch.rand(())) < self.jitter_p:
                clip = _gdt_jitter(clip, self.jitter)
            out.append(rearrange(clip, "t c h w -> c t h w"))
        return torch.stack(out).contiguous()

    def _cutout(self, clip: torch.Tensor) -> torch.Tensor:
        """CrissCross's ``Cutout`` on a normalised clip ``(3, T, S, S)``: one square of side ``2 * (l // 2)``, ``l``
        drawn from 1..``cutout``, centred at a random pixel and clipped to the frame, the same in every frame, its
        pixels *multiplied* by the mean of the first frame (its mask holds that mean where the square is)."""
        _, _, h, w = clip.shape
        length = int(torch.randint(1, self.cutout + 1, ()))
        y, x = int(torch.randint(h, ())), int(torch.randint(w, ()))
        y1, y2 = min(max(y - length // 2, 0), h), min(max(y + length // 2, 0), h)
        x1, x2 = min(max(x - length // 2, 0), w), min(max(x + length // 2, 0), w)
        clip = clip.clone()
        clip[:, :, y1:y2, x1:x2] *= clip[:, 0].mean()
        return clip

    @property
    def decoder_scale(self) -> int | tuple[int, int] | None:
        """How a decoder may scale frames before this transform (``short_side`` of
        :meth:`~avidzoo.io.MediaFile.read_video`): the short side ``resize`` (resized as PIL did for the originals,
        within a grey level of this transform's float resize); ``(width, height)`` for a fixed size (VMZ's own
        scaler, which the decoder runs exactly); ``None`` when the weights' resize has no antialiasing, which only the
        transform reproduces, so the decoder gives full frames."""
        if isinstance(self.resize, tuple):
            return self.resize[1], self.resize[0]
        return self.resize if self.antialias else None

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
        return self._normalize(rearrange(crops, "b t h w c -> b t c h w"))

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, S, S)`` in [0, 255] (uint8 or float) -> ``(B, 3, T, S, S)`` float32 normalised: one copy into
        the output's layout, then in place (the same arithmetic as ``(x - mean) / std``, without its temporaries)."""
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1, 1) * 255.0
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1, 1) * 255.0
        out = torch.empty(rearrange(x, "b t c h w -> b c t h w").shape, dtype=torch.float32, device=x.device)
        out.copy_(rearrange(x, "b t c h w -> b c t h w"))
        return out.sub_(mean).div_(std)

    def _resized_size(self, h: int, w: int) -> tuple[int, int]:
        """Short side to ``resize``, the long side scaled and truncated as PIL/torchvision Resize(int) does; or the
        fixed ``(height, width)``."""
        if isinstance(self.resize, tuple):
            return self.resize
        return (self.resize, int(self.resize * w / h)) if h <= w else (int(self.resize * h / w), self.resize)

    def _crop_origin(self, h: int, w: int) -> tuple[int, int]:
        if self.crop_rounding == "ceil":
            return math.ceil((h - self.crop_size) / 2), math.ceil((w - self.crop_size) / 2)
        if self.crop_rounding == "floor":
            return (h - self.crop_size) // 2, (w - self.crop_size) // 2
        return int(round((h - self.crop_size) / 2.0)), int(round((w - self.crop_size) / 2.0))

    def _center_views(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _, h, w = x.shape
        size = self._resized_size(h, w)
        top, left = self._crop_origin(*size)
        if size == (h, w):  # the crop first: the same pixels, and only those cross to float (in _normalize)
            return x[..., top:top + self.crop_size, left:left + self.crop_size]
        x = rearrange(x, "b t c h w -> (b t) c h w").float()
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=self.antialias).clamp_(0, 255)
        x = x[:, :, top:top + self.crop_size, left:left + self.crop_size]
        return rearrange(x, "(b t) c h w -> b t c h w", b=b)

    def _random_views(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision import tv_tensors

        if x.dtype != torch.uint8:
            x = x.clamp(0, 255).round().to(torch.uint8)
        # One call per clip: v2 draws the parameters once for the whole video tensor.
        clips = [self._augment(tv_tensors.Video(clip)).as_subclass(torch.Tensor) for clip in x]
        if self.grayscale:  # CrissCross's RandomGray: the whole clip, 3 channels kept (v2's skips videos)
            from torchvision.transforms.v2.functional import rgb_to_grayscale

            clips = [rgb_to_grayscale(c, num_output_channels=3) if float(torch.rand(())) < self.grayscale else c
                     for c in clips]
        return torch.stack([c.float() for c in clips])


def _bgr_gray(clip: torch.Tensor) -> torch.Tensor:
    """pyslowfast's grayscale of ``(T, 3, H, W)``, which reads the channels as BGR: 0.299 of channel 2, 0.587 of 1,
    0.114 of 0 (GDT fed it RGB frames, so red and blue weights are swapped; kept, as GDT trained with it)."""
    gray = 0.299 * clip[:, 2] + 0.587 * clip[:, 1] + 0.114 * clip[:, 0]
    return gray.unsqueeze(1).expand_as(clip)


def _gdt_jitter(clip: torch.Tensor, strengths: tuple[float, float, float]) -> torch.Tensor:
    """pyslowfast's ``color_jitter`` as GDT's finetuning ran it on a normalised clip ``(T, 3, H, W)``: brightness,
    contrast and saturation (those with a non-zero strength) in random order, each blending with a factor
    ``1 + U(-v, v)``: with zeros (brightness), the per-frame mean of the grayscale (contrast), the grayscale
    (saturation). No clamping: the values are normalised."""
    names = [n for n, v in zip(("brightness", "contrast", "saturation"), strengths) if v]
    for i in torch.randperm(len(names)).tolist():
        name = names[i]
        v = strengths[("brightness", "contrast", "saturation").index(name)]
        alpha = 1.0 + (float(torch.rand(())) * 2.0 - 1.0) * v
        if name == "brightness":
            other = torch.zeros_like(clip)
        elif name == "contrast":
            other = _bgr_gray(clip).mean(dim=(1, 2, 3), keepdim=True).expand_as(clip)
        else:
            other = _bgr_gray(clip)
        clip = alpha * clip + (1.0 - alpha) * other
    return clip


@functools.lru_cache(maxsize=4)
def load_norm_stats(file: str, sha256: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frequency dB mean and std shipped in ``avidzoo/assets`` (checked against the manifest's sha256)."""
    data = resources.files("avidzoo.assets").joinpath(file).read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise RuntimeError(f"avidzoo/assets/{file}: sha256 {actual} differs from the manifest's {sha256}")
    with np.load(io.BytesIO(data)) as npz:
        return torch.from_numpy(npz["mean"].astype(np.float32)), torch.from_numpy(npz["std"].astype(np.float32))


class _WaveformTransform:
    """What every audio input shares: waveforms ``(N,)``, ``(C, N)`` or ``(B, C, N)`` float in [-1, 1], resampled to
    ``sample_rate``, averaged to mono, trimmed or zero-padded to ``clip_duration``, with a volume gain drawn per clip
    from ``train.volume_gain`` when ``train=True``; :meth:`spectrogram` turns the mono ``(B, N)`` into
    ``(B, 1, ., .)``."""

    def __init__(self, config: Mapping[str, Any], *, train: bool = False) -> None:
        self.config = dict(config)
        self.train = train
        c = self.config
        self.gain_range = tuple(c.get("train", {}).get("volume_gain", (1.0, 1.0))) if train else (1.0, 1.0)
        self.sample_rate = int(c["sample_rate"])
        self.num_samples = int(round(float(c["clip_duration"]) * self.sample_rate))

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
        raise NotImplementedError


class AudioTransform(_WaveformTransform):
    """AVID's log-spectrogram: mono, trim/pad to ``clip_duration``, power STFT (``n_fft``, ``hop_length``,
    periodic Hann, centred, reflect-padded), keep bin 0 and average the other bins in adjacent pairs, first
    ``num_frames`` frames, ``10 log10(max(S, amin))`` floored at the clip's max minus ``top_db``, then per-frequency
    ``(x - mean) / (std + eps)``. With ``train=True`` a volume gain drawn per clip from ``volume_gain`` comes first.
    Waveforms ``(N,)``, ``(C, N)`` or ``(B, C, N)`` -> ``(1, T, F)`` / ``(B, 1, T, F)``, time first.
    """

    def __init__(self, config: Mapping[str, Any], *, train: bool = False) -> None:
        super().__init__(config, train=train)
        c = self.config
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


class LogMelTransform(_WaveformTransform):
    """CrissCross's log-mel input: power STFT (``n_fft``, ``hop_length``, Hann ``win_length``, centred, ``pad_mode``),
    ``power_eps`` added to every power bin, ``n_mels`` Slaney-scale, Slaney-normalised mel filters from ``f_min`` to
    ``f_max`` (librosa's defaults), ``ln(mel + log_eps)``, then ``(x - mean) / std`` with one scalar pair.
    Waveforms -> ``(B, 1, n_mels, T)``, frequency first (CrissCross at 16 kHz, 2 s: ``(1, 80, 201)``)."""

    def __init__(self, config: Mapping[str, Any], *, train: bool = False) -> None:
        super().__init__(config, train=train)
        c = self.config
        self.n_fft, self.hop_length = int(c["n_fft"]), int(c["hop_length"])
        self.win_length = int(c.get("win_length", self.n_fft))
        import torchaudio.functional as AF

        self.filters = AF.melscale_fbanks(self.n_fft // 2 + 1, float(c["f_min"]), float(c["f_max"]),
                                          int(c["n_mels"]), self.sample_rate, norm="slaney", mel_scale="slaney")

    def __repr__(self) -> str:
        return (f"LogMelTransform(sample_rate={self.sample_rate}, samples={self.num_samples}, n_fft={self.n_fft}, "
                f"hop={self.hop_length}, out={self.output_shape})")

    def spectrogram(self, mono: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` -> ``(B, 1, n_mels, T)`` normalised log-mel frames."""
        c = self.config
        window = torch.hann_window(self.win_length, periodic=True, device=mono.device)
        stft = torch.stft(mono, self.n_fft, self.hop_length, self.win_length, window=window, center=True,
                          pad_mode=c["pad_mode"], return_complex=True)
        power = stft.real.square() + stft.imag.square() + float(c["power_eps"])  # (B, freqs, T)
        mel = torch.einsum("bft,fm->bmt", power, self.filters.to(mono.device))
        x = (torch.log(mel + float(c["log_eps"])) - float(c["mean"])) / float(c["std"])
        return x.unsqueeze(1).contiguous()

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return 1, int(self.config["n_mels"]), 1 + self.num_samples // self.hop_length


def filterbank_matrix(n_filters: int, n_fft: int, sample_rate: int, low_hz: float = 0.0,
                      high_hz: float | None = None) -> torch.Tensor:
    """Triangular mel filters on FFT bins rounded down to integers (the python_speech_features construction GDT's
    inputs used): ``(n_filters, n_fft // 2 + 1)``, unnormalised, HTK mel scale ``2595 log10(1 + f / 700)``."""
    high_hz = high_hz or sample_rate / 2
    mels = torch.linspace(2595 * math.log10(1 + low_hz / 700), 2595 * math.log10(1 + high_hz / 700), n_filters + 2,
                          dtype=torch.float64)
    bins = torch.floor((n_fft + 1) * (700 * (10 ** (mels / 2595) - 1)) / sample_rate).long().tolist()
    out = torch.zeros(n_filters, n_fft // 2 + 1, dtype=torch.float64)
    for j in range(n_filters):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        for i in range(lo, mid):
            out[j, i] = (i - lo) / (mid - lo)
        for i in range(mid, hi):
            out[j, i] = (hi - i) / (hi - mid)
    return out.float()


class LogFbankTransform(_WaveformTransform):
    """GDT's log filterbank input: samples at 16-bit scale (``sample_scale``), pre-emphasis ``y[n] = x[n] - p x[n-1]``,
    rectangular frames of ``win_length`` every ``hop_length`` samples (the last one zero-padded), power spectrum
    ``|rfft(frame, n_fft)|^2 / n_fft``, ``n_filters`` triangular filters (:func:`filterbank_matrix`), exact zeros
    replaced by float64's eps, natural log, then ``(x - z_mean) / z_std`` when ``z_normalize``.
    Waveforms -> ``(B, 1, n_filters, T)``, frequency first (GDT at 24 kHz, 1 s: ``(1, 40, 99)``)."""

    def __init__(self, config: Mapping[str, Any], *, train: bool = False) -> None:
        super().__init__(config, train=train)
        c = self.config
        self.win_length, self.hop_length, self.n_fft = int(c["win_length"]), int(c["hop_length"]), int(c["n_fft"])
        self.filters = filterbank_matrix(int(c["n_filters"]), self.n_fft, self.sample_rate)

    def __repr__(self) -> str:
        return (f"LogFbankTransform(sample_rate={self.sample_rate}, samples={self.num_samples}, "
                f"win={self.win_length}, hop={self.hop_length}, out={self.output_shape})")

    @property
    def num_frames(self) -> int:
        n, w, h = self.num_samples, self.win_length, self.hop_length
        return 1 if n <= w else 1 + math.ceil((n - w) / h)

    def spectrogram(self, mono: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` -> ``(B, 1, n_filters, T)``."""
        c = self.config
        x = mono * float(c["sample_scale"])
        x = torch.cat([x[:, :1], x[:, 1:] - float(c["preemphasis"]) * x[:, :-1]], dim=1)
        pad = (self.num_frames - 1) * self.hop_length + self.win_length - x.shape[1]
        frames = F.pad(x, (0, max(pad, 0))).unfold(1, self.win_length, self.hop_length)  # (B, T, win)
        power = torch.fft.rfft(frames, self.n_fft).abs().square() / self.n_fft
        feat = power @ self.filters.to(mono.device).T  # (B, T, n_filters)
        feat = torch.where(feat == 0, torch.finfo(torch.float64).eps, feat).log()
        if c.get("z_normalize", False):
            feat = (feat - float(c["z_mean"])) / float(c["z_std"])
        return rearrange(feat, "b t f -> b 1 f t").contiguous()

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return 1, int(self.config["n_filters"]), self.num_frames


AUDIO_TRANSFORMS: dict[str, type[_WaveformTransform]] = {
    "avid_spectrogram": AudioTransform, "log_mel": LogMelTransform, "log_fbank": LogFbankTransform}


def audio_transform(config: Mapping[str, Any], *, train: bool = False) -> _WaveformTransform:
    """The audio transform a preprocessing config's ``kind`` names (AVID's spectrogram when it names none)."""
    kind = config.get("kind", "avid_spectrogram")
    if kind not in AUDIO_TRANSFORMS:
        raise ValueError(f"unknown audio preprocessing kind {kind!r}; known: {', '.join(AUDIO_TRANSFORMS)}")
    return AUDIO_TRANSFORMS[kind](config, train=train)


@dataclass(frozen=True)
class Transforms:
    """The preprocessing of one model's weights: ``.video`` and ``.audio`` callables (``None`` for a missing tower)."""

    video: VideoTransform | None
    audio: _WaveformTransform | None
    config: Mapping[str, Any]
