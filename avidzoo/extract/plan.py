"""How an extraction run uses the machine: decoding processes, their decoder threads, the model's torch threads and
where preprocessing runs, chosen so that the threads never outnumber the cores this process may use."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["ThreadPlan", "plan_threads", "available_cores"]

Placement = Literal["worker", "device"]
# Decoding threads per GPU with the CUDA decoder by default: NVDEC engines are few (A100 5, H100/H200 7, L4 4), each
# runs several sessions, and a thread per session also demuxes and decodes the audio on a core.
NVDEC_THREADS = 8


def available_cores() -> int:
    """Cores this process may run on (``os.sched_getaffinity``: a SLURM allocation, ``taskset`` or a container's
    cpuset), not the machine's count."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ThreadPlan:
    """``workers`` DataLoader processes, each decoding with ``decoder_threads`` FFmpeg threads (and one torch thread);
    the main process runs the model with ``torch_threads``; ``preprocess`` says where crop, normalisation and the
    spectrogram run (``"worker"``: in the decoding processes, on the CPU; ``"device"``: batched on the model's
    device, the workers send uint8 frames and waveforms). With ``decoder="cuda"`` the ``workers`` are threads of
    the main process, each decoding one file at a time with its own NVDEC session, and the frames stay on the GPU
    (CUDA cannot be used from forked processes, and frames on the device do not cross processes)."""

    cores: int
    workers: int
    decoder_threads: int
    torch_threads: int
    preprocess: Placement
    decoder: str = "software"

    @property
    def threads(self) -> int:
        """Threads that compute at once: the model's and every worker's decoder (a worker with no decoder thread
        of its own still decodes on one)."""
        return self.torch_threads + self.workers * max(self.decoder_threads, 1)

    def __str__(self) -> str:
        where = ("on the device" if self.preprocess == "device" else
                 "in the workers" if self.workers else "in the main process, as decoding")
        if self.decoder == "cuda":
            return (f"decoder cuda: {self.workers} NVDEC decoding thread(s) in this process + {self.torch_threads} "
                    f"torch thread(s), {self.cores} cores; frames, colour conversion and resize on the GPU; "
                    f"preprocessing {where}")
        return (f"{self.workers} decoding worker(s) x {self.decoder_threads} decoder thread(s) + {self.torch_threads} "
                f"torch thread(s) = {self.threads} of {self.cores} cores; preprocessing {where}; decoder software")

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The main process's torch threads for the duration of a run (restored after)."""
        before = torch.get_num_threads()
        torch.set_num_threads(self.torch_threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def plan_threads(
    device: torch.device,
    *,
    cores: int | None = None,
    workers: int | None = None,
    decoder_threads: int | None = None,
    torch_threads: int | None = None,
    preprocess: Placement | Literal["auto"] = "auto",
    decoder: str = "software",
) -> ThreadPlan:
    """The plan for a run on ``device`` over ``cores`` (default :func:`available_cores`); any of ``workers``,
    ``decoder_threads``, ``torch_threads`` given is kept and the rest fit around it.

    On CUDA the model needs the CPU only to launch kernels: 1 torch thread (2 from 8 cores), every other core
    decodes, and preprocessing runs on the GPU (uint8 crops cross the bus: 4x less than float inputs). On a CPU with
    up to 4 cores, decoding runs in the main process between batches (``workers=0``) and torch takes every core:
    measured on 2 cores (``benchmarks/extract.py``) that beats one worker beside one torch thread by 2.2x, and
    matches one worker beside two torch threads, which oversubscribes (0.93-1.18x of it over four runs). From 5
    cores, one decoding worker per 4 cores and the rest to torch, preprocessing in the workers (on a CPU the device
    placement measured 0.94-0.99x). A plan that needs more threads than cores only comes from explicit settings, and
    warns.

    With ``decoder="cuda"`` (resolved by the caller: :func:`~avidzoo.io.decode.cuda_decoder_problem`) the decoding
    is counted in hardware sessions, not cores: ``workers`` threads in this process (default the cores left beside
    the torch threads, at most ``NVDEC_THREADS``), one FFmpeg thread each, and preprocessing on the device.
    """
    cores = cores or available_cores()
    cuda = device.type == "cuda"
    if preprocess == "auto":
        preprocess = "device" if cuda else "worker"
    if preprocess not in ("worker", "device"):
        raise ValueError(f"preprocess must be 'auto', 'worker' or 'device', got {preprocess!r}")
    for name, value in (("workers", workers), ("decoder_threads", decoder_threads), ("torch_threads", torch_threads)):
        if value is not None and value < (0 if name == "workers" else 1):
            raise ValueError(f"{name} must be at least {0 if name == 'workers' else 1}, got {value}")
    if decoder == "cuda":
        if not cuda:
            raise ValueError(f"decoder='cuda' decodes on the GPU the model runs on; the model is on {device}")
        torch_n = torch_threads or (2 if cores >= 8 else 1)
        threads = workers if workers is not None else max(min(cores - torch_n, NVDEC_THREADS), 1)
        return ThreadPlan(cores=cores, workers=max(threads, 1), decoder_threads=1, torch_threads=torch_n,
                          preprocess="device", decoder="cuda")
    decoder_n = decoder_threads or 1
    if cuda:
        torch_n = torch_threads or (2 if cores >= 8 else 1)
        workers_n = workers if workers is not None else max((cores - torch_n) // decoder_n, 0)
    else:
        default_workers = 0 if cores <= 4 else cores // 4
        workers_n = workers if workers is not None else default_workers
        torch_n = torch_threads or max(cores - workers_n * decoder_n, 1)
    plan = ThreadPlan(cores=cores, workers=workers_n, decoder_threads=decoder_n, torch_threads=torch_n,
                      preprocess=preprocess)
    if plan.threads > cores and plan.workers > 0:
        warnings.warn(f"the thread plan ({plan}) runs more threads than this process has cores; decoding and the "
                      f"model will slow each other down", stacklevel=3)
    return plan
