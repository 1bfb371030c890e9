"""``AVIDModel``: the video tower, the audio tower, or both, with projection heads and an optional classifier."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..serialization import push_to_hub, save_pretrained
from .heads import ClassifierHead, ProjectionHead
from .towers import build_encoder

MODALITIES = ("video", "audio")  # the towers, in the order configs list them

__all__ = ["AVIDModel"]



class AVIDModel(nn.Module):
    """The AVID audio-visual model described by a config dict (see ``config``).

    Submodules (each present only for the towers built): ``video_encoder`` and ``audio_encoder`` (by the config's
    ``arch``, see :mod:`avidzoo.models.towers`: AVID's :class:`R2Plus1D` and :class:`Conv2D`, or the siblings'
    torchvision-graph R(2+1)D and audio ResNets), ``video_head`` / ``audio_head`` (512-512-128 projection MLPs from
    pretraining, AVID only) and ``classifier`` (Dropout + Linear on the pooled 512-d video features, only when
    ``num_classes`` is set).

    Inputs: video ``(B, 3, T, H, W)`` float, normalised RGB; audio ``(B, 1, T, F)`` normalised log-spectrograms for
    AVID (the released weights: T=200, F=257), ``(B, 1, F, T)`` log-mel / log-filterbank frames for the audio
    ResNets. Build one with :func:`avidzoo.create_model` or :func:`avidzoo.from_pretrained`.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self._config = copy.deepcopy(dict(config))
        cfg = self._config
        modalities = tuple(cfg.get("modalities") or MODALITIES)
        unknown = set(modalities) - set(MODALITIES)
        if unknown or not modalities:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {modalities}")
        cfg["modalities"] = list(modalities)
        proj_dims = cfg.get("proj_dims")
        for m in modalities:
            encoder = build_encoder(m, cfg[m])
            setattr(self, f"{m}_encoder", encoder)
            setattr(self, f"{m}_head", ProjectionHead(encoder.out_dim, proj_dims) if proj_dims else None)
        self.classifier: ClassifierHead | None = None
        if cfg.get("num_classes"):
            self.reset_classifier(int(cfg["num_classes"]), cfg.get("label_names"), cfg.get("dropout", 0.5))

    # -- description ------------------------------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        """A copy of the config this model was built from (architecture, weights, preprocessing, labels)."""
        return copy.deepcopy(self._config)

    pretrained_cfg = config  # timm's name for the same thing

    _GRAPH_KEYS = frozenset({"modalities", "video", "audio", "proj_dims", "num_classes", "label_names", "dropout"})

    def update_config(self, **fields: Any) -> None:
        """Replace config entries that describe the weights, not the graph (``preprocessing``, ``training``,
        ``weights``, ``license``, ...), e.g. after training; ``save_pretrained`` writes them. Graph keys (towers,
        depths, heads, labels) are refused: build a new model or use :meth:`reset_classifier`."""
        graph = sorted(self._GRAPH_KEYS & fields.keys())
        if graph:
            raise ValueError(f"update_config cannot change the graph keys {graph}")
        self._config.update(copy.deepcopy(fields))

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self._config["modalities"])

    @property
    def num_features(self) -> int:
        """Width of the pooled encoder features (512 for every tower avidzoo has)."""
        return getattr(self, f"{self.modalities[0]}_encoder").out_dim

    @property
    def embed_dim(self) -> int | None:
        """Width of the projected embeddings (128 for the released heads), ``None`` without heads."""
        dims = self._config.get("proj_dims")
        return int(dims[-1]) if dims else None

    @property
    def label_names(self) -> list[str] | None:
        return copy.copy(self._config.get("label_names"))

    def extra_repr(self) -> str:
        cfg = self._config
        return f"model={cfg.get('model')!r}, weights={cfg.get('weights')!r}, modalities={self.modalities}"

    # -- encoding ---------------------------------------------------------------------------------------------------
    def _tower(self, modality: str) -> tuple[nn.Module, nn.Module | None]:
        if modality not in self.modalities:
            raise ValueError(f"this model was built with modalities={self.modalities}; it has no {modality} tower")
        return getattr(self, f"{modality}_encoder"), getattr(self, f"{modality}_head")

    def _encode(self, modality: str, x: torch.Tensor, project: bool, normalize: bool) -> torch.Tensor:
        encoder, head = self._tower(modality)
        if project and head is None:
            raise ValueError("this model has no projection heads (proj_dims is None); use project=False")
        z = encoder(x)
        if project:
            z = head(z)
        return F.normalize(z, dim=-1) if normalize else z

    def encode_video(self, x: torch.Tensor, *, project: bool = False, normalize: bool = False) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> ``(B, 512)`` pooled features, or ``(B, 128)`` with ``project=True``.

        ``normalize=True`` L2-normalises the result (the pretraining loss compares normalised projections).
        """
        self._check_input(x, 5, "video", "(B, 3, T, H, W)", channels=3)
        return self._encode("video", x, project, normalize)

    def encode_audio(self, x: torch.Tensor, *, project: bool = False, normalize: bool = False) -> torch.Tensor:
        """``(B, 1, T, F)`` log-spectrograms -> ``(B, 512)``, or ``(B, 128)`` with ``project=True``."""
        self._check_input(x, 4, "audio", "(B, 1, T, F)", channels=1)
        return self._encode("audio", x, project, normalize)

    @staticmethod
    def _check_input(x: torch.Tensor, ndim: int, what: str, layout: str, channels: int) -> None:
        if x.ndim != ndim or x.shape[1] != channels:
            raise ValueError(f"{what} input must be {layout}, got a tensor of shape {tuple(x.shape)}")

    def forward_features(self, x: torch.Tensor, *, modality: str | None = None) -> dict[str, torch.Tensor]:
        """Intermediate maps of one tower, for linear probes.

        Video: ``conv1, conv2x, conv3x, conv4x, conv5x`` as ``(B, C, T', H', W')`` and ``pool`` ``(B, 512, 1, 1, 1)``.
        Audio: ``conv2x .. conv5x`` as ``(B, C, T', F')`` and ``pool`` ``(B, 512, 1, 1)``. ``modality`` may be left
        out when the model has one tower.
        """
        if modality is None:
            if len(self.modalities) != 1:
                raise ValueError("this model has two towers: pass modality='video' or modality='audio'")
            modality = self.modalities[0]
        encoder, _ = self._tower(modality)
        return encoder.forward_features(x)

    def feature_channels(self, modality: str) -> dict[str, int]:
        """Channels of each map :meth:`forward_features` returns for ``modality``, e.g. ``{"conv5x": 512, ...}``."""
        encoder, _ = self._tower(modality)
        return dict(encoder.feature_channels)

    def forward(
        self, video: torch.Tensor | None = None, audio: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor | None, torch.Tensor | None]:
        """With a classifier: ``video`` -> logits ``(B, num_classes)``.

        Without: ``(video_emb, audio_emb)`` projected embeddings ``(B, 128)`` (unnormalised, as the original
        ``AV_Wrapper``), ``None`` for a modality not given.
        """
        if self.classifier is not None:
            if video is None:
                raise ValueError("a classifier model takes a video tensor (B, 3, T, H, W)")
            return self.classifier(self.encode_video(video))
        if video is None and audio is None:
            raise ValueError("pass video=(B, 3, T, H, W) and/or audio=(B, 1, T, F)")
        project = self._config.get("proj_dims") is not None
        v = self.encode_video(video, project=project) if video is not None else None
        a = self.encode_audio(audio, project=project) if audio is not None else None
        return v, a

    # -- classifier -------------------------------------------------------------------------------------------------
    def reset_classifier(
        self, num_classes: int, label_names: Sequence[str] | None = None, dropout: float | None = 0.5,
        init: str | None = "default",
    ) -> None:
        """Attach a new Dropout + Linear head on the pooled video features (``num_classes=0`` removes it).
        ``init``: ``"default"`` (PyTorch's Linear init) or ``"orthogonal"`` (weight orthogonal, bias 0: CrissCross's
        finetuning head)."""
        if "video" not in self.modalities:
            raise ValueError("the classifier sits on the video tower, which this model was built without")
        if label_names is not None and len(label_names) != num_classes:
            raise ValueError(f"{len(label_names)} label names given for {num_classes} classes")
        if init not in (None, "default", "orthogonal"):
            raise ValueError(f"init must be 'default' or 'orthogonal', got {init!r}")
        dropout = 0.5 if dropout is None else float(dropout)
        self.classifier = ClassifierHead(self.video_encoder.out_dim, num_classes, dropout) if num_classes else None
        if self.classifier is not None and init == "orthogonal":
            nn.init.orthogonal_(self.classifier[1].weight, 1)
            nn.init.zeros_(self.classifier[1].bias)
        self._config.update(
            num_classes=num_classes or None,
            label_names=list(label_names) if label_names is not None else None,
            dropout=dropout,
        )

    def set_pool(self, modality: str, pool: str) -> None:
        """Pool the ``modality`` encoder's last map by ``"max"`` or ``"avg"`` (no parameters change; the config records
        it, so a saved model keeps it). CrissCross finetunes its average-pooled video tower with max pooling."""
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        encoder, _ = self._tower(modality)
        if not isinstance(getattr(encoder, "pool", None), (nn.AdaptiveMaxPool3d, nn.AdaptiveAvgPool3d)):
            raise ValueError(f"the {modality} encoder has no global pooling to change")
        encoder.pool = nn.AdaptiveMaxPool3d(1) if pool == "max" else nn.AdaptiveAvgPool3d(1)
        self._config[modality] = {**self._config[modality], "pool": pool}

    def get_classifier(self) -> nn.Module | None:
        return self.classifier

    # -- persistence ------------------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, *, model_card: str | None = None) -> Path:
        """Write ``config.json``, ``model.safetensors`` and a README model card; load back with ``from_pretrained``."""
        return save_pretrained(self, save_directory, model_card=model_card)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """``save_pretrained`` into a temporary folder and upload it to the Hugging Face Hub; returns the commit URL.

        Keyword arguments (``private``, ``token``, ``revision``, ``commit_message``) go to huggingface_hub.
        """
        return push_to_hub(self, repo_id, **kwargs)
