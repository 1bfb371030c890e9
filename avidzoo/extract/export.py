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

    Parquet: one row per file (failed ones too): ``path``, ``status``, ``error``, ``duration``, ``clip_starts``
    (list of seconds), and per modality ``has_<modality>`` (the mask: whether the file has that stream), its
    features (a list of floats; null for a failed file and where the stream is missing) and ``<modality>_coverage``
    (per clip, the fraction the stream really fills). ``.npz``: ``paths`` ``(N,)``, ``clip_starts`` ``(N, clips)``,
    per modality ``has_<modality>`` ``(N,)`` bool, the features ``(N, D)`` (or ``(N, clips, D)``; NaN where the
    stream is missing) and ``<modality>_coverage`` ``(N, clips)``, for the files that succeeded; and
    ``failed_paths`` / ``failed_errors``.
    """
    out, to = Path(out), Path(to)
    result = load_features(out)
    rows = read_rows(out)
    suffix = to.suffix.lower()
    if suffix not in (".parquet", ".npz"):
        raise ValueError(f"{to}: export to .parquet or .npz")
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
        "clip_starts": [rows[p].get("clip_starts") for p in order],
    }
    fields = [("path", pa.string()), ("status", pa.string()), ("error", pa.string()), ("duration", pa.float64()),
              ("clip_starts", pa.list_(pa.float64()))]
    for m, t in result.features.items():
        flat = t.reshape(n, -1).numpy()
        has = {p: bool(result.present[m][i]) for p, i in ok.items()}
        columns[f"has_{m}"] = [has.get(p) for p in order]
        columns[m] = [flat[ok[p]].tolist() if has.get(p) else None for p in order]
        columns[f"{m}_coverage"] = [coverage[m][ok[p]] if p in ok else None for p in order]
        fields += [(f"has_{m}", pa.bool_()), (m, pa.list_(pa.float32())), (f"{m}_coverage", pa.list_(pa.float32()))]
    schema = pa.schema(fields)
    table = pa.table(columns, schema=schema)
    meta = (out / "meta.json").read_bytes()
    table = table.replace_schema_metadata({b"avidzoo_meta": meta})
    with atomic_path(to) as tmp:
        pq.write_table(table, str(tmp))
    return to
