"""An output folder as one file for downstream tools: Parquet (pandas, pyarrow, ``datasets.load_dataset("parquet")``,
Polars, DuckDB) or NumPy ``.npz`` (``numpy.load`` without pickles), on this machine or at a URL (``s3://...``, through
fsspec). Written atomically: a local file by rename, an object by its single upload on close."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .._files import atomic_path
from ..io.remote import is_url, remote_fs
from .store import load_features, read_rows

__all__ = ["export_features", "PARQUET_HINT"]

PARQUET_HINT = 'Parquet export needs pyarrow: pip install "avidzoo[parquet]" (or "avidzoo[ray]", which brings it)'


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
    """
    out = Path(out)
    remote = is_url(to)
    to = str(to) if remote else Path(to)
    suffix = os.path.splitext(str(to))[1].lower()
    if suffix not in (".parquet", ".npz"):
        raise ValueError(f"{to}: export to .parquet or .npz")
    result = load_features(out)
    rows = read_rows(out)
    if not remote:
        to.parent.mkdir(parents=True, exist_ok=True)
    n = len(result.paths)
    coverage = {m: [c.get(m, [0.0] * len(s) if not result.present[m][i] else [1.0] * len(s))
                    for i, (c, s) in enumerate(zip(result.coverage, result.clip_starts))] for m in result.features}
    if suffix == ".npz":
        arrays = {
            "paths": np.array(result.paths, dtype=str),
            "clip_starts": np.array(result.clip_starts, dtype=np.float64).reshape(n, -1),
            **{f"has_{m}": mask.numpy() for m, mask in result.present.items()},
            **{f"{m}_coverage": np.array(cov, dtype=np.float32).reshape(n, -1) for m, cov in coverage.items()},
            "failed_paths": np.array(list(result.failed), dtype=str),
            "failed_errors": np.array(list(result.failed.values()), dtype=str),
            **{m: t.numpy() for m, t in result.features.items()},
        }
        with _writable(to) as f:
            np.savez(f, **arrays)
        return to
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(PARQUET_HINT) from e
    ok = {p: i for i, p in enumerate(result.paths)}
    order = [*result.paths, *result.failed]
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
    for m, t in result.features.items():
        has = {p: bool(result.present[m][i]) for p, i in ok.items()}
        columns[f"has_{m}"] = [has.get(p) for p in order]
        columns[f"{m}_coverage"] = [coverage[m][ok[p]] if p in ok else None for p in order]
        embeddings[m] = _fixed_size_lists(pa, t.numpy(), [ok.get(p) if has.get(p) else None for p in order])
        fields += [(f"has_{m}", pa.bool_()), (m, embeddings[m].type), (f"{m}_coverage", pa.list_(pa.float32()))]
    schema = pa.schema(fields)
    table = pa.table({**columns, **embeddings}, schema=schema)
    meta = (out / "meta.json").read_bytes()
    table = table.replace_schema_metadata({b"avidzoo_meta": meta})
    with _writable(to) as f:
        pq.write_table(table, f)
    return to


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
