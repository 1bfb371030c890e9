"""Decode + preprocess throughput: the original-style path against avidzoo's, measured in the same run.

    python benchmarks/decode.py [--videos 4] [--clips 10] [--repeat 2]

Both paths turn each clip into the model inputs: video (3, 8, 224, 224) and audio (1, 200, 257).

(a) original-style, as the AVID release does it: open the file for each clip, seek, decode every frame up to the
    clip's end at full resolution and convert each one to a PIL image, keep the 8 frames of the clip, resize them
    with PIL (short side 256, bilinear), centre crop 224, ToTensor + Normalize; audio decoded by the PyAV resampler,
    then a NumPy STFT log-spectrogram (librosa's role in the original).
(b) avidzoo: one open file per video, its clips read in one pass, only the used frames converted, scaled by FFmpeg
    to short side 256; batched torch transforms.

Printed: clips/s of each, their ratio, and (b)'s time per clip against one forward pass of the video encoder
(R(2+1)D-18, batch 1, 8x224x224, fp32) on this CPU. Then long-GOP files (720p, 60 s, a keyframe every 5 or 10 s,
B-frames): the plain decoder against the exact savings, per core, with the CPU-ms per clip a decoding worker spends.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import avidzoo  # noqa: E402
from avidzoo.io import MediaFile, snap_to_keyframes, uniform_starts  # noqa: E402

from media import make_video  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]


def numpy_log_spectrogram(y: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    n_fft, hop = 1024, 240
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    padded = np.pad(y, n_fft // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    power = np.abs(np.fft.rfft(frames * window, axis=1)).T ** 2
    pooled = np.concatenate([power[:1], (power[1::2] + power[2::2]) / 2])[:, :200]
    db = 10 * np.log10(np.maximum(pooled, 1e-10))
    db = np.maximum(db, db.max() - 100)
    return ((db - mean[:, None]) / (std[:, None] + 1e-5)).T[None].astype(np.float32)


def original_clip(path: Path, start: float, stats) -> tuple[torch.Tensor, torch.Tensor]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        wanted = [math.floor((start + k / 16) * fps) for k in range(8)]
        container.seek(int(start * av.time_base))
        decoded = {}
        for frame in container.decode(stream):
            idx = int(round(frame.time * fps))
            decoded[idx] = frame.to_image()  # every decoded frame, full resolution
            if idx >= wanted[-1]:
                break
        clip = []
        for i in wanted:
            img = decoded[max(k for k in decoded if k <= i)]
            w, h = img.size
            size = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
            img = img.resize(size, Image.BILINEAR)
            left, top = int(round((size[0] - 224) / 2.0)), int(round((size[1] - 224) / 2.0))  # as the original
            arr = np.asarray(img.crop((left, top, left + 224, top + 224)), np.float32).transpose(2, 0, 1) / 255
            clip.append((arr - MEAN) / STD)
        video = torch.from_numpy(np.stack(clip, axis=1))
        # audio: the PyAV resampler to s16 mono 24 kHz, as the original
        astream = container.streams.audio[0]
        container.seek(int(start * av.time_base))
        resampler = av.AudioResampler(format="s16p", layout="mono", rate=24000)
        chunks, t0 = [], None
        for frame in container.decode(astream):
            if frame.time + frame.samples / frame.rate < start:
                continue
            if frame.time > start + 2.0:
                break
            t0 = frame.time if t0 is None else t0
            frame.pts = None
            chunks += [r.to_ndarray() for r in resampler.resample(frame)]
        data = np.concatenate(chunks, axis=1)[0].astype(np.float32) / 32767
        off = int((start - t0) * 24000)
        wave = np.zeros(48000, np.float32)
        seg = data[max(off, 0):max(off, 0) + 48000]
        wave[: len(seg)] = seg
        audio = torch.from_numpy(numpy_log_spectrogram(wave, *stats))
    return video, audio


def avidzoo_video(path: Path, starts: list[float], transforms) -> tuple[torch.Tensor, torch.Tensor]:
    with MediaFile(path) as f:
        frames = torch.stack(f.read_video(starts, num_frames=8, fps=16, short_side=256))
        waves = torch.stack(f.read_audio(starts, 2.0))
    return transforms.video(frames), transforms.audio(waves)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--clips", type=int, default=10, help="uniformly spaced clips per video")
    ap.add_argument("--repeat", type=int, default=2, help="timed repetitions (the median is reported)")
    ap.add_argument("--long-gop-only", action="store_true", help="only the long-GOP comparison")
    args = ap.parse_args()
    if args.long_gop_only:
        long_gop(args.clips, args.repeat)
        return
    torch.set_grad_enabled(False)
    transforms = avidzoo.create_transforms("cross_avid_r2plus1d")
    stats = (transforms.audio.mean.numpy(), transforms.audio.std.numpy())
    with tempfile.TemporaryDirectory() as tmp:
        print(f"generating {args.videos} videos: 10 s, 1280x720, 30 fps H.264 + AAC ...", flush=True)
        paths = [make_video(Path(tmp) / f"v{i}.mp4", fps=30, seconds=10, size=(1280, 720), pattern="texture",
                            crf=23, audio_rate=44100, channels=2, tone_start=1.0 + i) for i in range(args.videos)]
        starts = uniform_starts(10.0, 2.0, args.clips)  # 2-s windows (audio); video takes its first 0.5 s
        n_clips = args.videos * args.clips

        # Same inputs from both paths (up to the resize implementations): check before timing.
        va, aa = original_clip(paths[0], starts[3], stats)
        vb, ab = avidzoo_video(paths[0], [starts[3]], transforms)
        print(f"check: video mean |a-b| {float((va - vb[0]).abs().mean()):.4f} (normalised units), "
              f"audio mean |a-b| {float((aa - ab[0]).abs().mean()):.4f}")

        def run_a():
            for p in paths:
                for s in starts:
                    original_clip(p, s, stats)

        def run_b():
            for p in paths:
                avidzoo_video(p, starts, transforms)

        def timed(fn) -> float:
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            return statistics.median(times)

        run_b()  # warm-up (imports, allocator)
        ta, tb = timed(run_a), timed(run_b)

    model = avidzoo.create_model("cross_avid_r2plus1d", modalities=("video",)).eval()
    x = torch.randn(1, 3, 8, 224, 224)
    with torch.inference_mode():
        model.encode_video(x)
        fwd = []
        for _ in range(max(args.repeat, 3)):
            t = time.perf_counter()
            model.encode_video(x)
            fwd.append(time.perf_counter() - t)
    t_fwd = statistics.median(fwd)
    per_clip_b = tb / n_clips
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, PyAV {av.__version__}")
    print(f"(a) original-style : {n_clips / ta:8.2f} clips/s ({ta / n_clips * 1e3:7.1f} ms/clip)")
    print(f"(b) avidzoo        : {n_clips / tb:8.2f} clips/s ({per_clip_b * 1e3:7.1f} ms/clip)")
    print(f"speed-up (b)/(a)   : {ta / tb:8.2f}x   (target >= 5x)")
    print(f"video encoder forward, 1 clip: {t_fwd * 1e3:.1f} ms; decode+preprocess per clip / forward = "
          f"{per_clip_b / t_fwd:.2f}   (target < 1)")
    long_gop(args.clips, args.repeat)


LONG_GOP_CASES = [  # (name, size, seconds, fps, keyframe interval in frames, B-frames, picture)
    # "scene": camera-like content, H.264 High (x264 veryfast, crf 20): ~3 Mbit/s at 720p and ~2.5 ms a frame, like
    # downloaded videos; "texture": moving noise (ultrafast, crf 23) at ~100 Mbit/s, a decoder's worst case
    ("720p 60 s scene, keyframe every 5 s, 3 B", (1280, 720), 60, 30, 150, 3, "scene"),
    ("720p 60 s scene, keyframe every 10 s, 2 B", (1280, 720), 60, 30, 300, 2, "scene"),
    ("720p 60 s noise, keyframe every 5 s, 3 B", (1280, 720), 60, 30, 150, 3, "texture"),
    ("480x270 30 s scene, keyframe every 2 s, 2 B", (480, 270), 30, 30, 60, 2, "scene"),
]


def long_gop(clips: int, repeat: int) -> None:
    """Today's plain decoder against the exact savings (keyframe-aware seeks, non-reference frames outside the clips
    skipped; "exact" adds those inside the clips' windows that no target takes, "exact-out" is without them), one
    decoder thread, both model inputs' decoding (video at short side 256, audio): clips/s per core and
    CPU-ms per clip (what a DataLoader worker spends; on a GPU machine it bounds the throughput)."""
    torch.set_num_threads(1)
    print("\nlong-GOP files, one core (decoder threads 1), video short side 256 + audio, "
          f"{clips} clips per file:")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, size, seconds, fps, gop, bframes, picture) in enumerate(LONG_GOP_CASES):
            encoding = dict(crf=20, preset="veryfast") if picture == "scene" else dict(crf=23)
            path = make_video(Path(tmp) / f"g{i}.mp4", fps=fps, seconds=seconds, size=size, pattern=picture,
                              **encoding, gop=gop, bframes=bframes, audio_rate=44100, tone_start=1.0)
            starts = uniform_starts(float(seconds), 2.0, clips)
            per = {}
            for variant in ("plain", "exact-out", "exact", "keyframe"):
                def run(variant=variant, path=path, starts=starts, seconds=seconds):
                    with MediaFile(path, threads=1, exact_savings=variant != "plain",
                                   skip_in_window=variant != "exact-out") as f:
                        if variant == "keyframe":  # what ClipDataset does with sampling="keyframe"
                            starts = snap_to_keyframes(starts, f.keyframe_times(), lag=0.5 / 30, latest=seconds - 2.0)
                        f.read_video(starts, num_frames=8, fps=16, short_side=256)
                        f.read_audio(starts, 2.0)
                cpu = []
                for _ in range(repeat):
                    t = time.process_time()
                    run()
                    cpu.append(time.process_time() - t)
                per[variant] = statistics.median(cpu) / clips
            rows.append((name, per["plain"], per["exact"], per["keyframe"], per["exact-out"]))
            print(f"  {name:46s} plain {1 / per['plain']:5.1f} clips/s ({per['plain'] * 1e3:6.1f} CPU-ms/clip); "
                  f"exact {per['plain'] / per['exact']:.2f}x ({per['exact'] * 1e3:6.1f}; in-window skipping "
                  f"{per['exact-out'] / per['exact']:.2f}x of exact without it); "
                  f"keyframe sampling {per['plain'] / per['keyframe']:.2f}x ({per['keyframe'] * 1e3:6.1f})",
                  flush=True)
    total = [sum(r[i] for r in rows) for i in (1, 2, 3, 4)]
    print(f"  over the mix: exact {total[0] / total[1]:.2f}x (in-window skipping {total[3] / total[1]:.2f}x), "
          f"keyframe sampling {total[0] / total[2]:.2f}x   "
          "(targets: exact >= 1.7x on long-GOP 720p and >= 1.5x over the mix; keyframe >= 5x on long-GOP)")


if __name__ == "__main__":
    main()
