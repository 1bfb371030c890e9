"""How decoded YUV becomes RGB: the colour rule a weight's preprocessing names, for swscale on the host and for
torch on any device (the conversion a hardware decoder's frames take on the GPU, ``decoder="cuda"``, and on the CPU
the same code for tests and the ``frames_on`` option).

Colour rules (``colour`` in a weight's video preprocessing, :data:`COLOUR_RULES`):

* ``"bt601"``: the BT.601 matrix whatever the stream declares; full range for the ``yuvj*`` pixel formats (what the
  decoder gives for full-range H.264, HEVC and MJPEG), limited range for every other YUV layout. This is swscale's
  default, which every original decoder used (PyAV <= 11's ``to_image``/``to_rgb``/``reformat`` and VMZ's Caffe2
  decoder set no colour details), so it is what every released weight was trained and evaluated on.
* ``"tagged"``: the matrix and range the frame declares (BT.601 where it declares none): true colour, PyAV >= 12's
  default.

On an untagged or BT.601-tagged limited-range file the two agree; on BT.709 video (nearly every HD file) they
differ by several grey levels on saturated colour.

A frame's planes are read through DLPack without a copy (NVDEC's NV12 or P010 surfaces on the GPU; any planar 8- or
10-bit 4:2:0 / 4:2:2 / 4:4:4 layout on the CPU), and converted as FFmpeg's swscale converts them on the software
path, so that the two paths differ by rounding only:

* the colour matrix of the rule: BT.601, or (``"tagged"``) the one the frame declares (BT.709, BT.2020, FCC, SMPTE
  240M), else BT.601;
* the range of the rule: ``"bt601"`` full for a stream the software decoder gives as ``yuvj*`` (a hardware frame's
  NV12 layout does not say: the caller passes it), ``"tagged"`` full where the frame says full ("pc"/JPEG);
* chroma repeated to full size (swscale's unscaled YUV-to-RGB converters sample it nearest, not interpolated);
* truncated to 8 bits, as swscale's fixed-point converter does (rounding would be 0.5 off on average).

Measured on generated 640x360 and 1280x720 H.264 (``tests/test_colour.py``): against swscale's RGB, mean 0.65 and at
most 2 grey levels. Both paths then resize with :func:`resize_rgb`, as the originals' PIL resize.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.dlpack import from_dlpack

__all__ = ["COLOUR_RULES", "check_rule", "frame_to_rgb", "preset_colour", "resize_rgb", "rgb_supported",
           "swscale_colour"]

COLOUR_RULES = ("bt601", "tagged")

# FFmpeg's AVColorSpace values -> (Kr, Kb) luma weights; anything else is read as BT.601, as swscale does.
_MATRICES = {1: (0.2126, 0.0722), 4: (0.30, 0.11), 7: (0.212, 0.087), 9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}
_BT601 = (0.299, 0.114)
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG
# Pixel formats read plane by plane: (bits, chroma subsampling (x, y), interleaved chroma)
_FORMATS = {
    "nv12": (8, (2, 2), True), "p010le": (10, (2, 2), True), "p016le": (16, (2, 2), True),
    "yuv420p": (8, (2, 2), False), "yuvj420p": (8, (2, 2), False), "yuv422p": (8, (2, 1), False),
    "yuvj422p": (8, (2, 1), False), "yuv444p": (8, (1, 1), False), "yuvj444p": (8, (1, 1), False),
    "yuv420p10le": (10, (2, 2), False), "yuv422p10le": (10, (2, 1), False), "yuv444p10le": (10, (1, 1), False),
}


def _sw_format(frame) -> str:
    """The pixel layout of a frame's data: a hardware frame's software format (its surfaces' layout)."""
    name = frame.format.name
    if name == "cuda":
        fmt = getattr(frame, "sw_format", None)
        return getattr(fmt, "name", fmt) or "nv12"
    return name


def check_rule(rule: str) -> str:
    if rule not in COLOUR_RULES:
        raise ValueError(f"colour must be one of {COLOUR_RULES}, got {rule!r}")
    return rule


def preset_colour(video_cfg: dict | None) -> str:
    """The colour rule a video preprocessing config names (``colour``); ``"bt601"``, every released weight's, where
    it names none."""
    return check_rule((video_cfg or {}).get("colour", "bt601"))


def _legacy_full_range(pixel_format: str, yuvj: bool | None) -> bool:
    """The BT.601 rule's range, as old swscale read it: full for a ``yuvj*`` layout, or for one (NVDEC's NV12) of a
    stream the software decoder gives as ``yuvj*``; limited otherwise, whatever the frame's tag says."""
    return pixel_format.startswith("yuvj") or bool(yuvj)


def swscale_colour(frame, rule: str, yuvj: bool | None = None) -> dict[str, str]:
    """``reformat()`` keyword arguments that make swscale convert ``frame`` by ``rule``: for ``"bt601"`` the BT.601
    matrix and the range old swscale read (full for ``yuvj*``; ``yuvj`` says so for a layout that does not, such as
    a hardware decoder's NV12); nothing for ``"tagged"`` (PyAV >= 12 follows the frame's tags) or an RGB, grey or
    palette frame, which has no matrix to choose."""
    fmt = frame.format
    if check_rule(rule) == "tagged" or fmt.is_rgb or fmt.has_palette or len(fmt.components) < 3:
        return {}
    return {"src_colorspace": "ITU601", "src_color_range": "JPEG" if _legacy_full_range(fmt.name, yuvj) else "MPEG"}


def rgb_supported(frame) -> bool:
    """Whether :func:`frame_to_rgb` reads this frame's layout (else the host's swscale converts it)."""
    return _sw_format(frame) in _FORMATS


def _plane(frame, index: int, device: torch.device) -> torch.Tensor:
    # The capsule is taken with stream=None: PyAV refuses a stream, and torch.from_dlpack(plane) would pass one. The
    # copy (on the device's current stream, after the decoder's own on the legacy default stream) frees the decoder's
    # surface at once: NVDEC's pool holds only a few frames more than the codec's reference buffer.
    return from_dlpack(frame.planes[index].__dlpack__()).to(device).clone()


def frame_to_rgb(frame, device: torch.device | str, rule: str = "bt601", yuvj: bool | None = None) -> torch.Tensor:
    """A decoded frame as ``(H, W, 3)`` uint8 RGB on ``device``, converted there by the colour ``rule`` (see the
    module docstring; ``yuvj``: whether the software decoder gives this stream as ``yuvj*``, for a layout such as
    NVDEC's NV12 that does not say).

    ``frame``: a PyAV ``VideoFrame`` in one of the YUV layouts above, on the host or (NVDEC, ``is_hw_owned``) a CUDA
    frame. Raises ``ValueError`` for another layout (check :func:`rgb_supported` first)."""
    device = torch.device(device)
    check_rule(rule)
    fmt = _sw_format(frame)
    if fmt not in _FORMATS:
        raise ValueError(f"cannot convert {fmt} frames in torch")
    bits, (sx, sy), interleaved = _FORMATS[fmt]
    y = _plane(frame, 0, device)
    if interleaved:
        uv = _plane(frame, 1, device)
        u, v = uv[..., 0], uv[..., 1]
    else:
        u, v = _plane(frame, 1, device), _plane(frame, 2, device)
    h, w = frame.height, frame.width
    y = y[:h, :w]
    if bits == 8:
        y, u, v = y.float(), u.float(), v.float()
    else:  # 16-bit words: P010/P016 keep the sample in the high bits, yuv4xxp10le in the low ones
        scale = 1.0 / 256 if interleaved else 1.0 / (1 << (bits - 8))
        y, u, v = (x.view(torch.int16).to(torch.int32).bitwise_and(0xFFFF).float() * scale for x in (y, u, v))
    u = u.repeat_interleave(sy, 0).repeat_interleave(sx, 1)[:h, :w]
    v = v.repeat_interleave(sy, 0).repeat_interleave(sx, 1)[:h, :w]
    if rule == "tagged":
        kr, kb = _MATRICES.get(int(getattr(frame, "colorspace", 2) or 2), _BT601)
        full = int(getattr(frame, "color_range", 0) or 0) == _FULL_RANGE
    else:
        kr, kb = _BT601
        full = _legacy_full_range(fmt, yuvj)
    kg = 1.0 - kr - kb
    if full:
        luma, cb, cr = y, u - 128.0, v - 128.0
    else:
        luma, cb, cr = (y - 16.0) * (255.0 / 219.0), (u - 128.0) * (255.0 / 224.0), (v - 128.0) * (255.0 / 224.0)
    r = luma + 2.0 * (1.0 - kr) * cr
    b = luma + 2.0 * (1.0 - kb) * cb
    g = (luma - kr * r - kb * b) / kg
    return torch.stack((r, g, b), dim=-1).floor_().clamp_(0, 255).to(torch.uint8)


def resize_rgb(rgb: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(height, width, 3)`` uint8 for ``size = (width, height)``, by antialiased bilinear
    interpolation: the originals' PIL ``BILINEAR`` resize. On the CPU torch's fixed-point uint8 path, which follows
    Pillow's (against Pillow 13 on 720p frames to 227x128: 99.8% of values equal, mean 0.002, at most 1 grey level);
    on other devices (no uint8 kernel there) in float, rounded. The result is a channels-last view of planar memory
    (the kernel's output): stacking frames into a clip makes the one copy it needs."""
    width, height = size
    if rgb.shape[0] == height and rgb.shape[1] == width:
        return rgb
    x = rgb.permute(2, 0, 1)[None]  # channels last in memory, the layout the uint8 kernel is fast on
    if x.device.type != "cpu":
        x = x.float()
    x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    if x.dtype != torch.uint8:
        x = x.round_().clamp_(0, 255).to(torch.uint8)
    return x[0].permute(1, 2, 0)
