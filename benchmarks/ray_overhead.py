"""The Ray engine's overhead against the plain pipeline, measured in one run on the same videos and model.

    pip install "avidzoo[ray]"
    python benchmarks/ray_overhead.py [--videos 8] [--clips 10] [--size 640x360] [--cpus 2]

(a) avidzoo extract (the plain pipeline: DataLoader workers decode, the main process runs the model);
(b) --engine ray on a local Ray with the same CPUs: decoding as Ray Data tasks, the encoder as one actor.
Both write an output folder; the ratio (b)/(a) of videos per second is Ray's cost (or gain) on this machine. On a
cluster Ray's point is more machines, which no single-machine ratio shows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import avidzoo  # noqa: E402
from avidzoo.extract import extract_with_ray, load_features  # noqa: E402

from media import make_video  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--clips", type=int, default=10)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--cpus", type=int, default=2)
    args = ap.parse_args()
    import ray

    w, h = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "videos").mkdir()
        paths = [make_video(tmp / "videos" / f"v{i}.mp4", seconds=10, size=(w, h), pattern="texture",
                            tone_start=0.5) for i in range(args.videos)]
        torch.manual_seed(0)
        model = avidzoo.create_model("cross_avid_r2plus1d")  # R(2+1)D-18 + audio CNN, random weights
        folder = model.save_pretrained(tmp / "model")
        opts = dict(clips_per_video=args.clips, dtype="fp32")

        t = time.perf_counter()
        avidzoo.extract_features(folder, paths, out=tmp / "plain", num_workers=1, progress=False, **opts)
        plain = time.perf_counter() - t

        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        t = time.perf_counter()
        extract_with_ray(folder, paths, tmp / "ray", **opts)
        with_ray = time.perf_counter() - t
        ray.shutdown()

        a, b = load_features(tmp / "plain"), load_features(tmp / "ray")
        assert a.paths == b.paths
        diff = max(float((a[m] - b[m]).abs().max()) for m in ("video", "audio"))
    n = len(paths)
    print(f"{n} videos x {args.clips} clips, {args.size}, both towers, fp32, {args.cpus} CPUs")
    print(f"(a) plain pipeline:   {plain:7.1f} s  {n / plain:6.2f} videos/s")
    print(f"(b) --engine ray:     {with_ray:7.1f} s  {n / with_ray:6.2f} videos/s  (includes Ray's start of workers)")
    print(f"ratio (b)/(a) throughput: {plain / with_ray:.2f}x; max |feature difference| {diff:.2e}")


if __name__ == "__main__":
    main()
