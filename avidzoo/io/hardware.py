"""Whether NVDEC can decode here (``decoder="cuda"``), and the FFmpeg hwaccel that asks for it. PyAV's wheels carry
FFmpeg's CUDA hwaccel; what a machine may lack is a CUDA device, or NVDEC sessions (a container without the
driver's video capability)."""

from __future__ import annotations

import contextlib
import functools
import io
import os

import av
import av.codec.hwaccel
import numpy as np
import torch

__all__ = ["cuda_decoder_problem", "cuda_hwaccel", "nvdec_session_problem"]


def cuda_hwaccel(frames_on: torch.device | None):
    """FFmpeg's CUDA hwaccel on the GPU of ``frames_on`` (frames kept there, ``is_hw_owned``) or, for frames
    downloaded to the host, on the current device; a stream NVDEC cannot decode falls back to software."""
    on_gpu = frames_on is not None and frames_on.type == "cuda"
    index = frames_on.index if on_gpu and frames_on.index is not None else torch.cuda.current_device()
    return av.codec.hwaccel.HWAccel("cuda", device=str(index), allow_software_fallback=True, is_hw_owned=on_gpu)


def cuda_decoder_problem() -> str | None:
    """What this machine lacks for ``decoder="cuda"``, or ``None``: a CUDA device that torch sees, an FFmpeg built
    with CUDA hwaccel (PyAV's wheels are), and NVDEC sessions that start beside torch's context
    (:func:`nvdec_session_problem`). Whether NVDEC decodes a given file's codec shows when it decodes it
    (:func:`~avidzoo.io.decode.cuda_decoder_works`)."""
    if not torch.cuda.is_available():
        build = "a CPU-only torch" if torch.version.cuda is None else f"torch built for CUDA {torch.version.cuda}"
        return f"no CUDA device ({build}; torch.cuda.is_available() is False); use decoder='software' or 'auto'"
    devices = av.codec.hwaccel.hwdevices_available()
    if "cuda" not in devices:
        return (f"PyAV {av.__version__}'s FFmpeg has no CUDA hwaccel (it has: {', '.join(devices) or 'none'}); "
                "install PyAV's binary wheel, or use decoder='software'")
    return nvdec_session_problem(torch.cuda.current_device())


@functools.cache
def nvdec_session_problem(index: int) -> str | None:
    """Whether an NVDEC session starts on GPU ``index`` (once per process), with torch's CUDA context there as
    extraction has it: a one-frame H.264 clip made in memory, decoded there. Seen on an H200 machine whose container
    did not expose video decoding (``NVIDIA_DRIVER_CAPABILITIES`` without ``video``): NVDEC decoded until torch
    created its context in the process, then every open failed with "Operation not supported" (FFmpeg's
    ``primary_ctx`` did not help), which read as a damaged file. It is found here, before any file is blamed."""
    with contextlib.suppress(RuntimeError):  # the model's context comes first in extraction, too
        torch.zeros(1, device=torch.device("cuda", index))
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=1)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        black = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(black), *stream.encode(None)]:
            out.mux(packet)
    buf.seek(0)
    try:
        hwaccel = av.codec.hwaccel.HWAccel("cuda", device=str(index), allow_software_fallback=False, is_hw_owned=True)
        with av.open(buf, "r", hwaccel=hwaccel) as c:
            frame = next(c.decode(video=0), None)
    except Exception as e:  # FFmpeg's device or decoder set-up refused
        caps = os.environ.get("NVIDIA_DRIVER_CAPABILITIES")
        hint = (f"; this container's NVIDIA_DRIVER_CAPABILITIES is {caps!r}, and NVDEC needs 'video' (or 'all') "
                "there" if caps is not None and not {"video", "all"} & set(caps.split(",")) else "")
        return f"NVDEC does not start on GPU {index} ({type(e).__name__}: {e}){hint}; use decoder='software'"
    if frame is None or frame.format.name != "cuda":
        return f"FFmpeg decoded H.264 in software on GPU {index}: the driver offers no NVDEC"
    return None
