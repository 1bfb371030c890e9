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
