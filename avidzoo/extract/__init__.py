"""Feature extraction: media files in, embeddings out.

The package follows the data: ``dataset`` (file -> model inputs, in DataLoader workers, or uint8 crops and waveforms
finished on the device), ``encoder`` (inputs -> features on the device), ``pipeline`` (batching clips across files,
progress, torchrun shares; the public :class:`FeatureExtractor`), ``plan`` (decoding processes and threads within
the cores), ``timeline`` (rows over time) and ``store`` (the output folder: shards, index, resume,
:func:`load_features`).
"""

from .encoder import ClipEncoder
from .export import export_features
from .pipeline import FeatureExtractor, extract_features, parse_shard, select_shard
from .ray_engine import extract_with_ray, find_media_with_ray
from .store import (
           FAILED_FILE,
           INDEX_FILE,
           META_FILE,
           ExtractionResult,
           StoreStatus,
           load_features,
           read_index,
           read_rows,
           status,
)
from .timeline import Timeline, per_second

__all__ = ["FeatureExtractor", "ClipEncoder", "extract_features", "load_features", "read_index", "read_rows",
           "status", "StoreStatus", "parse_shard", "select_shard", "export_features", "extract_with_ray",
           "find_media_with_ray", "Timeline", "per_second",
           "ExtractionResult", "INDEX_FILE", "META_FILE", "FAILED_FILE"]
