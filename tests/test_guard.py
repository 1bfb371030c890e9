"""The non-finite step guard: a bad step changes nothing and is counted, runs stop after the limit, and nothing
non-finite is ever written. NaNs are injected for real (a poisoned batch, a forward hook), not mocked."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch import nn

import avidzoo
from avidzoo.errors import NonFiniteError
from avidzoo.models.video import R2Plus1D
from avidzoo.train import AVIDLoss, FinetuneConfig, PretrainConfig, finetune, pretrain, read_metrics
from avidzoo.train.guard import StepGuard, check_finite
from avidzoo.train.runs import save_checkpoint

from media import make_action_videos, make_linked_videos


def snapshot(*modules_or_optimizers) -> list[dict]:
    return [copy.deepcopy(m.state_dict()) for m in modules_or_optimizers]


def assert_same_state(a, b) -> None:
    def flat(obj, prefix=""):
        if isinstance(obj, torch.Tensor):
            yield prefix, obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                yield from flat(v, f"{prefix}.{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                yield from flat(v, f"{prefix}[{i}]")
        else:
            yield prefix, obj

    fa, fb = dict(flat(a)), dict(flat(b))
    assert fa.keys() == fb.keys()
    for k in fa:
        if isinstance(fa[k], torch.Tensor):
            assert torch.equal(fa[k], fb[k]), k
        else:
            assert fa[k] == fb[k], k


def test_a_non_finite_pretraining_step_changes_nothing_and_is_counted():
    """A poisoned batch (NaN pixels) through the real model, loss, optimizer and guard: weights, BatchNorm
    statistics, memory banks, Z, the step counter and Adam's state are exactly as before; the next good step applies;
    the third bad step in a row stops the run with an error that says what to try."""
    torch.manual_seed(0)
    model = avidzoo.create_model("cross_avid_r2plus1d", video_depth=10).train()
    criterion = AVIDLoss(8, 128, num_negatives=4)
    criterion.defer_updates = True
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    guard = StepGuard(model, optimizer, torch.amp.GradScaler("cpu", enabled=False), amp="off", max_bad_steps=3,
                      pending=[criterion])
    g = torch.Generator().manual_seed(0)
    video, audio = torch.randn(4, 3, 4, 32, 32, generator=g), torch.randn(4, 1, 64, 257, generator=g)
    idx = torch.tensor([0, 1, 2, 3])

    def step(n, poison=False):
        v = video.clone()
        if poison:
            v[1, :, 2] = float("nan")
        return guard.run(lambda: criterion(*model(video=v, audio=audio), idx), step=n, epoch=0)

    assert step(1)[0]  # a good step first, so that Adam has state and Z is set
    assert float(criterion.z) > 0 and int(criterion.step) == 1
    before = snapshot(model, criterion, optimizer)
    applied, grad_norm, loss, _ = step(2, poison=True)
    assert not applied and not torch.isfinite(loss) and guard.skipped == 1 and guard.consecutive == 1
    assert_same_state(snapshot(model, criterion, optimizer), before)
    assert step(3)[0] and guard.consecutive == 0 and guard.skipped == 1
    after = snapshot(model, criterion)
    assert not torch.equal(after[0]["video_encoder.conv1.0.weight"], before[0]["video_encoder.conv1.0.weight"])
    assert not torch.equal(after[1]["memory.video"], before[1]["memory.video"])
    step(4, poison=True)
    step(5, poison=True)
    with pytest.raises(NonFiniteError, match=r"stopped at step 6 \(epoch 0\): 3 steps in a row .* amp=off.*"
                                             r"Try a lower learning rate \(lr is 0.001\)"):
        step(6, poison=True)
    assert guard.skipped == 4
    check_finite(model, "model")  # never reached the weights


def test_first_step_z_waits_for_a_good_step():
    """Z is measured on the first step; a bad first step must not freeze a NaN Z."""
    loss = AVIDLoss(6, 8, num_negatives=3)
    loss.defer_updates = True
    v = torch.randn(3, 8)
    loss(v * float("nan"), v, torch.tensor([0, 1, 2]))
    loss.discard()
    assert float(loss.z) == -1 and int(loss.step) == 0
    loss(v, v, torch.tensor([0, 1, 2]))
    loss.commit()
    assert float(loss.z) > 0 and int(loss.step) == 1


def test_the_fp16_scaler_overflow_is_the_same_skip():
    """With the fp16 gradient scaler on, an overflow goes through the guard's one decision: skipped, counted,
    nothing changed, and the loss scale halved as GradScaler always does."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Linear(8, 1)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16, enabled=True)
    guard = StepGuard(model, optimizer, scaler, amp="fp16", max_bad_steps=5)
    x = torch.randn(16, 5)

    def step(n, scale=1.0):
        return guard.run(lambda: ((model(x * scale) ** 2).mean(), None), step=n, epoch=0)

    assert step(1)[0] and scaler.get_scale() == 2.0 ** 16
    before = snapshot(model, optimizer)
    applied, grad_norm, *_ = step(2, scale=3e38)  # finite inputs whose scaled gradients overflow
    assert not applied and guard.skipped == 1 and scaler.get_scale() == 2.0 ** 15
    assert_same_state(snapshot(model, optimizer), before)
    assert step(3)[0] and scaler.get_scale() == 2.0 ** 15


def test_nothing_non_finite_is_written(tmp_path):
    model = avidzoo.create_model("cross_avid_r2plus1d", video_depth=10, modalities=("audio",))
    with torch.no_grad():
        model.audio_encoder.conv1[0].weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"audio_encoder\.conv1\.0\.weight holds non-finite"):
        save_checkpoint(tmp_path, 0, model, {"epoch_loss": torch.tensor(1.0)})
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "model").exists()
    with pytest.raises(NonFiniteError, match=r"training state: optimizer.state.0.exp_avg holds"):
        check_finite({"optimizer": {"state": {0: {"exp_avg": torch.tensor([float("nan")])}}}},
                     f"{tmp_path}: the training state")


@contextlib.contextmanager
def poisoned_video_encoder(steps):
    """A global forward hook that turns the video encoder's output to NaN on the given training forward calls
    (1-based), as a bad batch or a faulty kernel would."""
    calls = {"n": 0}

    def hook(module, args, output):
        if isinstance(module, R2Plus1D) and module.training:
            calls["n"] += 1
            if calls["n"] in steps:
                return output * float("nan")
        return None

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


SMALL = dict(video_depth=10, clips_per_video=2, batch_size=8, num_workers=0, log_every=4, epochs=2, lr=5e-4,
             video={"num_frames": 4, "crop_size": 32, "resize": 36}, audio={"clip_duration": 0.64})


@pytest.fixture(scope="module")
def linked(tmp_path_factory):
    root = tmp_path_factory.mktemp("linked")
    make_linked_videos(root, classes=4, per_class=4)
    return root


def rows(run, name, kind="train"):
    return {r["step"]: r["value"] for r in read_metrics(run) if r["kind"] == kind and r["name"] == name}


def test_pretraining_skips_bad_steps_and_stops_after_the_limit(linked, tmp_path):
    cfg = dict(data=str(linked), recipe="cross_avid_kinetics400", val_fraction=0.0, loss={"num_negatives": 8},
               **SMALL)
    with poisoned_video_encoder({3, 4}):
        run = pretrain(PretrainConfig(out=str(tmp_path / "ok"), **cfg))
    skipped = rows(run, "skipped_steps")
    assert skipped[3] == 1 and skipped[4] == 2 and skipped[8] == 2  # bad steps are logged even off log_every
    assert rows(run, "skipped_steps", "epoch") == {4: 2, 8: 2}
    assert all(torch.isfinite(torch.tensor(v)) for s, v in rows(run, "loss").items() if s not in (3, 4))
    check_finite(avidzoo.from_pretrained(run), "the run's model")
    state = torch.load(run / "checkpoints" / "epoch-001" / "training_state.pt", weights_only=True)
    assert state["skipped_steps"] == 2
    check_finite(state, "the training state")

    # poisoned from step 3 on: epoch 0 (steps 1-4) still ends with a finite checkpoint, step 5 is the 3rd bad one
    with poisoned_video_encoder(set(range(3, 100))), \
            pytest.raises(NonFiniteError, match=r"stopped at step 5 \(epoch 1\): 3 steps in a row .*amp=off.* Try a "
                                                r"lower learning rate \(lr is 0.0005\)"):
        pretrain(PretrainConfig(out=str(tmp_path / "bad"), max_bad_steps=3, **cfg))
    assert sorted(p.name for p in (tmp_path / "bad" / "checkpoints").iterdir()) == ["epoch-000"]
    check_finite(avidzoo.from_pretrained(tmp_path / "bad"), "the run's model")


def test_finetuning_skips_a_bad_step(tmp_path):
    data = make_action_videos(tmp_path / "data", per_class=2)[0].parent.parent
    cfg = FinetuneConfig(model="cross_avid_r2plus1d", pretrained=False, train=str(data), out=str(tmp_path / "r"),
                         video_depth=10, frames=4, warmup_epochs=0, epochs=1, batch_size=4, clips_per_video=1,
                         video={"crop_size": 32, "resize": 36}, num_workers=0, log_every=10)
    with poisoned_video_encoder({2}):
        run = finetune(cfg)
    assert rows(run, "skipped_steps") == {2: 1} and rows(run, "skipped_steps", "epoch") == {2: 1}
    check_finite(avidzoo.from_pretrained(run / "model"), "the run's model")
