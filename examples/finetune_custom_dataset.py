"""Finetune a pretrained AVID video encoder on your own labelled videos, in one script.

    python examples/finetune_custom_dataset.py my_videos/ --model avid_cma_r2plus1d.audioset --out runs/mine

``my_videos/`` holds one sub-folder per class. A fifth of every class is held out for validation (or pass
``--val other_folder/``). The script finetunes with the UCF-101 recipe (classifier warm-up, then the whole network),
reports Clip@1 / Video@1 of the best epoch, and classifies one held-out video with the exported model.
"""

from __future__ import annotations

import argparse

import torch

import avidzoo
from avidzoo.datasets import VideoFolder
from avidzoo.io import MediaFile, uniform_starts
from avidzoo.train import FinetuneConfig, finetune


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", help="a folder with one sub-folder of videos per class")
    p.add_argument("--val", help="a validation folder laid out the same way (default: hold out 20%%)")
    p.add_argument("--model", default="avid_cma_r2plus1d.audioset", help="pretrained weights: name or path")
    p.add_argument("--out", default="runs/finetune_custom")
    p.add_argument("--frames", type=int, default=8, help="frames per clip at 16 fps (8 or 32)")
    p.add_argument("--epochs", type=int, help="epochs after the warm-up (default: the recipe's 16)")
    p.add_argument("--warmup-epochs", type=int, help="classifier-only epochs (default 5)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()

    train = VideoFolder(args.videos)
    val = VideoFolder(args.val) if args.val else None
    if val is None:
        train, val = train.split(0.2, seed=0)
    print(f"{len(train)} training and {len(val)} validation videos, {train.num_classes} classes")

    run = finetune(FinetuneConfig(model=args.model, train=train, val=val, out=args.out, frames=args.frames,
                                  epochs=args.epochs, warmup_epochs=args.warmup_epochs, batch_size=args.batch_size,
                                  num_workers=args.workers))
    report = avidzoo.evaluate(run / "best", val, num_workers=args.workers)
    print(f"best model: Clip@1 {report.clip_top1:.3f}, Video@1 {report.video_top1:.3f} -> {run / 'best'}")

    # Using the exported model: 10 evenly spaced clips of one video, probabilities averaged (Video@1's rule).
    model = avidzoo.from_pretrained(run / "best").eval()
    t = avidzoo.create_transforms(model)
    cfg = t.config["video"]
    path = val.paths[0]
    with MediaFile(path) as f:
        starts = uniform_starts(f.info.duration, cfg["clip_duration"], 10)
        clips = torch.stack(f.read_video(starts, num_frames=cfg["num_frames"], fps=cfg["fps"]))
    with torch.inference_mode():
        probs = model(video=t.video(clips)).softmax(-1).mean(0)
    top = int(probs.argmax())
    print(f"{path.name}: {model.label_names[top]} ({probs[top]:.2f}); true class {val.classes[val.labels[0]]}")


if __name__ == "__main__":
    main()
