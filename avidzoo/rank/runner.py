"""``avidzoo rank``: every weight asked for, on the user's own labelled media, in one report.

For each weight (a registry name or anything :func:`avidzoo.from_pretrained` reads; one that cannot be had is listed
as skipped) and its towers asked for: features through the extraction engine in one pass, written under
``OUT/features/<weight>/`` (extraction stores: ``files`` for whole files, ``segments-<fingerprint>`` for a CSV's
start/end rows; cached, resumed after a kill); then, on the frozen features,
each protocol of :mod:`avidzoo.rank.probes` over the same repeated folds, few-shot curves and LogME, kept under
``OUT/results`` so that a rerun redoes only what is missing. Audio and video of one weight are also scored fused
(each tower's features L2-normalised, then concatenated). :func:`avidzoo.rank.stats.paired_bootstrap` then compares
the weights of each modality and protocol on the same items, and :func:`avidzoo.rank.report.write_report` writes
``rank.csv``, ``rank.json``, ``report.md`` and the plots.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .._files import write_text_atomic
from ..datasets import DatasetError, LabelledMedia, open_dataset
from ..extract import FeatureExtractor, load_features
from ..factory import create_transforms, from_pretrained, list_models
from .logme import logme
from .probes import KNN_K, cross_validate, few_shot
from .report import write_report
from .stats import mean_interval, paired_bootstrap, per_class_recall

__all__ = ["RankReport", "rank"]

log = logging.getLogger("avidzoo")

MODALITIES = ("video", "audio")
PROTOCOLS = tuple(f"knn{k}" for k in KNN_K) + ("logistic",)


@dataclass
class RankReport:
    """What :func:`rank` wrote (``files``: the report's paths) and found: ``rows`` (one per weight x modality x
    protocol), ``best`` (``{"modality", "weights"}``: the best weight under the logistic probe and those tied with
    it), ``skipped`` weights and ``failed`` items with the reasons."""

    rows: list[dict[str, Any]]
    best: dict[str, Any]
    files: dict[str, Path]
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def _slug(source: str) -> str:
    """A folder name for a weight: its registry name, or a path's name with a short hash of the whole."""
    if re.fullmatch(r"[\w.\-]+", source):
        return source
    tail = re.sub(r"[^\w.\-]+", "_", Path(source.rstrip("/")).name or "weights")[-40:]
    return f"{tail}-{hashlib.sha1(source.encode()).hexdigest()[:8]}"


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, flush=True)


def _weights_asked(weights: Sequence[str]) -> list[str]:
    out: list[str] = []
    for w in weights:
        names = list_models(pretrained=True) if w == "all" else [w]
        out += [n for n in names if n not in out]
    return out


def _forward_ms(model, tower: str, device: torch.device) -> float:
    """Milliseconds one clip takes through ``tower`` on ``device`` (a zero batch of 2 after a warm-up): the basis of
    the estimate printed before the work starts."""
    t = create_transforms(model)
    if tower == "video":
        v = t.video
        x = torch.zeros(2, 3, int(model.config["preprocessing"]["video"]["num_frames"]), v.crop_size, v.crop_size)
    else:
        x = t.audio(torch.zeros(2, 1, t.audio.num_samples))
    x = x.to(device)
    encode = getattr(model, f"encode_{tower}")
    times = []
    with torch.inference_mode():
        for _ in range(3):  # the first is a warm-up
            start = time.perf_counter()
            encode(x)
            times.append(time.perf_counter() - start)
    return min(times[1:]) * 1000 / 2


def _features(model, source: str, towers: list[str], data: LabelledMedia, folder: Path, *, clips: int, device,
              num_workers, progress: bool) -> tuple[dict[str, dict[int, torch.Tensor]], dict[str, str], float | None]:
    """``({tower: {item: (D,)}}, failed, ms per clip)`` of a weight's ``towers`` over ``data``'s items, in one pass
    per kind (each file decoded once for all towers) through extraction stores under ``folder``, where an
    interrupted run resumes: whole files with ``clips`` clips each (``folder/files``), and items with a start and
    end as annotated segments with ``clips`` clips inside each (``folder/segments-<fingerprint of them>``, a file
    named by several items decoded once). The time per clip is the first complete run's, all towers
    together."""
    timing = folder / "rank_timing.json"
    whole = [i for i, seg in enumerate(data.segments) if seg == (None, None)]
    cut = {}
    for i, (a, b) in enumerate(data.segments):
        if (a, b) != (None, None):
            cut.setdefault(str(data.paths[i]), []).append({"start": a, "end": b, "id": str(i), "label": None})
    feats: dict[str, dict[int, torch.Tensor]] = {t: {} for t in towers}
    failed: dict[str, str] = {}
    start, done = time.perf_counter(), 0
    # the segments' store is named by what it holds: its rows are found by item number, which another data set reuses
    cut_store = f"segments-{_fingerprint(cut)}"
    for kind, inputs in (("files", [str(data.paths[i]) for i in whole]), (cut_store, list(cut))):
        if not inputs:
            continue
        extractor = FeatureExtractor(model, modalities=tuple(towers), clips_per_video=clips, clip_agg="mean",
                                     segments=cut if kind == cut_store else None, device=device,
                                     num_workers=num_workers, progress=None if progress else False)
        extractor.extract(inputs, out=folder / kind)
        result = load_features(folder / kind)
        if kind == "files":
            row = {p: r for r, p in enumerate(result.paths)}
            keys = [(i, row.get(str(data.paths[i]))) for i in whole]
        else:
            row = {seg["id"]: r for r, seg in enumerate(result.segments or [])}
            keys = [(int(k), r) for k, r in row.items()]
        for t in towers:
            feats[t].update({i: result[t][r] for i, r in keys if r is not None})
        failed.update(result.failed)
        done += sum(r is not None for _, r in keys)
    ms = None
    if timing.is_file():
        ms = json.loads(timing.read_text()).get("ms_per_clip")
    elif done:
        ms = (time.perf_counter() - start) * 1000 / (done * clips)
        write_text_atomic(timing, json.dumps({"ms_per_clip": ms, "source": source, "towers": towers}))
    return feats, failed, ms


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _scores(x: torch.Tensor, y: torch.Tensor, groups, settings: dict, cache: Path, key: str,
            source: str) -> dict[str, Any]:
    """The protocols' out-of-fold predictions, few-shot episodes and LogME of one feature set, kept in ``cache``
    under a fingerprint of the features and settings (a rerun reuses them; anything changed is redone)."""
    digest = _fingerprint(hashlib.sha256(x.double().numpy().tobytes()).hexdigest(), y.tolist(), groups, settings)
    path = cache / f"{key}.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("fingerprint") == digest:
            saved["preds"] = {k: torch.tensor(v) for k, v in saved["preds"].items()}
            return saved
    preds, info = cross_validate(x, y, groups, folds=settings["folds"], repeats=settings["repeats"],
                                 seed=settings["seed"], source=source, warn=False)
    curves = few_shot(x, y, settings["shots"], episodes=settings["episodes"], seed=settings["seed"])
    out = {"fingerprint": digest, "preds": preds, "logistic_C": info["logistic_C"],
           "few_shot": {str(n): list(mean_interval(v)) for n, v in curves.items()}, "logme": logme(x, y)}
    write_text_atomic(path, json.dumps({**out, "preds": {k: v.tolist() for k, v in preds.items()}}))
    return out


def _next_command(best: str, modality: str, data: str, has_folds: bool) -> str:
    """What to run next with the winner: finetuning for a video (or fused) one; for an audio one, whose tower
    avidzoo does not finetune, its linear probe over the data's folds, or its features for a classifier of one's own."""
    if modality != "audio":
        return f"avidzoo finetune --model {best} --train {data} --out runs/{_slug(best)}"
    if has_folds:
        return f"avidzoo linear-probe --model {best} --train {data} --modality audio"
    return f"avidzoo extract {data} --model {best} --modalities audio --out features/{_slug(best)}"


def rank(
    data: LabelledMedia | str | os.PathLike,
    weights: Sequence[str] = ("all",),
    *,
    modality: str = "both",
    out: str | os.PathLike = "rank",
    folds: int = 5,
    repeats: int = 3,
    seed: int = 0,
    shots: Sequence[int] = (1, 5, 10),
    episodes: int = 100,
    clips: int = 5,
    bootstrap: int = 2000,
    device: str | torch.device | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    data_spec: str | None = None,
) -> RankReport:
    """Rank ``weights`` (registry names, ``"all"``, or any source :func:`avidzoo.from_pretrained` reads) on the
    labelled media ``data`` (a :class:`LabelledMedia`, a class folder, a CSV with optional ``start,end`` (a row
    with both is that segment) and ``group`` columns, or split files as :func:`avidzoo.datasets.open_dataset` reads
    them), for ``modality`` ``"video"``, ``"audio"`` or
    ``"both"`` (each tower, and the two fused). Writes the report into ``out`` and returns it.

    ``folds`` x ``repeats``: the stratified (group-aware) cross-validation of every protocol; ``shots`` and
    ``episodes``: the few-shot curves; ``clips``: clips per file, their features averaged; ``bootstrap``: resamples
    for the intervals and the ties. ``data_spec``: how the data is named in the suggested next command."""
    if modality not in ("video", "audio", "both"):
        raise ValueError(f"modality must be 'video', 'audio' or 'both', got {modality!r}")
    towers = MODALITIES if modality == "both" else (modality,)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if not isinstance(data, LabelledMedia):
        data_spec = data_spec or os.fspath(data)
        data = open_dataset(data)
    data_spec = data_spec or data.source
    half = next((i for i, (a, b) in enumerate(data.segments) if (a is None) != (b is None)), None)
    if half is not None:
        raise DatasetError(f"{data.source}: item {half} ({data.paths[half]}) has a start or an end but not both; give "
                           "both (a segment) or neither (the whole file)")
    if data.num_classes < 2:
        raise DatasetError(f"{data.source}: ranking needs at least 2 classes, found {data.num_classes}")
    counts = data.counts()
    small = [data.classes[c] for c, n in enumerate(counts) if n < 2]
    if small:
        raise DatasetError(f"{data.source}: class {small[0]!r} has {counts[data.classes.index(small[0])]} item(s); "
                           "cross-validation needs at least 2 per class")
    few = [f"{data.classes[c]!r} ({n})" for c, n in enumerate(counts) if n < folds]
    if few:
        warnings.warn(f"{data.source}: classes {', '.join(few)} have fewer items than the {folds} folds; some folds "
                      "test them without training on them", stacklevel=2)
    paths = [str(p) for p in data.paths]
    settings = {"folds": folds, "repeats": repeats, "seed": seed, "shots": list(shots), "episodes": episodes,
                "clips": clips}

    # Features, weight by weight (each loaded once, its towers extracted into the store)
    asked = _weights_asked(weights)
    skipped: dict[str, str] = {}
    feats: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    timing: dict[str, float | None] = {}
    published: dict[str, dict] = {}
    failed: dict[str, str] = {}
    estimate_said = False
    for i, source in enumerate(asked):
        try:
            model = from_pretrained(source, device=device)
        except Exception as e:  # a weight that cannot be had is listed, not fatal
            skipped[source] = f"{type(e).__name__}: {e}".splitlines()[0]
            _say(progress, f"[{i + 1}/{len(asked)}] {source}: skipped ({skipped[source]})")
            continue
        have = [t for t in towers if t in model.modalities]
        if not have:
            skipped[source] = f"no {' or '.join(towers)} tower (it has {', '.join(model.modalities)})"
            _say(progress, f"[{i + 1}/{len(asked)}] {source}: skipped ({skipped[source]})")
            continue
        published[source] = dict(model.config.get("metrics") or {})
        dev = next(model.parameters()).device
        if not estimate_said:
            per_clip = sum(_forward_ms(model, t, dev) for t in have) / len(have)
            total = len(paths) * clips * len(asked) * len(towers) * per_clip / 1000
            _say(progress, f"rank: {len(asked)} weight(s) x {len(towers)} tower(s) over {len(paths)} items of "
                 f"{data.num_classes} classes, {clips} clip(s) each; about {total / 60:.1f} min of model time on "
                 f"{dev} ({per_clip:.0f} ms per clip; decoding adds to it, features already extracted are reused)")
            estimate_said = True
        _say(progress, f"[{i + 1}/{len(asked)}] {source}: {' and '.join(have)} features")
        f, bad, ms = _features(model, source, have, data, out / "features" / _slug(source), clips=clips,
                               device=device, num_workers=num_workers, progress=progress)
        for t in have:
            feats[(source, t)] = f[t]
        timing[source] = ms
        failed.update(bad)
        del model
    if not feats:
        raise DatasetError(f"no weight could be ranked: {json.dumps(skipped)}")

    # The items every feature set has, so that the comparison is paired
    common = [i for i in range(len(paths)) if all(i in f for f in feats.values())]
    if len(common) < len(paths):
        _say(progress, f"rank: {len(paths) - len(common)} item(s) could not be read by every weight and are left out "
             f"(listed in the report)")
    y = torch.tensor([data.labels[i] for i in common])
    groups = [data.groups[i] for i in common]
    groups = groups if any(g is not None for g in groups) else (
        [data.folds[i] for i in common] if any(data.folds[i] is not None for i in common) else None)
    sets: dict[tuple[str, str], torch.Tensor] = {
        key: torch.stack([f[i] for i in common]).float() for key, f in feats.items()}
    if modality == "both":
        for source in dict.fromkeys(s for s, _ in feats):
            if (source, "video") in sets and (source, "audio") in sets:
                sets[(source, "fused")] = torch.cat([F.normalize(sets[(source, m)], dim=1) for m in MODALITIES], 1)

    # Scores of each feature set, then the comparison
    results = {}
    for n, (source, mod) in enumerate(sets):
        _say(progress, f"rank: scoring {source} {mod} ({n + 1}/{len(sets)})")
        results[(source, mod)] = _scores(sets[(source, mod)], y, groups, settings, out / "results",
                                         f"{_slug(source)}-{mod}", data.source)
    num_classes = data.num_classes
    rows: list[dict[str, Any]] = []
    best: dict[str, Any] = {}
    notes: list[str] = []
    for mod in ("video", "audio", "fused"):
        keys = [k for k in results if k[1] == mod]
        if not keys:
            continue
        for proto in PROTOCOLS:
            stats = paired_bootstrap({s: results[(s, m)]["preds"][proto] for s, m in keys}, y, num_classes,
                                     groups=groups, draws=bootstrap, seed=seed)
            for s, m in keys:
                params = {"k": int(proto[3:])} if proto.startswith("knn") else \
                    {"C": sorted(set(results[(s, m)]["logistic_C"]))}
                rows.append({"weight": s, "modality": m, "protocol": proto, **stats[s], "params": params,
                             "extract_ms_per_clip": timing.get(s), "published": published.get(s, {})})
            if proto == "logistic":
                top = stats[keys[0][0]]["best"]
                tied = sorted((s for s, _ in keys if stats[s]["tied"]), key=lambda s: -stats[s]["score"])
                if not best or stats[top]["score"] > best["score"]:
                    best = {"modality": mod, "weights": tied, "score": stats[top]["score"]}
                by_logme = max(keys, key=lambda k: results[k]["logme"])[0]
                if len(keys) > 1 and by_logme not in tied:
                    notes.append(f"{mod}: LogME ranks {by_logme} first, but the logistic probe measures {top} best "
                                 f"and {by_logme} is not tied with it; trust the measured accuracy")
        for s, m in keys:
            rows.append({"weight": s, "modality": m, "protocol": "logme", "score": results[(s, m)]["logme"],
                         "low": None, "high": None, "tied": None, "best": None, "diff": None, "diff_low": None,
                         "diff_high": None, "p_not_worse": None, "params": {}, "extract_ms_per_clip": timing.get(s),
                         "published": published.get(s, {})})
    curves = {f"{s}|{m}": {int(n): v for n, v in r["few_shot"].items()} for (s, m), r in results.items()}
    recalls = {}
    for (s, m), r in results.items():
        per_repeat = [per_class_recall(p, y, num_classes) for p in r["preds"]["logistic"]]
        recalls[f"{s}|{m}"] = [math.nan if any(math.isnan(v[c]) for v in per_repeat) else
                               sum(v[c] for v in per_repeat) / len(per_repeat) for c in range(num_classes)]
    lost = {paths[i]: "not read by every weight" for i in range(len(paths)) if i not in set(common)}
    failed = {**lost, **failed}
    context = {"data": data.source, "items": len(common), "classes": num_classes, "folds": folds, "repeats": repeats,
               "seed": seed, "episodes": episodes, "clips": clips, "elapsed_s": time.perf_counter() - started,
               "skipped": skipped, "failed_items": failed, "best": {k: best[k] for k in ("modality", "weights")},
               "finetune_command": _next_command(best["weights"][0], best["modality"], data_spec,
                                                 any(f is not None for f in data.folds)),
               "notes": notes, "groups": groups is not None}
    files = write_report(out, rows, curves, recalls, list(data.classes), context)
    _say(progress, f"rank: best {best['modality']}: {', '.join(best['weights'])} "
         f"({best['score'] * 100:.1f}% balanced accuracy); report in {files['markdown']}")
    return RankReport(rows=rows, best=context["best"], files=files, skipped=skipped, failed=failed)
