"""Generate real media files with PyAV for the tests and benchmarks.

Video frames are flat colours that encode their frame index (R: index % 16, G: (index // 16) % 16,
B: index // 256, on a 16-level grid that survives H.264), so a decoded frame tells which source frame it is.
Audio is silence with a sine tone from ``tone_start`` on.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def index_colour(i: int) -> tuple[int, int, int]:
    return (i % 16) * 16 + 8, ((i // 16) % 16) * 16 + 8, (i // 256) * 64 + 32


def frame_index(rgb: np.ndarray) -> int:
    """Source frame index of a decoded frame ``(H, W, 3)`` (read from its centre)."""
    h, w = rgb.shape[:2]
    r, g, b = rgb[h // 4: 3 * h // 4, w // 4: 3 * w // 4].reshape(-1, 3).mean(0)
    return int(round((r - 8) / 16)) + 16 * int(round((g - 8) / 16)) + 256 * int(round((b - 32) / 64))


def make_video(
    path: str | Path,
    *,
    fps: float = 30,
    seconds: float = 2.0,
    size: tuple[int, int] = (160, 120),
    audio: bool = True,
    video: bool = True,
    audio_rate: int = 44100,
    channels: int = 1,
    tone_start: float = 0.0,
    tone_freq: float = 1000.0,
    tone_channels: tuple[int, ...] | None = None,
    rotation: int | None = None,
    frame_times: list[float] | None = None,
    faststart: bool = True,
    pattern: str = "index",
    crf: int = 10,
    gop: int | None = None,
) -> Path:
    """Write an H.264/AAC MP4 (or whatever the suffix says). ``frame_times`` gives irregular (VFR) timestamps."""
    path = Path(path)
    options = {"movflags": "+faststart"} if faststart and path.suffix in (".mp4", ".mov", ".m4a") else {}
    container = av.open(str(path), "w", options=options)
    vs = aus = None
    if video:
        rate = int(round(fps)) if float(fps).is_integer() else fps
        vs = container.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": str(crf), **({"g": str(gop)} if gop else {})}
        if frame_times is not None:
            vs.codec_context.time_base = __import__("fractions").Fraction(1, 1000)
        if rotation is not None:
            vs.set_display_rotation(rotation)
    if audio:
        layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
        aus = container.add_stream("aac", rate=audio_rate, layout=layout)
    if vs is not None:
        times = frame_times if frame_times is not None else [i / fps for i in range(int(round(fps * seconds)))]
        rng = np.random.default_rng(0)
        for i, t in enumerate(times):
            if pattern == "index":
                img = np.empty((size[1], size[0], 3), np.uint8)
                img[:] = index_colour(i)
            else:  # textured, moving: realistic work for the decoder and scaler
                img = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) if i == 0 else np.roll(img, 8, 1)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if frame_times is not None:
                frame.pts = int(round(t * 1000))
                frame.time_base = vs.codec_context.time_base
            for packet in vs.encode(frame):
                container.mux(packet)
        for packet in vs.encode():
            container.mux(packet)
    if aus is not None:
        n = int(round(audio_rate * seconds))
        t = np.arange(n) / audio_rate
        tone = np.where(t >= tone_start, 0.5 * np.sin(2 * np.pi * tone_freq * t), 0.0).astype(np.float32)
        chans = tone_channels if tone_channels is not None else tuple(range(channels))
        data = np.stack([tone if c in chans else np.zeros_like(tone) for c in range(channels)])
        for s in range(0, n, 1024):
            chunk = np.ascontiguousarray(data[:, s:s + 1024])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=aus.layout.name)
            frame.rate, frame.pts = audio_rate, s
            for packet in aus.encode(frame):
                container.mux(packet)
        for packet in aus.encode():
            container.mux(packet)
    container.close()
    return path


PALETTE = [(230, 30, 30), (30, 200, 40), (40, 60, 230), (240, 220, 30), (200, 40, 220), (30, 210, 220),
           (250, 140, 20), (120, 120, 120)]


def make_linked_videos(folder: str | Path, *, classes: int = 4, per_class: int = 6, seconds: float = 1.5,
                       seed: int = 0, start: int = 0) -> list[Path]:
    """Videos whose picture and sound belong together: class c shows colour PALETTE[c] with moving noise and
    plays a tone at 300 + 350 c Hz, so audio-visual training can learn which sound goes with which picture."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for c in range(classes):
        for k in range(per_class):
            path = folder / f"c{c}_{start + k:03d}.mp4"
            container = av.open(str(path), "w")
            vs = container.add_stream("libx264", rate=16)
            vs.width = vs.height = 48
            vs.pix_fmt = "yuv420p"
            vs.options = {"preset": "ultrafast", "crf": "18"}
            aus = container.add_stream("aac", rate=24000, layout="mono")
            base = np.array(PALETTE[c], np.float32)
            for _ in range(int(16 * seconds)):
                img = np.clip(base * rng.uniform(0.7, 1.1) + rng.normal(0, 25, (48, 48, 3)), 0, 255).astype(np.uint8)
                for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    container.mux(packet)
            for packet in vs.encode():
                container.mux(packet)
            n = int(24000 * seconds)
            t = np.arange(n) / 24000
            f = (300 + 350 * c) * rng.uniform(0.97, 1.03)
            wave = (rng.uniform(0.3, 0.6) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.28))
                    + rng.normal(0, 0.02, n)).astype(np.float32)[None]
            for s in range(0, n, 1024):
                fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, s:s + 1024]), format="fltp",
                                                layout="mono")
                fr.rate, fr.pts = 24000, s
                for packet in aus.encode(fr):
                    container.mux(packet)
            for packet in aus.encode():
                container.mux(packet)
            container.close()
            paths.append(path)
    return paths
