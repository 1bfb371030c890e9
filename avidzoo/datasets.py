"""Labelled media for finetuning, evaluation and linear probes: folders, CSVs and the official split files.

Every constructor returns a :class:`LabelledMedia`: parallel lists of paths and integer labels, the class names
(label ``i`` is ``classes[i]``), optional ``(start, end)`` segments and cross-validation folds. Audio files work
wherever videos do (the audio linear probe reads them).

* ``VideoFolder(root)``: one sub-folder per class (searched recursively).
* ``VideoCSV(csv, root=None)``: columns ``path,label`` and optionally ``start,end`` (seconds) and ``fold``.
* ``UCF101(root, splits, fold, subset)``: ``trainlist0N.txt`` / ``testlist0N.txt`` (+ ``classInd.txt``).
* ``HMDB51(root, splits, fold, subset)``: ``<class>_test_splitN.txt`` with 1 = train, 2 = test.
* ``ESC50(root)``: ``meta/esc50.csv`` (``filename, fold, target, category``) and ``audio/``.
* :func:`open_dataset` turns a command-line string into one of these.

:class:`LabelledClips` decodes their clips for finetuning and evaluation.
"""

from __future__ import annotations

import csv
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from .errors import AvidzooError
from .io import MediaFile, find_media
from .io.colour import preset_colour
from .io.frame_rules import rule_clips
from .io.inputs import readable_media
from .io.sampling import random_start, uniform_starts
from .transforms import clip_seconds

__all__ = ["DatasetError", "LabelledMedia", "VideoFolder", "VideoCSV", "UCF101", "HMDB51", "ESC50", "open_dataset",
           "LabelledClips"]


class DatasetError(AvidzooError, ValueError):
    """A dataset description that cannot be used: the message names the file or folder and what is wrong."""


@dataclass
class LabelledMedia:
    """``paths[i]`` has label ``labels[i]`` (an index into ``classes``); ``segments[i]`` is ``(start, end)`` in
    seconds or ``(None, None)`` for the whole file; ``folds[i]`` its cross-validation fold (or ``None``).
    ``skipped`` maps files left out (unreadable) to the reason; ``groups[i]`` the item's group (clips cut from one
    video: a CSV's ``group`` column, UCF-101's ``_g08_`` in the name) or ``None``, which cross-validation keeps on
    one side of a split."""

    paths: list[Path]
    labels: list[int]
    classes: list[str]
    source: str = ""
    segments: list[tuple[float | None, float | None]] = field(default_factory=list)
    folds: list[int | None] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    groups: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.paths)
        self.segments = self.segments or [(None, None)] * n
        self.folds = self.folds or [None] * n
        self.groups = self.groups or [None] * n
        if not (len(self.labels) == len(self.segments) == len(self.folds) == len(self.groups) == n):
            raise DatasetError(f"{self.source}: paths, labels, segments, folds and groups differ in length")
        bad = [lab for lab in self.labels if not 0 <= lab < len(self.classes)]
        if bad:
            raise DatasetError(f"{self.source}: label index {bad[0]} outside the {len(self.classes)} classes")

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"LabelledMedia({self.source!r}, {len(self)} files, {len(self.classes)} classes)"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices: Sequence[int]) -> LabelledMedia:
        return replace(self, paths=[self.paths[i] for i in indices], labels=[self.labels[i] for i in indices],
                       segments=[self.segments[i] for i in indices], folds=[self.folds[i] for i in indices],
                       groups=[self.groups[i] for i in indices], skipped=dict(self.skipped))

    def fold(self, k: int) -> tuple[LabelledMedia, LabelledMedia]:
        """``(train, test)``: every other fold, and fold ``k``."""
        if k not in set(self.folds):
            known = sorted({f for f in self.folds if f is not None})
            raise DatasetError(f"{self.source}: no fold {k} (folds: {known})")
        return (self.subset([i for i, f in enumerate(self.folds) if f != k]),
                self.subset([i for i, f in enumerate(self.folds) if f == k]))

    def split(self, fraction: float = 0.2, seed: int = 0) -> tuple[LabelledMedia, LabelledMedia]:
        """``(rest, held_out)``: about ``fraction`` of every class held out (at least one file of each class with
        two or more), drawn with ``seed``."""
        rng = random.Random(seed)
        held: list[int] = []
        for c in range(len(self.classes)):
            members = [i for i, lab in enumerate(self.labels) if lab == c]
            rng.shuffle(members)
            k = min(max(1, round(fraction * len(members))), len(members) - 1) if len(members) > 1 else 0
            held += members[:k]
        chosen = set(held)
        return (self.subset([i for i in range(len(self)) if i not in chosen]), self.subset(sorted(held)))

    def with_classes(self, classes: Sequence[str]) -> LabelledMedia:
        """The same files labelled by their index in ``classes`` (a model head's label names); a class of this
        data that ``classes`` lacks is an error."""
        classes = list(classes)
        missing = sorted(set(self.classes) - set(classes))
        if missing:
            raise DatasetError(f"{self.source}: classes {missing[:5]}{' ...' if len(missing) > 5 else ''} are not "
                               f"among the model's {len(classes)} labels ({', '.join(classes[:5])}, ...)")
        index = {c: i for i, c in enumerate(classes)}
        return replace(self, labels=[index[self.classes[lab]] for lab in self.labels], classes=classes)

    def readable(self, *, need_video: bool = True) -> LabelledMedia:
        """Only the files that open (with a video stream if ``need_video``); the others go to ``skipped``.
        Checked once up front so that a bad file is reported at the start, not in the middle of an epoch."""

        good, bad = readable_media(self.paths, need_video=need_video)
        keep = {str(p) for p in good}
        out = self.subset([i for i, p in enumerate(self.paths) if str(p) in keep])
        out.skipped.update(bad)
        if not out.paths:
            raise DatasetError(f"{self.source}: none of its {len(self)} files is readable; first: "
                               f"{next(iter(bad.items()), ('', ''))}")
        return out

    def counts(self) -> list[int]:
        out = [0] * len(self.classes)
        for lab in self.labels:
            out[lab] += 1
        return out


_UCF_GROUP = re.compile(r"_(g\d+)_c\d+$")


def ucf_groups(paths: Sequence[Path]) -> list[str | None]:
    """UCF-101's groups, read off names such as ``v_ApplyEyeMakeup_g08_c01.avi`` (class and ``g08``: the clips of
    one long video); ``None`` for every file unless all names follow that pattern."""
    found = [_UCF_GROUP.search(Path(p).stem) for p in paths]
    if not paths or not all(found):
        return [None] * len(paths)
    return [f"{Path(p).parent.name}/{m.group(1)}" for p, m in zip(paths, found)]


def _natural_key(s: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def VideoFolder(root: str | os.PathLike) -> LabelledMedia:  # noqa: N802 (reads like the class users know)
    """One sub-folder per class, files found recursively inside each; classes sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    class_dirs = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                        key=lambda d: _natural_key(d.name))
    if not class_dirs:
        raise DatasetError(f"{root}: no class sub-folders (expected ROOT/<class>/<video>)")
    paths, labels = [], []
    for label, d in enumerate(class_dirs):
        try:
            files = find_media(d)
        except FileNotFoundError:
            raise DatasetError(f"{root}: class folder {d.name!r} has no media files") from None
        paths += files
        labels += [label] * len(files)
    return LabelledMedia(paths, labels, [d.name for d in class_dirs], source=str(root), groups=ucf_groups(paths))


def VideoCSV(csv_file: str | os.PathLike, root: str | os.PathLike | None = None) -> LabelledMedia:  # noqa: N802
    """Rows ``path,label[,start,end][,fold][,group]`` with a header naming the columns (``path`` and ``label``
    required; ``group``: items that must stay on one side of a split, such as clips of one video).
    Relative paths are taken from ``root`` (default: the CSV's folder); classes are the labels sorted naturally."""
    csv_file = Path(csv_file)
    base = Path(root) if root is not None else csv_file.parent
    with open(csv_file, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise DatasetError(f"{csv_file}: no rows")
    columns = {c.strip().lower(): c for c in rows[0]}
    for need in ("path", "label"):
        if need not in columns:
            raise DatasetError(f"{csv_file}: no {need!r} column (columns: {', '.join(columns)})")
    names = sorted({r[columns["label"]].strip() for r in rows}, key=_natural_key)
    index = {c: i for i, c in enumerate(names)}
    paths, labels, segments, folds, groups = [], [], [], [], []
    for line, r in enumerate(rows, start=2):
        groups.append((r[columns["group"]] or "").strip() or None if "group" in columns else None)
        p = Path(r[columns["path"]].strip())
        paths.append(p if p.is_absolute() else base / p)
        labels.append(index[r[columns["label"]].strip()])
        try:
            seg = tuple(float(r[columns[k]]) if k in columns and r[columns[k]].strip() else None
                        for k in ("start", "end"))
            folds.append(int(r[columns["fold"]]) if "fold" in columns else None)
        except ValueError as e:
            raise DatasetError(f"{csv_file}, line {line}: {e}") from None
        if seg[0] is not None and seg[1] is not None and seg[1] <= seg[0]:
            raise DatasetError(f"{csv_file}, line {line}: end {seg[1]} is not after start {seg[0]}")
        segments.append(seg)
    return LabelledMedia(paths, labels, names, source=str(csv_file), segments=segments, folds=folds,
                         groups=groups if any(g is not None for g in groups) else ucf_groups(paths))


def _split_file(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise DatasetError(f"{path}: split file not found")
    return [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def UCF101(root: str | os.PathLike, splits: str | os.PathLike, fold: int = 1,  # noqa: N802
           subset: str = "train") -> LabelledMedia:
    """The official UCF-101 splits: ``splits/trainlist0{fold}.txt`` (``Class/v_..avi LABEL``) or ``testlist0{fold}``
    (``Class/v_..avi``), videos under ``root``. Classes from ``classInd.txt`` (``1 ApplyEyeMakeup``) when present."""
    root, splits = Path(root), Path(splits)
    if fold not in (1, 2, 3) or subset not in ("train", "test"):
        raise DatasetError(f"UCF-101 has folds 1-3 and subsets train/test, got fold {fold}, subset {subset!r}")
    rows = _split_file(splits / f"{subset}list0{fold}.txt")
    ind = splits / "classInd.txt"
    if ind.is_file():
        classes = [name for _, name in sorted((int(i), n) for i, n in _split_file(ind))]
    else:
        classes = sorted({r[0].split("/")[0] for r in rows}, key=_natural_key)
    index = {c: i for i, c in enumerate(classes)}
    paths, labels = [], []
    for r in rows:
        name = r[0].split("/")[0]
        if name not in index:
            raise DatasetError(f"{splits}: class {name!r} of {r[0]} is not in classInd.txt")
        paths.append(root / r[0])
        labels.append(index[name])
    return LabelledMedia(paths, labels, classes, source=f"UCF-101 fold {fold} {subset} ({root})",
                         groups=ucf_groups(paths))


def HMDB51(root: str | os.PathLike, splits: str | os.PathLike, fold: int = 1,  # noqa: N802
           subset: str = "train") -> LabelledMedia:
    """The official HMDB-51 splits: ``splits/<class>_test_split{fold}.txt`` lines ``video.avi ID`` with ID 1 = train,
    2 = test, 0 = unused; videos at ``root/<class>/video.avi``; classes sorted by name."""
    root, splits = Path(root), Path(splits)
    if fold not in (1, 2, 3) or subset not in ("train", "test"):
        raise DatasetError(f"HMDB-51 has folds 1-3 and subsets train/test, got fold {fold}, subset {subset!r}")
    files = sorted(splits.glob(f"*_test_split{fold}.txt"))
    if not files:
        raise DatasetError(f"{splits}: no *_test_split{fold}.txt files")
    wanted = "1" if subset == "train" else "2"
    classes = [f.name[: -len(f"_test_split{fold}.txt")] for f in files]
    paths, labels = [], []
    for label, (name, f) in enumerate(zip(classes, files)):
        for r in _split_file(f):
            if len(r) != 2 or r[1] not in ("0", "1", "2"):
                raise DatasetError(f"{f}: expected 'video.avi 0|1|2', got {' '.join(r)!r}")
            if r[1] == wanted:
                paths.append(root / name / r[0])
                labels.append(label)
    return LabelledMedia(paths, labels, classes, source=f"HMDB-51 fold {fold} {subset} ({root})")


def ESC50(root: str | os.PathLike, meta: str | os.PathLike | None = None) -> LabelledMedia:  # noqa: N802
    """The ESC-50 layout: ``root/meta/esc50.csv`` (``filename, fold, target, category``) and ``root/audio/``;
    classes ordered by ``target``; ``folds`` from the meta file (use :meth:`LabelledMedia.fold`)."""
    root = Path(root)
    meta = Path(meta) if meta is not None else root / "meta" / "esc50.csv"
    if not meta.is_file():
        raise DatasetError(f"{meta}: ESC-50 meta file not found")
    with open(meta, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for need in ("filename", "fold", "target", "category"):
        if rows and need not in rows[0]:
            raise DatasetError(f"{meta}: no {need!r} column")
    names = dict(sorted({int(r["target"]): r["category"] for r in rows}.items()))
    if list(names) != list(range(len(names))):
        raise DatasetError(f"{meta}: targets are not 0..{len(names) - 1}")
    return LabelledMedia([root / "audio" / r["filename"] for r in rows], [int(r["target"]) for r in rows],
                         list(names.values()), source=str(meta), folds=[int(r["fold"]) for r in rows])


def open_dataset(spec: str | os.PathLike, *, root: str | os.PathLike | None = None, fold: int = 1,
                 subset: str = "train") -> LabelledMedia:
    """A dataset from a command-line string: a class folder, a CSV, ``ucf101:SPLITS_DIR`` or ``hmdb51:SPLITS_DIR``
    (videos under ``root``, ``fold`` and ``subset`` choose the list), or ``esc50:ROOT``."""
    text = str(spec)
    kind, _, rest = text.partition(":")
    if kind in ("ucf101", "hmdb51") and rest:
        if root is None:
            raise DatasetError(f"{text}: pass the videos' root folder too (--root)")
        return (UCF101 if kind == "ucf101" else HMDB51)(root, rest, fold, subset)
    if kind == "esc50" and rest:
        return ESC50(rest)
    path = Path(text)
    if path.is_dir():
        return VideoFolder(path)
    if path.suffix.lower() == ".csv" and path.is_file():
        return VideoCSV(path, root)
    raise DatasetError(f"{text}: not a class folder, a CSV, ucf101:SPLITS, hmdb51:SPLITS or esc50:ROOT")


class LabelledClips(torch.utils.data.Dataset):
    """Video clips of a :class:`LabelledMedia` for classification, decoded and transformed.

    Training (``train=True``): ``clips_per_video`` random clips per file and epoch; item ``k`` is file
    ``k % N``; returns ``(video (3, T, S, S), label)``. Randomness derives from ``(seed, epoch, k)`` so that a resumed
    run sees the same clips.

    Evaluation: item ``i`` is file ``i``: ``(clips (1 + test_clips, 3, T, S, S), label, i)`` where clip 0 starts at a
    random (seeded) time, for Clip@1, and the others are ``test_clips`` evenly spaced clips (``linspace(0,
    duration - clip, n)``, the original dense test), for Video@1; with ``test_crops: 3`` in the preprocessing (GDT's
    protocol), each test clip gives its 3 spatial crops (``1 + 3 * test_clips`` views; clip 0 its centre crop).
    Clips stay inside a file's ``(start, end)`` segment.
    Weights whose preset names another ``frame_rule`` (GDT's, VMZ's for XDC: :mod:`avidzoo.io.frame_rules`) take
    their test clips by that rule on whole files.
    """

    def __init__(self, data: LabelledMedia, transform, *, train: bool = True, clips_per_video: int = 1,
                 test_clips: int = 10, seed: int = 0) -> None:
        self.data, self.transform, self.train = data, transform, train
        self.clips_per_video, self.test_clips, self.seed = clips_per_video, test_clips, seed
        cfg = transform.config
        self.num_frames, self.fps = int(cfg["num_frames"]), float(cfg["fps"])
        self.clip_duration = clip_seconds(cfg, "video")
        self.frame_rule = cfg.get("frame_rule", "avid")
        self.colour = preset_colour(cfg)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data) * (self.clips_per_video if self.train else 1)

    def __getitem__(self, k: int):
        i = k % len(self.data)
        seed = hash((self.seed, self.epoch, k) if self.train else (self.seed, k)) & 0x7FFFFFFF
        rng = random.Random(seed)
        if self.train:
            torch.manual_seed(seed)  # the torchvision v2 augmentations draw from torch's generator
        with MediaFile(self.data.paths[i], threads=1, colour=self.colour) as f:
            lo, hi = self.data.segments[i]
            lo = max(lo or 0.0, 0.0)
            end = f.info.span("video")[1] if f.info.has_video else f.info.duration  # the video's own end
            hi = min(hi, end) if hi is not None else end
            span = max(hi - lo, 0.0)
            starts = [lo + random_start(span, self.clip_duration, rng)]
            short_side = None if self.train else self.transform.decoder_scale
            whole = self.data.segments[i] == (None, None)
            if not self.train and self.frame_rule != "avid" and f.info.has_video and whole:
                # test clips where the method's own decoder put them (io.frame_rules); a segment keeps AVID's rule
                ruled = rule_clips(f, self.frame_rule, self.test_clips, num_frames=self.num_frames, fps=self.fps)
                frames = f.read_video(starts, num_frames=self.num_frames, fps=self.fps, short_side=short_side)
                frames += f.read_frames([c.times for c in ruled], short_side=short_side)
            else:
                if not self.train:
                    starts += [lo + s for s in uniform_starts(span, self.clip_duration, self.test_clips)]
                frames = f.read_video(starts, num_frames=self.num_frames, fps=self.fps, short_side=short_side)
        label = self.data.labels[i]
        if self.train:
            return self.transform(frames[0]), label
        if getattr(self.transform, "test_crops", 1) > 1:  # GDT's 3 spatial crops of each test clip
            views = self.transform.views(torch.stack(frames))  # (1 + n, V, 3, T, S, S)
            return torch.cat([views[:1, views.shape[1] // 2], views[1:].flatten(0, 1)]), label, i
        return self.transform(torch.stack(frames)), label, i
