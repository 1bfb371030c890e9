"""Feature-extraction throughput, all measured in one run on the same videos and model.

    python benchmarks/extract.py [--set mixed|short] [--clips 10] [--compile]

The mixed set (default) is like users' media: 10-s 640x360 clips, two 60-s 720p files with a keyframe every 5 and
10 s and B-frames (H.264 High), a 30-s 480x270 file and a 10-s 1080p one. ``--set short`` is the old set: eight 10-s
640x360 clips.

(a) naive loop, as the original evaluation code: one video at a time, decode its clips the original way (a file
    opened per clip, every frame to PIL, PIL resize; see benchmarks/decode.py), forward them (plain eager fp32,
    NCDHW), then the next video.
(a') the same loop with avidzoo's decoder: what is left is the gain of the pipeline and the faster model.
(b) avidzoo.extract_features with its automatic thread plan (on up to 4 cores: decoding in the main process between
    batches); clips of several videos per batch; BatchNorm folded, channels_last_3d, inference_mode. Then the same
    with other plans (a decoding worker beside the model) and with preprocessing on the model's device (here the CPU).
(c) the model of (b) alone on preloaded model inputs, with all the cores: the ceiling for (b).

Then the video encoder alone (batch 8 clips of 8x224x224): plain eager fp32 NCDHW against the optimised forward.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import avidzoo  # noqa: E402
from avidzoo.extract import FeatureExtractor  # noqa: E402
from avidzoo.extract.dataset import ClipDataset  # noqa: E402
from avidzoo.io import MediaFile, uniform_starts  # noqa: E402

from decode import original_clip  # noqa: E402
from media import make_video  # noqa: E402


def naive_original(model, transforms, paths, clips):
    stats = (transforms.audio.mean.numpy(), transforms.audio.std.numpy())
    with torch.inference_mode():
        for p in paths:
            with MediaFile(p) as f:
                starts = uniform_starts(f.info.duration, 2.0, clips)
            pairs = [original_clip(p, s, stats) for s in starts]
            model.encode_video(torch.stack([v for v, _ in pairs])).mean(0)
            model.encode_audio(torch.stack([a for _, a in pairs])).mean(0)


def naive(model, transforms, paths, clips):
    out = []
    with torch.inference_mode():
        for p in paths:
            with MediaFile(p) as f:
                starts = uniform_starts(f.info.duration, 2.0, clips)
                frames = f.read_video(starts, num_frames=8, fps=16, short_side=256)
                waves = f.read_audio(starts, 2.0)
            v = transforms.video(torch.stack(frames))
            a = transforms.audio(torch.stack(waves))
            out.append((model.encode_video(v).mean(0), model.encode_audio(a).mean(0)))
    return out


def make_set(folder: Path, which: str) -> list[Path]:
    if which == "short":
        return [make_video(folder / f"v{i}.mp4", fps=30, seconds=10, size=(640, 360), pattern="texture", crf=23,
                           tone_start=float(i)) for i in range(8)]
    high = dict(pattern="scene", crf=20, preset="veryfast", audio_rate=44100, channels=2)  # H.264 High, ~3 Mbit/s 720p
    return [
        *(make_video(folder / f"short{i}.mp4", fps=30, seconds=10, size=(640, 360), pattern="texture", crf=23,
                     tone_start=float(i)) for i in range(3)),
        make_video(folder / "long_gop5.mp4", fps=30, seconds=60, size=(1280, 720), gop=150, bframes=3, **high),
        make_video(folder / "long_gop10.mp4", fps=30, seconds=60, size=(1280, 720), gop=300, bframes=2, **high),
        make_video(folder / "small.mp4", fps=25, seconds=30, size=(480, 270), gop=50, bframes=2, **high),
        make_video(folder / "full_hd.mp4", fps=30, seconds=10, size=(1920, 1080), gop=60, bframes=2, **high),
    ]


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", choices=["mixed", "short"], default="mixed")
    ap.add_argument("--clips", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile for the encoder")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = avidzoo.create_model("cross_avid_r2plus1d").eval()  # random weights: speed does not depend on them
    transforms = avidzoo.create_transforms(model)
    cores = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_set(Path(tmp), args.set)
        print(f"torch {torch.__version__}, {cores} threads; {len(paths)} videos ({args.set} set), {args.clips} clips "
              "each", flush=True)
        fx = FeatureExtractor(model, clips_per_video=args.clips, progress=False)
        dataset_inputs = []  # (c): the same clips, decoded and transformed beforehand
        for p in paths:
            item = ClipDataset([p], transforms, ("video", "audio"), args.clips)[0]
            dataset_inputs.append((item["video"], item["audio"]))

        def run_c():
            with torch.inference_mode():
                for v, a in dataset_inputs:
                    fx.encode(video=v, audio=a)

        naive(model, transforms, paths[:1], args.clips)  # warm-up
        fx.extract(paths[:1])
        ta0 = median_time(lambda: naive_original(model, transforms, paths, args.clips), args.repeat)
        ta = median_time(lambda: naive(model, transforms, paths, args.clips), args.repeat)
        tc = median_time(run_c, args.repeat)
        tb = median_time(lambda: fx.extract(paths), args.repeat)
        others = {}  # other plans on this machine, each a full run
        variants = {"preprocessing on the device": dict(preprocess="device"),
                    "1 worker + the other cores to torch": dict(num_workers=1, torch_threads=max(cores - 1, 1)),
                    "1 worker + all cores to torch (oversubscribed)": dict(num_workers=1, torch_threads=cores)}
        for name, kw in variants.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                other = FeatureExtractor(model, clips_per_video=args.clips, progress=False, **kw)
            others[name] = (other.plan, median_time(lambda other=other: other.extract(paths), args.repeat))
    n, clips = len(paths), len(paths) * args.clips
    print(f"(a) original loop   : {n / ta0:6.3f} videos/s  {clips / ta0:6.2f} clips/s")
    print(f"(a') naive, avidzoo decoding: {n / ta:6.3f} videos/s  {clips / ta:6.2f} clips/s")
    print(f"(b) avidzoo pipeline: {n / tb:6.3f} videos/s  {clips / tb:6.2f} clips/s  (plan: {fx.plan}; batch "
          f"{fx.batch_size} clips)")
    print(f"(c) model alone     : {n / tc:6.3f} videos/s  {clips / tc:6.2f} clips/s")
    print(f"(b)/(a) = {ta0 / tb:.2f}x (target >= 2);  (b)/(a') = {ta / tb:.2f}x (ceiling (c)/(a') = {ta / tc:.2f}x);  "
          f"(b)/(c) = {100 * tc / tb:.0f}% (target >= 75%)")
    for name, (plan, t) in others.items():
        print(f"  {name:48s}: {clips / t:6.2f} clips/s = {100 * tc / t:3.0f}% of (c), {tb / t:.2f}x the auto "
              f"plan's  ({plan})")

    # The video encoder alone.
    x = torch.randn(8, 3, 8, 224, 224)
    plain = model.video_encoder
    fast = FeatureExtractor(model, modalities=("video",), batch_size=8)

    def fwd(fn, inp):
        with torch.inference_mode():
            fn(inp)
            return median_time(lambda: fn(inp), max(args.repeat, 3))

    t_plain = fwd(plain, x)
    t_fast = fwd(lambda inp: fast.encode(video=inp), x)
    print(f"video encoder, 8 clips: eager fp32 NCDHW {t_plain * 1e3:.0f} ms; folded BN + channels_last_3d + "
          f"inference_mode {t_fast * 1e3:.0f} ms: {t_plain / t_fast:.2f}x (target >= 1.3)")
    # bf16 autocast on the CPU (fast only where the CPU has native bf16: avx512_bf16 / AMX), against fp32.
    low = FeatureExtractor(model, modalities=("video",), batch_size=8, dtype="bf16")
    t_low = fwd(lambda inp: low.encode(video=inp), x)
    with torch.inference_mode():
        cos = torch.nn.functional.cosine_similarity(low.encode(video=x)["video"], fast.encode(video=x)["video"])
    print(f"  bf16 autocast on this CPU ({torch.backends.cpu.get_cpu_capability()}): {t_low * 1e3:.0f} ms, "
          f"{t_fast / t_low:.2f}x fp32's; cosine to fp32 min {float(cos.min()):.6f}")
    if args.compile:
        comp = FeatureExtractor(model, modalities=("video",), batch_size=8, compile=True)
        t = time.perf_counter()
        comp.encode(video=x)
        print(f"torch.compile: first call {time.perf_counter() - t:.0f} s")
        t_comp = fwd(lambda inp: comp.encode(video=inp), x)
        print(f"  + torch.compile {t_comp * 1e3:.0f} ms: {t_plain / t_comp:.2f}x")


if __name__ == "__main__":
    main()
