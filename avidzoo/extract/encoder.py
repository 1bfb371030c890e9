"""Model inputs -> features: the encoders prepared once for inference and run in batches on the device."""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F

from .._env import autocast_dtype, default_device
from ..manifest import get_manifest
from ..models.avid import AVIDModel
from ..models.fuse import fuse_batchnorm
from ..transforms import audio_transform

MAPS = ("grid", "map", "full")  # an intermediate layer pooled to the probe grid, its map time-pooled, or whole

__all__ = ["MAPS", "ClipEncoder", "parse_dtype", "model_fingerprint"]

log = logging.getLogger("avidzoo")

Layer = str  # "pool" | "proj" | "conv1" .. "conv5x"


def parse_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``"bf16"``/``"fp16"``/``"fp32"`` (or a torch dtype); ``None`` is the device's default autocast dtype."""
    if dtype is None:
        return autocast_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "half": torch.float16, "fp32": torch.float32, "float32": torch.float32, "float": torch.float32}
    if dtype not in names:
        raise ValueError(f"dtype must be one of bf16, fp16, fp32, got {dtype!r}")
    return names[dtype]


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of the state dict (names and bytes): which weights made an output folder."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class ClipEncoder:
    """The towers of an :class:`AVIDModel` prepared for inference: the chosen layer (pooled to the original
    linear-probe grid for intermediate maps), BatchNorm folded, channels_last_3d video, optional ``torch.compile``;
    run in chunks of ``batch_size`` under autocast, halving the chunk on CUDA out-of-memory.

    ``model`` must already be the model to run (see :class:`~avidzoo.extract.FeatureExtractor` for the arguments).
    """

    def __init__(
        self,
        model: AVIDModel,
        *,
        modalities: Sequence[str],
        layer: Layer = "pool",
        clip_agg: Literal["mean", "max", "none"] = "mean",
        normalize: bool = False,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        channels_last: bool = True,
        compile: bool | str = False,
        fuse: bool = True,
        maps: Literal["grid", "map", "full"] = "grid",
    ) -> None:
        self.modalities = tuple(modalities)
        missing = [m for m in self.modalities if m not in model.modalities]
        if missing:
            raise ValueError(f"the model has no {' or '.join(missing)} tower (it has {model.modalities})")
        if clip_agg not in ("mean", "max", "none"):
            raise ValueError(f"clip_agg must be 'mean', 'max' or 'none', got {clip_agg!r}")
        self.grids = get_manifest().data["protocols"]["intermediate_features"]
        if layer not in ("pool", "proj"):
            for m in self.modalities:
                if layer not in self.grids[m]["grid"]:
                    raise ValueError(f"layer {layer!r} is not one of pool, proj, "
                                     f"{', '.join(self.grids[m]['grid'])} for the {m} tower")
        if maps not in MAPS:
            raise ValueError(f"maps must be one of {MAPS}, got {maps!r}")
        if maps != "grid" and layer in ("pool", "proj"):
            raise ValueError(f"maps={maps!r} keeps an intermediate layer's map: pass layer='conv1' .. 'conv5x'")
        self.maps = maps
        if layer == "proj" and model.embed_dim is None:
            raise ValueError("layer='proj' needs the projection heads, which this model does not have")
        self.model = model.eval()
        self.layer, self.clip_agg, self.normalize = layer, clip_agg, normalize
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = parse_dtype(dtype, self.device)
        self.batch_size = batch_size or (64 if self.device.type == "cuda" else 8)
        self.channels_last = channels_last
        net = fuse_batchnorm(model) if fuse else model
        net = net.to(self.device)
        if channels_last and "video" in self.modalities:
            net.video_encoder.to(memory_format=torch.channels_last_3d)
        self._net = net
        # a map's shape per clip, found by one forward of a zero input (it follows the input size)
        self.map_shapes = {m: self._map_shape(m) for m in self.modalities} if maps != "grid" else {}
        self._encode = {m: self._encoder_fn(m) for m in self.modalities}
        if compile:  # True: torch.compile's default mode; a string names the mode ("reduce-overhead": CUDA graphs)
            mode = compile if isinstance(compile, str) else None
            self._encode = {m: torch.compile(fn, dynamic=True, mode=mode) for m, fn in self._encode.items()}
        self.fingerprint = model_fingerprint(model)

    def _encoder_fn(self, modality: str):
        net, layer = self._net, self.layer
        if layer in ("pool", "proj"):
            enc = net.encode_video if modality == "video" else net.encode_audio
            return lambda x: enc(x, project=layer == "proj")
        grid = self.grids[modality]
        if self.maps != "grid":
            return lambda x: torch.flatten(self._map(x, modality), 1)
        size = grid["grid"][layer]
        pools = {("video", "max"): F.adaptive_max_pool3d, ("video", "avg"): F.adaptive_avg_pool3d,
                 ("audio", "max"): F.adaptive_max_pool2d, ("audio", "avg"): F.adaptive_avg_pool2d}
        pool = pools[(modality, grid["pool"])]

        def encode(x: torch.Tensor) -> torch.Tensor:
            return torch.flatten(pool(net.forward_features(x, modality=modality)[layer], size), 1)

        return encode

    def _map(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """The layer's map ``(B, C, T', H', W')`` (audio ``(B, C, T', F')``), with ``maps="map"`` pooled over time
        as the layer's probe pools (max for video, mean for audio): ``(B, C, H', W')`` / ``(B, C, F')``."""
        z = self._net.forward_features(x, modality=modality)[self.layer]
        if self.maps == "map":
            z = z.amax(2) if self.grids[modality]["pool"] == "max" else z.mean(2)
        return z

    @torch.inference_mode()
    def _map_shape(self, modality: str) -> tuple[int, ...]:
        pre = self.model.config["preprocessing"][modality]
        if modality == "video":
            x = torch.zeros(1, 3, int(pre["num_frames"]), int(pre["crop_size"]), int(pre["crop_size"]))
        else:  # the spectrogram of a silent clip: its shape is what the transform makes of one clip
            wave = torch.zeros(1, int(round(float(pre["clip_duration"]) * int(pre["sample_rate"]))))
            x = audio_transform(pre)(wave)[None]
        return tuple(self._map(x.to(self.device), modality).shape[1:])

    def feature_dim(self, modality: str) -> int:
        """D of one clip's features for ``modality`` at this layer (a map's, flattened)."""
        if self.maps != "grid":
            return math.prod(self.map_shapes[modality])
        if self.layer == "pool":
            return self.model.num_features
        if self.layer == "proj":
            return int(self.model.embed_dim)
        channels = self.model.feature_channels(modality)[self.layer]
        size = self.grids[modality]["grid"][self.layer]
        return channels * math.prod(size)

    @torch.inference_mode()
    def encode(self, video: torch.Tensor | None = None, audio: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-clip features of model inputs: video ``(B, 3, T, H, W)``, audio ``(B, 1, T, F)`` (already
        transformed). Returns ``{modality: (B, D)}`` float32 on the CPU, L2-normalised if ``normalize``."""
        out = {}
        for modality, x in (("video", video), ("audio", audio)):
            if x is None:
                continue
            if modality not in self.modalities:
                raise ValueError(f"this extractor runs {self.modalities}, not {modality}")
            out[modality] = self._run(modality, x)
        return out

    def _run(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Forward in chunks of ``batch_size``; on out-of-memory, halve the chunk and retry (and keep it halved)."""
        parts = []
        i = 0
        while i < x.shape[0]:
            chunk = x[i:i + self.batch_size]
            try:
                parts.append(self._forward(modality, chunk))
                i += chunk.shape[0]
            except torch.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                self.batch_size = max(1, self.batch_size // 2)
                log.warning("out of memory: batch size lowered to %d clips", self.batch_size)
        return torch.cat(parts) if parts else torch.empty(0)

    def _forward(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if modality == "video" and self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            z = self._encode[modality](x)
        z = z.float()
        if self.normalize:
            z = F.normalize(z, dim=-1)
        return z.cpu()

    def per_file(self, feats: Mapping[str, torch.Tensor], items: Sequence[Mapping[str, Any]]) -> list[dict]:
        """Split one batch's per-clip features ``{modality: (B, D)}`` back into its files' aggregated features, in
        the order of ``items`` (each with ``"starts"``, one per clip). A file without a modality's stream (listed in
        its ``"missing"``) gave no clips of it and gets NaN features of the aggregate's shape: marked, never
        mistaken for an embedding. An item with ``"times"`` (features over time) gets one aggregate per row of its
        ``"row_clips"`` clips: ``(rows, D)`` (``(rows, clips, D)`` with ``clip_agg="none"``)."""
        offsets = dict.fromkeys(self.modalities, 0)
        out = []
        for it in items:
            n = len(it["starts"])
            rows = len(it["times"]) if "times" in it else None
            row = {}
            for m in self.modalities:
                if m in it.get("missing", ()):
                    shape = (n, self.feature_dim(m)) if self.clip_agg == "none" else (self.feature_dim(m),)
                    if rows is not None:
                        shape = (rows, *(shape if self.clip_agg != "none" else (n // rows, shape[-1])))
                    row[m] = torch.full(shape, float("nan"))
                    continue
                clips = feats[m][offsets[m]:offsets[m] + n]
                if rows is None:
                    row[m] = self.aggregate(clips)
                else:
                    row[m] = torch.stack([self.aggregate(r) for r in clips.reshape(rows, n // rows, -1)])
                offsets[m] += n
            out.append(row)
        return out

    def aggregate(self, clip_features: torch.Tensor) -> torch.Tensor:
        """``(clips, D)`` -> ``(D,)`` by ``clip_agg`` (``"none"`` keeps ``(clips, D)``)."""
        if self.clip_agg == "none":
            return clip_features
        z = clip_features.mean(0) if self.clip_agg == "mean" else clip_features.amax(0)
        return F.normalize(z, dim=-1) if self.normalize else z
