"""The pretraining loop: ``avidzoo pretrain`` and :func:`pretrain`.

A run folder holds ``training_config.json`` (the full training config), ``metrics.csv`` (one row per logged step and per
epoch), ``checkpoints/epoch-NNN/`` (the model as ``save_pretrained`` writes it, plus ``training_state.pt``: optimizer,
loss state with the memory banks, epoch; loadable with ``weights_only=True``) and ``model/``, the latest model, which
``avidzoo.from_pretrained(RUN_DIR)`` loads.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .._files import write_text_atomic
from ..convert import read_original_checkpoint, torch_load_safely
from ..factory import create_model, create_transforms, from_pretrained
from ..io import find_media
from ..io.colour import preset_colour
from ..io.inputs import readable_media
from ..manifest import get_manifest
from ..transforms import clip_seconds
from .data import AVPairDataset, GlobalBatchSampler
from .distributed import all_reduce_mean, convert_global_batchnorm
from .guard import StepGuard
from .losses import build_criterion
from .runs import (
    RunLogger,
    RunOptions,
    amp_settings,
    read_config_file,
    resume_checkpoint,
    save_checkpoint,
    start_run,
)

log = logging.getLogger("avidzoo")

__all__ = ["PretrainConfig", "pretrain", "load_config"]


@dataclass
class PretrainConfig(RunOptions):
    """Everything a pretraining run needs. ``recipe`` fills the method's settings from the manifest; any field
    given explicitly overrides it. ``video``/``audio`` override preprocessing (e.g. ``{"crop_size": 112}``)."""

    data: str | list[str] = ""
    out: str = "runs/avid"
    recipe: str | None = None
    model: str | None = None
    video_depth: int | None = None
    val_data: str | list[str] | None = None
    val_fraction: float = 0.1
    epochs: int | None = None
    batch_size: int | None = None
    clips_per_video: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    max_offsync: float | None = None
    loss: dict[str, Any] = field(default_factory=dict)
    init: str | None = None
    video: dict[str, Any] = field(default_factory=dict)
    audio: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> PretrainConfig:
        """A copy with the recipe's values filled in where this config leaves them unset."""
        cfg = copy.deepcopy(self)
        recipes = get_manifest().data["recipes"]
        if cfg.recipe is not None:
            if cfg.recipe not in recipes or cfg.recipe == "about":
                names = ", ".join(k for k in recipes if k != "about")
                raise ValueError(f"unknown recipe {cfg.recipe!r}; one of {names}")
            r = recipes[cfg.recipe]
            cfg.model = cfg.model or r["model"]
            cfg.loss = {**r["loss"], **cfg.loss}
            for name in ("epochs", "batch_size", "clips_per_video", "max_offsync", "init"):
                if getattr(cfg, name) is None:
                    setattr(cfg, name, r[name])
            cfg.lr = cfg.lr if cfg.lr is not None else r["optimizer"]["lr"]
            cfg.weight_decay = cfg.weight_decay if cfg.weight_decay is not None else r["optimizer"]["weight_decay"]
        defaults = {"model": "cross_avid_r2plus1d", "epochs": 30, "batch_size": 64, "clips_per_video": 10,
                    "max_offsync": 0.5, "lr": 2e-4, "weight_decay": 1e-5}
        for name, value in defaults.items():
            if getattr(cfg, name) is None:
                setattr(cfg, name, value)
        cfg.loss = cfg.loss or {"name": "avid"}
        if not cfg.data:
            raise ValueError("no training data: set `data` (a folder, glob or list of videos)")
        return cfg


def load_config(path: str | os.PathLike, **overrides: Any) -> PretrainConfig:
    """A :class:`PretrainConfig` from a YAML or JSON file, with keyword overrides (``None`` values ignored)."""
    return PretrainConfig(**read_config_file(path, PretrainConfig, overrides))


# -- helpers -----------------------------------------------------------------------------------------------------------
@torch.no_grad()
def retrieval_top1(model, dataset: AVPairDataset, device: torch.device, batch_size: int = 32) -> float:
    """Video-to-audio retrieval top-1 among held-out clips (projected embeddings, cosine); chance is 1/N."""
    was_training = model.training
    model.eval()
    vs, as_ = [], []
    for s in range(0, len(dataset), batch_size):
        items = [dataset[k] for k in range(s, min(s + batch_size, len(dataset)))]
        v = torch.stack([it[0] for it in items]).to(device)
        a = torch.stack([it[1] for it in items]).to(device)
        ev, ea = model(video=v, audio=a)
        vs.append(F.normalize(ev.float(), dim=1).cpu())
        as_.append(F.normalize(ea.float(), dim=1).cpu())
    model.train(was_training)
    sim = torch.cat(vs) @ torch.cat(as_).T
    return float((sim.argmax(1) == torch.arange(len(sim))).float().mean())


def _init_from(model, criterion, source: str) -> None:
    """Initialise from released weights (model) and, for an original checkpoint, its memory banks and Z."""
    path = Path(source)
    if path.is_file() and path.suffix in (".tar", ".pth", ".pt"):
        state = read_original_checkpoint(path)
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("classifier.")})
        raw = torch_load_safely(path)
        if isinstance(raw, Mapping) and "train_criterion" in raw and hasattr(criterion, "load_original_state"):
            criterion.load_original_state(raw["train_criterion"])
        return
    loaded = from_pretrained(source)
    model.load_state_dict(loaded.state_dict())


# -- the loop ----------------------------------------------------------------------------------------------------------
def pretrain(config: PretrainConfig) -> Path:
    """Run (or with ``config.resume``, continue) pretraining; returns the run folder. Works under torchrun."""
    cfg = config.resolved()
    rank, world, device, run = start_run(cfg)

    paths, failed = readable_media(find_media(cfg.data))
    for p, err in failed.items():
        log.warning("skipping %s: %s", p, err)
    if cfg.val_data:
        val_paths, _ = readable_media(find_media(cfg.val_data))
        train_paths = paths
    else:
        n_val = max(2, int(round(len(paths) * cfg.val_fraction))) if cfg.val_fraction > 0 else 0
        g = torch.Generator().manual_seed(cfg.seed)
        perm = torch.randperm(len(paths), generator=g).tolist()
        val_paths = [paths[i] for i in sorted(perm[:n_val])]
        train_paths = [paths[i] for i in sorted(perm[n_val:])]
    if len(train_paths) < 2:
        raise ValueError(f"{cfg.data}: {len(train_paths)} readable training videos; at least 2 are needed")

    model = create_model(cfg.model, video_depth=cfg.video_depth)
    pre = model.config["preprocessing"]
    pre["video"].update(cfg.video)
    preset_colour(pre["video"])  # an unknown colour rule is refused before any work; the saved config records it
    pre["audio"].update(cfg.audio)
    if "num_frames" in cfg.video or "fps" in cfg.video:
        pre["video"]["clip_duration"] = clip_seconds(pre["video"], "video")
    if "clip_duration" in cfg.audio and "num_frames" not in cfg.audio:
        pre["audio"]["num_frames"] = int(round(cfg.audio["clip_duration"] * 100))
    training = dataclasses.asdict(cfg)
    training["train_videos"], training["val_videos"], training["world_size"] = len(train_paths), len(val_paths), world
    # Weights trained from released ones inherit their license; from scratch, the user's data decides.
    model.update_config(preprocessing=pre, training=training, weights=None,
                        license="CC-BY-NC-4.0" if cfg.init else None)
    criterion = build_criterion(cfg.loss["name"], len(train_paths), model.embed_dim, cfg.loss, seed=cfg.seed)
    if cfg.init and not cfg.resume:
        _init_from(model, criterion, cfg.init)
    model.to(device)
    criterion.to(device)
    train_tf, val_tf = create_transforms(model, train=True), create_transforms(model)
    dataset = AVPairDataset(train_paths, train_tf, clips_per_video=cfg.clips_per_video,
                            max_offsync=cfg.max_offsync, seed=cfg.seed)
    val_set = AVPairDataset(val_paths, val_tf, train=False, seed=cfg.seed) if val_paths else None
    sampler = GlobalBatchSampler(len(dataset), cfg.batch_size, rank=rank, world=world, seed=cfg.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.num_workers,
                                         pin_memory=device.type == "cuda",
                                         persistent_workers=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, skipped = 0, 0
    if cfg.resume and (state := resume_checkpoint(run, model, device)) is not None:
        optimizer.load_state_dict(state["optimizer"])
        criterion.load_state_dict(state["criterion"])
        start, skipped = int(state["epoch"]) + 1, int(state.get("skipped_steps", 0))
        if rank == 0:
            log.warning("resuming %s after epoch %d", run, start - 1)
    net = model
    if world > 1:
        # GlobalBatchNorm's running statistics come from the global batch and are identical on every rank, so DDP's
        # buffer broadcast is redundant (one collective per step saved).
        net = torch.nn.parallel.DistributedDataParallel(
            convert_global_batchnorm(model), device_ids=[device.index] if device.type == "cuda" else None,
            broadcast_buffers=False)
    if rank == 0:
        write_text_atomic(run / "training_config.json", json.dumps(training, indent=2) + "\n")
    logger = RunLogger(run, rank == 0)
    precision = amp_settings(cfg.amp, device)
    # The memory banks and Z change only when the guard accepts a step.
    criterion.defer_updates = True
    guard = StepGuard(model, optimizer, precision.scaler, amp=precision.name, max_bad_steps=cfg.max_bad_steps,
                      pending=[criterion], skipped=skipped)
    step = start * len(sampler)
    for epoch in range(start, cfg.epochs):
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        criterion.set_epoch(epoch)
        net.train()
        t0, sums, count = time.perf_counter(), {}, 0
        for video, audio, idx in loader:
            video, audio = video.to(device, non_blocking=True), audio.to(device, non_blocking=True)
            idx = torch.as_tensor(idx, device=device)

            def forward(video=video, audio=audio, idx=idx):
                with torch.autocast(device.type, dtype=precision.dtype, enabled=precision.enabled):
                    ev, ea = net(video=video, audio=audio)
                return criterion(ev.float(), ea.float(), idx)

            step += 1
            applied, grad_norm, loss, parts = guard.run(forward, step=step, epoch=epoch)
            values = {"loss": float(all_reduce_mean(loss.detach().float())), "grad_norm": grad_norm}
            values.update({k: float(all_reduce_mean(torch.tensor(v))) for k, v in parts.items()})
            if applied:  # epoch means cover the applied steps
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
            values["skipped_steps"] = guard.skipped
            if step % cfg.log_every == 0 or not applied:
                logger.write({"epoch": epoch, "step": step, "kind": "train", "values": values})
        summary = {k: v / max(count, 1) for k, v in sums.items()}
        summary["skipped_steps"] = guard.skipped
        if val_set is not None and rank == 0:
            summary["val_retrieval_top1"] = retrieval_top1(model, val_set, device)
            summary["val_chance"] = 1.0 / len(val_set)
        summary["seconds"] = time.perf_counter() - t0
        logger.write({"epoch": epoch, "step": step, "kind": "epoch", "values": summary})
        if rank == 0:
            log.warning("epoch %d: %s", epoch, ", ".join(f"{k} {v:.4g}" for k, v in summary.items()))
            save_checkpoint(run, epoch, model, {"optimizer": optimizer.state_dict(),
                                                "criterion": criterion.state_dict(), "config": json.dumps(training),
                                                "skipped_steps": guard.skipped}, keep=cfg.keep_checkpoints)
        if world > 1:
            torch.distributed.barrier()
    return run
