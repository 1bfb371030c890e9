"""Finetuning the video encoder for action recognition: ``avidzoo finetune`` and :func:`finetune`.

AVID's protocol (manifest ``protocols.finetune.avid``): Dropout(0.5) + Linear on the pooled 512-d features;
``warmup_epochs`` that train only the classifier (BatchNorm statistics still update), then ``epochs`` over the whole
network with Adam and a MultiStepLR whose milestones count from the end of the warm-up. Training clips get
RandomResizedCrop + flip + colour jitter. CrissCross's weights default to CrissCross's protocol (SGD, max pooling,
an orthogonal Linear head, grayscale and cutout added, no warm-up), GDT's to GDT's (SGD with the classifier at ten
times the encoder's learning rate, GDT's learning-rate warm-up, 32-frame clips cropped to 128 px, its colour jitter
on normalised frames, 3 spatial crops at test); ``protocol`` chooses any of them for any weights.

A run folder holds ``training_config.json``, ``metrics.csv`` (loss, accuracy, validation Clip@1 per epoch),
``checkpoints/epoch-NNN/`` (model + ``training_state.pt``, loadable with ``weights_only=True``), ``model/`` (latest),
``best/`` (highest validation Clip@1, with its label names) and ``eval/`` (Video@1 report of ``best`` on the validation
data: ``report.json``, ``predictions.csv``, ``confusion.png``).
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .._files import write_text_atomic
from ..config import weights_protocol
from ..datasets import DatasetError, LabelledClips, LabelledMedia, open_dataset
from ..evaluate import predict_clips, report_from_logits
from ..factory import create_model, create_transforms, from_pretrained
from ..manifest import get_manifest
from ..transforms import clip_seconds
from .data import GlobalBatchSampler
from .guard import StepGuard
from .runs import (
    RunLogger,
    RunOptions,
    amp_settings,
    export_model,
    read_config_file,
    resume_checkpoint,
    save_checkpoint,
    start_run,
)

log = logging.getLogger("avidzoo")

__all__ = ["FinetuneConfig", "finetune", "load_finetune_config", "protocol_settings", "lr_factors"]


@dataclass
class FinetuneConfig(RunOptions):
    """A finetuning run. ``protocol`` fills every unset training value from the manifest (``protocols.finetune``)
    for the chosen clip length ``frames``: ``ucf101``, ``hmdb51`` or ``custom`` under the weights' own protocol family
    (AVID's, or CrissCross's for its weights, each with its optimizer, pooling, head and augmentation), a family
    name (``avid``, ``crisscross``), or ``family:dataset`` (:func:`protocol_settings`). The resolved name, e.g.
    ``crisscross:ucf101/audioset2m``, is recorded in ``training_config.json``. ``frames`` unset takes the clip length
    the protocol's numbers were made with (GDT: 32; AVID, CrissCross: 8).

    ``head_lr``: the classifier's learning rate where it differs from the encoder's ``lr`` (GDT). ``lr_warmup_epochs``
    with ``lr_warmup_multiplier``: GDT's warm-up, the learning rate rising linearly to ``multiplier`` times over those
    epochs, then MultiStepLR at ``milestones`` less the warm-up counted from the epoch after it (:func:`lr_factors`).

    ``train``/``val`` are :class:`~avidzoo.datasets.LabelledMedia` or strings for
    :func:`~avidzoo.datasets.open_dataset` (a class folder, a CSV, ``ucf101:SPLITS``/``hmdb51:SPLITS`` with ``root``
    and ``fold``); with an official split and no ``val``, the split's test list is the validation set.
    ``pretrained=False`` starts from random weights (``video_depth`` picks a smaller encoder, e.g. for tests);
    ``video`` overrides preprocessing keys (``crop_size``, ``resize``, ...).
    """

    model: str = "cross_avid_r2plus1d.kinetics400"
    train: Any = ""
    val: Any = None
    root: str | None = None
    fold: int = 1
    out: str = "runs/finetune"
    protocol: str | None = None
    frames: int | None = None
    pretrained: bool = True
    video_depth: int | None = None
    epochs: int | None = None
    warmup_epochs: int | None = None
    batch_size: int | None = None
    clips_per_video: int | None = None
    lr: float | None = None
    head_lr: float | None = None
    lr_warmup_epochs: int | None = None
    lr_warmup_multiplier: float | None = None
    weight_decay: float | None = None
    milestones: list[int] | None = None
    gamma: float | None = None
    test_clips: int | None = None
    optimizer: str | None = None
    momentum: float | None = None
    pool: str | None = None
    dropout: float | None = None
    classifier_init: str | None = None
    video: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> FinetuneConfig:
        cfg = copy.copy(self)
        settings, cfg.protocol = protocol_settings(cfg.protocol, weights_protocol(cfg.model), cfg.train, cfg.frames)
        cfg.frames = settings["frames"]
        for name in ("epochs", "warmup_epochs", "lr", "head_lr", "lr_warmup_epochs", "lr_warmup_multiplier",
                     "weight_decay", "milestones", "gamma", "test_clips", "batch_size", "clips_per_video", "optimizer",
                     "momentum", "pool", "dropout", "classifier_init"):
            if getattr(cfg, name) is None:
                setattr(cfg, name, settings.get(name))
        augment = {k: settings[k] for k in ("crop_scale", "color_jitter", "grayscale", "cutout", "jitter_p")
                   if settings.get(k)}
        if settings.get("augment_style"):
            augment["style"] = settings["augment_style"]
        views = {k: settings[k] for k in ("crop_size", "resize", "test_crops") if settings.get(k)}  # GDT's 128 px
        cfg.video = {**views, **cfg.video, "train": {**augment, **cfg.video.get("train", {})}}
        if not cfg.train:
            raise ValueError("no training data: set `train` (a class folder, a CSV or ucf101:/hmdb51: splits)")
        return cfg


def protocol_settings(protocol: str | None, weights_protocol: str, train: Any,
                      frames: int | None) -> tuple[dict, str]:
    """The finetuning settings of ``protocol`` for clips of ``frames`` frames (``None``: the family's
    ``default_frames``, else 8; ``settings["frames"]`` says which), and the protocol's full name.

    ``protocol``: a dataset (``ucf101``, ``hmdb51``, ``custom``) under the weights' own family, a family
    (``avid``, ``crisscross``) for the training data's dataset, ``family:dataset``, or ``None`` for the weights' family
    and the training data's dataset (``custom`` unless an official split). A family without a reproduced protocol
    (VMZ's, for XDC) falls back to ``avid``, with a warning."""
    families = get_manifest().data["protocols"]["finetune"]
    own, _, variant = weights_protocol.partition("/")
    family, _, dataset = (protocol or "").rpartition(":") if ":" in (protocol or "") else ("", "", protocol or "")
    if dataset in families and dataset != "about":
        family, dataset = dataset, ""
    if not family:
        family = own
        if family not in families:
            log.warning("the published numbers of these weights come from their authors' own finetuning (%s), "
                        "which avidzoo does not reproduce; finetuning with AVID's protocol", family)
            family = "avid"
    if family not in families or family == "about":
        names = ", ".join(k for k in families if k != "about")
        raise ValueError(f"unknown protocol family {family!r}; one of {names}")
    fam = families[family]
    dataset = dataset or _official_split(train) or "custom"
    datasets = [k for k, v in fam.items() if k in ("ucf101", "hmdb51", "custom")]
    if dataset not in datasets:
        raise ValueError(f"unknown protocol {dataset!r} in family {family!r}; one of {', '.join(datasets)}")
    entry = fam[dataset]
    entry = fam[entry] if isinstance(entry, str) else entry  # "custom": "ucf101"
    if family != own:
        variant = ""
    variant = variant or fam.get("default_variant", "")
    frames = frames or int(fam.get("default_frames", 8))
    levels = [fam, entry] + ([entry[variant]] if variant in entry else [])
    settings: dict[str, Any] = {}
    for level in levels:
        settings.update({k: v for k, v in level.items() if not isinstance(v, dict) and k not in ("about", "frames")})
        by_length = level.get("frames", {})
        settings.update(by_length.get(str(frames), by_length.get("8", {})))
    settings["frames"] = frames
    return settings, f"{family}:{dataset}" + (f"/{variant}" if variant in entry else "")


def _official_split(spec: Any) -> str | None:
    """``"ucf101"`` / ``"hmdb51"`` when ``spec`` names that benchmark's split files (``ucf101:SPLITS``), else None."""
    kind = os.fspath(spec).partition(":")[0] if isinstance(spec, (str, os.PathLike)) else None
    return kind if kind in ("ucf101", "hmdb51") else None


def _open(spec: Any, cfg: FinetuneConfig, subset: str) -> LabelledMedia:
    return spec if isinstance(spec, LabelledMedia) else open_dataset(spec, root=cfg.root, fold=cfg.fold, subset=subset)


def _build_model(cfg: FinetuneConfig, classes: list[str]):
    if cfg.pretrained:
        model = from_pretrained(cfg.model, modalities=("video",))
    else:
        model = create_model(cfg.model, modalities=("video",), video_depth=cfg.video_depth)
    if cfg.pool:  # e.g. CrissCross finetunes with max pooling where its pretraining averaged
        model.set_pool("video", cfg.pool)
    if model.classifier is None or model.label_names != classes:  # a new head unless continuing on the same labels
        model.reset_classifier(len(classes), classes, dropout=cfg.dropout, init=cfg.classifier_init)
    preprocessing = model.config["preprocessing"]
    pre = preprocessing["video"]
    train_aug = {**pre.get("train", {}), **cfg.video.get("train", {})}
    pre.update({k: v for k, v in cfg.video.items() if k != "train"}, train=train_aug, num_frames=cfg.frames)
    pre["clip_duration"] = clip_seconds(pre, "video")
    model.update_config(preprocessing=preprocessing)
    return model


def _phase_params(model, epoch: int, cfg: FinetuneConfig) -> tuple[str, list[torch.nn.Parameter]]:
    """Warm-up trains the classifier alone; afterwards the encoder too. The pretraining projection head, which a
    classifier does not use, stays frozen (DDP would otherwise wait for its gradients)."""
    warm = epoch < cfg.warmup_epochs
    model.requires_grad_(False)
    model.classifier.requires_grad_(True)
    model.video_encoder.requires_grad_(not warm)
    return ("warmup" if warm else "full"), [p for p in model.parameters() if p.requires_grad]


def _param_groups(model, params: list[torch.nn.Parameter], cfg: FinetuneConfig) -> list[dict]:
    """One group at ``lr``, or with ``head_lr`` the classifier's parameters first at ``head_lr`` and the rest at
    ``lr`` (GDT's two groups; the logged ``lr`` is the first group's)."""
    if not cfg.head_lr or cfg.head_lr == cfg.lr:
        return [{"params": params}]
    head = {id(p) for p in model.classifier.parameters()}
    groups = [{"params": [p for p in params if id(p) in head], "lr": cfg.head_lr},
              {"params": [p for p in params if id(p) not in head], "lr": cfg.lr}]
    return [g for g in groups if g["params"]]


def lr_factors(epochs: int, milestones: list[int], gamma: float, warmup_epochs: int, multiplier: float) -> list[float]:
    """Per-epoch learning-rate factors of GDT's schedule: ``GradualWarmupScheduler(multiplier, warmup_epochs)``
    wrapping ``MultiStepLR(milestones - warmup_epochs, gamma)``, stepped after each epoch as GDT's
    ``eval_video.py`` stepped them under PyTorch 1.3 (closed-form MultiStepLR). Epoch ``e`` of the warm-up trains at
    ``1 + (multiplier - 1) e / warmup_epochs``; from then on ``multiplier * gamma ** k``, where ``k`` counts the
    milestones the wrapped scheduler has passed, its own epoch count starting at 0 one epoch after the warm-up ends.
    GDT's settings give 1, 4.5, 8, 8, 8, 8, 8, 0.4, 0.4, 0.4, 0.4, 0.02 over 12 epochs."""
    shifted = sorted(m - warmup_epochs for m in milestones)
    factors = []
    for e in range(epochs):
        if e <= warmup_epochs:
            factors.append(1.0 + (multiplier - 1.0) * e / warmup_epochs)
        else:
            factors.append(multiplier * gamma ** bisect.bisect_right(shifted, e - warmup_epochs - 1))
    return factors


def finetune(config: FinetuneConfig) -> Path:
    """Run (or with ``config.resume``, continue) finetuning; returns the run folder. Works under torchrun."""
    cfg = config.resolved()
    rank, world, device, run = start_run(cfg)

    # Every file is checked before the first step, so that a broken video is reported now, not mid-epoch.
    train_data = _open(cfg.train, cfg, "train").readable()
    val_spec = cfg.val if cfg.val is not None else (cfg.train if _official_split(cfg.train) else None)
    val_data = _open(val_spec, cfg, "test").with_classes(train_data.classes).readable() if val_spec else None
    skipped = {**train_data.skipped, **(val_data.skipped if val_data else {})}
    for path, err in skipped.items():
        log.warning("skipping %s: %s", path, err)
    empty = [c for c, n in zip(train_data.classes, train_data.counts()) if n == 0]
    if empty:
        raise DatasetError(f"{train_data.source}: no readable training videos for classes {empty}")

    model = _build_model(cfg, train_data.classes)
    training = {**dataclasses.asdict(cfg), "train": str(cfg.train), "val": str(val_spec) if val_spec else None,
                "classes": train_data.classes, "train_videos": len(train_data),
                "val_videos": len(val_data) if val_data else 0, "world_size": world,
                "skipped": skipped}
    model.update_config(training=training)
    model.to(device)
    train_set = LabelledClips(train_data, create_transforms(model, train=True).video,
                              clips_per_video=cfg.clips_per_video, seed=cfg.seed)
    sampler = GlobalBatchSampler(len(train_set), cfg.batch_size, rank=rank, world=world, seed=cfg.seed)
    loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.num_workers,
                                         pin_memory=device.type == "cuda")
    precision = amp_settings(cfg.amp, device)
    amp_dtype = precision.dtype if precision.enabled else None
    skipped = 0

    def make_phase(epoch: int):
        phase, params = _phase_params(model, epoch, cfg)
        groups = _param_groups(model, params, cfg)
        if cfg.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum or 0.0, weight_decay=cfg.weight_decay)
        else:
            optimizer = torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        milestones = cfg.milestones if phase == "full" else []
        if cfg.lr_warmup_epochs and phase == "full":  # GDT's warm-up, then its milestones
            factors = lr_factors(cfg.epochs, milestones, cfg.gamma, cfg.lr_warmup_epochs, cfg.lr_warmup_multiplier)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: factors[min(e, len(factors) - 1)])
        else:
            scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=cfg.gamma)
        net = model
        if world > 1:  # rebuilt per phase: DDP registers the parameters that require gradients when wrapped
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        guard = StepGuard(model, optimizer, precision.scaler, amp=precision.name, max_bad_steps=cfg.max_bad_steps,
                          skipped=skipped)
        return phase, optimizer, scheduler, net, guard

    start, best = 0, -1.0
    phase, optimizer, scheduler, net, guard = make_phase(0)
    if cfg.resume and (state := resume_checkpoint(run, model, device)) is not None:
        start, best = int(state["epoch"]) + 1, float(state["best"])
        skipped = int(state.get("skipped_steps", 0))
        phase, optimizer, scheduler, net, guard = make_phase(int(state["epoch"]))
        if state["phase"] == phase:  # else the next epoch starts a new phase with a fresh optimizer
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"].cpu())
        if rank == 0:
            log.warning("resuming %s after epoch %d", run, start - 1)
    if rank == 0:
        write_text_atomic(run / "training_config.json", json.dumps(training, indent=2) + "\n")
    logger = RunLogger(run, rank == 0)
    total = cfg.warmup_epochs + cfg.epochs
    step = start * len(sampler)
    for epoch in range(start, total):
        if (epoch < cfg.warmup_epochs) != (phase == "warmup"):
            skipped = guard.skipped
            phase, optimizer, scheduler, net, guard = make_phase(epoch)
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        net.train()
        t0, sums, count = time.perf_counter(), {"loss": 0.0, "top1": 0.0}, 0
        for video, label in loader:
            video, label = video.to(device, non_blocking=True), label.to(device, non_blocking=True)

            def forward(video=video, label=label, net=net):
                with torch.autocast(device.type, dtype=precision.dtype, enabled=precision.enabled):
                    logits = net(video=video)
                return F.cross_entropy(logits.float(), label), logits

            step += 1
            applied, _, loss, logits = guard.run(forward, step=step, epoch=epoch)
            values = {"loss": float(loss.detach()), "top1": float((logits.argmax(1) == label).float().mean()),
                      "lr": optimizer.param_groups[0]["lr"]}
            if applied:  # epoch means cover the applied steps
                sums["loss"] += values["loss"]
                sums["top1"] += values["top1"]
                count += 1
            values["skipped_steps"] = guard.skipped
            if step % cfg.log_every == 0 or not applied:
                logger.write({"epoch": epoch, "step": step, "kind": "train", "values": values})
        scheduler.step()
        summary = {k: v / max(count, 1) for k, v in sums.items()}
        summary["phase_full"] = float(phase == "full")
        summary["skipped_steps"] = guard.skipped
        if val_data is not None and rank == 0:
            logits, labels = predict_clips(model, val_data, clips=0, batch_size=cfg.batch_size, device=device,
                                           num_workers=cfg.num_workers, amp_dtype=amp_dtype,
                                           seed=cfg.seed)
            summary["val_clip_top1"] = float((logits[:, 0].argmax(-1) == labels).float().mean())
        summary["seconds"] = time.perf_counter() - t0
        logger.write({"epoch": epoch, "step": step, "kind": "epoch", "values": summary})
        if rank == 0:
            log.warning("epoch %d (%s): %s", epoch, phase, ", ".join(f"{k} {v:.4g}" for k, v in summary.items()))
            score = summary.get("val_clip_top1", float(epoch))  # without validation data, the latest is best
            if score > best:
                best = score
                export_model(model, run / "best")
            save_checkpoint(run, epoch, model, {"phase": phase, "best": best, "optimizer": optimizer.state_dict(),
                                                "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
                                                "skipped_steps": guard.skipped}, keep=cfg.keep_checkpoints)
        if world > 1:
            torch.distributed.barrier()
    if rank == 0 and val_data is not None:
        best_model = from_pretrained(run / "best").to(device)
        logits, labels = predict_clips(best_model, val_data, clips=cfg.test_clips, batch_size=cfg.batch_size,
                                       device=device, num_workers=cfg.num_workers,
                                       amp_dtype=amp_dtype, seed=cfg.seed)
        report = report_from_logits(logits, labels, val_data)
        report.save(run / "eval")
        logger.write({"epoch": total - 1, "step": step, "kind": "eval",
                      "values": {"clip_top1": report.clip_top1, "video_top1": report.video_top1}})
        log.warning("best model: Clip@1 %.4f, Video@1 %.4f (%d clips) on %d videos", report.clip_top1,
                    report.video_top1, report.clips, len(val_data))
    return run


def load_finetune_config(path: str | os.PathLike, **overrides: Any) -> FinetuneConfig:
    """A :class:`FinetuneConfig` from a YAML or JSON file, with keyword overrides (``None`` values ignored)."""
    return FinetuneConfig(**read_config_file(path, FinetuneConfig, overrides))
