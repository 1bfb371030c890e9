"""Finetuning, evaluation and linear probes on a generated action dataset and a generated ESC-50-shaped one."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import avidzoo
from avidzoo.cli import main as cli
from avidzoo.datasets import DatasetError, LabelledMedia, VideoFolder
from avidzoo.evaluate import confusion_matrix, report_from_logits, video_probabilities
from avidzoo.probe import fit_linear, predict_linear
from avidzoo.train import FinetuneConfig, finetune, read_metrics

from media import make_action_videos, make_esc50_like

# Depth-10 encoder on 4x32x32 clips: an epoch over 48 videos takes about 2 s on two CPU cores.
SMALL = dict(model="cross_avid_r2plus1d", pretrained=False, video_depth=10, frames=4, warmup_epochs=1,
             batch_size=16, clips_per_video=2, lr=1e-3, milestones=[5], gamma=0.3, test_clips=4,
             video={"crop_size": 32, "resize": 36}, num_workers=1, log_every=1)


@pytest.fixture(scope="module")
def actions(tmp_path_factory):
    root = tmp_path_factory.mktemp("actions")
    make_action_videos(root / "train", per_class=12, seed=0)
    make_action_videos(root / "val", per_class=4, seed=1)
    return root


@pytest.fixture(scope="module")
def run(actions, tmp_path_factory, learning_seed):
    """One finetuning run from random initialisation that the tests below inspect."""
    out = tmp_path_factory.mktemp("ft") / "run"
    return finetune(FinetuneConfig(train=str(actions / "train"), val=str(actions / "val"), out=str(out), epochs=7,
                                   seed=learning_seed, **SMALL))


def epoch_values(run, name):
    return [r["value"] for r in read_metrics(run) if r["kind"] == "epoch" and r["name"] == name]


@pytest.mark.learning
def test_finetuning_from_scratch_learns_the_actions(run, margin):
    val = epoch_values(run, "val_clip_top1")
    assert len(val) == 8
    margin("val_clip_top1_last3_max", max(val[-3:]), 0.75, val)  # chance is 0.25
    assert epoch_values(run, "phase_full") == [0.0] + [1.0] * 7  # one classifier-only warm-up epoch
    lrs = {r["epoch"]: r["value"] for r in read_metrics(run) if r["name"] == "lr"}
    assert lrs[0] == lrs[5] == 1e-3 and lrs[6] == pytest.approx(3e-4)  # milestone 5 counted after the warm-up
    report = json.loads((run / "eval" / "report.json").read_text())
    margin("video_top1", report["video_top1"], 0.75)
    assert report["clips_per_video"] == 4 and report["videos"] == 16
    assert sorted(report["per_class"]) == ["bars_down", "bars_right", "checker_flicker", "square_diagonal"]
    matrix = torch.tensor(report["confusion"])
    assert matrix.shape == (4, 4) and int(matrix.sum()) == 16 and matrix.sum(1).tolist() == [4, 4, 4, 4]
    assert (run / "eval" / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = epoch_values(run, "val_clip_top1").index(max(val))
    assert (run / "checkpoints" / f"epoch-{best:03d}").is_dir()


def test_warm_up_trains_only_the_classifier(actions, tmp_path):
    out = finetune(FinetuneConfig(train=str(actions / "train"), out=str(tmp_path / "w"), epochs=0,
                                  **{**SMALL, "warmup_epochs": 1}))
    after = avidzoo.from_pretrained(out / "model")
    torch.manual_seed(0)  # the same random initialisation as the run
    before = avidzoo.create_model("cross_avid_r2plus1d", video_depth=10, modalities=("video",))
    for name, p in before.video_encoder.named_parameters():
        torch.testing.assert_close(after.video_encoder.state_dict()[name], p, rtol=0, atol=0)
    assert not (out / "eval").exists()  # no validation data given


def test_export_and_reload_give_the_same_predictions(run, actions, tmp_path):
    model = avidzoo.from_pretrained(run / "best").eval()
    assert model.label_names == ["bars_down", "bars_right", "checker_flicker", "square_diagonal"]
    t = avidzoo.create_transforms(model)
    assert t.video.crop_size == 32 and t.video.config["num_frames"] == 4
    x = torch.randn(3, 3, 4, 32, 32)
    model.save_pretrained(tmp_path / "copy")
    again = avidzoo.from_pretrained(tmp_path / "copy").eval()
    torch.testing.assert_close(again(video=x), model(video=x), rtol=0, atol=0)
    # the stand-alone evaluation of the exported model reproduces the run's own report, video by video
    report = avidzoo.evaluate(tmp_path / "copy", actions / "val", clips=4, num_workers=0)
    with open(run / "eval" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["prediction"] for r in rows] == [p["prediction"] for p in report.predictions]
    assert report.video_top1 == json.loads((run / "eval" / "report.json").read_text())["video_top1"]


def test_resume_continues_where_it_stopped(actions, tmp_path):
    kw = dict(train=str(actions / "train"), **{**SMALL, "num_workers": 0, "milestones": [1]})
    full = finetune(FinetuneConfig(out=str(tmp_path / "full"), epochs=2, **kw))
    part = finetune(FinetuneConfig(out=str(tmp_path / "part"), epochs=1, **kw))  # stops after epoch 1 of 0..2
    resumed = finetune(FinetuneConfig(out=str(tmp_path / "part"), epochs=2, resume=True, **kw))
    assert resumed == part

    def steps(r):
        return {m["step"]: m["value"] for m in read_metrics(r) if m["kind"] == "train" and m["name"] == "loss"}

    a, b = steps(full), steps(resumed)
    assert a.keys() == b.keys() and len(a) == 18
    for s in a:
        assert b[s] == pytest.approx(a[s], rel=1e-4, abs=1e-5), s
    wa = avidzoo.from_pretrained(full / "model").state_dict()
    wb = avidzoo.from_pretrained(resumed / "model").state_dict()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5)


def test_video_at_1_averages_softmax_probabilities_not_logits():
    # clip 0 of each video is the Clip@1 clip; clips 1-3 the dense ones. Video 0 (class x): two clips mildly for x,
    # one very confident for y: averaged probabilities say x, averaged logits would say y.
    logits = torch.tensor([[[0.0, 1.0], [3.0, 0.0], [3.0, 0.0], [0.0, 9.0]],
                           [[0.0, 1.0], [0.0, 2.0], [0.0, 2.0], [3.0, 0.0]]])
    probs = video_probabilities(logits[:, 1:])
    e = torch.e
    by_hand = [[(2 * e ** 3 / (e ** 3 + 1) + 1 / (1 + e ** 9)) / 3, (2 / (e ** 3 + 1) + e ** 9 / (1 + e ** 9)) / 3],
               [(2 / (1 + e ** 2) + e ** 3 / (e ** 3 + 1)) / 3, (2 * e ** 2 / (1 + e ** 2) + 1 / (e ** 3 + 1)) / 3]]
    torch.testing.assert_close(probs, torch.tensor(by_hand))
    assert probs.argmax(1).tolist() == [0, 1] and logits[:, 1:].mean(1).argmax(1).tolist() == [1, 1]
    media = LabelledMedia(["a.mp4", "b.mp4"], [0, 1], ["x", "y"])
    report = report_from_logits(logits, torch.tensor([0, 1]), media)
    assert report.clip_top1 == 0.5 and report.video_top1 == 1.0  # clip 0 says y for both videos
    assert report.per_class == {"x": 1.0, "y": 1.0} and report.confusion.tolist() == [[1, 0], [0, 1]]
    assert [r["clip_prediction"] for r in report.predictions] == ["y", "y"]
    assert confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([1, 1, 0]), 2).tolist() == [[0, 1], [1, 1]]


def test_evaluate_cli_and_label_checks(run, actions, tmp_path, capsys):
    assert cli(["evaluate", str(run / "best"), str(actions / "val"), "--clips", "2", "--workers", "0",
                "--out", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "Video@1" in out and "on 16 videos" in out
    assert json.loads((tmp_path / "ev" / "report.json").read_text())["clips_per_video"] == 2
    other = tmp_path / "other"
    (other / "swimming").mkdir(parents=True)
    shutil.copy(actions / "val" / "bars_down" / "000.mp4", other / "swimming" / "a.mp4")
    with pytest.raises(DatasetError, match=r"classes \['swimming'\] are not among the model's 4 labels"):
        avidzoo.evaluate(run / "best", other)
    assert cli(["evaluate", str(run / "best"), str(other)]) == 2
    assert "swimming" in capsys.readouterr().err
    untrained = avidzoo.create_model("cross_avid_r2plus1d", video_depth=10, modalities=("video",))
    with pytest.raises(ValueError, match="no classifier head"):
        avidzoo.evaluate(untrained, actions / "val")


def test_a_broken_training_video_is_skipped_and_recorded(actions, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(actions / "val", data)
    (data / "bars_down" / "broken.mp4").write_bytes(b"\x00" * 500)
    out = finetune(FinetuneConfig(train=str(data), out=str(tmp_path / "r"), epochs=0, **SMALL))
    config = json.loads((out / "training_config.json").read_text())
    assert list(config["skipped"]) == [str(data / "bars_down" / "broken.mp4")] and config["train_videos"] == 16
    shutil.rmtree(data / "bars_right")
    (data / "bars_right").mkdir()
    with pytest.raises(DatasetError, match="class folder 'bars_right' has no media files"):
        finetune(FinetuneConfig(train=str(data), out=str(tmp_path / "r2"), epochs=0, **SMALL))


@pytest.mark.learning
def test_linear_probe_on_video_features_beats_chance(actions, tmp_path, learning_seed, margin):
    torch.manual_seed(learning_seed)
    model = avidzoo.create_model("cross_avid_r2plus1d", video_depth=10, modalities=("video",))
    model._config["preprocessing"]["video"].update(num_frames=4, crop_size=32, resize=36, clip_duration=0.25)
    report = avidzoo.linear_probe(model, actions / "train", actions / "val", layer="conv3x", clips=2,
                                  cache=tmp_path / "cache", num_workers=0)
    assert report.folds[0]["test_files"] == 16
    margin("top1", report.top1, 0.75)  # chance 0.25
    first = sorted(p.stat().st_mtime_ns for p in (tmp_path / "cache" / "shards").iterdir())
    again = avidzoo.linear_probe(model, actions / "train", actions / "val", layer="conv3x", clips=2,
                                 cache=tmp_path / "cache", num_workers=0)
    assert again.top1 == report.top1  # the cached features are reused, not recomputed
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "cache" / "shards").iterdir()) == first


@pytest.mark.learning
def test_audio_linear_probe_cross_validates_over_esc50_folds(tmp_path, capsys, learning_seed, margin):
    root = make_esc50_like(tmp_path / "esc", classes=3, per_class=6, folds=3)
    torch.manual_seed(learning_seed)
    avidzoo.create_model("cross_avid_r2plus1d", modalities=("audio",)).save_pretrained(tmp_path / "audio_model")
    assert cli(["linear-probe", "--model", str(tmp_path / "audio_model"), "--train", f"esc50:{root}",
                "--modality", "audio", "--clips", "2", "--workers", "0", "--out", str(tmp_path / "probe.json")]) == 0
    out = capsys.readouterr().out
    assert out.count("fold ") == 3 and "audio conv5x: top-1" in out
    report = json.loads((tmp_path / "probe.json").read_text())
    assert [f["fold"] for f in report["folds"]] == [1, 2, 3]
    assert all(f["train_files"] == 12 and f["test_files"] == 6 for f in report["folds"])
    margin("top1", report["top1"], 0.66)  # chance 1/3
    mean = sum(f["top1"] for f in report["folds"]) / 3
    assert report["top1"] == pytest.approx(mean)


@pytest.mark.learning
def test_linear_classifier_standardises_and_averages_clip_probabilities(learning_seed, margin):
    g = torch.Generator().manual_seed(learning_seed)
    x = torch.randn(60, 5, generator=g) * torch.tensor([1.0, 100.0, 1.0, 1.0, 1.0]) + 50
    y = (x[:, 0] > 50).long()
    clf = fit_linear(x, y, 2, epochs=60, lr=1e-2, batch_size=16)
    torch.testing.assert_close(clf.mean, x.mean(0))
    torch.testing.assert_close(clf.scale, x.std(0, unbiased=False) + 0.01)
    margin("train_top1", float((clf(x).argmax(1) == y).float().mean()), 0.9)
    clips = x[:6].view(2, 3, 5)
    expected = clf(x[:6]).softmax(-1).view(2, 3, 2).mean(1)
    torch.testing.assert_close(predict_linear(clf, clips), expected)


def test_two_process_gloo_finetuning(actions, tmp_path):
    """Under torchrun: DDP wrapped again when the warm-up ends (the encoder's parameters join), one run folder."""
    cfg = {**SMALL, "train": str(actions / "val"), "val": str(actions / "val"), "epochs": 1, "num_workers": 0,
           "batch_size": 8, "test_clips": 2}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    port = 29500 + (os.getpid() + 7) % 1000
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
                    "-m", "avidzoo", "finetune", "--config", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "d")],
                   check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, timeout=600)
    run = tmp_path / "d"
    assert json.loads((run / "training_config.json").read_text())["world_size"] == 2
    assert epoch_values(run, "phase_full") == [0.0, 1.0]
    steps = [r["step"] for r in read_metrics(run) if r["kind"] == "train" and r["name"] == "loss"]
    assert steps == list(range(1, 9))  # 2 epochs of 16 videos x 2 clips in global batches of 8
    assert json.loads((run / "eval" / "report.json").read_text())["videos"] == 16


def test_fp16_autocast_with_gradient_scaler_on_cpu(actions, tmp_path):
    """The CUDA fp16 path (autocast + GradScaler) forced on the CPU, one step: the loss matches fp32 closely but not
    exactly, and the step updates the classifier."""
    four = VideoFolder(actions / "val").subset([0, 4, 8, 12])
    kw = {**SMALL, "train": four, "epochs": 0, "batch_size": 4, "clips_per_video": 1, "num_workers": 0}
    runs = {"off": finetune(FinetuneConfig(out=str(tmp_path / "off"), amp="off", **kw))}
    with pytest.warns(UserWarning, match="amp='fp16' on the CPU runs the CUDA autocast path"):
        runs["fp16"] = finetune(FinetuneConfig(out=str(tmp_path / "fp16"), amp="fp16", **kw))
    loss = {amp: [r["value"] for r in read_metrics(run) if r["name"] == "loss" and r["kind"] == "train"]
            for amp, run in runs.items()}
    assert len(loss["fp16"]) == 1 and loss["fp16"][0] == pytest.approx(loss["off"][0], rel=0.02)
    assert loss["fp16"] != loss["off"]
    torch.manual_seed(0)  # the run's initialisation: the seed, the encoder, then the new head
    start = avidzoo.create_model("cross_avid_r2plus1d", video_depth=10, modalities=("video",))
    start.reset_classifier(4, four.classes)
    w0 = start.classifier[1].weight
    step = {amp: avidzoo.from_pretrained(run / "model").classifier[1].weight - w0 for amp, run in runs.items()}
    assert step["fp16"].abs().max() > 0  # the scaled, unscaled gradient reached Adam (no inf/NaN skip)
    assert float((step["fp16"].sign() == step["off"].sign()).float().mean()) > 0.9


@pytest.mark.learning
def test_rank_puts_the_finetuned_weights_above_random_ones(run, actions, tmp_path, margin):
    """`avidzoo rank`'s known answer: on fresh videos of the same actions, the finetuned encoder against the same
    graph at random initialisation (the finetuning's own start, seeded alike)."""
    make_action_videos(tmp_path / "fresh", per_class=12, seed=2)
    torch.manual_seed(0)
    random = avidzoo.create_model("cross_avid_r2plus1d", video_depth=10, modalities=("video",))
    pre = random.config["preprocessing"]
    pre["video"].update(num_frames=4, crop_size=32, resize=36, clip_duration=0.25)
    random.update_config(preprocessing=pre)
    random_dir = random.save_pretrained(tmp_path / "random")
    out = tmp_path / "rank"
    assert cli(["rank", str(tmp_path / "fresh"), "--weights", str(run), str(random_dir), "--modality", "video",
                "--out", str(out), "--folds", "4", "--repeats", "1", "--shots", "1,5", "--episodes", "30",
                "--clips", "2", "--workers", "0", "--quiet"]) == 0
    report = json.loads((out / "rank.json").read_text())
    rows = {(r["weight"], r["protocol"]): r for r in report["rows"]}
    assert report["context"]["best"]["weights"][0] == str(run)  # best (the random one may be tied on the probe)
    margin("rank_logistic_trained_minus_random", rows[(str(run), "logistic")]["score"]
           - rows[(str(random_dir), "logistic")]["score"], 0.0)
    # The intervals separate what differs: kNN-20 (trained features cluster by class) and the 1-shot curve.
    margin("rank_knn20_gap_low", rows[(str(random_dir), "knn20")]["diff_low"], 0.1)
    assert not rows[(str(random_dir), "knn20")]["tied"]
    trained, untrained = (report["few_shot"][f"{w}|video"]["1"] for w in (str(run), str(random_dir)))
    margin("rank_one_shot_interval_gap", trained[1] - untrained[2], 0.05)  # trained's low above random's high
    assert rows[(str(run), "logme")]["score"] > rows[(str(random_dir), "logme")]["score"]
    assert f"avidzoo finetune --model {run}" in (out / "report.md").read_text()
