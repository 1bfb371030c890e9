"""Extraction on a Ray cluster (``pip install "avidzoo[ray]"``): decoding and transforms run as Ray Data CPU tasks
anywhere in the cluster, the encoders as a pool of actors that each take a GPU when the cluster has them (else CPUs),
and the driver writes the results into the usual output folder as one more writer (see :mod:`.store`), so resume,
``--status`` and :func:`~avidzoo.extract.load_features` work unchanged.

The driver never reads object storage: URL prefixes, globs and lists are listed by Ray tasks
(:func:`find_media_with_ray`), a resumed run asks tasks for the objects' versions, and a tar shard is one decoding
task that streams it and yields its members one by one. Only names and features reach the driver, so it needs no
credentials for the store; the cluster's nodes use their own (the standard AWS variables, instance roles, fsspec's
configuration). Between stages, a file's tensors travel as safetensors bytes (no pickling of data).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from ..factory import create_transforms
from ..io import MEDIA_EXTENSIONS, find_media
from ..io.inputs import input_list, unique_media
from ..io.remote import is_url, names_object
from ..io.shards import is_shard, member_shard, shard_streams, streams_from_shard
from ..models.avid import AVIDModel
from ..transforms import Transforms
from .dataset import ClipDataset, prepare_batch, shard_items
from .encoder import ClipEncoder
from .pipeline import FeatureExtractor, PartJoiner, select_shard
from .store import (
    ShardWriter,
    claim_meta,
    collect_garbage,
    done_paths,
    new_writer_id,
    no_room_error,
    object_versions,
    reset_output,
    write_snapshot,
)
from .timeline import Timeline

__all__ = ["extract_with_ray", "find_media_with_ray", "RAY_HINT"]

_LIST_CHUNK = 64  # URL inputs listed per Ray task

RAY_HINT = 'the Ray engine needs Ray Data: pip install "avidzoo[ray]"'


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ImportError(RAY_HINT) from e
    return ray


def _ensure_ray(address: str | None):
    ray = _import_ray()
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    return ray


def _list_inputs(inputs: list[str], missing: str) -> list[str] | tuple[str, str]:
    """Ray task: :func:`~avidzoo.io.find_media` of URL inputs, or ``(error type, message)`` for the driver to raise."""
    try:
        return [str(p) for p in find_media(inputs, missing=missing)]
    except (FileNotFoundError, ValueError) as e:
        return type(e).__name__, str(e)


def find_media_with_ray(inputs: str | os.PathLike | Iterable[str | os.PathLike], *, missing: str = "record",
                        address: str | None = None) -> list[Path | str]:
    """:func:`~avidzoo.io.find_media` with the remote listing done by Ray tasks: URL prefixes, globs and lists (and,
    with ``missing="error"``, each named object's existence) are resolved in the cluster, 64 inputs a task, in
    parallel; local inputs here, as paths every node sees. A URL that names an object (``.mp4``, ``.tar``, ...)
    is taken without a request when ``missing="record"``, so a resolved list resolves again for free. The errors are
    :func:`~avidzoo.io.find_media`'s. Starts a local Ray (or joins ``address``) if none is running."""
    ray = _ensure_ray(address)
    lister = ray.remote(num_cpus=0.25, max_retries=2)(_list_inputs)
    exts = set(MEDIA_EXTENSIONS)
    parts: list[Any] = []  # in input order: names resolved here, or the task listing a run of URL inputs
    pending: list[str] = []

    def flush() -> None:
        if pending:
            parts.append(lister.remote(list(pending), missing))
            pending.clear()

    for item in input_list(inputs):
        if is_url(item) and not (missing == "record" and names_object(str(item), exts)):
            pending.append(str(item))
            if len(pending) == _LIST_CHUNK:
                flush()
        else:
            flush()
            parts.append(find_media(item, missing=missing))
    flush()
    found: list[Path | str] = []
    for part in parts:
        listed = part if isinstance(part, list) else ray.get(part)
        if isinstance(listed, tuple):
            kind, message = listed
            raise (FileNotFoundError if kind == "FileNotFoundError" else ValueError)(message)
        found += listed
    return unique_media(found)


def _versions_in_tasks(urls: Sequence[str]) -> list[str | None]:
    """:func:`~avidzoo.extract.store.object_versions` run by Ray tasks, 256 objects a task."""
    ray = _import_ray()
    task = ray.remote(num_cpus=0.25, max_retries=2)(object_versions)
    chunks = [urls[i: i + 256] for i in range(0, len(urls), 256)]
    return [v for chunk in ray.get([task.remote(c) for c in chunks]) for v in chunk]


class _Decode:
    """Ray Data CPU task: a row ``{"index", "path", "skip", "only"}`` -> one row per decoded file, its clips
    transformed and held as safetensors bytes. A file gives one row; a tar shard is streamed here and gives one row
    per media member as it is read (members named in ``skip``, a JSON list, were done before; ``only``, a JSON list or
    null, the members asked for by name)."""

    def __init__(self, transforms: Transforms, modalities: Sequence[str], clips_per_video: int,
                 sampling: str, preprocess: str, timeline: Timeline | None = None) -> None:
        self.dataset = ClipDataset([], transforms, modalities, clips_per_video, sampling, preprocess=preprocess,
                                   timeline=timeline)

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        for index, path, skip, only in zip(batch["index"], batch["path"], batch["skip"], batch["only"]):
            path, only = str(path), json.loads(str(only))
            if is_shard(path):
                items = shard_items(self.dataset, path, int(index), set(json.loads(str(skip))),
                                    set(only) if only is not None else None)
            else:
                items = self.dataset.read_parts(int(index), path)  # a long file's rows in parts
            for item in items:
                item.pop("order", None)
                tensors = {m: item.pop(m) for m in ("video", "audio") if m in item}
                yield {"item": np.array([json.dumps(item)], dtype=object),
                       "tensors": np.array([save_tensors(tensors) if tensors else b""], dtype=object)}


class _Encode:
    """Ray Data actor: batches of decoded files -> per-file features (safetensors bytes), on its GPU or CPU."""

    def __init__(self, config: dict, state: Any, options: dict[str, Any]) -> None:
        ray = _import_ray()
        model = AVIDModel(config)
        model.load_state_dict(ray.get(state) if isinstance(state, ray.ObjectRef) else state)
        options = dict(options)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.encoder = ClipEncoder(model, device=options.pop("device", None) or device, **options)
        self.transforms = create_transforms(model)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [json.loads(s) for s in batch["item"]]
        tensors = [load_tensors(bytes(b)) if len(b) else {} for b in batch["tensors"]]
        ok = [i for i, it in enumerate(items) if "error" not in it]
        out = [b""] * len(items)
        if ok:
            enc = self.encoder
            inputs = prepare_batch([{**items[i], **tensors[i]} for i in ok], enc.modalities, self.transforms,
                                   enc.device)
            for i, per_file in zip(ok, enc.per_file(enc.encode(**inputs), [items[i] for i in ok])):
                out[i] = save_tensors({m: t.contiguous() for m, t in per_file.items()})
        return {"item": batch["item"], "features": np.array(out, dtype=object)}


def extract_with_ray(
    model: AVIDModel | str | os.PathLike,
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    out: str | os.PathLike,
    *,
    address: str | None = None,
    actors: int | None = None,
    files_per_batch: int = 8,
    resume: bool = True,
    retry_failed: bool = False,
    shard_size: int = 256,
    shard: tuple[int, int] | None = None,
    **kwargs: Any,
) -> Path:
    """Extract features of ``inputs`` into the folder ``out`` with Ray.

    ``address``: a running cluster (``"auto"``, ``"ray://host:10001"``); default a local Ray on this machine (or the
    one ``ray.init`` already started). ``actors``: encoder actors, default one per GPU in the cluster, else one.
    ``files_per_batch``: files per encoder call (their clips share one forward pass). ``kwargs`` configure the
    extraction as for :class:`FeatureExtractor` (``modalities``, ``clips_per_video``, ``layer``, ``clip_agg``,
    ``normalize``, ``batch_size``, ``dtype``, ``device`` of the actors, ...); the local engine's thread plan
    (``num_workers``, ``decoder_threads``, ``torch_threads``, ``preprocess``), ``progress`` and ``compile`` do not
    apply, and decoding is the software decoder's (``decoder="cuda"`` is refused). ``inputs`` are those of the local
    engine, listed by Ray tasks where they are remote (:func:`find_media_with_ray`); ``shard=(k, n)`` takes every
    n-th input, a tar shard counting as one.
    """
    ray = _ensure_ray(address)
    if kwargs.pop("decoder", "auto") == "cuda":
        raise ValueError("--engine ray decodes in Ray Data's CPU tasks (the software decoder); decoder='cuda' is the "
                         "local engine's (NVDEC on the GPU the model runs on)")
    for local_only in ("num_workers", "progress", "decoder_threads", "torch_threads", "preprocess"):
        kwargs.pop(local_only, None)  # the local engine's plan; Ray places its own tasks
    device = kwargs.pop("device", None)  # the actors' device; the driver only describes the run
    # The driver's extractor checks the options, and describes the run (meta.json) exactly as the plain engine does.
    driver = FeatureExtractor(model, device="cpu", num_workers=0, progress=False, **kwargs)
    out = Path(out)
    todo: list[str] = []
    writer: ShardWriter | None = None
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            reset_output(out)
        claim_meta(out, driver.meta())
        writer_id = new_writer_id()
        collect_garbage(out, keep=[writer_id])
        paths = select_shard(find_media_with_ray(inputs), shard)
        done = done_paths(out, retry_failed, versions=_versions_in_tasks) if resume else set()
        todo = [str(p) for p in paths if str(p) not in done]
        # one row a file, and one a shard to stream (whole, or for the members named as inputs)
        streams = shard_streams(todo)
        skip: dict[str, list[str]] = {}  # each shard's members done before, passed over as it streams by
        streamed = {shard for _, shard, _ in streams}
        for name in done:
            if (of := member_shard(name, streamed)) is not None:
                skip.setdefault(of, []).append(name)
        rows = sorted([{"index": k, "path": p, "skip": "[]", "only": "null"} for k, p in enumerate(todo)
                       if not streams_from_shard(p)] +
                      [{"index": k, "path": shard, "skip": json.dumps(skip.get(shard, [])),
                        "only": json.dumps(sorted(only) if only is not None else None)} for k, shard, only in streams],
                      key=lambda row: row["index"])
        writer = ShardWriter(out, shard_size, driver.modalities, writer=writer_id)
        try:
            if todo:
                gpus = int(ray.cluster_resources().get("GPU", 0))
                n_actors = actors or max(gpus, 1)
                config, state = driver.model.config, {k: v.cpu() for k, v in driver.model.state_dict().items()}
                options = {"modalities": driver.modalities, "layer": driver.layer, "clip_agg": driver.clip_agg,
                           "normalize": driver.normalize, "batch_size": kwargs.get("batch_size"),
                           "dtype": kwargs.get("dtype"), "channels_last": kwargs.get("channels_last", True),
                           "fuse": kwargs.get("fuse", True), "device": device, "maps": driver.maps}
                ds = ray.data.from_items(rows)
                ds = ds.map_batches(_Decode, fn_constructor_kwargs={"transforms": driver.transforms,
                                                                    "modalities": driver.modalities,
                                                                    "clips_per_video": driver.clips_per_video,
                                                                    "sampling": driver.sampling,
                                                                    "timeline": driver.timeline,
                                                                    # uint8 frames to GPU actors, inputs to CPU ones
                                                                    "preprocess": "device" if gpus else "worker"},
                                    batch_size=1, batch_format="numpy", num_cpus=1,
                                    concurrency=(1, max(int(ray.cluster_resources().get("CPU", 1)), 1)))
                ds = ds.map_batches(_Encode, fn_constructor_kwargs={"config": config, "state": ray.put(state),
                                                                    "options": options},
                                    batch_size=files_per_batch, batch_format="numpy", concurrency=n_actors,
                                    num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1)
                joiner = PartJoiner()  # a long file's parts come back in any order; its rows are published together
                for row in ds.iter_rows():
                    item = json.loads(row["item"])
                    feats = load_tensors(bytes(row["features"])) if len(row["features"]) else None
                    if feats is None:
                        joiner.fail(item)
                        writer.add(item, None)
                    elif (whole := joiner.add(item, feats)) is not None:
                        writer.add(*whole)
        finally:
            writer.close()
        write_snapshot(out, [str(p) for p in paths])
    except Exception as e:  # the disk full, a quota, a read-only folder: one line a person can act on
        written = writer.written if writer is not None else 0
        rows = 1.0 if driver.timeline is None else writer.rows_per_input() if writer is not None else None
        if (err := no_room_error(e, out, written, max(len(todo) - written, 0), driver.row_bytes(), rows)) is None:
            raise
        raise err from None
    return out
