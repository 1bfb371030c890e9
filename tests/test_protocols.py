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
from avidzoo.train.finetune import lr_factors, protocol_settings
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
    # XDC's finetuning (VMZ's scripts, settings unpublished) is not reproduced: AVID's, said once
    with caplog.at_level(logging.WARNING, logger="avidzoo"):
        assert protocol_settings(None, "vmz", "x", 8)[1] == "avid:custom"
    assert "does not reproduce" in caplog.text
    # a clip length unset is the family's own: GDT's numbers are on 32 frames, AVID's default is 8
    assert protocol_settings(None, "gdt", "x", None)[0]["frames"] == 32
    assert protocol_settings(None, "avid", "x", None)[0]["frames"] == 8
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


@pytest.mark.parametrize("dataset", ["ucf101:x", "hmdb51:x", "my/folder"])
def test_gdt_settings_are_its_finetuning_script(dataset):
    """scripts/run_finetune.sh and eval_video.py's defaults: the same for both datasets."""
    settings, name = protocol_settings(None, "gdt", dataset, None)
    assert name == f"gdt:{dataset.split(':')[0] if ':' in dataset else 'custom'}"
    expected = {"optimizer": "sgd", "momentum": 0.9, "lr": 2.5e-4, "head_lr": 2.5e-3, "weight_decay": 0.005,
                "epochs": 12, "warmup_epochs": 0, "milestones": [6, 10], "gamma": 0.05, "lr_warmup_epochs": 2,
                "lr_warmup_multiplier": 8, "batch_size": 32, "clips_per_video": 10, "frames": 32, "dropout": 0.0,
                "classifier_init": "orthogonal", "crop_size": 128, "resize": 128, "test_crops": 3, "test_clips": 10,
                "crop_scale": [0.14, 1.0], "color_jitter": [0.4, 0.4, 0.4, 0.0], "jitter_p": 0.8}
    for key, value in expected.items():
        assert settings[key] == value, key


def test_gdt_learning_rate_schedule():
    """GradualWarmupScheduler(multiplier 8, 2 epochs) around MultiStepLR(milestones 6,10 less the warm-up, gamma 0.05),
    stepped after each epoch, under PyTorch 1.3's closed-form MultiStepLR: the wrapped scheduler's epochs count from
    0 one epoch after the warm-up, so the drops come at epochs 7 and 11."""
    factors = lr_factors(12, [6, 10], 0.05, 2, 8)
    assert factors == pytest.approx([1, 4.5, 8, 8, 8, 8, 8, 0.4, 0.4, 0.4, 0.4, 0.02])


def test_gdt_training_views():
    """GDT's crop and flip run on normalised frames without antialiasing, and its saturation jitter blends with a
    grayscale whose weights are for BGR frames (red 0.114, blue 0.299), as GDT ran pyslowfast's jitter on RGB."""
    cfg = avidzoo.create_transforms("gdt_r2plus1d").video.config
    train = {**cfg["train"], "style": "gdt", "crop_scale": [1.0, 1.0], "crop_ratio": [1.0, 1.0], "hflip": 0.0}
    clip = torch.randint(0, 256, (4, 40, 40, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    plain = VideoTransform({**cfg, "crop_size": 24, "train": {**train, "color_jitter": [0, 0, 0, 0]}}, train=True)
    mean = torch.tensor(cfg["mean"]).view(3, 1, 1, 1) * 255
    std = torch.tensor(cfg["std"]).view(3, 1, 1, 1) * 255
    normalised = ((clip.permute(3, 0, 1, 2).float() - mean) / std).permute(1, 0, 2, 3)  # (T, 3, H, W)
    want = torch.nn.functional.interpolate(normalised, size=(24, 24), mode="bilinear", align_corners=False,
                                           antialias=False).permute(1, 0, 2, 3)
    torch.testing.assert_close(plain(clip), want, rtol=1e-5, atol=1e-5)
    sat = VideoTransform({**cfg, "crop_size": 24, "train": {**train, "color_jitter": [0, 0, 0.4, 0],
                                                            "jitter_p": 1.0}}, train=True)
    bgr = 0.114 * want[0] + 0.587 * want[1] + 0.299 * want[2]
    rgb = 0.299 * want[0] + 0.587 * want[1] + 0.114 * want[2]
    for seed in range(5):
        torch.manual_seed(seed)
        out = sat(clip)
        # out = a * want + (1 - a) * gray: (out - gray) / (want - gray) is 1 + U(-0.4, 0.4), the same everywhere
        # (read where the denominator is far from 0, so that rounding does not dominate)
        far = (want - bgr).abs() > 0.2
        ratio = (out - bgr)[far] / (want - bgr)[far]
        alpha = ratio.median()
        assert 0.6 <= alpha <= 1.4 and (ratio - alpha).abs().max() < 1e-4
        far = (want - rgb).abs() > 0.2
        assert ((out - rgb)[far] / (want - rgb)[far] - alpha).abs().max() > 1e-2  # the RGB weights would not fit
    # jitter_p 0.8: some clips are left as they are
    some = VideoTransform({**cfg, "crop_size": 24, "train": {**train, "jitter_p": 0.8}}, train=True)
    torch.manual_seed(0)
    untouched = sum(torch.allclose(some(clip), want, atol=1e-5) for _ in range(40))
    assert 1 <= untouched <= 20


def test_three_spatial_test_crops():
    """GDT's test views: short side to 128 (here 36) without antialiasing, crops at the start, GDT's ceil centre and the
    end of the long side; LabelledClips gives 1 + 3 x test_clips views."""
    cfg = {**avidzoo.create_transforms("gdt_r2plus1d").video.config, "resize": 36, "crop_size": 36, "test_crops": 3}
    t = VideoTransform(cfg)
    clips = torch.randint(0, 256, (2, 4, 45, 81, 3), dtype=torch.uint8)  # 81x45 -> 64x36: x at 0, 14, 28
    views = t.views(clips)
    assert views.shape == (2, 3, 3, 4, 36, 36)
    frames = clips.permute(0, 4, 1, 2, 3).flatten(1, 2).float()  # (2, 3 * 4, 45, 81)
    full = torch.nn.functional.interpolate(frames, size=(36, 64), mode="bilinear", align_corners=False,
                                           antialias=False).clamp(0, 255).view(2, 3, 4, 36, 64)
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1, 1) * 255
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1, 1) * 255
    for v, x0 in enumerate((0, 14, 28)):
        want = (full[..., x0:x0 + 36] - mean) / std
        torch.testing.assert_close(views[:, v], want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(views[:, 1], t(clips), rtol=1e-5, atol=1e-5)  # the centre one is the usual view


def test_gdt_protocol_run(tmp_path):
    """A short run under GDT's protocol: two parameter groups (classifier at 10x), GDT's warm-up as the epochs' learning
    rates, an orthogonal head without dropout, and Video@1 over 3 spatial crops of each test clip."""
    make_action_videos(tmp_path / "train", per_class=3, seed=0)
    make_action_videos(tmp_path / "val", per_class=1, seed=1)
    cfg = FinetuneConfig(model="gdt_r2plus1d", train=str(tmp_path / "train"), val=str(tmp_path / "val"),
                         out=str(tmp_path / "run"), pretrained=False, video_depth=10, frames=4, epochs=3, batch_size=4,
                         clips_per_video=1, test_clips=2, video={"crop_size": 32, "resize": 36}, num_workers=0,
                         log_every=1)
    resolved = cfg.resolved()
    assert resolved.protocol == "gdt:custom" and resolved.head_lr == 2.5e-3 and resolved.lr_warmup_epochs == 2
    assert resolved.video["test_crops"] == 3 and resolved.video["train"]["style"] == "gdt"
    run = finetune(cfg)
    lrs = {}
    for m in read_metrics(run):
        if m["kind"] == "train" and m["name"] == "lr":
            lrs.setdefault(m["epoch"], set()).add(round(m["value"], 10))
    assert lrs == {0: {2.5e-3}, 1: {round(2.5e-3 * 4.5, 10)}, 2: {2.5e-3 * 8}}
    state = torch.load(run / "checkpoints" / "epoch-000" / "training_state.pt", weights_only=True)
    groups = state["optimizer"]["param_groups"]
    assert [g["initial_lr"] for g in groups] == [2.5e-3, 2.5e-4] and groups[0]["weight_decay"] == 0.005
    model = avidzoo.from_pretrained(run / "best")
    assert model.classifier[0].p == 0.0
    report = json.loads((run / "eval" / "report.json").read_text())
    assert report["clips_per_video"] == 6  # 2 test clips x 3 spatial crops, softmax averaged


def test_gdt_protocol_from_the_command_line(capsys):
    """`avidzoo finetune --print-config`: GDT's weights resolve to GDT's protocol, its 32-frame default where --frames
    is not given, and --protocol avid still chooses AVID's for them."""
    from avidzoo.cli import main as cli

    assert cli(["finetune", "--model", "gdt_r2plus1d.kinetics400", "--train", "ucf101:splits", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert (cfg["protocol"], cfg["frames"], cfg["head_lr"], cfg["video"]["test_crops"]) == ("gdt:ucf101", 32, 2.5e-3, 3)
    assert cli(["finetune", "--model", "gdt_r2plus1d.kinetics400", "--train", "ucf101:splits", "--protocol", "avid",
                "--frames", "8", "--keep-checkpoints", "2", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert (cfg["protocol"], cfg["frames"], cfg["head_lr"], cfg["optimizer"]) == ("avid:ucf101", 8, None, "adam")
    assert cfg["keep_checkpoints"] == 2
