"""Extract a folder of videos and draw a 2-D map of their embeddings (PCA) as a PNG.

    python examples/embedding_map.py VIDEOS_DIR --model cross_avid_r2plus1d.kinetics --out map.png

Videos that look (or sound: --modality audio) alike land close together. Pillow draws the map (it comes with
torchvision), so nothing beyond avidzoo's dependencies is needed.
"""

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw

import avidzoo


def pca_2d(x: torch.Tensor) -> torch.Tensor:
    x = x - x.mean(0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    return x @ v[:2].T


def draw(points: torch.Tensor, labels: list[str], out: Path, size: int = 900) -> None:
    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    lo, hi = points.min(0).values, points.max(0).values
    span = hi - lo
    # an axis with no spread (identical videos) is drawn through the middle
    xy = torch.where(span > 1e-6, (points - lo) / span.clamp_min(1e-6), torch.full_like(points, 0.5))
    xy = xy * (size - 160) + 40
    for (x, y), label in zip(xy.tolist(), labels):
        d.ellipse([x - 5, y - 5, x + 5, y + 5], fill=(40, 90, 200))
        d.text((x + 8, y - 6), label, fill=(0, 0, 0))
    img.save(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--model", default="cross_avid_r2plus1d.kinetics")
    ap.add_argument("--modality", choices=["video", "audio"], default="video")
    ap.add_argument("--clips-per-video", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("embedding_map.png"))
    args = ap.parse_args()
    result = avidzoo.extract_features(args.model, args.inputs, modalities=(args.modality,), normalize=True,
                                      clips_per_video=args.clips_per_video)
    if len(result.paths) < 3:
        raise SystemExit(f"need at least 3 readable videos, got {len(result.paths)} ({len(result.failed)} failed)")
    draw(pca_2d(result[args.modality]), [Path(p).stem for p in result.paths], args.out)
    skipped = f" ({len(result.failed)} unreadable)" if result.failed else ""
    print(f"{len(result.paths)} videos -> {args.out}{skipped}")


if __name__ == "__main__":
    main()
