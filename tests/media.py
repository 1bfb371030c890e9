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


def _mux(container, stream, frame=None) -> None:
    """Encode ``frame`` (``None`` flushes the encoder) and write its packets."""
    for packet in stream.encode(frame):
        container.mux(packet)


def _small_h264(container, size: int):
    """The square 16 fps H.264 stream of the generated datasets."""
    vs = container.add_stream("libx264", rate=16)
    vs.width = vs.height = size
    vs.pix_fmt = "yuv420p"
    vs.options = {"preset": "ultrafast", "crf": "18"}
    return vs


def second_colour(s: int) -> tuple[int, int, int]:
    """The colour of second ``s`` in a ``pattern="seconds"`` video: grey levels far apart for neighbouring seconds."""
    v = (40 + 97 * s) % 200 + 28
    return (v, 255 - v, (v * 3) % 256)


def second_tone(s):
    """The tone (Hz) of second ``s`` in a ``pattern="seconds"`` file."""
    return 400.0 + 150.0 * (s % 12)


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
    bframes: int = 0,
    preset: str = "ultrafast",
    video_seconds: float | None = None,
    audio_seconds: float | None = None,
    audio_offset: float = 0.0,
    vcodec: str = "libx264",
    acodec: str = "aac",
    pix_fmt: str = "yuv420p",
    colorspace: str | None = None,
    color_range: str | None = None,
) -> Path:
    """Write an H.264/AAC MP4 (or whatever the suffix says). ``frame_times`` gives irregular (VFR) timestamps;
    ``gop`` the keyframe interval; ``bframes`` consecutive non-reference B-frames. ``video_seconds`` /
    ``audio_seconds`` give the streams lengths of their own (default ``seconds``), ``audio_offset`` starts the audio
    that late (its first sample's timestamp); ``vcodec``, ``acodec`` and ``pix_fmt`` pick the encoders.
    ``colorspace`` (``"bt601"``, ``"bt709"``, ``"bt2020"``) converts the RGB frames to YUV with that matrix and tags
    the stream so, ``color_range`` (``"tv"``, ``"pc"``) likewise; without them the encoder converts by BT.601 and
    tags nothing."""
    path = Path(path)
    options = {"movflags": "+faststart"} if faststart and path.suffix in (".mp4", ".mov", ".m4a") else {}
    container = av.open(str(path), "w", options=options)
    vs = aus = None
    video_seconds = seconds if video_seconds is None else video_seconds
    audio_seconds = seconds if audio_seconds is None else audio_seconds
    if video:
        rate = int(round(fps)) if float(fps).is_integer() else fps
        vs = container.add_stream(vcodec, rate=rate)
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], pix_fmt
        if vcodec == "libx264":
            vs.options = {"preset": preset, "crf": str(crf), **({"g": str(gop)} if gop else {}),
                          # B-frames that nothing references (no pyramid): the non-reference frames real files have
                          **({"x264-params": f"bframes={bframes}:b-pyramid=none:scenecut=0"} if bframes else {})}
        elif vcodec == "libx265":
            vs.options = {"x265-params": "log-level=none" + (f":keyint={gop}" if gop else "")}
        elif gop:
            vs.codec_context.gop_size = gop
        if frame_times is not None:
            vs.codec_context.time_base = __import__("fractions").Fraction(1, 1000)
        if rotation is not None:
            vs.set_display_rotation(rotation)
        if colorspace is not None:
            vs.codec_context.colorspace = _COLORSPACES[colorspace][1]
        if color_range is not None:
            vs.codec_context.color_range = _RANGES[color_range][1]
    if audio:
        layout = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}[channels]
        aus = container.add_stream(acodec, rate=audio_rate, layout=layout)
    if vs is not None:
        times = frame_times if frame_times is not None else [i / fps for i in range(int(round(fps * video_seconds)))]
        rng = np.random.default_rng(0)
        for i, t in enumerate(times):
            if pattern == "index":
                img = np.empty((size[1], size[0], 3), np.uint8)
                img[:] = index_colour(i)
            elif pattern == "seconds":  # a colour per whole second: second s shows second_colour(s)
                img = np.empty((size[1], size[0], 3), np.uint8)
                img[:] = second_colour(int(t + 1e-9))
            elif pattern == "scene":  # camera-like: smooth shapes panning, a moving object, a little sensor noise
                if i == 0:
                    small = rng.integers(0, 256, (size[1] // 16 + 2, size[0] // 16 + 2, 3)).astype(np.float32)
                    scene = np.kron(small, np.ones((16, 16, 1), np.float32))  # blocks, then blurred along both axes
                    for axis in (0, 1):
                        scene = sum(np.roll(scene, k, axis) for k in range(-8, 8)) / 16
                    scene = np.tile(scene, (1, 2, 1))  # room to pan
                    grain = rng.normal(0, 6, (7, size[1], size[0], 3)).astype(np.float32)  # cycled sensor noise
                x = (3 * i) % (scene.shape[1] // 2)
                img = scene[: size[1], x:x + size[0]].copy()
                y0, x0 = (5 * i) % max(size[1] - 40, 1), (7 * i) % max(size[0] - 40, 1)
                img[y0:y0 + 40, x0:x0 + 40] = (240, 200, 40)
                img = np.clip(img + grain[i % 7], 0, 255).astype(np.uint8)
            elif pattern == "bars":  # saturated colour bars moving one bar a frame, over a grey ramp: grey hides
                # matrix errors, saturated colour shows them
                x = (np.arange(size[0]) * len(BARS) // size[0] + i) % len(BARS)
                img = np.asarray(BARS, np.uint8)[x][None].repeat(size[1], 0)
                img[size[1] * 3 // 4:] = np.linspace(0, 255, size[0]).astype(np.uint8)[None, :, None]
            else:  # textured, moving: heavy work for the decoder and scaler (noise: ~100 Mbit/s at 720p)
                img = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) if i == 0 else np.roll(img, 8, 1)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if colorspace is not None or color_range is not None:  # YUV by the matrix and range the tags say
                space, tag = _COLORSPACES[colorspace or "bt601"]
                rng_name, rng_tag = _RANGES[color_range or "tv"]
                frame = frame.reformat(format=pix_fmt, dst_colorspace=space, dst_color_range=rng_name)
                frame.colorspace, frame.color_range = tag, rng_tag
            if frame_times is not None:
                frame.pts = int(round(t * 1000))
                frame.time_base = vs.codec_context.time_base
            _mux(container, vs, frame)
        _mux(container, vs)
    if aus is not None:
        n = int(round(audio_rate * audio_seconds))
        t = audio_offset + np.arange(n) / audio_rate  # file time of each sample
        if pattern == "seconds":  # a tone per whole second: second s plays second_tone(s) Hz
            tone = (0.5 * np.sin(2 * np.pi * second_tone(np.floor(t + 1e-9)) * t)).astype(np.float32)
        else:
            tone = np.where(t >= tone_start, 0.5 * np.sin(2 * np.pi * tone_freq * t), 0.0).astype(np.float32)
        chans = tone_channels if tone_channels is not None else tuple(range(channels))
        data = np.stack([tone if c in chans else np.zeros_like(tone) for c in range(channels)])
        fmt = aus.codec_context.format.name  # what the encoder takes: planar float for AAC, s16 for PCM and MP3 ...
        step = aus.codec_context.frame_size or 1024
        first = int(round(audio_offset * audio_rate))
        for s in range(0, n, step):
            chunk = data[:, s:s + step]
            if fmt.startswith("s16"):
                chunk = (np.clip(chunk, -1, 1) * 32767).astype(np.int16)
            elif fmt.startswith("s32"):
                chunk = (np.clip(chunk, -1, 1) * 2147483647).astype(np.int32)
            elif fmt.startswith("dbl"):
                chunk = chunk.astype(np.float64)
            if not fmt.endswith("p"):  # packed: one row of interleaved channels
                chunk = chunk.T.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format=fmt, layout=aus.layout.name)
            frame.rate, frame.pts = audio_rate, first + s
            _mux(container, aus, frame)
        _mux(container, aus)
    container.close()
    return path


# the tags' names -> (swscale's name, FFmpeg's AVColorSpace / AVColorRange value)
_COLORSPACES = {"bt601": ("ITU601", 6), "bt709": ("ITU709", 1), "bt2020": ("BT2020", 9)}
_RANGES = {"tv": ("MPEG", 1), "pc": ("JPEG", 2)}
BARS = [(255, 255, 255), (255, 255, 0), (0, 255, 255), (0, 255, 0), (255, 0, 255), (255, 0, 0), (0, 0, 255),
        (16, 16, 16), (230, 40, 90), (40, 200, 140)]

PALETTE = [(230, 30, 30), (30, 200, 40), (40, 60, 230), (240, 220, 30), (200, 40, 220), (30, 210, 220),
           (250, 140, 20), (120, 120, 120)]


def _tone_colour_clip(path: Path, colour: tuple[int, int, int], freq: float, seconds: float, rng) -> Path:
    """A 48 px, 16 fps clip of ``colour`` with random brightness and noise, and a 24-kHz tone near ``freq`` Hz
    (3% detune, random loudness and phase, light noise)."""
    container = av.open(str(path), "w")
    vs = _small_h264(container, 48)
    aus = container.add_stream("aac", rate=24000, layout="mono")
    base = np.array(colour, np.float32)
    for _ in range(int(16 * seconds)):
        img = np.clip(base * rng.uniform(0.7, 1.1) + rng.normal(0, 25, (48, 48, 3)), 0, 255).astype(np.uint8)
        _mux(container, vs, av.VideoFrame.from_ndarray(img, format="rgb24"))
    _mux(container, vs)
    n = int(24000 * seconds)
    t = np.arange(n) / 24000
    f = freq * rng.uniform(0.97, 1.03)
    wave = (rng.uniform(0.3, 0.6) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.28))
            + rng.normal(0, 0.02, n)).astype(np.float32)[None]
    for s in range(0, n, 1024):
        fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, s:s + 1024]), format="fltp", layout="mono")
        fr.rate, fr.pts = 24000, s
        _mux(container, aus, fr)
    _mux(container, aus)
    container.close()
    return path


def make_linked_videos(folder: str | Path, *, classes: int = 4, per_class: int = 6, seconds: float = 1.5,
                       seed: int = 0, start: int = 0) -> list[Path]:
    """Videos whose picture and sound belong together: class c shows colour PALETTE[c] with moving noise and
    plays a tone at 300 + 350 c Hz, so audio-visual training can learn which sound goes with which picture."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    return [_tone_colour_clip(folder / f"c{c}_{start + k:03d}.mp4", PALETTE[c], 300 + 350 * c, seconds, rng)
            for c in range(classes) for k in range(per_class)]


def make_tone_colour_classes(folder: str | Path, classes: list[tuple[int, float]], *, per_class: int = 6,
                             seconds: float = 1.0, seed: int = 0) -> list[Path]:
    """``folder/class<c>/<k>.mp4``: class ``c`` shows colour ``PALETTE[classes[c][0]]`` and plays a tone near
    ``classes[c][1]`` Hz (:func:`_tone_colour_clip`). Two classes that share a frequency sound alike to any
    spectrogram (their only difference, the phase, is random per file), so an audio tower cannot tell them apart
    while their colours can; classes that share a colour are the same for the video tower."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    paths = []
    for c, (colour, freq) in enumerate(classes):
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
        paths += [_tone_colour_clip(folder / f"class{c}" / f"{k:03d}.mp4", PALETTE[colour], freq, seconds, rng)
                  for k in range(per_class)]
    return paths


def make_action_videos(folder: str | Path, *, classes: int = 4, per_class: int = 20, seconds: float = 1.0,
                       size: int = 48, seed: int = 0) -> list[Path]:
    """A small action-recognition dataset, ``folder/<class>/<video>.mp4``: class 0 horizontal bars moving down,
    1 vertical bars moving right, 2 a square moving diagonally, 3 a flickering checkerboard (more classes repeat
    the patterns at double speed). Colours, phases and noise are random per video, so only the pattern and its
    motion tell the classes apart."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    names = ["bars_down", "bars_right", "square_diagonal", "checker_flicker"]
    paths = []
    for c in range(classes):
        kind, speed = c % 4, 1 + c // 4
        d = folder / (names[kind] + ("" if speed == 1 else f"_x{speed}"))
        d.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            path = d / f"{k:03d}.mp4"
            fg = rng.uniform(150, 255, 3)
            bg = rng.uniform(0, 90, 3)
            phase = rng.uniform(0, 12)
            container = av.open(str(path), "w")
            vs = _small_h264(container, size)
            for t in range(int(16 * seconds)):
                s = phase + 2 * speed * t
                if kind == 0:
                    mask = ((yy - s) // 6) % 2 == 0
                elif kind == 1:
                    mask = ((xx - s) // 6) % 2 == 0
                elif kind == 2:
                    p = s % (size - 16)
                    mask = (abs(yy - p - 8) < 8) & (abs(xx - p - 8) < 8)
                else:
                    mask = (((yy // 8) + (xx // 8) + (t * speed) // 2) % 2) == 0
                img = np.where(mask[..., None], fg, bg) + rng.normal(0, 12, (size, size, 3))
                frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
                _mux(container, vs, frame)
            _mux(container, vs)
            container.close()
            paths.append(path)
    return paths


def make_esc50_like(root: str | Path, *, classes: int = 3, per_class: int = 6, folds: int = 3,
                    seconds: float = 2.5, seed: int = 0) -> Path:
    """An ESC-50-shaped sound dataset: ``root/audio/*.wav`` (class c: a tone at 300 * 2**c Hz with noise, random
    loudness and phase) and ``root/meta/esc50.csv`` with ``filename, fold, target, category`` columns; each class has
    files in every fold."""
    root = Path(root)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    (root / "meta").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for c in range(classes):
        for k in range(per_class):
            name = f"{k % folds + 1}-{c:02d}{k:03d}-A-{c}.wav"
            n = int(24000 * seconds)
            t = np.arange(n) / 24000
            wave = (rng.uniform(0.2, 0.6) * np.sin(2 * np.pi * 300 * 2 ** c * rng.uniform(0.97, 1.03) * t
                                                   + rng.uniform(0, 6.28)) + rng.normal(0, 0.03, n))
            container = av.open(str(root / "audio" / name), "w")
            stream = container.add_stream("pcm_s16le", rate=24000, layout="mono")
            frame = av.AudioFrame.from_ndarray((np.clip(wave, -1, 1) * 32767).astype(np.int16)[None], format="s16",
                                               layout="mono")
            frame.rate = 24000
            _mux(container, stream, frame)
            _mux(container, stream)
            container.close()
            rows.append(f"{name},{k % folds + 1},{c},sound_{c},False,x,A")
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    return root


def write_shard(path: str | Path, members: list[tuple[str, bytes]]) -> Path:
    """A WebDataset-style tar shard holding ``members`` (name, bytes) in that order."""
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return Path(path)
