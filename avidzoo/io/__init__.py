"""Media input: decode video and audio clips from files (PyAV) and choose where clips start."""

from .colour import COLOUR_RULES
from .decode import (
    DECODERS,
    MediaFile,
    MediaInfo,
    cuda_decoder_problem,
    cuda_decoder_works,
    probe,
    read_audio_clip,
    read_video_clip,
)
from .inputs import MEDIA_EXTENSIONS, find_media
from .sampling import clip_span, coverage, random_start, sliding_starts, snap_to_keyframes, uniform_starts

__all__ = ["MediaFile", "MediaInfo", "probe", "read_video_clip", "read_audio_clip", "uniform_starts",
           "random_start", "sliding_starts", "snap_to_keyframes", "clip_span", "coverage", "find_media",
           "MEDIA_EXTENSIONS", "DECODERS", "COLOUR_RULES", "cuda_decoder_problem", "cuda_decoder_works"]
