"""An output folder as one file for downstream tools: Parquet (pandas, pyarrow, ``datasets.load_dataset("parquet")``,
Polars, DuckDB) or NumPy ``.npz`` (``numpy.load`` without pickles). Written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._files import atomic_path
from .store import load_features, read_rows

__all__ = ["export_features", "PARQUET_HINT"]

PARQUET_HINT = 'Parquet export needs pyarrow: pip install "avidzoo[parquet]" (or "avidzoo[ray]", which brings it)'


def export_features(out: str | os.PathLike, to: str | os.PathLike) -> Path:
    """Write the features of the folder ``out`` to ``to`` (``.parquet`` or ``.npz``, by suffix).

    Parquet: one row per file (failed ones too): ``path``, ``status``, ``error``, ``duration``, ``has_audio``,
    ``clip_starts`` (list of seconds) and one column per modality (a list of floats; null for a failed file).
    ``.npz``: ``paths`` ``(N,)``, ``clip_starts`` ``(N, clips)``, ``has_audio`` ``(N,)``, one ``(N, D)`` (or
    ``(N, clips, D)``) array per modality for the files that succeeded, and ``failed_paths`` / ``failed_errors``.
    """
    out, to = Path(out), Path(to)
    result = load_features(out)
    rows = read_rows(out)
    suffix = to.suffix.lower()
    if suffix not in (".parquet", ".npz"):
        raise ValueError(f"{to}: export to .parquet or .npz")
    to.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npz":
        arrays = {
            "paths": np.array(result.paths, dtype=str),
            "clip_starts": np.array(result.clip_starts, dtype=np.float64).reshape(len(result.paths), -1),
            "has_audio": np.array([rows[p].get("has_audio", True) for p in result.paths], dtype=bool),
            "failed_paths": np.array(list(result.failed), dtype=str),
            "failed_errors": np.array(list(result.failed.values()), dtype=str),
            **{m: t.numpy() for m, t in result.features.items()},
        }
        with atomic_path(to) as tmp, open(tmp, "wb") as f:
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
        "has_audio": [rows[p].get("has_audio") for p in order],
        "clip_starts": [rows[p].get("clip_starts") for p in order],
    }
    for m, t in result.features.items():
        flat = t.reshape(len(result.paths), -1).numpy()
        columns[m] = [flat[ok[p]].tolist() if p in ok else None for p in order]
    schema = pa.schema([("path", pa.string()), ("status", pa.string()), ("error", pa.string()),
                        ("duration", pa.float64()), ("has_audio", pa.bool_()), ("clip_starts", pa.list_(pa.float64())),
                        *[(m, pa.list_(pa.float32())) for m in result.features]])
    table = pa.table(columns, schema=schema)
    meta = (out / "meta.json").read_bytes()
    table = table.replace_schema_metadata({b"avidzoo_meta": meta})
    with atomic_path(to) as tmp:
        pq.write_table(table, str(tmp))
    return to
