"""Feature extraction: media files in, embeddings out.

The package follows the data: ``dataset`` (file -> model inputs, in DataLoader workers), ``encoder`` (inputs ->
features on the device), ``pipeline`` (batching clips across files, progress, torchrun shares; the public
:class:`FeatureExtractor`) and ``store`` (the output folder: shards, index, resume, :func:`load_features`).
"""

from .encoder import ClipEncoder
from .pipeline import FeatureExtractor, extract_features
from .store import INDEX_FILE, META_FILE, ExtractionResult, load_features, read_index

__all__ = ["FeatureExtractor", "ClipEncoder", "extract_features", "load_features", "read_index", "ExtractionResult",
           "INDEX_FILE", "META_FILE"]
