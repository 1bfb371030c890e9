"""Audio-to-video retrieval on a folder: for each soundtrack, which video does it belong to?

    python examples/audio_to_video_retrieval.py VIDEOS_DIR --model avid_cma_r2plus1d.audioset

Both towers' 128-d projected embeddings (what pretraining made agree for a video and its own sound) are compared
with cosine similarity; prints the top matches of each audio and the recall@1 / @5 of finding its own video.
"""

import argparse
from pathlib import Path

import torch

import avidzoo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--model", default="avid_cma_r2plus1d.audioset")
    ap.add_argument("--clips-per-video", type=int, default=10)
    ap.add_argument("--top", type=int, default=3)
    args = ap.parse_args()
    result = avidzoo.extract_features(args.model, args.inputs, layer="proj", normalize=True,
                                      clips_per_video=args.clips_per_video)
    sim = avidzoo.similarity(result["audio"], result["video"], pairwise=True)  # (audio i, video j)
    ranks = torch.argsort(sim, dim=1, descending=True)
    names = [Path(p).name for p in result.paths]
    for i, name in enumerate(names):
        top = ", ".join(f"{names[j]} ({sim[i, j]:+.3f})" for j in ranks[i, : args.top].tolist())
        print(f"audio of {name}: {top}")
    own = (ranks == torch.arange(len(names))[:, None]).float().argmax(1)
    for k in (1, 5):
        print(f"recall@{k}: {float((own < k).float().mean()):.3f}  (chance {min(k / max(len(names), 1), 1):.3f})")


if __name__ == "__main__":
    main()
