"""Finetuning protocols per method (manifest protocols.finetune): which settings each name gives (the numbers are
CrissCross's configs/downstream YAML files, fold 1 to 3 alike), and what CrissCross's protocol changes in the
model, the head, the augmentation and the optimizer."""

from __future__ import annotations

import json
import logging

import pytest
import torch

import avidzoo
from avidzoo.train import FinetuneConfig, finetune, read_metrics
from avidzoo.train.finetune import protocol_settings
from avidzoo.transforms import VideoTransform

from media import make_action_videos


@pytest.mark.parametrize("weights, dataset, frames, expected", [
    # ucf101/audioset/full_ft_8f: lr 7e-5, gamma 0.1, use_dropout with 0.1, batch 64
    ("crisscross/audioset2m", "ucf101:x", 8, {"lr": 7e-5, "gamma": 0.1, "milestones": [8, 12, 16], "dropout": 0.1,
                                                "batch_size": 64}),
    # ucf101/audioset/full_ft_32f: gamma 0.3, no dropout, batch 32
    ("crisscross/audioset2m", "ucf101:x", 32, {"lr": 7e-5, "gamma": 0.3, "dropout": 0.0, "batch_size": 32}),
    # ucf101/kinetics400/full_ft_8f: lr 5e-4, milestones 6/10/14
    ("crisscross/kinetics", "ucf101:x", 8, {"lr": 5e-4, "gamma": 0.3, "milestones": [6, 10, 14], "dropout": 0.0}),
    # hmdb51/audioset/full_ft_32f: lr 1e-4, gamma 0.1, milestones 6/10/14, dropout 0.5
    ("crisscross/audioset2m", "hmdb51:x", 32, {"lr": 1e-4, "gamma": 0.1, "milestones": [6, 10, 14], "dropout": 0.5}),
    # hmdb51/kinetics_sound/full_ft_32f: lr 1e-4, gamma 0.3, milestones 8/12/16
    ("crisscross/kinetics", "hmdb51:x", 32, {"lr": 1e-4, "gamma": 0.3, "milestones": [8, 12, 16], "dropout": 0.0}),
])
def test_crisscross_settings_are_its_configs(weights, dataset, frames, expected):
    settings, name = protocol_settings(None, weights, dataset, frames)
    assert name == f"crisscross:{dataset.split(':')[0]}/{weights.split('/')[1]}"
    common = {"optimizer": "sgd", "momentum": 0.9, "pool": "max", "classifier_init": "orthogonal", "warmup_epochs": 0,
              "epochs": 20, "weight_decay": 0.0, "grayscale": 0.2, "cutout": 20, "crop_scale": [0.08, 1.0],
              "clips_per_video": 10, "test_clips": 10}
    for key, value in {**common, **expected}.items():
        assert settings[key] == value, key


def test_protocol_names(caplog):
    # AVID's weights keep AVID's protocol (Adam, warm-up, Dropout 0.5)
    settings, name = protocol_settings(None, "avid", "ucf101:x", 8)
    assert name == "avid:ucf101" and settings["optimizer"] == "adam" and settings["warmup_epochs"] == 5
    assert settings["dropout"] == 0.5 and not settings["grayscale"] and not settings["cutout"]
    # a family for any weights (its default variant), or family:dataset; custom is UCF-101's
    assert protocol_settings("crisscross", "avid", "my/folder", 32)[1] == "crisscross:custom/kinetics"
    assert protocol_settings("crisscross:custom", "avid", "x", 32)[0] == protocol_settings(
        "crisscross:ucf101", "avid", "x", 32)[0]
    assert protocol_settings("avid:hmdb51", "crisscross/audioset2m", "x", 8)[1] == "avid:hmdb51"
    assert protocol_settings("hmdb51", "crisscross/audioset2m", "x", 8)[1] == "crisscross:hmdb51/audioset2m"
    # GDT's own finetuning is not reproduced: AVID's, said once
    with caplog.at_level(logging.WARNING, logger="avidzoo"):
        assert protocol_settings(None, "gdt", "x", 8)[1] == "avid:custom"
    assert "does not reproduce" in caplog.text
    with pytest.raises(ValueError, match="unknown protocol"):
        protocol_settings("kinetics", "avid", "x", 8)


def test_registry_weights_name_their_protocol():
    from avidzoo.config import resolve_weights

    assert resolve_weights("crisscross_r2plus1d.audioset2m")[0].protocol == "crisscross/audioset2m"
    assert resolve_weights("crisscross_r2plus1d.kinetics_sound")[0].protocol == "crisscross/kinetics"
    assert resolve_weights("cross_avid_r2plus1d.kinetics400")[0].protocol == "avid"
    assert resolve_weights("gdt_r2plus1d.ig65m")[0].protocol == "gdt"
    assert resolve_weights("xdc_r2plus1d.ig65m_kinetics")[0].protocol == "vmz"


def test_max_pool_and_orthogonal_head(tmp_path):
    model = avidzoo.create_model("crisscross_r2plus1d", modalities=("video",), video_depth=10).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    maps = model.video_encoder.forward_features(x)["conv5x"]
    torch.testing.assert_close(model.video_encoder(x), maps.mean((2, 3, 4)), rtol=1e-5, atol=1e-6)
    model.set_pool("video", "max")
    torch.testing.assert_close(model.video_encoder(x), maps.amax((2, 3, 4)), rtol=0, atol=0)
    model.reset_classifier(5, dropout=0.0, init="orthogonal")
    w = model.classifier[1].weight
    torch.testing.assert_close(w @ w.T, torch.eye(5), rtol=0, atol=1e-5)
    assert not model.classifier[1].bias.any() and model.classifier[0].p == 0.0
    model.save_pretrained(tmp_path / "m")
    again = avidzoo.from_pretrained(tmp_path / "m").eval()
    torch.testing.assert_close(again.video_encoder(x), maps.amax((2, 3, 4)), rtol=0, atol=0)


def test_grayscale_and_cutout():
    cfg = avidzoo.create_transforms("crisscross_r2plus1d").video.config
    clip = torch.randint(0, 256, (4, 40, 48, 3), dtype=torch.uint8)
    plain = {**cfg, "crop_size": 32, "train": {**cfg["train"], "color_jitter": [0, 0, 0, 0]}}
    gray = VideoTransform({**plain, "train": {**plain["train"], "grayscale": 1.0}}, train=True)
    torch.manual_seed(0)
    x = gray(clip)
    mean = torch.tensor(cfg["mean"]).view(3, 1, 1, 1)
    std = torch.tensor(cfg["std"]).view(3, 1, 1, 1)
    rgb = x * std + mean
    torch.testing.assert_close(rgb[0], rgb[1], rtol=0, atol=1e-5)
    torch.testing.assert_close(rgb[1], rgb[2], rtol=0, atol=1e-5)
    # cutout: the same random crop with and without it; a square of at most 20 px, every frame alike, scaled by the
    # first frame's mean
    without = VideoTransform(plain, train=True)
    cut = VideoTransform({**plain, "train": {**plain["train"], "cutout": 20}}, train=True)
    for seed in range(10):
        torch.manual_seed(seed)
        a = without(clip)
        torch.manual_seed(seed)
        b = cut(clip)
        changed = (a != b).any(0).any(0)  # (S, S)
        rows, cols = changed.any(1).nonzero(), changed.any(0).nonzero()
        if len(rows):
            assert rows.max() - rows.min() < 20 and cols.max() - cols.min() < 20
            y, x0 = int(rows.min()), int(cols.min())
            torch.testing.assert_close(b[:, :, y, x0], a[:, :, y, x0] * a[:, 0].mean(), rtol=1e-5, atol=1e-6)


def test_crisscross_protocol_run(tmp_path):
    """A short run under CrissCross's protocol: SGD with momentum, no warm-up, max pooling saved with the model."""
    make_action_videos(tmp_path / "train", per_class=3, seed=0)
    cfg = FinetuneConfig(model="crisscross_r2plus1d", train=str(tmp_path / "train"), out=str(tmp_path / "run"),
                         pretrained=False, video_depth=10, frames=4, epochs=1, batch_size=4, clips_per_video=1,
                         video={"crop_size": 32, "resize": 36}, num_workers=0, log_every=1)
    resolved = cfg.resolved()
    assert resolved.protocol == "crisscross:custom/audioset2m" and resolved.optimizer == "sgd"
    run = finetune(cfg)
    model = avidzoo.from_pretrained(run / "model")
    assert model.config["video"]["pool"] == "max"
    assert isinstance(model.video_encoder.pool, torch.nn.AdaptiveMaxPool3d)
    phases = [m["value"] for m in read_metrics(run) if m["kind"] == "epoch" and m["name"] == "phase_full"]
    assert phases == [1.0]  # no classifier-only warm-up
    state = torch.load(run / "checkpoints" / "epoch-000" / "training_state.pt", weights_only=True)
    assert state["optimizer"]["param_groups"][0]["momentum"] == 0.9


def test_crisscross_probe_tests_each_files_first_clip(tmp_path):
    """protocol="crisscross" (the default for CrissCross's weights): ESC-50 test features from one clip at each file's
    start, as its evaluation trimmed every test file to one clip; training clips stay spread over the file."""
    from media import make_esc50_like

    root = make_esc50_like(tmp_path / "esc", classes=2, per_class=3, folds=3)
    model = avidzoo.create_model("cross_avid_r2plus1d", modalities=("audio",))
    report = avidzoo.linear_probe(model, f"esc50:{root}", modality="audio", protocol="crisscross", clips=2,
                                  epochs=2, cache=tmp_path / "cache", num_workers=0)
    assert report.settings["protocol"] == "crisscross" and report.settings["test_clips"] == 1
    assert len(report.folds) == 3 and sum(f["test_files"] for f in report.folds) == 6
    train_rows = [json.loads(r) for r in (tmp_path / "cache" / "index.jsonl").read_text().splitlines()]
    test_rows = [json.loads(r) for r in (tmp_path / "cache" / "test" / "index.jsonl").read_text().splitlines()]
    assert {len(r["clip_starts"]) for r in train_rows} == {2} and len(test_rows) == 6
    assert all(r["clip_starts"] == [0.0] for r in test_rows)
    plain = avidzoo.linear_probe(model, f"esc50:{root}", modality="audio", clips=2, epochs=2, num_workers=0)
    assert plain.settings["protocol"] == "avid" and plain.settings["test_clips"] == 2
    # the command line's --protocol
    from avidzoo.cli import main

    model.save_pretrained(tmp_path / "m")
    assert main(["linear-probe", "--model", str(tmp_path / "m"), "--train", f"esc50:{root}", "--modality", "audio",
                 "--clips", "2", "--epochs", "2", "--workers", "0", "--protocol", "crisscross",
                 "--out", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["settings"]["test_clips"] == 1
