"""An output folder in the layouts downstream tools read: Parquet (pandas, pyarrow,
``datasets.load_dataset("parquet")``, Polars, DuckDB) or NumPy ``.npz`` (``numpy.load`` without pickles), on this
machine or at a URL (``s3://...``, through fsspec); HDF5 (``h5py``, as AVE's dataloader reads its features); or a folder
of per-file ``.npy`` as v-iashin/video_features lays them out. Each file is written atomically: a local file by
rename, an object by its single upload on close."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np

from .._files import atomic_path
from ..io.remote import is_url, remote_fs
from .store import load_features, read_rows

__all__ = ["export_features", "PARQUET_HINT", "HDF5_HINT", "npy_names"]

PARQUET_HINT = 'Parquet export needs pyarrow: pip install "avidzoo[parquet]" (or "avidzoo[ray]", which brings it)'
HDF5_HINT = 'HDF5 export needs h5py: pip install "avidzoo[hdf5]"'
_FORMATS = (".parquet", ".npz", ".h5", ".hdf5")


def export_features(out: str | os.PathLike, to: str | os.PathLike) -> Path | str:
    """Write the features of the folder ``out`` to ``to`` (``.parquet`` or ``.npz``, by suffix; a path or a URL).

    Parquet: one row per file (failed ones too): ``path``, ``status``, ``error``, ``duration``, ``clip_starts``
    (list of seconds), and per modality ``has_<modality>`` (the mask: whether the file has that stream), its
    features as an Arrow fixed-size list of ``D`` float32 (``clips`` fixed-size lists of ``D`` with
    ``clip_agg="none"``; null for a failed file and where the stream is missing), which numpy, pandas and Hugging Face
    datasets read as 2-D (3-D) arrays: over rows without nulls (``status == "ok"`` and ``has_<modality>``) the
    column's ``values`` are one contiguous ``(rows * D,)`` float32 buffer that numpy takes without a copy; and
    ``<modality>_coverage`` (per clip, the fraction the stream really fills).
    ``.npz``: ``paths`` ``(N,)``, ``clip_starts`` ``(N, clips)``,
    per modality ``has_<modality>`` ``(N,)`` bool, the features ``(N, D)`` (or ``(N, clips, D)``; NaN where the
    stream is missing) and ``<modality>_coverage`` ``(N, clips)``, for the files that succeeded; and
    ``failed_paths`` / ``failed_errors``.
    ``.h5`` / ``.hdf5``: the same arrays as ``.npz``, one dataset each (``video`` ``(N, clips, D)`` with
    ``clip_agg="none"``: AVE's ``[N, T, ...]`` layout, read by key), ``paths`` as UTF-8 strings, and the folder's
    ``meta.json`` in the file's ``avidzoo_meta`` attribute.
    A folder (``to`` ends in ``/`` or is one): per file ``<name>_<modality>.npy`` (``(clips, D)``, or ``(D,)`` for
    aggregated features; NaN where the stream is missing) and ``<name>_timestamps_ms.npy`` (each clip's start, in
    milliseconds), as video_features writes them, ``<name>`` the file's stem (with its parent folders where stems
    repeat, :func:`npy_names`), and ``index.csv`` mapping each name to its path and masks.

    Features over time (``--stride`` / ``--segments``) keep each file's rows: Parquet, one row per file, a modality's
    column a list of its ``T_i`` rows (each a fixed-size list of ``D``) beside ``times`` (``[start, end]`` per row);
    ``.npz``, the rows of every file one after another (``(R, D)``) with ``row_file`` ``(R,)`` (the index into
    ``paths``), ``times`` ``(R, 2)`` and, for annotated segments, ``labels`` and ``ids``; HDF5, where every file has
    the same number of rows (AVE's 10 one-second segments), one dataset per modality stacked ``[N, T, ...]`` and
    ``times`` ``[N, T, 2]``, else a group per file (``files/<k>/<modality>``, ``files/<k>/times``, its ``path``
    attribute); the ``.npy`` folder, ``<name>_<modality>.npy`` ``(T, D)``, ``<name>_timestamps_ms.npy`` the rows'
    starts and ``<name>_windows_ms.npy`` ``(T, 2)`` their starts and ends, in milliseconds.
    """
    out = Path(out)
    remote = is_url(to)
    folder = str(to).endswith(("/", os.sep)) or (not remote and Path(to).is_dir())
    to = str(to) if remote else Path(to)
    suffix = os.path.splitext(str(to))[1].lower()
    if folder and remote:
        raise ValueError(f"{to}: a folder of .npy files is written on this machine; export a URL as one file "
                         f"({', '.join(_FORMATS)})")
    if not folder and suffix not in _FORMATS:
        raise ValueError(f"{to}: export to {', '.join(_FORMATS)}, or to a folder of .npy files (a path ending in /)")
    result = load_features(out)
    rows = read_rows(out)
    if folder:
        return _npy_folder(result, Path(to))
    timed = result.times is not None
    if not remote:
        to.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".h5", ".hdf5"):
        return _hdf5(result, out, to)
    if suffix == ".npz":
        with _writable(to) as f:
            np.savez(f, **(_timed_arrays(result) if timed else _arrays(result)))
        return to
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(PARQUET_HINT) from e
    ok = {p: i for i, p in enumerate(result.paths)}
    order = [*result.paths, *result.failed]
    coverage = _coverage(result)
    columns = {
        "path": order,
        "status": [rows[p]["status"] for p in order],
        "error": [rows[p].get("error") for p in order],
        "duration": [rows[p].get("duration") for p in order],
        "clip_starts": [rows[p].get("clip_starts") for p in order],
    }
    fields = [("path", pa.string()), ("status", pa.string()), ("error", pa.string()), ("duration", pa.float64()),
              ("clip_starts", pa.list_(pa.float64()))]
    embeddings = {}
    if timed:  # each file's rows: a list of [start, end] beside a list of rows per modality
        spans = [result.rows_of(ok[p]) if p in ok else None for p in order]
        columns["times"] = [result.times[s].tolist() if s is not None else None for s in spans]
        fields.append(("times", pa.list_(pa.list_(pa.float64(), 2))))
    for m, t in result.features.items():
        has = {p: bool(result.present[m][i]) for p, i in ok.items()}
        columns[f"has_{m}"] = [has.get(p) for p in order]
        columns[f"{m}_coverage"] = [coverage[m][ok[p]] if p in ok else None for p in order]
        if timed:
            rows = _fixed_size_lists(pa, t.numpy(), list(range(len(t))))
            offsets = [0]
            for s in spans:
                offsets.append(offsets[-1] + (s.stop - s.start if s is not None else 0))
            embeddings[m] = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), rows,
                                                     mask=pa.array([s is None for s in spans]))
        else:
            embeddings[m] = _fixed_size_lists(pa, t.numpy(), [ok.get(p) if has.get(p) else None for p in order])
        fields += [(f"has_{m}", pa.bool_()), (m, embeddings[m].type), (f"{m}_coverage", pa.list_(pa.float32()))]
    schema = pa.schema(fields)
    table = pa.table({**columns, **embeddings}, schema=schema)
    meta = (out / "meta.json").read_bytes()
    table = table.replace_schema_metadata({b"avidzoo_meta": meta})
    with _writable(to) as f:
        pq.write_table(table, f)
    return to


def _coverage(result) -> dict[str, list[list[float]]]:
    """Per modality and file, the fraction of each clip the stream fills (0 where it is missing)."""
    return {m: [c.get(m, [0.0] * len(s) if not result.present[m][i] else [1.0] * len(s))
                for i, (c, s) in enumerate(zip(result.coverage, result.clip_starts))] for m in result.features}


def _arrays(result) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` and HDF5 exports (see :func:`export_features`)."""
    n = len(result.paths)
    coverage = _coverage(result)
    return {
        "paths": np.array(result.paths, dtype=str),
        "clip_starts": np.array(result.clip_starts, dtype=np.float64).reshape(n, -1),
        **{f"has_{m}": mask.numpy() for m, mask in result.present.items()},
        **{f"{m}_coverage": np.array(cov, dtype=np.float32).reshape(n, -1) for m, cov in coverage.items()},
        "failed_paths": np.array(list(result.failed), dtype=str),
        "failed_errors": np.array(list(result.failed.values()), dtype=str),
        **{m: t.numpy() for m, t in result.features.items()},
    }


def _timed_arrays(result) -> dict[str, np.ndarray]:
    """The ``.npz`` arrays of features over time: every file's rows one after another."""
    segments = result.segments or []
    return {
        "paths": np.array(result.paths, dtype=str),
        "row_file": result.row_file.numpy(),
        "times": result.times.numpy(),
        **({"labels": np.array([s.get("label") or "" for s in segments], dtype=str),
            "ids": np.array([s.get("id") or "" for s in segments], dtype=str)}
           if any(segments) else {}),
        **{f"has_{m}": mask.numpy() for m, mask in result.present.items()},
        "failed_paths": np.array(list(result.failed), dtype=str),
        "failed_errors": np.array(list(result.failed.values()), dtype=str),
        **{m: t.numpy() for m, t in result.features.items()},
    }


def _hdf5_timed(h5, result, text) -> None:
    """Features over time in HDF5: stacked ``[N, T, ...]`` when every file has ``T`` rows (AVE's layout), else a
    group per file."""
    counts = np.bincount(result.row_file.numpy(), minlength=len(result.paths))
    h5.create_dataset("paths", data=np.array(result.paths, dtype=object), dtype=text)
    for m, mask in result.present.items():
        h5.create_dataset(f"has_{m}", data=mask.numpy())
    if len(counts) and (counts == counts[0]).all():
        n, t = len(counts), int(counts[0])
        for m, feats in result.features.items():
            h5.create_dataset(m, data=feats.numpy().reshape(n, t, *feats.shape[1:]))
        h5.create_dataset("times", data=result.times.numpy().reshape(n, t, 2))
        return
    files = h5.create_group("files")
    for i, path in enumerate(result.paths):
        g = files.create_group(str(i))
        g.attrs["path"] = path
        rows = result.rows_of(i)
        for m, feats in result.features.items():
            g.create_dataset(m, data=feats[rows].numpy())
        g.create_dataset("times", data=result.times[rows].numpy())


def _hdf5(result, out: Path, to: Path | str) -> Path | str:
    try:
        import h5py
    except ImportError as e:
        raise ImportError(HDF5_HINT) from e
    text = h5py.string_dtype()
    # HDF5 seeks back and reads while it writes: it is made in a local file, renamed into place or uploaded
    with tempfile.TemporaryDirectory(dir=to.parent if isinstance(to, Path) else None) as tmp:
        made = Path(tmp) / "features.h5"
        with h5py.File(made, "w") as h5:
            if result.times is not None:
                _hdf5_timed(h5, result, text)
            for key, value in ({} if result.times is not None else _arrays(result)).items():
                h5.create_dataset(key, data=value.astype(object) if value.dtype.kind == "U" else value,
                                  dtype=text if value.dtype.kind == "U" else None)
            h5.attrs["avidzoo_meta"] = (out / "meta.json").read_text()
        if isinstance(to, Path):
            os.replace(made, to)
        else:
            with open(made, "rb") as src, _writable(to) as f:
                shutil.copyfileobj(src, f)
    return to


def npy_names(paths: list[str]) -> list[str]:
    """A file name per input for a folder export: its stem, or where stems repeat (``a/clip.mp4``, ``b/clip.mp4``)
    as many of its parent folders as make it unique, joined by ``__`` (``a__clip``, ``b__clip``)."""
    parts = [PurePosixPath(str(p).replace(os.sep, "/")).with_suffix("").parts for p in paths]
    depth = [1] * len(parts)
    while True:
        names = ["__".join(x[-d:]).replace(":", "") for x, d in zip(parts, depth)]
        seen: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            seen.setdefault(name, []).append(i)
        clash = [i for group in seen.values() if len(group) > 1 for i in group if depth[i] < len(parts[i])]
        if not clash:
            return names
        for i in clash:
            depth[i] += 1


def _npy_folder(result, to: Path) -> Path:
    to.mkdir(parents=True, exist_ok=True)
    names = npy_names(result.paths)
    table = io.StringIO()
    rows = csv.writer(table, lineterminator="\n")
    rows.writerow(["name", "path", *(f"has_{m}" for m in result.features)])
    timed = result.times is not None
    for i, (path, name) in enumerate(zip(result.paths, names)):
        at = result.rows_of(i) if timed else i
        for m, t in result.features.items():
            _save_npy(to / f"{name}_{m}.npy", t[at].numpy())
        if timed:
            windows = result.times[at].numpy() * 1000.0
            _save_npy(to / f"{name}_timestamps_ms.npy", windows[:, 0].copy())
            _save_npy(to / f"{name}_windows_ms.npy", windows)
        else:
            _save_npy(to / f"{name}_timestamps_ms.npy", np.array(result.clip_starts[i], dtype=np.float64) * 1000.0)
        rows.writerow([name, path, *(str(bool(result.present[m][i])).lower() for m in result.features)])
    with atomic_path(to / "index.csv") as tmp:
        tmp.write_text(table.getvalue(), encoding="utf-8")
    return to


def _save_npy(dest: Path, array: np.ndarray) -> None:
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array))


def _fixed_size_lists(pa, feats: np.ndarray, rows: list[int | None]):
    """Rows of ``feats`` (``(N, D)`` or ``(N, clips, D)``) as an Arrow fixed-size list column in ``rows`` order; a
    ``None`` row is null (its slots hold NaN, so the values stay one contiguous ``(rows, ...)`` buffer)."""
    shape = feats.shape[1:]
    values = np.full((len(rows), *shape), np.nan, dtype=np.float32)
    take = [i for i, r in enumerate(rows) if r is not None]
    values[take] = feats[[rows[i] for i in take]]
    arr = pa.array(values.reshape(-1))
    for size in reversed(shape[1:]):  # (clips, D): lists of D inside lists of clips
        arr = pa.FixedSizeListArray.from_arrays(arr, size)
    return pa.FixedSizeListArray.from_arrays(arr, shape[0], mask=pa.array([r is None for r in rows]))


@contextlib.contextmanager
def _writable(to: Path | str) -> Iterator[BinaryIO]:
    """A binary file to write the export into: a temporary file renamed into place, or an object at a URL, whose
    upload completes on close (and is discarded if writing fails), so a reader never sees half a file."""
    if isinstance(to, Path):
        with atomic_path(to) as tmp, open(tmp, "wb") as f:
            yield f
        return
    fs, path = remote_fs(to)
    f = fs.open(path, "wb")
    try:
        yield f
    except BaseException:
        getattr(f, "discard", lambda: None)()
        raise
    f.close()
