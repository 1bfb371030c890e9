"""How far avidzoo's decoded frames are from the frames each original decoder gave the weights (issue 26).

    python benchmarks/colour.py [--legacy-python PATH]

Every original pipeline converted YUV to RGB with swscale's default, BT.601 (PyAV <= 11, VMZ's Caffe2 decoder);
avidzoo's ``colour`` rule ``"bt601"`` reproduces it and ``"tagged"`` follows the stream's tags (PyAV >= 12's
default, what avidzoo did before the rule). For generated files of each kind (a 1080p camera-like BT.709 file,
saturated colour bars tagged BT.709, BT.601, untagged, BT.2020 10-bit HEVC, full-range H.264 and VP9), it prints the
mean and largest difference in grey levels of the first frames against the reference, at full size and after each
preset's resize (short side 256: AVID, CrissCross; 128: GDT; 171x128 FAST_BILINEAR: VMZ for XDC), for both rules
and for the ``--decoder cuda`` conversion (torch, run here on the CPU).

The reference is the legacy conversion: with ``--legacy-python``, a Python whose PyAV is 11 or older decodes the
same frames with its defaults (``to_ndarray(format="rgb24")``, VMZ's one FAST_BILINEAR pass), the originals' own
calls; without it, this PyAV's ``reformat(src_colorspace="ITU601")`` with the range old swscale read. Resized
references resize the legacy full-size RGB as avidzoo does, so the figure is the colour conversion's alone.
PyAV 11 has no wheel for Python 3.11; it builds against Debian's FFmpeg 5.1::

    apt-get install -y libavformat-dev libavcodec-dev libavdevice-dev libavutil-dev libswscale-dev \\
        libswresample-dev libavfilter-dev pkg-config
    python3 -m venv /tmp/av11 && /tmp/av11/bin/pip install "cython<3" numpy wheel setuptools
    /tmp/av11/bin/pip install --no-build-isolation av==11.0.0
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from avidzoo.io import MediaFile  # noqa: E402
from avidzoo.io.colour import resize_rgb, swscale_colour  # noqa: E402
from avidzoo.io.pixels import output_size  # noqa: E402

from media import make_video  # noqa: E402

FRAMES = 4
KINDS = {
    "1080p camera, BT.709": ("cam709.mp4", dict(size=(1920, 1080), pattern="scene", colorspace="bt709",
                                                color_range="tv", crf=18)),
    "bars, BT.709": ("bars709.mp4", dict(pattern="bars", colorspace="bt709", color_range="tv")),
    "bars, BT.601": ("bars601.mp4", dict(pattern="bars", colorspace="bt601", color_range="tv")),
    "bars, untagged": ("bars.mp4", dict(pattern="bars")),
    "bars, BT.2020 10-bit HEVC": ("bars2020.mkv", dict(pattern="bars", colorspace="bt2020", color_range="tv",
                                                        vcodec="libx265", pix_fmt="yuv420p10le", acodec="flac")),
    "bars, full-range H.264 (yuvj420p)": ("barsj.mp4", dict(pattern="bars", colorspace="bt709", color_range="pc",
                                                              pix_fmt="yuvj420p")),
    "bars, full-range VP9 (yuv420p, pc)": ("barspc.webm", dict(pattern="bars", colorspace="bt709",
                                                               color_range="pc", vcodec="libvpx-vp9",
                                                               acodec="libopus", audio_rate=48000)),
}
SIZES = {"full": None, "short 256": 256, "short 128": 128, "vmz 171x128": (171, 128)}

# Run by the legacy Python: the originals' calls with PyAV <= 11's defaults (BT.601 whatever the tag).
LEGACY = r"""
import sys, av, numpy as np
FRAMES = int(sys.argv[1])
out = {}
for path in sys.argv[3:]:
    with av.open(path) as c:
        frames = [f for _, f in zip(range(FRAMES), c.decode(video=0))]
    out[path + "|times"] = np.array([f.time for f in frames])
    out[path + "|full"] = np.stack([np.asarray(f.to_image()) for f in frames])  # AVID's, CrissCross's call
    interp = av.video.reformatter.Interpolation.FAST_BILINEAR
    out[path + "|vmz 171x128"] = np.stack([f.reformat(171, 128, "rgb24", interpolation=interp).to_ndarray()
                                          for f in frames])
np.savez(sys.argv[2], av_version=av.__version__, **out)
"""


def legacy_here(path: str) -> dict[str, np.ndarray]:
    """The legacy conversion with this PyAV: BT.601 and old swscale's range, named explicitly."""
    with av.open(path) as c:
        frames = [f for _, f in zip(range(FRAMES), c.decode(video=0))]
    interp = av.video.reformatter.Interpolation.FAST_BILINEAR
    return {"times": np.array([f.time for f in frames]),
            "full": np.stack([f.reformat(format="rgb24", **swscale_colour(f, "bt601")).to_ndarray() for f in frames]),
            "vmz 171x128": np.stack([f.reformat(171, 128, "rgb24", interpolation=interp,
                                                **swscale_colour(f, "bt601")).to_ndarray() for f in frames])}


def resize_like_avidzoo(rgb: np.ndarray, size) -> np.ndarray:
    """Short-side resize of RGB frames as MediaFile resizes after converting (:func:`resize_rgb`)."""
    out = []
    for frame in rgb:
        h, w = frame.shape[:2]
        dims = output_size(av.VideoFrame(w, h, "rgb24"), size)
        out.append(resize_rgb(torch.from_numpy(np.ascontiguousarray(frame)), dims).numpy())
    return np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--legacy-python", help="a Python with PyAV <= 11: its defaults are the reference")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for kind, (name, kw) in KINDS.items():
            kw.setdefault("size", (640, 360))
            files[kind] = str(make_video(Path(tmp) / name, seconds=0.5, fps=16, **kw))
        if args.legacy_python:
            npz = Path(tmp) / "legacy.npz"
            subprocess.run([args.legacy_python, "-c", LEGACY, str(FRAMES), str(npz), *files.values()], check=True)
            data = np.load(npz)
            source = f"PyAV {data['av_version']} defaults ({args.legacy_python})"
            refs = {p: {k.split("|")[1]: data[k] for k in data.files if k.startswith(p + "|")}
                    for p in files.values()}
        else:
            source = f"PyAV {av.__version__} reformat(src_colorspace='ITU601', old swscale's range)"
            refs = {p: legacy_here(p) for p in files.values()}
        print(f"reference: {source}; first {FRAMES} frames; grey levels, mean / max |difference|")
        print(f"{'file':38s} {'size':12s} {'tagged (before)':>16s} {'bt601 (after)':>15s} {'cuda conv.':>12s}")
        for kind, path in files.items():
            ref = refs[path]
            times = [float(t) for t in ref["times"]]
            for label, size in SIZES.items():
                if label in ref:
                    want = ref[label]
                else:
                    want = ref["full"] if size is None else resize_like_avidzoo(ref["full"], size)
                cells = []
                for rule, on in (("tagged", None), ("bt601", None), ("bt601", "cpu")):
                    if on is not None and isinstance(size, tuple):
                        cells.append("(swscale)")  # VMZ's fixed size stays swscale on the host under cuda
                        continue
                    with MediaFile(path, colour=rule, frames_on=on) as f:
                        got = f.read_frames([times], short_side=size)[0].numpy().astype(np.float64)
                    d = np.abs(got - want.astype(np.float64))
                    cells.append(f"{d.mean():.3f} / {d.max():.0f}")
                print(f"{kind:38s} {label:12s} {cells[0]:>16s} {cells[1]:>15s} {cells[2]:>12s}")


if __name__ == "__main__":
    main()
