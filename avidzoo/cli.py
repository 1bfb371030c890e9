"""The ``avidzoo`` command line: list, info, download, convert, verify, env, extract, score-av, pretrain, finetune,
evaluate, linear-probe."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import av
import torch

from . import hub
from ._env import rank_world
from ._files import write_text_atomic
from ._version import __version__
from .datasets import open_dataset
from .errors import AvidzooError, OutputWriteError
from .evaluate import evaluate
from .extract import (
    FAILED_FILE,
    INDEX_FILE,
    FeatureExtractor,
    export_features,
    extract_with_ray,
    find_media_with_ray,
    parse_shard,
    read_rows,
    select_shard,
)
from .extract import status as extract_status
from .extract.store import human_size
from .factory import from_pretrained, list_models
from .io import COLOUR_RULES, find_media
from .io.shards import is_shard, member_shard
from .manifest import get_manifest
from .probe import linear_probe
from .rank import rank
from .score import score_av
from .train import FinetuneConfig, PretrainConfig, finetune, pretrain
from .train.runs import read_config_file
from .verify import verify

EXAMPLES = """examples:
  avidzoo extract videos/ --model avid_cma_r2plus1d.kinetics --out feats/   embeddings of every video in videos/
  avidzoo list                      every model; `avidzoo list --pretrained` every released weight
  avidzoo info cross_avid_r2plus1d.kinetics400
  avidzoo download avid_cma_r2plus1d.audioset --to ./weights   (then AVIDZOO_WEIGHTS_DIR=./weights offline)
  avidzoo convert AVID_Kinetics_Cross-N1024_checkpoint.pth.tar ./avid_kinetics
  avidzoo verify cross_avid_r2plus1d.kinetics400
  avidzoo finetune --model avid_cma_r2plus1d.audioset --train my_videos/train --val my_videos/val --out runs/mine
  avidzoo evaluate runs/mine/best my_videos/test --out runs/mine/test_eval
  avidzoo rank my_videos/ --weights all --out rank/     which weights suit my labelled videos (report.md)
"""


def _cmd_list(args: argparse.Namespace) -> int:
    names = list_models(args.filter, pretrained=args.pretrained)
    if args.json:
        print(json.dumps(names))
        return 0
    m = get_manifest()
    rows = []
    for name in names:
        if args.pretrained:
            w = m.weight(name)
            rows.append([name, w.pretrain_data, w.license, " ".join(f"{k}={v}" for k, v in w.metrics.items())])
        else:
            spec = m.model(name)
            rows.append([name, spec.architecture, ", ".join(spec.tags) or "(no released weights)"])
    _print_columns(rows)
    return 0


def _print_columns(rows: list[list[str]], gap: int = 2) -> None:
    """Print rows as aligned columns: each column as wide as its longest cell, the last one not padded."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)] if rows else []
    for r in rows:
        print((" " * gap).join([c.ljust(w) for c, w in zip(r, widths)] + r[len(widths):]).rstrip())


def _cmd_info(args: argparse.Namespace) -> int:
    m = get_manifest()
    model_spec, weight_spec = m.resolve(args.name)
    info = {"model": model_spec.name, "architecture": model_spec.architecture, "method": model_spec.method,
            "method_info": dict(model_spec.method_info), "tags": list(model_spec.tags),
            "default_tag": model_spec.default_tag}
    if weight_spec is not None:
        info["weights"] = {
            "name": weight_spec.name, "description": weight_spec.description, "file_name": weight_spec.file_name,
            "sources": [s if isinstance(s, str) else dict(s) for f in weight_spec.files
                        for s in hub.network_sources(weight_spec, f)],
            "hashes": dict(weight_spec.hashes), "hash_provenance": weight_spec.hash_provenance,
            "hash_check": [f"{f.file_name}: {hub.hash_status(f)}" for f in weight_spec.files],
            "modalities": list(weight_spec.modalities or ()) or None,
            "license_note": weight_spec.extra.get("license_note"),
            "size_bytes": weight_spec.size_bytes, "license": weight_spec.license,
            "metrics": dict(weight_spec.metrics), "preprocessing": dict(weight_spec.preprocessing),
            "origin_url": weight_spec.origin_url, "training_config": weight_spec.training_config,
            "cached": hub.weights_folder(weight_spec) is not None,  # in the cache or the drop folder
        }
    else:
        info["weights"] = None
    print(json.dumps(info, indent=2))
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    for name, folder in hub.download(args.names, args.to, progress=not args.quiet).items():
        print(f"{name}\t{folder}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    model = from_pretrained(args.src, release=args.release)
    out = model.save_pretrained(args.out)
    print(f"wrote {out} ({', '.join(model.modalities)} towers)")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    report = verify(args.target)
    print(report)
    return 0 if report.ok else 1


EXTRACT_EXAMPLE = """examples:
  avidzoo extract videos/ more/*.mp4 list.txt --model cross_avid_r2plus1d.kinetics --out feats/ \\
      --clips-per-video 10 --layer pool --batch-size 32 --workers 8
  avidzoo extract videos/ --model M --out feats/ --shard 3/8        # worker 3 of 8, started whenever
  avidzoo extract videos/ --model M --out feats/ --shard slurm      # in a SLURM job array
  avidzoo extract --status feats/ videos/                           # done / failed / remaining, all writers

  feats/shards/*.safetensors hold the features, feats/parts/*.jsonl one line per video and writer (path, shard,
  row, clip start times and coverage, missing streams, status or error), feats/index.jsonl a snapshot of all of
  them and feats/failed.txt the failed files (an input list for another try); read them with
  avidzoo.load_features("feats/"). Any number of extract commands may write to one folder at once; rerunning a
  command resumes (finished videos are skipped). Under torchrun every rank takes its share of the videos.

exit status: 0 every input done; 2 nothing done (bad arguments, an input that does not exist, a URL whose
  scheme has no reader installed, settings that differ from the folder's); 3 the run finished but some inputs
  failed (0 with --allow-failures); 4 the output folder cannot take more (its disk full, a quota, read-only):
  what was written is kept, and a rerun with room, there or in the folder moved elsewhere, resumes.
"""


def _extractor_kwargs(args: argparse.Namespace) -> dict:
    return dict(clips_per_video=args.clips_per_video, batch_size=args.batch_size, num_workers=args.workers,
                device=args.device, dtype=args.dtype, compile=args.compile, progress=not args.quiet,
                decoder_threads=args.decoder_threads, torch_threads=args.torch_threads, preprocess=args.preprocess,
                decoder=args.decoder)


# Exit codes: 0 done; 2 nothing was done (bad arguments, a missing input, a URL without its reader, refused settings,
# any error said before the run); FAILED_FILES the run finished but some of its inputs failed (recorded; 0 with
# --allow-failures).
FAILED_FILES = 3


def _cmd_extract(args: argparse.Namespace) -> int:
    if args.status:
        report = extract_status(args.status, find_media(args.inputs, missing="error") if args.inputs else None)
        print(f"{args.status}: {report}")
        for path, err in list(report.failed.items())[:10]:
            print(f"  failed: {path}: {err}")
        return 0
    segments = _segments_arg(args.segments)
    if not args.inputs and isinstance(segments, str):  # the segments CSV names the files
        args.inputs = [segments]
    if not args.inputs or not args.model or not args.out:
        raise ValueError("extract needs INPUTS, --model and --out (or --status DIR)")
    t0 = time.perf_counter()
    shard = parse_shard(args.shard) if args.shard else None
    # Every input checked before any work: a typo or an unreadable URL is said now, not recorded as a failed file later.
    # With Ray, the cluster's tasks list the remote inputs (this machine may not reach the store).
    inputs = (find_media_with_ray(args.inputs, missing="error", address=args.ray_address) if args.engine == "ray"
              else find_media(args.inputs, missing="error"))
    mine = {str(p) for p in select_shard(inputs, shard)}
    options = dict(resume=not args.no_resume, retry_failed=args.retry_failed, shard=shard,
                   modalities=args.modalities.split(",") if args.modalities else None,
                   layer=args.layer, clip_agg=args.clip_agg, normalize=args.normalize, sampling=args.sampling,
                   maps=args.maps, stride=args.stride, segments=segments, **_extractor_kwargs(args))
    if args.engine == "ray":
        print("engine: ray", flush=True)
        out = extract_with_ray(args.model, inputs, args.out, address=args.ray_address, **options)
    else:
        run = {k: options.pop(k) for k in ("resume", "retry_failed", "shard")}
        extractor = FeatureExtractor(args.model, **options)
        per = "row" if extractor.timeline is not None else "file"
        print(f"plan: {extractor.plan}; features {human_size(extractor.row_bytes())} per {per}", flush=True)
        out = extractor.extract(inputs, args.out, **run)
    if rank_world()[0] != 0:  # under torchrun rank 0, the last to finish (it writes the snapshot), reports for all
        return 0
    report = extract_status(out)
    # a tar shard stands for its media members, whose rows are named <shard>/<key>.<ext>
    shards = {p for p in mine if is_shard(p)}
    ours = ({p for p in read_rows(out) if p in mine or member_shard(p, shards)} | (mine - shards)) if shards else mine
    failed = {p: e for p, e in report.failed.items() if p in ours}
    print(f"done: {sum(p not in report.failed for p in ours)} of {len(ours)} inputs, failed: {len(failed)}, elapsed: "
          f"{time.perf_counter() - t0:.1f} s, output: {out}" + (f" (shard {shard[0]}/{shard[1]})" if shard else "")
          + (f"; the folder holds {report.done} done, {len(report.failed)} failed" if report.done + len(report.failed)
             > len(mine) else ""))
    for path, err in list(failed.items())[:10]:
        print(f"  failed: {path}: {err}")
    if failed:
        print(f"  {'... and ' + str(len(failed) - 10) + ' more; ' if len(failed) > 10 else ''}all failed files: "
              f"{out / FAILED_FILE} (errors in {out / INDEX_FILE}); --retry-failed tries them again")
        return 0 if args.allow_failures else FAILED_FILES
    return 0


def _segments_arg(value: str | None) -> float | str | None:
    """``--segments``: a length in seconds, or the path of a segments CSV."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        if not Path(value).is_file() and "://" not in value:
            raise ValueError(f"--segments {value}: neither a length in seconds nor a CSV file") from None
        return value


def _cmd_export(args: argparse.Namespace) -> int:
    path = export_features(args.folder, args.to)
    print(f"wrote {path}")
    return 0


def _cmd_score_av(args: argparse.Namespace) -> int:
    rows = score_av(args.model, find_media(args.inputs, missing="error"), out_csv=args.csv, **_extractor_kwargs(args))
    for r in rows[: args.top]:
        if r["score"] is not None:
            print(f"{r['score']:+.4f}  {r['percentile']:5.1f}%  {r['path']}")
    unscored = [r for r in rows if r["score"] is None]
    if unscored:
        print(f"not scored: {len(unscored)}")
        for r in unscored[: args.top]:
            print(f"  {r['path']}: {r['error']}")
    if args.csv:
        print(f"all {len(rows)} rows: {args.csv}")
    return 0


def _add_run_options(s: argparse.ArgumentParser, required: bool = True) -> None:
    s.add_argument("inputs", nargs="+" if required else "*", metavar="INPUTS",
                   help="media files, folders, globs or .txt/.csv lists")
    s.add_argument("--model", required=required, metavar="NAME_OR_PATH",
                   help="registry name, hf-hub:ORG/REPO, local-dir:DIR, a folder, .safetensors or .pth.tar")
    s.add_argument("--clips-per-video", type=int, default=10)
    s.add_argument("--batch-size", type=int, default=None, help="clips per forward pass (default 64 GPU, 8 CPU)")
    s.add_argument("--workers", type=int, default=None, help="decoding processes (default: the thread plan's)")
    s.add_argument("--decoder-threads", type=int, default=None, help="FFmpeg threads per decoding process")
    s.add_argument("--torch-threads", type=int, default=None, help="the model's torch threads")
    s.add_argument("--preprocess", choices=["auto", "worker", "device"], default="auto",
                   help="where crop, normalisation and spectrograms run (auto: device on CUDA, worker on CPU)")
    s.add_argument("--decoder", choices=["auto", "software", "cuda"], default="auto",
                   help="video decoding: software (FFmpeg on the cores), cuda (NVDEC on the model's GPU, frames kept "
                   "there; an error at once where the machine lacks it), auto (cuda where it works, else software; "
                   "the plan line says which)")
    s.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    s.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None,
                   help="autocast precision (default bf16 on CUDA, fp32 on CPU)")
    s.add_argument("--compile", action="store_true", help="torch.compile the encoders")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


PRETRAIN_EXAMPLE = """examples:
  avidzoo pretrain --preset robust_xid --data videos/ --out runs/rxid --batch-size 256 --epochs 30
  torchrun --nproc_per_node 8 -m avidzoo pretrain --config my_run.yaml --resume
"""


def _run_config(args: argparse.Namespace, cls: type, flags: dict):
    """The run config of ``--config FILE`` (if given) with the flags that were set on top, or ``None`` after
    printing the resolved config for ``--print-config``."""

    flags = {k: v for k, v in flags.items() if v is not None}
    cfg = cls(**read_config_file(args.config, cls, flags)) if args.config else cls(**flags)
    cfg.resume = cfg.resume or args.resume
    if args.print_config:
        print(json.dumps(dataclasses.asdict(cfg.resolved()), indent=2, default=str))
        return None
    return cfg


def _cmd_pretrain(args: argparse.Namespace) -> int:
    cfg = _run_config(args, PretrainConfig, {
        "data": args.data, "out": args.out, "recipe": args.preset, "epochs": args.epochs,
        "batch_size": args.batch_size, "lr": args.lr, "num_workers": args.workers, "device": args.device,
        "init": args.init, "clips_per_video": args.clips_per_video, "video_depth": args.video_depth,
        "video": {"colour": args.video_colour} if args.video_colour else None, "amp": args.amp,
        "max_bad_steps": args.max_bad_steps, "keep_checkpoints": args.keep_checkpoints})
    if cfg is None:
        return 0
    run = pretrain(cfg)
    print(f"run: {run}; load the model with avidzoo.from_pretrained({str(run)!r})")
    return 0


RANK_EXAMPLE = """examples:
  avidzoo rank my_clips/ --out rank/                       every weight, both towers and fused: rank/report.md
  avidzoo rank clips.csv --weights cross_avid_r2plus1d.kinetics400 runs/mine/best --modality video
  avidzoo rank esc50:ESC-50 --weights crisscross_r2plus1d.audioset2m gdt_r2plus1d.kinetics400 --modality audio
"""

FINETUNE_EXAMPLE = """examples:
  avidzoo finetune --model avid_cma_r2plus1d.audioset --train my_videos/train --val my_videos/val --out runs/mine
  avidzoo finetune --model avid_cma_r2plus1d.audioset --train ucf101:ucfTrainTestlist --root UCF-101 --fold 1 \\
      --frames 32 --out runs/ucf_f1_32
  torchrun --nproc_per_node 8 -m avidzoo finetune --config ucf.yaml --resume
"""


def _dataset_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--root", help="videos' root folder for ucf101:/hmdb51: split files (and relative CSV paths)")
    s.add_argument("--fold", type=int, help="split/fold number (UCF-101 and HMDB-51: 1-3)")


def _cmd_finetune(args: argparse.Namespace) -> int:
    cfg = _run_config(args, FinetuneConfig, {
        "model": args.model, "train": args.train, "val": args.val, "root": args.root, "fold": args.fold,
        "out": args.out, "protocol": args.protocol, "frames": args.frames, "epochs": args.epochs,
        "warmup_epochs": args.warmup_epochs, "batch_size": args.batch_size, "lr": args.lr,
        "clips_per_video": args.clips_per_video, "num_workers": args.workers, "device": args.device,
        "amp": args.amp, "max_bad_steps": args.max_bad_steps, "keep_checkpoints": args.keep_checkpoints})
    if cfg is None:
        return 0
    run = finetune(cfg)
    report = run / "eval" / "report.json"
    if report.is_file():
        r = json.loads(report.read_text())
        print(f"Clip@1 {r['clip_top1']:.4f}  Video@1 {r['video_top1']:.4f} on {r['videos']} videos ({report.parent})")
    print(f"best model: {run / 'best'}; load it with avidzoo.from_pretrained({str(run / 'best')!r})")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    data = open_dataset(args.data, root=args.root, fold=args.fold or 1, subset=args.subset)
    report = evaluate(args.model, data, clips=args.clips, batch_size=args.batch_size, num_workers=args.workers,
                      device=args.device, out=args.out)
    for path, err in report.skipped.items():
        print(f"skipped {path}: {err}", file=sys.stderr)
    print(f"Clip@1 {report.clip_top1:.4f}  Video@1 {report.video_top1:.4f} ({report.clips} clips) on "
          f"{len(report.predictions)} videos")
    if args.out:
        print(f"report, predictions and confusion matrix: {args.out}")
    return 0


def _cmd_linear_probe(args: argparse.Namespace) -> int:
    train = open_dataset(args.train, root=args.root, fold=args.fold or 1, subset="train")
    test = open_dataset(args.test, root=args.root, fold=args.fold or 1, subset="test") if args.test else None
    folds = [int(f) for f in args.folds.split(",")] if args.folds else None
    report = linear_probe(args.model, train, test, modality=args.modality, layer=args.layer, clips=args.clips,
                          folds=folds, cache=args.cache, epochs=args.epochs, device=args.device,
                          num_workers=args.workers, protocol=args.protocol)
    for f in report.folds:
        print(f"fold {f['fold']}: top-1 {f['top1']:.4f} ({f['train_files']} train / {f['test_files']} test files)")
    print(f"{report.modality} {report.layer}: top-1 {report.top1:.4f} +- {report.std:.4f} over {len(report.folds)} "
          f"split(s)")
    if args.out:
        write_text_atomic(args.out, json.dumps(report.summary(), indent=2) + "\n")
    return 0


def _cmd_rank(args: argparse.Namespace) -> int:
    data = open_dataset(args.data, root=args.root, fold=args.fold or 1, subset="train")
    shots = [int(n) for n in args.shots.split(",")] if args.shots else []
    # how the data is named in the next command the report suggests, with the options that find it
    spec = " ".join([args.data] + [f"--{k} {v}" for k, v in (("root", args.root), ("fold", args.fold)) if v])
    rank(data, args.weights or ["all"], modality=args.modality, out=args.out, folds=args.folds, repeats=args.repeats,
         seed=args.seed, shots=shots, episodes=args.episodes, clips=args.clips, device=args.device,
         num_workers=args.workers, progress=not args.quiet, data_spec=spec)
    return 0  # rank raises (exit 2) when no weight could be scored


def env_report() -> dict[str, object]:
    """Versions of everything avidzoo runs on, for bug reports."""
    report: dict[str, object] = {"avidzoo": __version__, "python": sys.version.split()[0],
                                 "platform": platform.platform(), "torch": torch.__version__}
    for mod in ("torchvision", "torchaudio", "huggingface_hub", "safetensors", "einops", "numpy"):
        try:
            report[mod] = __import__(mod).__version__
        except Exception as e:  # report, do not fail: this command exists to debug broken installs
            report[mod] = f"unavailable ({type(e).__name__}: {e})"
    try:
        report["av"] = av.__version__
        report["ffmpeg"] = {k: ".".join(map(str, v)) for k, v in av.library_versions.items()}
    except Exception as e:
        report["av"] = f"unavailable ({type(e).__name__}: {e})"
    report["cuda_build"] = torch.version.cuda
    report["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        report["cudnn"] = torch.backends.cudnn.version()
        report["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    report["cache_dir"] = str(hub.cache_dir())
    report["offline"] = hub.is_offline()
    return report


def _cmd_env(args: argparse.Namespace) -> int:
    print(json.dumps(env_report(), indent=2))
    return 0


# -- the parser: one builder per command -------------------------------------------------------------------------------
def _training_options(s: argparse.ArgumentParser) -> None:
    """The options pretraining and finetuning share: processes, device, precision, the non-finite guard, resume."""
    s.add_argument("--workers", type=int)
    s.add_argument("--device")
    s.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"],
                   help="mixed precision (default auto: bf16/fp16 autocast on CUDA, fp32 on CPU)")
    s.add_argument("--max-bad-steps", type=int, metavar="N",
                   help="stop after N steps in a row with a non-finite loss or gradients (each is skipped; default 20)")
    s.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    s.add_argument("--keep-checkpoints", type=int, metavar="N",
                   help="keep only the newest N checkpoints/epoch-NNN folders (default 0: every epoch's)")
    s.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def _parser_list(sub) -> None:
    s = sub.add_parser("list", help="list models or released weights")
    s.add_argument("filter", nargs="?", default="*", help="fnmatch pattern or substring")
    s.add_argument("--pretrained", action="store_true", help="list weights (model.tag) instead of models")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_list)


def _parser_info(sub) -> None:
    s = sub.add_parser("info", help="sources, hashes, license, preprocessing and metrics of a model or weight")
    s.add_argument("name")
    s.set_defaults(func=_cmd_info)


def _parser_download(sub) -> None:
    s = sub.add_parser("download", help="fetch, verify and convert weights (optionally into a portable folder)")
    s.add_argument("names", nargs="+", metavar="NAME")
    s.add_argument("--to", metavar="DIR", help="also copy each into DIR/<name>/ for use on another machine")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_download)


def _parser_convert(sub) -> None:
    s = sub.add_parser("convert", help="convert an original release file (AVID, CrissCross, GDT, XDC) or any loadable "
                       "source to a saved folder")
    s.add_argument("src")
    s.add_argument("out", metavar="OUT_DIR")
    s.add_argument("--release", metavar="WEIGHTS", help="the registry weights SRC is a release file of (default: "
                   "found from its file name, else its contents)")
    s.set_defaults(func=_cmd_convert)


def _parser_verify(sub) -> None:
    s = sub.add_parser("verify", help="re-hash and read cached weights, a folder or a file")
    s.add_argument("target", metavar="NAME|PATH")
    s.set_defaults(func=_cmd_verify)


def _parser_extract(sub) -> None:
    s = sub.add_parser("extract", help="embeddings of media files, written to a folder",
                       epilog=EXTRACT_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_run_options(s, required=False)
    s.add_argument("--out", metavar="DIR", help="output folder (any number of extract commands may share it)")
    s.add_argument("--shard", metavar="K/N", help="take every N-th input from the K-th (0-based), for N independent "
                   "workers given the same inputs; 'slurm' reads the job array's task id and count")
    s.add_argument("--status", metavar="DIR", help="print done / failed / remaining (of INPUTS, if given) across "
                   "every writer of DIR, and exit")
    s.add_argument("--sampling", choices=["uniform", "keyframe"], default="uniform",
                   help="clip starts: uniform (the original rule) or keyframe (each moved to the nearest keyframe: "
                   "no pre-roll decoded, much faster on long-GOP files; not the original's starts)")
    s.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process (and torchrun ranks); ray: decoding as Ray Data tasks, encoders as "
                   "actors on a Ray cluster (pip install 'avidzoo[ray]')")
    s.add_argument("--ray-address", metavar="ADDRESS", help="the Ray cluster (auto, ray://HOST:10001; default: "
                   "a local Ray)")
    s.add_argument("--modalities", help="video, audio or video,audio (default: every tower the model has)")
    s.add_argument("--layer", default="pool", help="pool (512-d), proj (128-d), conv1 .. conv5x (probe grids)")
    s.add_argument("--maps", choices=["grid", "map", "full"], default="grid", help="an intermediate --layer pooled "
                   "to its probe grid (default), its spatial map with time pooled (conv5x at 224 px: 512x7x7), or "
                   "its whole map; the plan line says what a file's features take")
    s.add_argument("--clip-agg", choices=["mean", "max", "none"], default="mean")
    s.add_argument("--stride", type=float, metavar="S", help="features over time: a row every S seconds (each the "
                   "longest clip's length), as many as each file holds, with their times")
    s.add_argument("--segments", metavar="LEN|CSV", help="features over time: back-to-back segments of LEN seconds "
                   "(1: AVE/AVVP's one row per second), or a CSV of path,start,end[,label][,id] (one row per "
                   "segment; INPUTS default to its files); --clips-per-video clips per row (default 1; 10 for a CSV)")
    s.add_argument("--normalize", action="store_true", help="L2-normalise the features")
    s.add_argument("--no-resume", action="store_true", help="start the output folder over")
    s.add_argument("--retry-failed", action="store_true", help="on resume, try the failed files again")
    s.add_argument("--allow-failures", action="store_true", help=f"exit 0 when some files failed (default: exit "
                   f"{FAILED_FILES}; they are recorded and listed in OUT/{FAILED_FILE} either way)")
    s.set_defaults(func=_cmd_extract, clips_per_video=None)  # 10 per file, 1 per row over time


def _parser_export(sub) -> None:
    s = sub.add_parser("export", help="an extraction folder as Parquet, .npz, HDF5 or a folder of .npy files")
    s.add_argument("folder", metavar="DIR", help="a folder written by avidzoo extract")
    s.add_argument("--to", required=True, metavar="FILE", help="features.parquet (needs pyarrow), features.npz or "
                   "features.h5 (needs h5py), a path or a URL (s3://bucket/features.parquet); or a folder ending in "
                   "/ for per-file <name>_<modality>.npy and <name>_timestamps_ms.npy, as video_features writes them")
    s.set_defaults(func=_cmd_export)


def _parser_score_av(sub) -> None:
    s = sub.add_parser("score-av", help="audio-visual correspondence per video (find soundtracks that do not fit)")
    _add_run_options(s)
    s.add_argument("--csv", metavar="FILE", help="write every row (path, score, percentile, error) here")
    s.add_argument("--top", type=int, default=20, help="print this many lowest-scoring videos")
    s.set_defaults(func=_cmd_score_av)


def _parser_pretrain(sub) -> None:
    s = sub.add_parser("pretrain", help="self-supervised pretraining (Cross/Self/Joint-AVID, AVID-CMA, Robust-xID)",
                       epilog=PRETRAIN_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--config", metavar="FILE.yaml", help="a PretrainConfig as YAML or JSON; flags override it")
    s.add_argument("--preset", metavar="RECIPE", help="a manifest recipe: cross_avid_kinetics400, "
                   "avid_cma_kinetics400, cross_avid_audioset2m, avid_cma_audioset2m, self_avid, joint_avid, "
                   "robust_xid")
    s.add_argument("--data", nargs="+", help="training videos: folders, globs or lists")
    s.add_argument("--out", help="run folder (default runs/avid)")
    s.add_argument("--epochs", type=int)
    s.add_argument("--batch-size", type=int, help="global batch (split over torchrun processes)")
    s.add_argument("--lr", type=float)
    s.add_argument("--clips-per-video", type=int)
    s.add_argument("--video-depth", type=int, choices=[10, 18, 34])
    s.add_argument("--video-colour", choices=COLOUR_RULES, help="how frames are converted from YUV: bt601 (default, "
                   "as every released weight saw them) or tagged (the streams' own matrix and range); the saved "
                   "weights record it, so extraction with them decodes alike")
    s.add_argument("--init", help="start from these weights (a registry name or path; CMA starts from AVID)")
    _training_options(s)
    s.set_defaults(func=_cmd_pretrain)


def _parser_finetune(sub) -> None:
    s = sub.add_parser("finetune", help="finetune the video encoder on labelled videos (UCF-101/HMDB-51 protocol)",
                       epilog=FINETUNE_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--config", metavar="FILE.yaml", help="a FinetuneConfig as YAML or JSON; flags override it")
    s.add_argument("--model", metavar="NAME_OR_PATH",
                   help="pretrained weights (default cross_avid_r2plus1d.kinetics400)")
    s.add_argument("--train", metavar="DATA", help="class folder, CSV (path,label[,start,end]), ucf101:SPLITS_DIR or "
                   "hmdb51:SPLITS_DIR")
    s.add_argument("--val", metavar="DATA", help="validation data (default: the split's test list)")
    _dataset_options(s)
    s.add_argument("--out", help="run folder (default runs/finetune)")
    s.add_argument("--protocol", help="training preset: ucf101, hmdb51 or custom under the weights' own protocol "
                   "family; a family (avid, crisscross, gdt); or family:dataset (default: the weights' family, the "
                   "dataset from --train)")
    s.add_argument("--frames", type=int, help="frames per clip at the weights' rate: 8 or 32 (default: the "
                   "protocol's own, 32 for GDT, else 8; AVID's 16 fps: 0.5 s or 2 s)")
    s.add_argument("--epochs", type=int, help="epochs after the warm-up")
    s.add_argument("--warmup-epochs", type=int, help="classifier-only epochs first")
    s.add_argument("--batch-size", type=int, help="global batch (split over torchrun processes)")
    s.add_argument("--lr", type=float)
    s.add_argument("--clips-per-video", type=int, help="training clips per video and epoch")
    _training_options(s)
    s.set_defaults(func=_cmd_finetune)


def _parser_evaluate(sub) -> None:
    s = sub.add_parser("evaluate", help="Clip@1, Video@1, per-class accuracy and confusion matrix of a classifier")
    s.add_argument("model", metavar="MODEL", help="a finetuned model: run folder's best/, a saved folder, hf-hub:...")
    s.add_argument("data", metavar="DATA", help="class folder, CSV, ucf101:SPLITS_DIR or hmdb51:SPLITS_DIR")
    _dataset_options(s)
    s.add_argument("--subset", default="test", choices=["train", "test"], help="list of an official split")
    s.add_argument("--clips", type=int, default=10, help="evenly spaced clips per video for Video@1")
    s.add_argument("--batch-size", type=int)
    s.add_argument("--workers", type=int)
    s.add_argument("--device")
    s.add_argument("--out", help="folder for report.json, predictions.csv and confusion.png")
    s.set_defaults(func=_cmd_evaluate)


def _parser_linear_probe(sub) -> None:
    s = sub.add_parser("linear-probe", help="a linear classifier on frozen features (video or audio, k-fold)")
    s.add_argument("--model", required=True, metavar="NAME_OR_PATH")
    s.add_argument("--train", required=True, metavar="DATA", help="class folder, CSV (with a fold column for "
                   "cross-validation), esc50:ROOT, ucf101:/hmdb51: splits")
    s.add_argument("--test", metavar="DATA", help="test data (default: cross-validation over the folds of --train)")
    _dataset_options(s)
    s.add_argument("--modality", choices=["video", "audio"], default="video")
    s.add_argument("--layer", help="pool, proj, conv2x .. conv5x (default: video pool, audio conv5x)")
    s.add_argument("--clips", type=int, help="clips (crops) per file at train and test time (default 10)")
    s.add_argument("--folds", help="comma-separated folds to test (default: all)")
    s.add_argument("--protocol", choices=["avid", "crisscross"],
                   help="protocol family (default: the weights' own; crisscross tests on each file's first clip)")
    s.add_argument("--cache", metavar="DIR", help="keep the extracted features here and reuse them")
    s.add_argument("--epochs", type=int)
    s.add_argument("--workers", type=int)
    s.add_argument("--device")
    s.add_argument("--out", metavar="FILE.json", help="write the report here")
    s.set_defaults(func=_cmd_linear_probe)


def _parser_rank(sub) -> None:
    s = sub.add_parser("rank", help="which weights suit your labelled media: probes, few-shot, LogME, one report",
                       epilog=RANK_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("data", metavar="DATA", help="class folder, CSV (path,label[,start,end][,fold][,group]; a row "
                   "with start and end is that segment), ucf101:/hmdb51: splits (with --root), esc50:ROOT")
    _dataset_options(s)
    s.add_argument("--weights", nargs="+", metavar="SOURCE", help="registry names, 'all' (the default), saved or "
                   "finetuned folders, release files, hf-hub:ORG/REPO")
    s.add_argument("--modality", choices=["video", "audio", "both"], default="both",
                   help="towers to rank (both: each tower and the two fused; default)")
    s.add_argument("--out", default="rank", metavar="DIR", help="report, plots and the features' cache (default rank)")
    s.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    s.add_argument("--repeats", type=int, default=3, help="cross-validation repeats with new folds (default 3)")
    s.add_argument("--shots", default="1,5,10", help="few-shot training items per class (default 1,5,10; '' for none)")
    s.add_argument("--episodes", type=int, default=100, help="few-shot episodes per shot count (default 100)")
    s.add_argument("--clips", type=int, default=5, help="clips per file, their features averaged (default 5)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int)
    s.add_argument("--device")
    s.add_argument("--quiet", action="store_true", help="no progress lines")
    s.set_defaults(func=_cmd_rank)


def _parser_env(sub) -> None:
    s = sub.add_parser("env", help="versions of torch, torchvision, torchaudio, PyAV/FFmpeg and CUDA")
    s.set_defaults(func=_cmd_env)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="avidzoo", description="AVID audio-visual encoders: weights and tools.",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"avidzoo {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log what is fetched and from where")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_parser_list, _parser_info, _parser_download, _parser_convert, _parser_verify, _parser_extract,
                _parser_export, _parser_score_av, _parser_pretrain, _parser_finetune, _parser_evaluate,
                _parser_linear_probe, _parser_rank, _parser_env):
        add(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="avidzoo: %(message)s")
    try:
        return int(args.func(args) or 0)
    except OutputWriteError as e:  # nothing is lost; a rerun with room resumes
        print(f"avidzoo {args.command}: error: {e}", file=sys.stderr)
        return 4
    except (AvidzooError, ValueError, OSError) as e:
        print(f"avidzoo {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
