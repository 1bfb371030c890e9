"""Each pretraining loss against a hand computation on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from avidzoo.train.losses import AVIDCMALoss, AVIDLoss, MemoryBank, RobustXIDLoss, nce_loss


def test_nce_loss_formula():
    pos = torch.tensor([[0.5, 1.0], [2.0, -1.0]])
    neg = torch.tensor([[0.1, 0.2, 0.3], [-0.5, 0.0, 1.5]])
    z = torch.tensor(0.8)
    k = 3
    expected = 0.0
    for b in range(2):
        lp = -sum(math.log(math.exp(p) / (math.exp(p) + k * 0.8)) for p in pos[b].tolist()) / 2
        ln = -sum(math.log(k * 0.8 / (math.exp(n) + k * 0.8)) for n in neg[b].tolist())
        expected += (lp + ln) / 2
    assert float(nce_loss(pos, neg, z)) == pytest.approx(expected, rel=1e-6)


def test_memory_update_with_duplicates_is_deterministic():
    bank = MemoryBank(5, 4, momentum=0.5, seed=0)
    old_v = bank.video.clone()
    idx = torch.tensor([1, 3, 1])
    v = F.normalize(torch.randn(3, 4), dim=1)
    a = F.normalize(torch.randn(3, 4), dim=1)
    bank.update(idx, v, a)
    expected1 = F.normalize(0.5 * old_v[1] + 0.5 * (v[0] + v[2]) / 2, dim=0)
    expected3 = F.normalize(0.5 * old_v[3] + 0.5 * v[1], dim=0)
    torch.testing.assert_close(bank.video[1], expected1)
    torch.testing.assert_close(bank.video[3], expected3)
    torch.testing.assert_close(bank.video[[0, 2, 4]], old_v[[0, 2, 4]])  # untouched
    other = MemoryBank(5, 4, momentum=0.5, seed=0)
    other.update(idx.flip(0), v.flip(0), a.flip(0))  # batch order does not matter
    torch.testing.assert_close(other.video, bank.video)
    torch.testing.assert_close(bank.video.norm(dim=1), torch.ones(5))


def hand_nce(emb, bank, pos_idx, neg_idx, z, tau=0.07):
    emb = F.normalize(emb, dim=1)
    pos = torch.stack([torch.stack([emb[b] @ bank[i] for i in pos_idx[b]]) for b in range(len(emb))]) / tau
    neg = torch.stack([torch.stack([emb[b] @ bank[i] for i in neg_idx[b]]) for b in range(len(emb))]) / tau
    return nce_loss(pos, neg, z)


@pytest.mark.parametrize("coeffs", [(1, 0), (0, 1), (1, 1)])
def test_avid_loss_against_hand_computation(coeffs):
    torch.manual_seed(0)
    loss_fn = AVIDLoss(20, dim=8, num_negatives=5, xmodal=coeffs[0], wmodal=coeffs[1], seed=3)
    mv, ma = loss_fn.memory.video.clone(), loss_fn.memory.audio.clone()
    v, a, idx = torch.randn(4, 8), torch.randn(4, 8), torch.tensor([0, 5, 7, 19])
    loss, parts = loss_fn(v, a, idx)
    neg = loss_fn.last_negatives
    assert neg.shape == (4, 5) and not (neg == idx[:, None]).any()  # self is never a negative
    z = torch.exp(torch.einsum("bd,bkd->bk", F.normalize(v, dim=1), ma[neg]) / 0.07).mean()
    assert float(loss_fn.z) == pytest.approx(float(z), rel=1e-5)  # Z from the first batch's v2a negatives
    own = idx[:, None]
    ref = {"v2a": hand_nce(v, ma, own, neg, z), "a2v": hand_nce(a, mv, own, neg, z),
           "v2v": hand_nce(v, mv, own, neg, z), "a2a": hand_nce(a, ma, own, neg, z)}
    x, w = coeffs[0] / sum(coeffs), coeffs[1] / sum(coeffs)
    expected = x * (ref["v2a"] + ref["a2v"]) / 2 + w * (ref["v2v"] + ref["a2a"]) / 2
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    # Z stays frozen; the bank moved towards the new embeddings
    z0 = float(loss_fn.z)
    loss_fn(torch.randn(4, 8), torch.randn(4, 8), idx)
    assert float(loss_fn.z) == z0 and int(loss_fn.step) == 2
    assert not torch.allclose(loss_fn.memory.video[idx], mv[idx])


def test_negatives_are_uniform_over_the_others():
    loss_fn = AVIDLoss(6, dim=4, num_negatives=3000, seed=1)
    loss_fn(torch.randn(1, 4), torch.randn(1, 4), torch.tensor([2]))
    counts = torch.bincount(loss_fn.last_negatives.flatten(), minlength=6)
    assert counts[2] == 0 and counts.sum() == 3000
    assert counts[[0, 1, 3, 4, 5]].min() > 500  # about 600 each


def test_cma_positive_set_matches_brute_force():
    torch.manual_seed(0)
    for sampling in ("consensus", "union", "video", "audio"):
        loss_fn = AVIDCMALoss(40, dim=6, num_negatives=8, num_negatives_within=4, pos_k=5, sampling=sampling,
                              chunk_size=7)
        got = loss_fn.compute_positive_set()
        mv, ma = loss_fn.memory.video, loss_fn.memory.audio
        for i in range(40):
            sims = []
            for j in range(40):
                if j == i:
                    continue
                sv, sa = float(mv[i] @ mv[j]), float(ma[i] @ ma[j])
                sims.append(({"consensus": min(sv, sa), "union": max(sv, sa), "video": sv, "audio": sa}[sampling], j))
            expected = sorted(j for _, j in sorted(sims, reverse=True)[:5])
            assert got[i].tolist() == expected, (sampling, i)


def test_cma_loss_terms_and_negatives_skip_positives():
    torch.manual_seed(1)
    loss_fn = AVIDCMALoss(30, dim=8, num_negatives=10, num_negatives_within=4, pos_k=3)
    loss_fn.set_epoch(0)
    positives = loss_fn.positive_set.clone()
    mv, ma = loss_fn.memory.video.clone(), loss_fn.memory.audio.clone()
    v, a, idx = torch.randn(3, 8), torch.randn(3, 8), torch.tensor([2, 9, 29])
    loss, parts = loss_fn(v, a, idx)
    neg = loss_fn.last_negatives
    for b in range(3):
        assert not set(neg[b].tolist()) & set(positives[idx[b]].tolist())
    z = loss_fn.z
    own, pos, nw = idx[:, None], positives[idx], neg[:, :4]
    expected = 0.5 * (hand_nce(v, ma, own, neg, z) + hand_nce(a, mv, own, neg, z)) / 2 \
        + 0.5 * (hand_nce(v, mv, pos, nw, z) + hand_nce(a, ma, pos, nw, z)) / 2
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert set(parts) == {"inst-v2a", "inst-a2v", "pos-v2v", "pos-a2a"}
    loss_fn.set_epoch(1)  # not a resample epoch
    assert torch.equal(loss_fn.positive_set, positives)
    loss_fn.set_epoch(5)  # resample_freq 5
    assert not torch.equal(loss_fn.positive_set, positives)


def test_robust_xid_weights_are_monotone_and_bounded():
    loss_fn = RobustXIDLoss(50, dim=8, num_negatives=6, w_min=0.25, warmup_epochs=1)
    loss_fn.set_epoch(0)
    assert torch.equal(loss_fn.weights(torch.arange(50)), torch.ones(50))  # warm-up
    loss_fn.set_epoch(1)
    idx = torch.arange(50)
    w = loss_fn.weights(idx)
    s = (loss_fn.memory.video * loss_fn.memory.audio).sum(1)
    order = torch.argsort(s)
    assert torch.all(w[order][1:] >= w[order][:-1])  # monotone in the similarity
    assert float(w.min()) >= 0.25 and float(w.max()) <= 1.0
    mu, sd = float(s.mean()), float(s.std())
    expected = 0.25 + 0.75 * 0.5 * (1 + math.erf((float(s[7]) - mu) / (math.sqrt(0.5) * sd) / math.sqrt(2)))
    assert float(w[7]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("kind", ["cycle", "bootstrap", "swapped", "neighbours", "none"])
def test_robust_xid_soft_targets_are_distributions(kind):
    torch.manual_seed(2)
    loss_fn = RobustXIDLoss(30, dim=8, num_negatives=7, soft_targets=kind, lam=0.5)
    idx = torch.tensor([1, 4, 8])
    cand = torch.cat([idx[:, None], torch.randint(0, 30, (3, 7))], 1)
    lv, la = torch.randn(3, 8), torch.randn(3, 8)
    yv, ya = loss_fn.targets(idx, cand, lv, la)
    for y in (yv, ya):
        torch.testing.assert_close(y.sum(1), torch.ones(3))
        assert float(y.min()) >= 0 and float(y[:, 0].min()) >= 0.5  # at least (1 - lam) on the own instance
    if kind == "swapped":
        torch.testing.assert_close(yv, 0.5 * F.one_hot(torch.zeros(3, dtype=torch.long), 8) + 0.5 * la.softmax(1))


def test_robust_xid_loss_is_weighted_soft_cross_entropy():
    torch.manual_seed(3)
    loss_fn = RobustXIDLoss(25, dim=8, num_negatives=4, soft_targets="neighbours", warmup_epochs=0)
    loss_fn.set_epoch(0)
    mv, ma = loss_fn.memory.video.clone(), loss_fn.memory.audio.clone()
    v, a, idx = torch.randn(3, 8), torch.randn(3, 8), torch.tensor([0, 3, 24])
    w = loss_fn.weights(idx)
    loss, _ = loss_fn(v, a, idx)
    cand = torch.cat([idx[:, None], loss_fn.last_negatives], 1)
    vn, an = F.normalize(v, dim=1), F.normalize(a, dim=1)
    total = 0.0
    for b in range(3):
        lv = torch.stack([vn[b] @ ma[j] for j in cand[b]]) / 0.07
        la = torch.stack([an[b] @ mv[j] for j in cand[b]]) / 0.07
        tv = torch.stack([mv[idx[b]] @ mv[j] for j in cand[b]]) / 0.02
        ta = torch.stack([ma[idx[b]] @ ma[j] for j in cand[b]]) / 0.02
        onehot = F.one_hot(torch.tensor(0), 5).float()
        yv, ya = 0.5 * onehot + 0.5 * tv.softmax(0), 0.5 * onehot + 0.5 * ta.softmax(0)
        total += w[b] * (-(yv * lv.log_softmax(0)).sum() - (ya * la.log_softmax(0)).sum())
    assert float(loss) == pytest.approx(float(total / w.sum()), rel=1e-5)
