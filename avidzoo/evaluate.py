"""Action-recognition evaluation: Clip@1, Video@1, per-class accuracy and a confusion matrix.

Protocol (the original ``eval-action-recg.py``): **Clip@1** scores one clip per video on its own (a random start,
seeded); **Video@1** averages the softmax probabilities of ``clips`` evenly spaced clips (``linspace(0, duration -
clip, n)``, resize + centre crop) and takes the arg-max. Per-class accuracy and the confusion matrix are at the video
level.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ._env import autocast_dtype, default_device
from ._files import atomic_path, write_text_atomic
from .datasets import LabelledClips, LabelledMedia, open_dataset
from .factory import create_transforms, from_pretrained
from .models.avid import AVIDModel

__all__ = ["EvalReport", "evaluate", "video_probabilities", "confusion_matrix", "save_confusion_png"]


def video_probabilities(clip_logits: torch.Tensor) -> torch.Tensor:
    """``(V, n, K)`` clip logits -> ``(V, K)``: the mean over clips of each clip's softmax (Video@1's scores)."""
    return clip_logits.float().softmax(-1).mean(1)


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(K, K)`` counts; row = true class, column = predicted class."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


@dataclass
class EvalReport:
    """Results of :func:`evaluate`. ``confusion`` is ``(K, K)`` (row = true, column = predicted, videos);
    ``per_class`` maps each class with test videos to its Video@1 accuracy; ``predictions`` has one row per video."""

    clip_top1: float
    video_top1: float
    classes: list[str]
    per_class: dict[str, float]
    confusion: torch.Tensor
    predictions: list[dict[str, Any]]
    skipped: dict[str, str] = field(default_factory=dict)
    clips: int = 10

    def summary(self) -> dict[str, Any]:
        return {"clip_top1": self.clip_top1, "video_top1": self.video_top1, "videos": len(self.predictions),
                "clips_per_video": self.clips, "skipped": self.skipped, "per_class": self.per_class}

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``report.json``, ``predictions.csv`` and ``confusion.png`` into ``folder`` (atomically)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / "report.json", json.dumps(
            {**self.summary(), "classes": self.classes, "confusion": self.confusion.tolist()}, indent=2) + "\n")
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["path", "label", "prediction", "probability", "clip_prediction"])
        w.writeheader()
        w.writerows(self.predictions)
        write_text_atomic(folder / "predictions.csv", buf.getvalue())
        save_confusion_png(self.confusion, self.classes, folder / "confusion.png")
        return folder


def save_confusion_png(matrix: torch.Tensor, classes: list[str], path: str | os.PathLike) -> Path:
    """A row-normalised confusion matrix as a PNG (white = 0, dark blue = 1), class names on the left when
    there are few enough to read. Pillow comes with torchvision."""
    from PIL import Image, ImageDraw

    k = matrix.shape[0]
    rows = matrix.float() / matrix.sum(1, keepdim=True).clamp(min=1)
    cell = max(4, min(24, 800 // max(k, 1)))
    label_w = 8 * min(max((len(c) for c in classes), default=0), 24) + 8 if cell >= 10 else 0
    img = Image.new("RGB", (label_w + k * cell + 1, k * cell + 1), "white")
    draw = ImageDraw.Draw(img)
    for r in range(k):
        for c in range(k):
            v = float(rows[r, c])
            colour = (int(255 * (1 - v)), int(255 * (1 - 0.7 * v)), 255 - int(100 * v))
            x, y = label_w + c * cell, r * cell
            draw.rectangle([x, y, x + cell, y + cell], fill=colour, outline=(220, 220, 220))
        if label_w:
            draw.text((2, r * cell + (cell - 10) // 2), classes[r][:24], fill="black")
    path = Path(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path


@torch.inference_mode()
def predict_clips(model: AVIDModel, data: LabelledMedia, *, clips: int = 10, batch_size: int = 8,
                  num_workers: int = 0, device: torch.device | str = "cpu", amp_dtype: torch.dtype | None = None,
                  seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of every file's clips: ``(V, 1 + clips * crops, K)`` (clip 0 the random one; ``crops`` the
    preprocessing's ``test_crops``, GDT's 3 spatial crops per clip) and the labels ``(V,)``."""
    device = torch.device(device)
    transform = create_transforms(model).video
    dataset = LabelledClips(data, transform, train=False, test_clips=clips, seed=seed)
    views = 1 + clips * transform.test_crops
    loader = torch.utils.data.DataLoader(dataset, batch_size=max(1, batch_size // views),
                                         num_workers=num_workers, pin_memory=device.type == "cuda")
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for x, y, _ in loader:
        b, n = x.shape[:2]
        x = x.flatten(0, 1).to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            out = model(video=x)
        logits.append(out.float().view(b, n, -1).cpu())
        labels.append(y)
    model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


def report_from_logits(logits: torch.Tensor, labels: torch.Tensor, data: LabelledMedia) -> EvalReport:
    """An :class:`EvalReport` from :func:`predict_clips`' output."""
    k = len(data.classes)
    clip_pred = logits[:, 0].argmax(-1)
    probs = video_probabilities(logits[:, 1:])
    conf, video_pred = probs.max(-1)
    matrix = confusion_matrix(labels, video_pred, k)
    per_class = {data.classes[c]: float(matrix[c, c] / matrix[c].sum()) for c in range(k) if matrix[c].sum() > 0}
    rows = [{"path": str(p), "label": data.classes[int(y)], "prediction": data.classes[int(v)],
             "probability": round(float(q), 6), "clip_prediction": data.classes[int(c)]}
            for p, y, v, q, c in zip(data.paths, labels, video_pred, conf, clip_pred)]
    return EvalReport(clip_top1=float((clip_pred == labels).float().mean()),
                      video_top1=float((video_pred == labels).float().mean()), classes=list(data.classes),
                      per_class=per_class, confusion=matrix, predictions=rows, skipped=dict(data.skipped),
                      clips=logits.shape[1] - 1)


def evaluate(
    model: AVIDModel | str | os.PathLike,
    data: LabelledMedia | str | os.PathLike,
    *,
    clips: int = 10,
    batch_size: int | None = None,
    num_workers: int | None = None,
    device: str | torch.device | None = None,
    out: str | os.PathLike | None = None,
    seed: int = 0,
) -> EvalReport:
    """Evaluate a classifier (a finetuned model or anything :func:`avidzoo.from_pretrained` loads with a head) on
    labelled videos (a :class:`LabelledMedia` or a folder/CSV path). The data's classes must be among the model's
    label names; unreadable files are skipped and listed in ``report.skipped``. ``out`` saves the report there."""
    if not isinstance(model, AVIDModel):
        model = from_pretrained(model, modalities=("video",))
    if model.classifier is None:
        raise ValueError("this model has no classifier head: finetune it first (avidzoo finetune) or use "
                         "avidzoo linear-probe for frozen features")
    if not isinstance(data, LabelledMedia):
        data = open_dataset(data)
    names = model.label_names or [str(i) for i in range(model.classifier.num_classes)]
    data = data.with_classes(names).readable()
    device = torch.device(device) if device else default_device()
    cuda = device.type == "cuda"
    model.to(device)
    logits, labels = predict_clips(
        model, data, clips=clips, batch_size=batch_size or (64 if cuda else 11),
        num_workers=num_workers if num_workers is not None else min(8 if cuda else 1, os.cpu_count() or 1),
        device=device, amp_dtype=autocast_dtype(device) if cuda else None, seed=seed)
    report = report_from_logits(logits, labels, data)
    if out is not None:
        report.save(out)
    return report
