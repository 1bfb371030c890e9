"""Chosen frames to RGB at the size a clip asks for, by the weights' colour rule (:mod:`avidzoo.io.colour`):
swscale on the host (numpy), or with ``frames_on`` torch on that device (the NVDEC path, and its twin on the CPU).

Sizes: ``None`` keeps the stored size; an ``int`` scales the shorter side to it (the longer side scaled and
truncated, as the transforms do), converting colour at full size first and then resizing the RGB as the originals'
PIL ``BILINEAR`` resize did (:func:`~avidzoo.io.colour.resize_rgb`: torch's uint8 kernel, within a grey level of
Pillow's and 2.8x as fast as swscale's bilinear RGB scaler, which was 0.1 off on average and up to 6; resizing
straight from YUV differs by about 3); a ``(width, height)`` pair scales to that size in one swscale
``FAST_BILINEAR`` pass from the decoder's pixel format, as VMZ's decoder did for XDC's inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from ..errors import DecodeError
from .colour import frame_to_rgb, resize_rgb, rgb_supported, swscale_colour

__all__ = ["Held", "PixelConverter", "Size", "output_size"]

Size = int | tuple[int, int] | None
_Interp = av.video.reformatter.Interpolation


@dataclass(frozen=True)
class Held:
    """A chosen frame already converted to RGB on ``frames_on`` (its timestamp kept for the checks)."""

    pts: int | None
    time: float | None
    rgb: Any


def output_size(frame: Any, size: Size) -> tuple[int, int] | None:
    """``(width, height)`` a frame is scaled to for ``size`` (``None``: kept as stored)."""
    if size is None or isinstance(size, tuple):
        return size
    w, h, s = frame.width, frame.height, size
    return (s, int(s * h / w)) if w <= h else (int(s * w / h), s)


class PixelConverter:
    """Converts one file's frames: ``colour`` the rule, ``yuvj`` whether the software decoder gives the video as
    ``yuvj*`` (the BT.601 rule's full range, which a hardware frame's NV12 does not say), ``rotation`` the degrees
    to turn frames upright (0: as stored), ``frames_on`` the torch device for the torch path (``None``: swscale)."""

    def __init__(self, path: Path | str, colour: str, yuvj: bool, rotation: int,
                 frames_on: torch.device | None) -> None:
        self.path, self.colour, self.yuvj, self.rotation, self.frames_on = path, colour, yuvj, rotation, frames_on
        # One swscale context, kept for the file's frames: frame.reformat() makes (and initialises) a new one for
        # every frame, which cost a third of the conversion time of a 720p frame scaled to 128 px.
        self._convert = VideoReformatter()

    def to_rgb(self, frame: Any, cache: dict[int, np.ndarray], size: Size) -> np.ndarray:
        """``(H, W, 3)`` uint8 by swscale; a frame several targets took is converted once (``cache``)."""
        key = id(frame)
        if key not in cache:
            dims = output_size(frame, size)
            colour = swscale_colour(frame, self.colour, self.yuvj)
            if dims is None:
                rgb = self._convert.reformat(frame, format="rgb24", **colour).to_ndarray()
            elif isinstance(size, tuple):  # VMZ's one pass
                rgb = self._convert.reformat(frame, width=dims[0], height=dims[1], format="rgb24", **colour,
                                             interpolation=_Interp.FAST_BILINEAR).to_ndarray()
            else:
                full = self._convert.reformat(frame, format="rgb24", **colour).to_ndarray()
                rgb = resize_rgb(torch.from_numpy(full), dims).numpy()
            if self.rotation:
                rgb = np.ascontiguousarray(np.rot90(rgb, k=self.rotation // 90))
            cache[key] = rgb
        return cache[key]

    def to_tensor(self, frame: Any, size: Size) -> torch.Tensor:
        """``(H, W, 3)`` uint8 on ``frames_on``: :func:`~avidzoo.io.colour.frame_to_rgb` and an antialiased
        bilinear resize there; a fixed ``(width, height)`` (VMZ's FAST_BILINEAR, which torch does not reproduce) or a
        layout torch does not read goes through swscale on the host first."""
        if isinstance(size, tuple) or not rgb_supported(frame):
            if frame.format.name == "cuda":
                raise DecodeError(self.path, f"{frame.sw_format.name} frames held on the GPU cannot be converted "
                                  f"{'to a fixed size' if isinstance(size, tuple) else 'in torch'}; decode "
                                  f"them to the host (frames_on=None)")
            return torch.from_numpy(self.to_rgb(frame, {}, size)).to(self.frames_on)
        rgb = frame_to_rgb(frame, self.frames_on, self.colour, self.yuvj)
        dims = output_size(frame, size)
        if dims is not None:
            rgb = resize_rgb(rgb, dims)
        if self.rotation:
            rgb = torch.rot90(rgb, k=self.rotation // 90, dims=(0, 1)).contiguous()
        return rgb

    def holder(self, size: Size):
        """How a chosen frame is kept until its clip is assembled: as the decoder's frame (converted by swscale
        later), or with ``frames_on`` converted at once to an RGB tensor on that device (a hardware decoder's
        surfaces are few, and the frame's own planes are released as soon as it is copied). A frame chosen by
        several targets in a row is converted once."""
        if self.frames_on is None:
            return lambda frame: frame
        last: list = [None, None]

        def hold(frame):
            if frame is None or isinstance(frame, Held):
                return frame
            if last[0] is not frame:
                last[0], last[1] = frame, Held(frame.pts, frame.time, self.to_tensor(frame, size))
            return last[1]
        return hold

    def rgb(self, frame: Any, cache: dict[int, np.ndarray], size: Size) -> np.ndarray | torch.Tensor:
        """A chosen frame as RGB: a held one's tensor, else swscale's array."""
        return frame.rgb if isinstance(frame, Held) else self.to_rgb(frame, cache, size)
