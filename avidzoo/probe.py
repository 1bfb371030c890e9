"""Linear probes on frozen AVID features: ``avidzoo linear-probe`` and :func:`linear_probe`.

Features come from the extraction engine (:class:`~avidzoo.FeatureExtractor`, ``clip_agg="none"``): ``clips`` evenly
spaced clips per file, at a chosen layer (``pool``, ``proj`` or ``conv2x`` .. ``conv5x`` pooled to the original probe
grid). With ``cache=DIR`` they are written there and reused (and resumed) by the next probe on the same files.
Each clip is a training example labelled with its file's class; features are standardised with the training mean and
``std + std_offset``; a softmax linear classifier is trained with Adam; a test file's score is the mean of its clips'
probabilities. With folds (ESC-50) every fold is the test set once and the mean and spread are reported.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .config import weights_protocol
from .datasets import DatasetError, LabelledMedia, open_dataset
from .extract import FeatureExtractor, load_features
from .manifest import get_manifest
from .models.avid import AVIDModel

__all__ = ["ProbeReport", "linear_probe", "fit_linear", "predict_linear"]


@dataclass
class ProbeReport:
    """``top1`` is the mean over ``folds`` (one entry per train/test split: ``fold``, ``top1``, sizes); ``std`` their
    standard deviation (0 for a single split)."""

    modality: str
    layer: str
    top1: float
    std: float
    folds: list[dict[str, Any]]
    classes: list[str]
    skipped: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"modality": self.modality, "layer": self.layer, "top1": self.top1, "std": self.std,
                "folds": self.folds, "skipped": self.skipped, "settings": self.settings}


@dataclass
class LinearClassifier:
    """Standardisation then ``weight @ x + bias``: ``(N, D)`` features -> ``(N, K)`` logits."""

    mean: torch.Tensor
    scale: torch.Tensor
    linear: torch.nn.Linear

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((x.to(self.mean.device) - self.mean) / self.scale)


def fit_linear(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, epochs: int = 30, lr: float = 1e-3,
               weight_decay: float = 1e-4, batch_size: int = 256, std_offset: float = 0.01, seed: int = 0,
               device: str | torch.device = "cpu") -> LinearClassifier:
    """Train a softmax linear classifier on ``x`` ``(N, D)`` with labels ``y`` ``(N,)`` (deterministic per seed)."""
    x, y = x.float().to(device), y.long().to(device)
    mean, scale = x.mean(0), x.std(0, unbiased=False) + std_offset
    x = (x - mean) / scale
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        linear = torch.nn.Linear(x.shape[1], num_classes).to(device)
    optimizer = torch.optim.Adam(linear.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g).to(device)
        for s in range(0, len(x), batch_size):
            idx = order[s:s + batch_size]
            loss = F.cross_entropy(linear(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    linear.eval()
    return LinearClassifier(mean, scale, linear)


def predict_linear(classifier: LinearClassifier, clips: torch.Tensor) -> torch.Tensor:
    """``(V, n, D)`` clip features -> ``(V, K)`` probabilities averaged over each file's clips."""
    v, n, d = clips.shape
    return classifier(clips.reshape(v * n, d)).float().softmax(-1).view(v, n, -1).mean(1).cpu()


def _splits(data: LabelledMedia, test: LabelledMedia | None,
            folds: bool | Sequence[int] | None) -> list[tuple[Any, list[int], list[int]]]:
    """``(name, train indices, test indices)`` into ``data`` (+ ``test`` appended after it)."""
    if test is not None:
        return [("test", list(range(len(data))), list(range(len(data), len(data) + len(test))))]
    known = sorted({f for f in data.folds if f is not None})
    if folds is False or not known:
        raise DatasetError(f"{data.source}: give test data, or data with folds (an ESC-50 meta file or a CSV "
                           "with a fold column)")
    chosen = known if folds in (None, True) else list(folds)
    return [(k, [i for i, f in enumerate(data.folds) if f != k], [i for i, f in enumerate(data.folds) if f == k])
            for k in chosen]


def linear_probe(
    model: AVIDModel | str | os.PathLike,
    data: LabelledMedia | str | os.PathLike,
    test: LabelledMedia | str | os.PathLike | None = None,
    *,
    modality: str = "video",
    layer: str | None = None,
    clips: int | None = None,
    folds: bool | Sequence[int] | None = None,
    cache: str | os.PathLike | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    batch_size: int | None = None,
    std_offset: float | None = None,
    device: str | torch.device | None = None,
    num_workers: int | None = None,
    seed: int = 0,
    protocol: str | None = None,
) -> ProbeReport:
    """Train and test a linear classifier on frozen features of ``modality``.

    ``data`` is the training set (a :class:`LabelledMedia`, a class folder, a CSV or ``esc50:ROOT``); ``test`` the test
    set, or leave it out for cross-validation over ``data``'s folds (all, or the ``folds`` listed). Unset settings come
    from the manifest (``protocols.linear_probe.<modality>``), amended by the weights' protocol family
    (``protocol``, default the weights' own: ``crisscross`` tests on each file's first clip only, as CrissCross's
    ESC-50 evaluation trimmed every test file to one 2-s clip). Unreadable files are skipped and listed.
    """

    if modality not in ("video", "audio"):
        raise ValueError(f"modality must be 'video' or 'audio', got {modality!r}")
    presets = get_manifest().data["protocols"]["linear_probe"]
    family = protocol or weights_protocol(model).partition("/")[0]
    preset = {**presets[modality], **presets.get(family, {}).get(modality, {})}
    layer = layer or preset["layer"]
    settings = {"layer": layer, "clips": clips or preset["clips"], "epochs": epochs or preset["epochs"],
                "lr": lr or preset["lr"], "batch_size": batch_size or preset["batch_size"],
                "weight_decay": preset["weight_decay"] if weight_decay is None else weight_decay,
                "std_offset": preset["std_offset"] if std_offset is None else std_offset, "seed": seed,
                "protocol": family}
    settings["test_clips"] = preset.get("test_clips", settings["clips"])
    if not isinstance(data, LabelledMedia):
        data = open_dataset(data)
    if test is not None and not isinstance(test, LabelledMedia):
        test = open_dataset(test, subset="test")
    if test is not None:
        test = test.with_classes(data.classes)
    splits = _splits(data, test, folds)
    paths = [str(p) for p in data.paths] + ([str(p) for p in test.paths] if test is not None else [])
    labels = torch.tensor(data.labels + (test.labels if test is not None else []))

    extractor = FeatureExtractor(model, modalities=(modality,), clips_per_video=settings["clips"], clip_agg="none",
                                 layer=layer, device=device, num_workers=num_workers)
    if cache is not None:
        extractor.extract(paths, out=cache)
        result = load_features(cache)
    else:
        result = extractor.extract(paths)
    row = {p: i for i, p in enumerate(result.paths)}
    feats = result[modality]
    test_feats, test_row = feats, row
    if settings["test_clips"] != settings["clips"]:  # test clips of their own (CrissCross: each file's first clip)
        tester = FeatureExtractor(extractor.model, modalities=(modality,), clips_per_video=settings["test_clips"],
                                  clip_agg="none", layer=layer, device=device, num_workers=num_workers)
        wanted = sorted({paths[i] for _, _, te in splits for i in te})
        if cache is not None:
            tester.extract(wanted, out=os.path.join(cache, "test"))
            tested = load_features(os.path.join(cache, "test"))
        else:
            tested = tester.extract(wanted)
        test_feats, test_row = tested[modality], {p: i for i, p in enumerate(tested.paths)}
    folds_out = []
    for name, train_idx, test_idx in splits:
        tr = [i for i in train_idx if paths[i] in row]
        te = [i for i in test_idx if paths[i] in test_row]
        if not tr or not te:
            raise DatasetError(f"{data.source}: split {name} has no readable {'training' if not tr else 'test'} files")
        x = feats[[row[paths[i]] for i in tr]]
        clf = fit_linear(x.flatten(0, 1), labels[tr].repeat_interleave(x.shape[1]), len(data.classes),
                         epochs=settings["epochs"], lr=settings["lr"], weight_decay=settings["weight_decay"],
                         batch_size=settings["batch_size"], std_offset=settings["std_offset"], seed=seed,
                         device=extractor.device)
        probs = predict_linear(clf, test_feats[[test_row[paths[i]] for i in te]])
        top1 = float((probs.argmax(-1) == labels[te]).float().mean())
        folds_out.append({"fold": name, "top1": top1, "train_files": len(tr), "test_files": len(te)})
    scores = [f["top1"] for f in folds_out]
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    return ProbeReport(modality=modality, layer=layer, top1=mean, std=std, folds=folds_out,
                       classes=list(data.classes), skipped=dict(result.failed), settings=settings)
