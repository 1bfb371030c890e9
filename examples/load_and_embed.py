"""Load AVID weights from any source and embed a clip's video and audio.

    python examples/load_and_embed.py cross_avid_r2plus1d.kinetics          # registry name (downloads once)
    python examples/load_and_embed.py AVID_Kinetics_Cross-N1024_checkpoint.pth.tar   # an original checkpoint
    python examples/load_and_embed.py local-dir:./avid-weights/cross_avid_r2plus1d.kinetics400

The clip here is synthetic (random frames, a tone); decode your own frames as uint8 (T, H, W, 3) at 16 fps and
audio as float (C, N) in [-1, 1].
"""

import sys

import torch

import avidzoo


def main(source: str) -> None:
    model = avidzoo.from_pretrained(source)
    t = avidzoo.create_transforms(model)
    frames = torch.randint(0, 256, (8, 240, 320, 3), dtype=torch.uint8)  # 0.5 s at 16 fps
    sr = 24000
    wave = 0.3 * torch.sin(2 * torch.pi * 440 * torch.arange(2 * sr) / sr)[None]  # 2 s, mono
    with torch.inference_mode():
        v = model.encode_video(t.video(frames)[None], project=True, normalize=True)
        a = model.encode_audio(t.audio(wave, sample_rate=sr)[None], project=True, normalize=True)
    print(f"{model.config['weights'] or source}: video {tuple(v.shape)}, audio {tuple(a.shape)}, "
          f"audio-visual cosine {float((v * a).sum()):.3f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cross_avid_r2plus1d.kinetics")
