"""Exceptions raised by avidzoo. Every message names the file, the model or the source it is about."""

from __future__ import annotations

__all__ = [
    "AvidzooError",
    "UnknownModelError",
    "NoPretrainedWeightsError",
    "WeightsNotFoundError",
    "DownloadError",
    "ChecksumError",
    "CheckpointError",
    "DecodeError",
    "MediaNotFoundError",
    "NotMediaError",
    "EmptyMediaError",
    "CorruptMediaError",
    "MissingStreamError",
    "VariableFrameRateError",
    "RotationError",
    "NonFiniteError",
    "HardwareDecoderError",
    "OutputWriteError",
]


class AvidzooError(Exception):
    """Base class of every error avidzoo raises on purpose."""


class UnknownModelError(AvidzooError, KeyError):
    """A model, weight tag or alias that the manifest does not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class NoPretrainedWeightsError(AvidzooError):
    """Pretrained weights were asked for a model that has none released."""


class WeightsNotFoundError(AvidzooError):
    """The weights are not on this machine and may not (offline) or could not be fetched."""


class DownloadError(AvidzooError):
    """Every source of a file failed; the message lists each source and why."""


class ChecksumError(AvidzooError):
    """A file's bytes do not match the expected hash or size."""


class CheckpointError(AvidzooError):
    """A weights file cannot be read: truncated, corrupt, unsafe to unpickle or of the wrong layout."""


class DecodeError(AvidzooError):
    """A media file cannot be decoded as asked. ``path`` names the file; the message says what is wrong."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class MediaNotFoundError(DecodeError, FileNotFoundError):
    """The file does not exist or cannot be opened for reading."""


class NotMediaError(DecodeError):
    """The file is not a container FFmpeg can read (a text file, an image, random bytes)."""


class EmptyMediaError(DecodeError):
    """The stream exists but holds no frames or samples (zero length)."""


class CorruptMediaError(DecodeError):
    """The stream is corrupt or truncated where the clip lies."""


class MissingStreamError(DecodeError):
    """The file has no stream of the requested kind (an audio-only file asked for video, or the reverse)."""


class VariableFrameRateError(DecodeError):
    """Raised only with ``on_vfr="error"``: the video's frame timing is irregular."""


class RotationError(DecodeError):
    """Raised only with ``rotation="error"``: the video carries rotation metadata."""


class NonFiniteError(AvidzooError, RuntimeError):
    """Training met non-finite losses or gradients too many steps in a row, or was about to write non-finite
    weights; the message names the step or the tensor, the precision and what to try."""


class HardwareDecoderError(AvidzooError, RuntimeError):
    """A hardware decoder was asked for (``decoder="cuda"``) on a machine that lacks it; the message says what is
    missing (a CUDA device, FFmpeg's CUDA hwaccel, NVDEC in the driver)."""


class OutputWriteError(AvidzooError):
    """The output folder cannot take more: its disk is full, a quota is reached, or it is read-only. What was
    written is complete and kept (every indexed row has its data); a rerun, there once there is room or in the folder
    moved to a disk with room, resumes without redoing finished inputs. The command line exits with status 4."""
