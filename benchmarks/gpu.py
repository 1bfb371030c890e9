"""Extraction on a GPU machine, measured in one command; one JSON file of figures.

    python benchmarks/gpu.py --out gpu.json              # on a GPU machine: at most about 8 minutes
    python benchmarks/gpu.py --dry-run --out gpu.json    # every path on a CPU, tiny sizes, under 2 minutes

It makes its own media (nothing from outside): camera-like H.264 High 720p with B-frames and a keyframe every 5 s,
long-GOP 720p (a keyframe every 10 s), short 640x360 clips, 1080p, and HEVC. Top-level keys of the JSON:

* ``machine``: GPU, driver, CUDA, cores this process may use, library versions, FFmpeg's hardware devices.
* ``encoder``: the model alone on inputs already on the device: clips/s per dtype, batch size and compile setting
  (eager; ``torch.compile``; ``reduce-overhead``, i.e. CUDA graphs), peak memory; ``best`` is the fastest.
* ``decode``: the software decoder (both model inputs, clips as extraction reads them): clips/s on one core, and
  with the thread plan's workers on the real cores.
* ``hw_decode``: NVDEC (``decoder="cuda"``, frames kept and converted on the GPU): clips/s per number of decoding
  threads, and the pixel difference from the software path on the same clips; ``null`` with the reason where the
  machine has no NVDEC.
* ``pipeline``: end to end (files in, features out) per decoder: clips/s and the fraction of the encoder alone at
  the same dtype and batch size.
* ``agreement``: features per decoder and dtype on the device against CPU fp32 software features of the same clips:
  cosine (mean, min) and the largest absolute difference.

Each section stops early once the time budget (``--budget``) is spent and says so (``"skipped"``), so that the run
ends in time on a slow machine; every key is written either way.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import av.codec.hwaccel
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import avidzoo  # noqa: E402
from avidzoo.extract import FeatureExtractor  # noqa: E402
from avidzoo.extract.dataset import ClipDataset, collate_items, init_worker, threaded_items  # noqa: E402
from avidzoo.extract.plan import available_cores, plan_threads  # noqa: E402
from avidzoo.io import MediaFile, cuda_decoder_problem, cuda_decoder_works, uniform_starts  # noqa: E402

from media import make_video  # noqa: E402

HIGH = dict(pattern="scene", crf=20, preset="veryfast", audio_rate=44100, channels=2)  # H.264 High, ~3 Mbit/s 720p
# (name, make_video arguments): the full set for a GPU machine, and the dry run's tiny one
MEDIA = [
    *((f"camera{i}.mp4", dict(fps=30, seconds=20, size=(1280, 720), gop=150, bframes=3, tone_start=float(i), **HIGH))
      for i in range(4)),
    *((f"long_gop{i}.mp4", dict(fps=30, seconds=30, size=(1280, 720), gop=300, bframes=2, **HIGH)) for i in range(2)),
    *((f"short{i}.mp4", dict(fps=30, seconds=10, size=(640, 360), pattern="texture", crf=23, tone_start=float(i)))
      for i in range(6)),
    ("full_hd.mp4", dict(fps=30, seconds=10, size=(1920, 1080), gop=60, bframes=3, **HIGH)),
    *((f"hevc{i}.mkv", dict(fps=30, seconds=10, size=(1280, 720), vcodec="libx265", pattern="scene", gop=120))
      for i in range(2)),
]
DRY_MEDIA = [
    ("camera.mp4", dict(fps=30, seconds=2, size=(160, 96), gop=30, bframes=3, pattern="scene")),
    ("short.mp4", dict(fps=25, seconds=1.5, size=(128, 72), pattern="texture")),
    ("hevc.mkv", dict(fps=30, seconds=1.5, size=(128, 72), vcodec="libx265", pattern="scene")),
]


class Budget:
    """Seconds left of the run's budget; a section asks before each measurement."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_media(folder: Path, dry: bool) -> list[Path]:
    specs = DRY_MEDIA if dry else MEDIA
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(len(specs), available_cores())) as ex:
        jobs = [ex.submit(make_video, folder / name, **kw) for name, kw in specs]
        return [Path(j.result()) for j in jobs]


def make_model(dry: bool) -> avidzoo.AVIDModel:
    """Random weights (figures do not depend on them): AVID's full model, or for a dry run a small one on tiny
    clips, as the tests use."""
    torch.manual_seed(0)
    if not dry:
        return avidzoo.create_model("cross_avid_r2plus1d")
    m = avidzoo.create_model("cross_avid_r2plus1d", video_depth=10)
    pre = m.config["preprocessing"]
    pre["video"].update(num_frames=4, crop_size=32, resize=36, clip_duration=0.25)
    pre["audio"].update(clip_duration=0.64, num_frames=64)
    m.update_config(preprocessing=pre)
    return m


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device), "cores": available_cores(), "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "torchvision": _version("torchvision"), "torchaudio": _version("torchaudio"), "av": av.__version__,
        "ffmpeg_hwdevices": list(av.codec.hwaccel.hwdevices_available()), "avidzoo": avidzoo.__version__,
        "gpu": None, "driver": None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count)
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            info["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired, IndexError):
            pass
    return info


def _version(name: str) -> str | None:
    try:
        return __import__(name).__version__
    except ImportError:
        return None


def model_inputs(model, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    """One batch of model inputs of the model's shapes, already on the device."""
    t = avidzoo.create_transforms(model)
    pre = model.config["preprocessing"]
    wave = torch.randn(1, int(round(float(pre["audio"]["clip_duration"]) * int(pre["audio"]["sample_rate"])))) * 0.1
    audio = t.audio(wave[None])
    v = pre["video"]
    video = torch.randn(batch, 3, int(v["num_frames"]), int(v["crop_size"]), int(v["crop_size"]))
    return {"video": video.to(device), "audio": audio.expand(batch, *audio.shape[1:]).contiguous().to(device)}


def time_encoder(model, device, dtype: str, batch: int, compile_mode, budget: Budget, seconds: float,
                 modalities: tuple[str, ...] = ("video", "audio")) -> dict:
    row: dict[str, Any] = {"dtype": dtype, "batch_size": batch, "compile": compile_mode or False}
    if modalities != ("video", "audio"):
        row["modalities"] = list(modalities)
    enc = FeatureExtractor(model, device=device, dtype=dtype, batch_size=batch, compile=compile_mode, progress=False,
                           num_workers=0, modalities=modalities)
    inputs = {m: x for m, x in model_inputs(model, batch, device).items() if m in modalities}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(3 if compile_mode else 1):  # compiling (and CUDA graph recording) happens in the first calls
        enc.encode(**inputs)
    sync(device)
    row["warmup_s"] = round(time.perf_counter() - t0, 2)
    n, t0 = 0, time.perf_counter()
    while n < 3 or (time.perf_counter() - t0 < seconds and budget.left() > 0):
        enc.encode(**inputs)
        n += 1
    sync(device)
    row["clips_per_s"] = round(n * batch / (time.perf_counter() - t0), 2)
    row["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None
    return row


def encoder_section(model, device, dry: bool, budget: Budget) -> dict:
    cuda = device.type == "cuda"
    dtypes = ["fp32", "bf16", "fp16"] if cuda else ["fp32", "bf16"]
    batches = [32, 64, 128] if not dry else [2]
    seconds = 4.0 if not dry else 0.5
    rows, skipped = [], []
    for dtype in dtypes:
        for batch in batches:
            if budget.left() < 0:
                skipped.append({"dtype": dtype, "batch_size": batch, "compile": False})
                continue
            rows.append(time_encoder(model, device, dtype, batch, False, budget, seconds))
            print(f"encoder {rows[-1]}", flush=True)
    best_eager = max(rows, key=lambda r: r["clips_per_s"])
    modes = [True, "reduce-overhead"] if cuda else [True]
    for mode in modes:
        if budget.left() < 60 and not dry:
            skipped.append({"dtype": best_eager["dtype"], "batch_size": best_eager["batch_size"], "compile": mode})
            continue
        # a dry run compiles the audio tower alone: the same path, a fraction of the compiling on a small CPU
        rows.append(time_encoder(model, device, best_eager["dtype"], best_eager["batch_size"], mode, budget, seconds,
                                 ("audio",) if dry else ("video", "audio")))
        print(f"encoder {rows[-1]}", flush=True)
    out = {"rows": rows, "best": max(rows, key=lambda r: r["clips_per_s"]), "skipped": skipped or None}
    if not cuda:
        out["reduce_overhead"] = "not run: CUDA graphs need a CUDA device"
    return out


def count_clips(items) -> int:
    return sum(len(it["starts"]) for it in items if "error" not in it)


def decode_section(model, files, clips: int, device: torch.device, budget: Budget) -> dict:
    """The software decoder alone, as extraction reads files (raw uint8 crops and waveforms for the device)."""
    transforms = avidzoo.create_transforms(model)
    out: dict[str, Any] = {}
    plan = plan_threads(device)
    for key, workers in (("one_core", 1 if plan.workers else 0), ("plan", plan.workers)):
        if budget.left() < 0:
            out[key] = {"skipped": "time budget"}
            continue
        ds = ClipDataset(files, transforms, model.modalities, clips, preprocess="device", decoder_threads=1)
        loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=workers, collate_fn=collate_items,
                                             worker_init_fn=init_worker if workers else None)
        t0 = time.perf_counter()
        n = count_clips(it for batch in loader for it in batch)
        seconds = time.perf_counter() - t0
        out[key] = {"workers": workers, "clips": n, "clips_per_s": round(n / seconds, 2),
                    "clips_per_s_per_core": round(n / seconds / max(workers, 1), 2)}
        print(f"decode {key} {out[key]}", flush=True)
    out["plan"]["plan"] = str(plan)
    return out


def hw_decode_section(model, files, clips: int, device: torch.device, dry: bool, budget: Budget) -> dict | None:
    problem = cuda_decoder_problem() or cuda_decoder_works(files[0], device)
    if problem:
        return {"cuda": None, "reason": problem}
    transforms = avidzoo.create_transforms(model)
    rows = []
    for threads in ([1, 2, 4, 8, 16] if not dry else [1, 2]):
        if budget.left() < 0:
            rows.append({"threads": threads, "skipped": "time budget"})
            continue
        ds = ClipDataset(files, transforms, model.modalities, clips, preprocess="device", decoder="cuda",
                         frames_on=device)
        t0 = time.perf_counter()
        items = [b[0] for b in threaded_items(ds, threads)]
        sync(device)
        seconds = time.perf_counter() - t0
        errors = [it["error"] for it in items if "error" in it]
        rows.append({"threads": threads, "clips_per_s": round(count_clips(items) / seconds, 2),
                     "failed": len(errors), "errors": errors[:3] or None})
        print(f"hw_decode {rows[-1]}", flush=True)
    # The same clips' frames from both decoders (short side 128, both frame rules' default): pixel differences
    pixels = []
    for path in files[: 4 if not dry else 2]:
        with MediaFile(path) as f:
            starts = uniform_starts(f.info.duration, 0.5, 3)
            soft = torch.stack(f.read_video(starts, short_side=128)).float()
        with MediaFile(path, decoder="cuda", frames_on=device) as f:
            hard = torch.stack(f.read_video(starts, short_side=128)).float().cpu()
        d = (hard - soft).abs()
        pixels.append({"file": path.name, "mean": round(float(d.mean()), 3), "max": float(d.max())})
    return {"cuda": rows, "pixels": pixels}


def pipeline_section(model, files, clips: int, device, encoder: dict, hw_ok: bool, budget: Budget) -> dict:
    best = encoder["best"]
    eager = {(r["dtype"], r["batch_size"]): r["clips_per_s"] for r in encoder["rows"] if not r["compile"]}
    alone = eager.get((best["dtype"], best["batch_size"]), best["clips_per_s"])
    out: dict[str, Any] = {}
    for decoder in ("software", "cuda"):
        if decoder == "cuda" and not hw_ok:
            out[decoder] = None
            continue
        if budget.left() < 0:
            out[decoder] = {"skipped": "time budget"}
            continue
        ext = FeatureExtractor(model, device=device, dtype=best["dtype"], batch_size=best["batch_size"],
                               clips_per_video=clips, decoder=decoder, progress=False)
        t0 = time.perf_counter()
        result = ext.extract(files)
        seconds = time.perf_counter() - t0
        n = len(result.paths) * clips
        out[decoder] = {"plan": str(ext.plan), "clips": n, "failed": len(result.failed),
                        "clips_per_s": round(n / seconds, 2), "fraction_of_encoder": round(n / seconds / alone, 3),
                        "encoder_alone_clips_per_s": alone, "dtype": best["dtype"], "batch_size": best["batch_size"]}
        print(f"pipeline {decoder} {out[decoder]}", flush=True)
    return out


def agreement_section(model, files, device, hw_ok: bool, budget: Budget) -> dict:
    """Features of the same files' clips on the device (per decoder and dtype) against CPU fp32 software ones."""
    subset, clips = files[:3], 2
    ref = FeatureExtractor(model, device="cpu", dtype="fp32", clips_per_video=clips, decoder="software",
                           progress=False, num_workers=0, clip_agg="none").extract(subset)
    dtypes = ["fp32", "bf16", "fp16"] if device.type == "cuda" else ["bf16"]
    rows = []
    for decoder in (["software", "cuda"] if hw_ok else ["software"]):
        for dtype in dtypes:
            if budget.left() < -60:
                rows.append({"decoder": decoder, "dtype": dtype, "skipped": "time budget"})
                continue
            got = FeatureExtractor(model, device=device, dtype=dtype, clips_per_video=clips, decoder=decoder,
                                   progress=False, clip_agg="none").extract(subset)
            row: dict[str, Any] = {"decoder": decoder, "dtype": dtype}
            for m in model.modalities:
                a, b = got[m].reshape(-1, got[m].shape[-1]), ref[m].reshape(-1, ref[m].shape[-1])
                cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
                row[m] = {"cosine_mean": round(float(cos.mean()), 6), "cosine_min": round(float(cos.min()), 6),
                          "max_abs_diff": float((a - b).abs().max())}
            rows.append(row)
            print(f"agreement {row}", flush=True)
    return {"reference": "cpu fp32, software decoder", "clips": clips * len(subset), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="every path on this machine's CPU with tiny sizes")
    ap.add_argument("--out", default="gpu_benchmark.json", help="the JSON file to write")
    ap.add_argument("--device", default=None, help="default: cuda (cpu for --dry-run)")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the measurements (default 420; 60 dry)")
    args = ap.parse_args()
    dry = args.dry_run
    device = torch.device(args.device or ("cpu" if dry else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here: run with --dry-run on a CPU")
    budget = Budget(args.budget if args.budget is not None else (60.0 if dry else 420.0))
    t_start = time.perf_counter()
    report: dict[str, Any] = {"dry_run": dry, "machine": machine(device)}
    print(json.dumps(report["machine"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        files = make_media(Path(tmp), dry)
        report["media"] = {"files": [p.name for p in files], "seconds_to_make": round(time.perf_counter() - t0, 1)}
        model = make_model(dry)
        clips = 10 if not dry else 2
        report["encoder"] = encoder_section(model, device, dry, budget)
        report["decode"] = decode_section(model, files, clips, device, budget)
        report["hw_decode"] = hw_decode_section(model, files, clips, device, dry, budget)
        hw_ok = report["hw_decode"].get("cuda") is not None
        report["pipeline"] = pipeline_section(model, files, clips, device, report["encoder"], hw_ok, budget)
        report["agreement"] = agreement_section(model, files, device, hw_ok, budget)
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    out = Path(args.out)
    tmp_out = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp_out.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp_out, out)
    print(f"wrote {out} in {report['seconds']} s", flush=True)


if __name__ == "__main__":
    main()
