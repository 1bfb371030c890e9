"""How long `avidzoo rank` takes on the CPU for about 300 labelled clips and 3 weights.

    python benchmarks/rank.py [--items 300] [--clips 5] [--seconds 4] [--folder DIR]

Generates ``--items`` camera-like 320x240 H.264/AAC files of ``--seconds`` (10 classes, labels by file; what the
clips show does not matter for the time), saves three full-size graphs at random initialisation (Cross-AVID's and
AVID-CMA's R(2+1)D-18 and 2D audio CNN, CrissCross's with its audio ResNet-18), and runs the rank with
its defaults (both towers and fused, 5 folds x 3 repeats, few-shot 1/5/10 x 100 episodes, ``--clips`` per file),
printing the estimate it gives first, then the time of each phase: extraction per weight, scoring, the whole.
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
from avidzoo.rank import rank  # noqa: E402

from media import make_video  # noqa: E402

GRAPHS = ("cross_avid_r2plus1d", "avid_cma_r2plus1d", "crisscross_r2plus1d")


def dataset(folder: Path, items: int, seconds: float) -> Path:
    data = folder / "clips"
    for i in range(items):
        d = data / f"class{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{i:04d}.mp4"
        if not path.exists():
            make_video(path, fps=25, seconds=seconds, size=(320, 240), pattern="scene", crf=23, preset="veryfast",
                       gop=50, bframes=2, audio_rate=44100, tone_freq=200.0 + 40 * (i % 10))
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--clips", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--folder", type=Path)
    ap.add_argument("--graphs", nargs="+", default=list(GRAPHS), help="model graphs to rank (gdt_r2plus1d's 32-frame "
                    "clips cost about 4.5x an AVID clip on the CPU)")
    args = ap.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="avidzoo-rank-"))
    t0 = time.perf_counter()
    data = dataset(folder, args.items, args.seconds)
    print(f"{args.items} files of {args.seconds:g} s made in {time.perf_counter() - t0:.0f} s ({folder})", flush=True)
    weights = []
    for name in args.graphs:
        torch.manual_seed(0)
        weights.append(str(avidzoo.create_model(name).save_pretrained(folder / "weights" / name)))
    t0 = time.perf_counter()
    report = rank(data, weights, out=folder / "rank", clips=args.clips)
    total = time.perf_counter() - t0
    ms = {r["weight"]: r["extract_ms_per_clip"] for r in report.rows}
    for w in weights:
        print(f"  {Path(w).name:22s} extraction {ms[w]:.0f} ms per clip, both towers "
              f"({ms[w] * args.items * args.clips / 1000 / 60:.1f} min)")
    print(f"rank of {args.items} items x {len(weights)} weights on {torch.get_num_threads()} threads: "
          f"{total / 60:.1f} min in all; best {report.best}")


if __name__ == "__main__":
    main()
