"""Pretraining objectives: AVID (Cross/Self/Joint), AVID-CMA and Robust-xID, over memory banks.

Embeddings come in as ``(B, D)`` projected (unnormalised) outputs of the local batch, with their dataset indices
``(B,)``. Under torch.distributed every rank passes its share of the global batch; indices, embeddings and the random
negatives are shared so that N ranks with batch B train exactly like one process with batch N*B.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import all_gather_cat, all_reduce_mean, rank_world

__all__ = ["MemoryBank", "nce_loss", "AVIDLoss", "AVIDCMALoss", "RobustXIDLoss", "build_criterion"]


class MemoryBank(nn.Module):
    """One ``(N, D)`` bank of unit vectors per modality: ``video`` and ``audio``.

    Initialised with normalised Gaussian noise from ``seed`` (the same on every rank). ``update`` sets
    ``mem[i] <- normalize(m * mem[i] + (1 - m) * e_i)``; an index present several times in one global batch uses the
    mean of its embeddings, so the result does not depend on the order of the batch.
    """

    def __init__(self, num_data: int, dim: int = 128, momentum: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("video", F.normalize(torch.randn(num_data, dim, generator=g), dim=1))
        self.register_buffer("audio", F.normalize(torch.randn(num_data, dim, generator=g), dim=1))
        self.momentum = momentum

    @property
    def num_data(self) -> int:
        return self.video.shape[0]

    @torch.no_grad()
    def update(self, idx: torch.Tensor, video: torch.Tensor, audio: torch.Tensor) -> None:
        """``idx`` ``(G,)`` and unit embeddings ``(G, D)`` of the whole (gathered) batch."""
        uniq, inverse = torch.unique(idx, return_inverse=True)
        counts = torch.bincount(inverse, minlength=len(uniq)).to(video.dtype)[:, None]
        for mem, emb in ((self.video, video), (self.audio, audio)):
            mean = torch.zeros(len(uniq), emb.shape[1], dtype=emb.dtype, device=emb.device).index_add_(
                0, inverse, emb) / counts
            mem[uniq] = F.normalize(self.momentum * mem[uniq] + (1 - self.momentum) * mean.to(mem.dtype), dim=1)


def nce_loss(pos: torch.Tensor, neg: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """AVID's NCE (Wu et al. 2018 style, not InfoNCE) for scores already divided by the temperature.

    ``pos`` ``(B, P)``, ``neg`` ``(B, K)``, ``z`` the partition constant Z:
    ``L = -mean_p log(e^s+ / (e^s+ + K Z)) - sum_k log(K Z / (e^s- + K Z))``, averaged over the batch.
    """
    log_kz = math.log(neg.shape[1]) + torch.log(z)
    pos_term = -(pos - torch.logaddexp(pos, log_kz)).mean(1)
    neg_term = -(log_kz - torch.logaddexp(neg, log_kz)).sum(1)
    return (pos_term + neg_term).mean()


class _BankLoss(nn.Module):
    """Shared machinery: the bank, a step counter that seeds the negatives, and the global-batch bookkeeping."""

    def __init__(self, num_data: int, dim: int, num_negatives: int, momentum: float, tau: float, seed: int) -> None:
        super().__init__()
        if num_data < 2:
            raise ValueError("memory-bank losses need at least 2 training instances")
        self.memory = MemoryBank(num_data, dim, momentum, seed)
        self.num_negatives, self.tau, self.seed = num_negatives, tau, seed
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        self.last_negatives: torch.Tensor | None = None  # for inspection and tests
        # With defer_updates, forward leaves the bank, Z and step updates pending until commit() (the training
        # loop's StepGuard commits them only for a step with finite loss and gradients); by default they apply at once.
        self.defer_updates = False
        self._pending: tuple | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch.fill_(epoch)

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.step))

    def _global(self, idx: torch.Tensor) -> tuple[torch.Tensor, slice]:
        rank, _ = rank_world()
        return all_gather_cat(idx), slice(rank * len(idx), (rank + 1) * len(idx))

    def _uniform_negatives(self, global_idx: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
        """``(G, K)`` indices drawn uniformly from the instances not in ``excluded`` ``(G, E)`` (sorted per row)."""
        n, e = self.memory.num_data, excluded.shape[1]
        r = torch.randint(0, n - e, (len(global_idx), self.num_negatives), generator=self._generator())
        for j in range(e):  # shift past each excluded index, smallest first
            r += (r >= excluded[:, j:j + 1].cpu()).long()
        return r.to(global_idx.device)

    def _score(self, emb: torch.Tensor, bank: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``emb`` ``(B, D)`` against ``bank[idx]`` for ``idx`` ``(B, M)``: ``(B, M)`` scores / tau."""
        return torch.einsum("bd,bmd->bm", emb, bank[idx].to(emb.dtype)) / self.tau

    def _partition(self, neg_scores: torch.Tensor) -> torch.Tensor:
        """Z: the frozen value, or on the first step the mean ``exp`` of ``neg_scores`` over every rank (kept when
        the step is committed)."""
        if self.z >= 0:
            return self.z
        return all_reduce_mean(neg_scores.detach().float().exp().mean())

    def _finish(self, idx, v, a, z: torch.Tensor | None = None) -> None:
        self._pending = (all_gather_cat(idx), all_gather_cat(v.detach().float()), all_gather_cat(a.detach().float()),
                         None if z is None else z.detach())
        if not self.defer_updates:
            self.commit()

    @torch.no_grad()
    def commit(self) -> None:
        """Apply the last forward's memory-bank update, Z (first step) and step count."""
        if self._pending is None:
            return
        idx, v, a, z = self._pending
        self._pending = None
        self.memory.update(idx, v, a)
        if z is not None and self.z < 0:
            self.z.fill_(float(z))
        self.step += 1

    def discard(self) -> None:
        """Drop the last forward's pending updates: the loss state stays as it was before that step."""
        self._pending = None


class AVIDLoss(_BankLoss):
    """AVID: cross-modal (``xmodal``) and within-modal (``wmodal``) instance discrimination with NCE.

    Cross-AVID is ``(1, 0)``, Self-AVID ``(0, 1)``, Joint-AVID ``(1, 1)``; the coefficients are normalised to sum to 1.
    K negatives are uniform over the other N-1 instances; Z is the mean of ``exp`` of the first batch's video-to-audio
    negative scores (averaged over ranks), then frozen.
    """

    def __init__(self, num_data: int, dim: int = 128, num_negatives: int = 1024, momentum: float = 0.5,
                 xmodal: float = 1.0, wmodal: float = 0.0, tau: float = 0.07, seed: int = 0) -> None:
        super().__init__(num_data, dim, num_negatives, momentum, tau, seed)
        if xmodal < 0 or wmodal < 0 or xmodal + wmodal == 0:
            raise ValueError(f"xmodal and wmodal must be >= 0 and not both 0, got {xmodal}, {wmodal}")
        total = xmodal + wmodal
        self.xmodal, self.wmodal = xmodal / total, wmodal / total
        self.register_buffer("z", torch.full((), -1.0))

    def forward(self, video: torch.Tensor, audio: torch.Tensor, idx: torch.Tensor):
        v, a = F.normalize(video, dim=1), F.normalize(audio, dim=1)
        global_idx, mine = self._global(idx)
        neg = self._uniform_negatives(global_idx, global_idx[:, None])[mine]
        self.last_negatives = neg
        own = idx[:, None]
        mem = self.memory
        scores = {
            "v2a": (self._score(v, mem.audio, own), self._score(v, mem.audio, neg)),
            "a2v": (self._score(a, mem.video, own), self._score(a, mem.video, neg)),
            "v2v": (self._score(v, mem.video, own), self._score(v, mem.video, neg)),
            "a2a": (self._score(a, mem.audio, own), self._score(a, mem.audio, neg)),
        }
        z = self._partition(scores["v2a"][1])
        parts = {k: nce_loss(p, n, z) for k, (p, n) in scores.items()
                 if (k in ("v2a", "a2v") and self.xmodal) or (k in ("v2v", "a2a") and self.wmodal)}
        loss = 0.0
        if self.xmodal:
            loss = loss + self.xmodal * (parts["v2a"] + parts["a2v"]) / 2
        if self.wmodal:
            loss = loss + self.wmodal * (parts["v2v"] + parts["a2a"]) / 2
        self._finish(idx, v, a, z)
        return loss, {k: float(x.detach()) for k, x in parts.items()}

    def load_original_state(self, criterion_state: Mapping[str, torch.Tensor]) -> None:
        """Memory banks and Z from an original checkpoint's ``train_criterion`` entry."""
        load_original_bank(self, criterion_state)


def load_original_bank(loss: _BankLoss, state: Mapping[str, torch.Tensor]) -> None:
    video, audio = state["nce_average.view1_mem"], state["nce_average.view2_mem"]
    if video.shape != loss.memory.video.shape:
        raise ValueError(f"the checkpoint's memory bank is {tuple(video.shape)}, this loss has "
                         f"{tuple(loss.memory.video.shape)}: the dataset must be the one it was trained on")
    loss.memory.video.copy_(video)
    loss.memory.audio.copy_(audio)
    zs = [v.float().mean() for k, v in state.items() if k.endswith("avg_exp_score")]
    if zs and hasattr(loss, "z"):
        loss.z.fill_(float(torch.stack(zs).mean()))


class AVIDCMALoss(_BankLoss):
    """AVID-CMA: instance discrimination plus within-modal discrimination of cross-modal-agreement positives.

    Positives: for each instance, the ``pos_k`` others whose video *and* audio memories are both most similar
    (``sampling="consensus"``: the minimum of the two cosine similarities; ``"union"``: the maximum; ``"video"``,
    ``"audio"``: one modality), searched over the whole bank in chunks on its device, stored sorted in
    ``positive_set`` and recomputed when ``epoch % resample_freq == 0`` (epoch > 0). Negatives: K uniform over the
    instances outside the positive set (as the original, self is not excluded); the within-modal positive terms use
    the first ``num_negatives_within`` of them. Terms: ``inst-v2a/a2v`` (xmodal_inst), ``inst-v2v/a2a``
    (wmodal_inst), ``pos-v2a/a2v`` (xmodal_pos), ``pos-v2v/a2a`` (wmodal_pos), coefficients normalised to sum to 1.
    """

    def __init__(self, num_data: int, dim: int = 128, num_negatives: int = 1024, num_negatives_within: int = 64,
                 momentum: float = 0.5, xmodal_inst: float = 1.0, wmodal_inst: float = 0.0, xmodal_pos: float = 0.0,
                 wmodal_pos: float = 1.0, pos_k: int = 32, sampling: str = "consensus", resample_freq: int = 5,
                 tau: float = 0.07, chunk_size: int = 4096, seed: int = 0) -> None:
        super().__init__(num_data, dim, num_negatives, momentum, tau, seed)
        if pos_k >= num_data:
            raise ValueError(f"pos_k ({pos_k}) must be smaller than the number of instances ({num_data})")
        if sampling not in ("consensus", "union", "video", "audio"):
            raise ValueError(f"sampling must be consensus, union, video or audio, got {sampling!r}")
        coeffs = {"inst_x": xmodal_inst, "inst_w": wmodal_inst, "pos_x": xmodal_pos, "pos_w": wmodal_pos}
        total = sum(coeffs.values())
        self.coeffs = {k: c / total for k, c in coeffs.items()}
        self.num_negatives_within, self.pos_k, self.sampling = num_negatives_within, pos_k, sampling
        self.resample_freq, self.chunk_size = resample_freq, chunk_size
        self.register_buffer("z", torch.full((), -1.0))
        self.register_buffer("positive_set", torch.full((num_data, pos_k), -1, dtype=torch.long))

    @torch.no_grad()
    def compute_positive_set(self) -> torch.Tensor:
        mem = self.memory
        out = torch.empty_like(self.positive_set)
        for s in range(0, mem.num_data, self.chunk_size):
            rows = torch.arange(s, min(s + self.chunk_size, mem.num_data), device=mem.video.device)
            sim_v, sim_a = mem.video[rows] @ mem.video.T, mem.audio[rows] @ mem.audio.T
            agree = {"consensus": torch.minimum(sim_v, sim_a), "union": torch.maximum(sim_v, sim_a),
                     "video": sim_v, "audio": sim_a}[self.sampling]
            agree[torch.arange(len(rows)), rows] = -math.inf  # never one's own positive
            out[rows] = agree.topk(self.pos_k, dim=1).indices.sort(dim=1).values
        self.positive_set.copy_(out)
        return out

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if int(self.positive_set[0, 0]) < 0 or (epoch > 0 and epoch % self.resample_freq == 0):
            self.compute_positive_set()

    def forward(self, video: torch.Tensor, audio: torch.Tensor, idx: torch.Tensor):
        if int(self.positive_set[0, 0]) < 0:
            self.compute_positive_set()
        v, a = F.normalize(video, dim=1), F.normalize(audio, dim=1)
        global_idx, mine = self._global(idx)
        neg = self._uniform_negatives(global_idx, self.positive_set[global_idx])[mine]
        self.last_negatives = neg
        own, pos, neg_w = idx[:, None], self.positive_set[idx], neg[:, : self.num_negatives_within]
        mem = self.memory
        terms = {
            "inst_x": {"inst-v2a": (self._score(v, mem.audio, own), self._score(v, mem.audio, neg)),
                       "inst-a2v": (self._score(a, mem.video, own), self._score(a, mem.video, neg))},
            "inst_w": {"inst-v2v": (self._score(v, mem.video, own), self._score(v, mem.video, neg)),
                       "inst-a2a": (self._score(a, mem.audio, own), self._score(a, mem.audio, neg))},
            "pos_x": {"pos-v2a": (self._score(v, mem.audio, pos), self._score(v, mem.audio, neg_w)),
                      "pos-a2v": (self._score(a, mem.video, pos), self._score(a, mem.video, neg_w))},
            "pos_w": {"pos-v2v": (self._score(v, mem.video, pos), self._score(v, mem.video, neg_w)),
                      "pos-a2a": (self._score(a, mem.audio, pos), self._score(a, mem.audio, neg_w))},
        }
        z = self._partition(terms["inst_x"]["inst-v2a"][1])
        loss, parts = 0.0, {}
        for group, coeff in self.coeffs.items():
            if not coeff:
                continue
            values = {k: nce_loss(p, n, z) for k, (p, n) in terms[group].items()}
            parts.update({k: float(x.detach()) for k, x in values.items()})
            loss = loss + coeff * sum(values.values()) / 2
        self._finish(idx, v, a, z)
        return loss, parts

    def load_original_state(self, criterion_state: Mapping[str, torch.Tensor]) -> None:
        """Memory banks and Z from an AVID checkpoint (the CMA stage starts from one), then the positive set."""
        load_original_bank(self, criterion_state)
        if "nce_average.positive_set" in criterion_state:
            self.positive_set.copy_(criterion_state["nce_average.positive_set"].long())
        else:
            self.compute_positive_set()


SoftTarget = Literal["cycle", "bootstrap", "swapped", "neighbours", "none"]


class RobustXIDLoss(_BankLoss):
    """Robust-xID (reconstructed; no official code exists): softmax cross-modal instance discrimination over the
    own memory and K negatives, with

    * weights against faulty positives: ``w_i = w_min + (1 - w_min) * Phi((s_i - (mu + delta sigma)) /
      (sqrt(kappa) sigma))``, ``s_i`` the memory-bank cosine of instance i's video and audio, ``mu``/``sigma`` over the
      whole bank (refit every epoch), ``w = 1`` during ``warmup_epochs``; the loss is ``sum w_i L_i / sum w_i``;
    * soft targets against faulty negatives: ``y = (1 - lam) onehot + lam T`` with ``T`` from memory-bank features:
      ``"bootstrap"`` (the model's own prediction), ``"swapped"`` (the other modality's prediction), ``"neighbours"``
      (``T_ij ~ exp(v_i . v_j / tau_s)``, within-modal), ``"cycle"`` (``T_ij ~ exp(v_i . a_i / tau_t + a_i . v_j /
      tau_s + v_j . a_j / tau_t)``), or ``"none"``.
    """

    def __init__(self, num_data: int, dim: int = 128, num_negatives: int = 1024, momentum: float = 0.5,
                 tau: float = 0.07, weighting: bool = True, w_min: float = 0.25, delta: float = 0.0,
                 kappa: float = 0.5, warmup_epochs: int = 1, soft_targets: SoftTarget = "cycle", lam: float = 0.5,
                 tau_s: float = 0.02, tau_t: float = 0.07, seed: int = 0) -> None:
        super().__init__(num_data, dim, num_negatives, momentum, tau, seed)
        if soft_targets not in ("cycle", "bootstrap", "swapped", "neighbours", "none"):
            raise ValueError(f"unknown soft_targets {soft_targets!r}")
        if not 0 <= w_min <= 1:
            raise ValueError(f"w_min must be in [0, 1], got {w_min}")
        self.weighting, self.w_min, self.delta, self.kappa = weighting, w_min, delta, kappa
        self.warmup_epochs, self.soft_targets, self.lam = warmup_epochs, soft_targets, lam
        self.tau_s, self.tau_t = tau_s, tau_t
        self.register_buffer("sim_mean", torch.zeros(()))
        self.register_buffer("sim_std", torch.ones(()))

    @torch.no_grad()
    def fit_similarity(self) -> None:
        s = (self.memory.video * self.memory.audio).sum(1)
        self.sim_mean.fill_(float(s.mean()))
        self.sim_std.fill_(float(s.std().clamp_min(1e-6)))

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.fit_similarity()

    @torch.no_grad()
    def weights(self, idx: torch.Tensor) -> torch.Tensor:
        """Per-instance weights in ``[w_min, 1]``, increasing with the memory-bank audio-visual similarity."""
        if not self.weighting or int(self.epoch) < self.warmup_epochs:
            return torch.ones(len(idx), device=idx.device)
        s = (self.memory.video[idx] * self.memory.audio[idx]).sum(1)
        zscore = (s - (self.sim_mean + self.delta * self.sim_std)) / (math.sqrt(self.kappa) * self.sim_std)
        phi = 0.5 * (1 + torch.erf(zscore / math.sqrt(2)))
        return self.w_min + (1 - self.w_min) * phi

    @torch.no_grad()
    def targets(self, idx, cand, logits_v2a, logits_a2v) -> tuple[torch.Tensor, torch.Tensor]:
        """Target distributions ``(B, 1 + K)`` over the candidates (the own instance first) for both directions."""
        onehot = torch.zeros_like(logits_v2a)
        onehot[:, 0] = 1
        if self.soft_targets == "none" or self.lam == 0:
            return onehot, onehot
        mem = self.memory
        vi, ai = mem.video[idx], mem.audio[idx]  # (B, D)
        vj, aj = mem.video[cand], mem.audio[cand]  # (B, M, D)
        if self.soft_targets == "bootstrap":
            tv, ta = logits_v2a.softmax(1), logits_a2v.softmax(1)
        elif self.soft_targets == "swapped":
            tv, ta = logits_a2v.softmax(1), logits_v2a.softmax(1)
        elif self.soft_targets == "neighbours":
            tv = (torch.einsum("bd,bmd->bm", vi, vj) / self.tau_s).softmax(1)
            ta = (torch.einsum("bd,bmd->bm", ai, aj) / self.tau_s).softmax(1)
        else:  # cycle
            own = (vi * ai).sum(1, keepdim=True) / self.tau_t
            cand_pair = (vj * aj).sum(2) / self.tau_t
            tv = (own + torch.einsum("bd,bmd->bm", ai, vj) / self.tau_s + cand_pair).softmax(1)
            ta = (own + torch.einsum("bd,bmd->bm", vi, aj) / self.tau_s + cand_pair).softmax(1)
        return (1 - self.lam) * onehot + self.lam * tv.float(), (1 - self.lam) * onehot + self.lam * ta.float()

    def forward(self, video: torch.Tensor, audio: torch.Tensor, idx: torch.Tensor):
        v, a = F.normalize(video, dim=1), F.normalize(audio, dim=1)
        global_idx, mine = self._global(idx)
        neg = self._uniform_negatives(global_idx, global_idx[:, None])[mine]
        self.last_negatives = neg
        cand = torch.cat([idx[:, None], neg], dim=1)
        logits_v2a = self._score(v, self.memory.audio, cand)
        logits_a2v = self._score(a, self.memory.video, cand)
        yv, ya = self.targets(idx, cand, logits_v2a.detach().float(), logits_a2v.detach().float())
        per_sample = -(yv * logits_v2a.float().log_softmax(1)).sum(1) - (ya * logits_a2v.float().log_softmax(1)).sum(1)
        w = self.weights(idx)
        # Normalise by the weights of the whole global batch; DDP's gradient averaging divides by the world size.
        _, world = rank_world()
        total_w = all_reduce_mean(w.sum()) * world
        loss = (w * per_sample).sum() / total_w * world
        self._finish(idx, v, a)
        return loss, {"xid": float(per_sample.detach().mean()), "weight": float(w.mean())}


def build_criterion(name: str, num_data: int, dim: int, options: Mapping | None = None, seed: int = 0) -> _BankLoss:
    """The loss named by a recipe (``avid``, ``avid_cma``, ``robust_xid``) with its options."""
    options = dict(options or {})
    options.pop("name", None)
    classes = {"avid": AVIDLoss, "avid_cma": AVIDCMALoss, "robust_xid": RobustXIDLoss}
    if name not in classes:
        raise ValueError(f"unknown loss {name!r}; one of {', '.join(classes)}")
    return classes[name](num_data, dim, seed=seed, **options)
