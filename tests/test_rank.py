"""`avidzoo rank` end to end: towers and fused, one-modality weights, a weight that cannot be had, a kill and a
resume, classes too small to cross-validate. The trained-against-random answer is in test_finetune.py."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import avidzoo
from avidzoo.cli import main as cli
from avidzoo.datasets import DatasetError, VideoFolder
from avidzoo.rank import rank

from media import make_tone_colour_classes

# Classes 2 and 3 play the same tone (their phase is random per file) in different colours: an audio tower cannot
# tell them apart, a video tower can; 0 and 1 differ in both.
CLASSES = [(0, 400.0), (1, 1500.0), (2, 4000.0), (3, 4000.0)]
FAST = ["--folds", "3", "--repeats", "1", "--episodes", "10", "--clips", "2", "--workers", "0", "--quiet"]


@pytest.fixture(scope="module")
def clips_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tone_colour")
    make_tone_colour_classes(root, CLASSES, per_class=6, seed=0)
    return root


def one_tower(small_model: Path, tower: str, folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    m = avidzoo.create_model("cross_avid_r2plus1d", video_depth=10, modalities=(tower,))
    m.update_config(preprocessing=avidzoo.read_config(small_model)["preprocessing"])
    return m.save_pretrained(folder)


def test_towers_fused_one_modality_weights_and_a_weight_that_cannot_be_had(small_model, clips_data, tmp_path,
                                                                          monkeypatch):
    video_only = one_tower(small_model, "video", tmp_path / "video-only", 1)
    audio_only = one_tower(small_model, "audio", tmp_path / "audio-only", 2)
    monkeypatch.setenv("AVIDZOO_OFFLINE", "1")  # a registry weight not on this machine: listed as skipped
    out = tmp_path / "rank"
    weights = [str(small_model), str(video_only), str(audio_only), "cross_avid_r2plus1d.kinetics400"]
    assert cli(["rank", str(clips_data), "--weights", *weights, "--out", str(out), "--shots", "1,5", *FAST,
                "--repeats", "2"]) == 0
    report = json.loads((out / "rank.json").read_text())
    have = {(r["weight"], r["modality"]) for r in report["rows"]}
    assert have == {(str(small_model), m) for m in ("video", "audio", "fused")} | {
        (str(video_only), "video"), (str(audio_only), "audio")}
    assert list(report["context"]["skipped"]) == ["cross_avid_r2plus1d.kinetics400"]
    assert "offline" in report["context"]["skipped"]["cross_avid_r2plus1d.kinetics400"]
    # Per-class recall shows what each tower can hear or see.
    recall = report["per_class_recall"]["recalls"]
    audio, video, fused = (recall[f"{small_model}|{m}"] for m in ("audio", "video", "fused"))
    assert (audio[0] + audio[1]) / 2 - (audio[2] + audio[3]) / 2 >= 0.2 and (audio[2] + audio[3]) / 2 <= 0.7, audio
    assert min(video) >= 0.8 and min(fused) >= 0.8, (video, fused)
    score = {(r["weight"], r["modality"], r["protocol"]): r for r in report["rows"]}
    assert score[(str(small_model), "audio", "logistic")]["score"] < score[(str(small_model), "fused", "logistic")][
        "score"]
    assert sorted(report["few_shot"][f"{small_model}|fused"]) == ["1", "5"]
    # One tidy row per weight x modality x protocol; the report names the best and the command to take next.
    with open(out / "rank.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 * 5 and {r["protocol"] for r in rows} == {"knn1", "knn5", "knn20", "logistic", "logme"}
    assert all(float(r["extract_ms_per_clip"]) > 0 for r in rows)
    md = (out / "report.md").read_text()
    assert "cross_avid_r2plus1d.kinetics400" in md and "avidzoo finetune --model" in md
    ending = md[md.index("## Next step"):]  # the report ends with the best weights and the command to run next
    assert report["context"]["best"]["weights"][0] in ending and report["context"]["finetune_command"] in ending
    for name in ("ranking.svg", "few_shot.svg", "per_class.svg"):
        assert (out / name).read_text().startswith("<svg") or "<svg" in (out / name).read_text()[:200]


def test_a_killed_rank_resumes_and_a_rerun_reuses_everything(small_model, clips_data, tmp_path):
    out = tmp_path / "rank"
    args = ["rank", str(clips_data), "--weights", str(small_model), "--out", str(out), "--shots", "", *FAST]
    cmd = [sys.executable, "-m", "avidzoo", *args]
    env = {**os.environ, "AVIDZOO_DISABLE_PROGRESS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    timing = None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # killed once the features are written, while it scores
        timing = next((out / "features").glob("*/rank_timing.json"), None) if (out / "features").exists() else None
        if timing is not None:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert timing is not None and not (out / "rank.json").exists(), "the run ended before it could be killed"
    shards = {p: p.stat().st_mtime_ns for p in timing.parent.rglob("*.safetensors")}
    assert shards
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert {p: p.stat().st_mtime_ns for p in timing.parent.rglob("*.safetensors")} == shards  # not extracted again
    report = json.loads((out / "rank.json").read_text())
    results = {p: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}
    assert len(results) == 3  # video, audio, fused
    assert cli(args) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")} == results  # every score reused
    assert json.loads((out / "rank.json").read_text())["rows"] == report["rows"]


def test_classes_too_small_to_cross_validate_are_named(small_model, clips_data, tmp_path):
    data = VideoFolder(clips_data)
    keep = [i for i, lab in enumerate(data.labels) if lab != 3 or data.paths[i].stem in ("000", "001")]
    with pytest.warns(UserWarning, match=r"classes 'class3' \(2\) have fewer items than the 3 folds"):
        report = rank(data.subset(keep), [str(small_model)], modality="audio", out=tmp_path / "r", folds=3,
                      repeats=1, shots=(), clips=1, num_workers=0, progress=False)
    # an audio winner: avidzoo finetunes video towers, so the next step is its features (no folds to probe over)
    assert report.best["modality"] == "audio"
    assert f"avidzoo extract {data.source} --model {small_model} --modalities audio" in report.files[
        "markdown"].read_text()
    lonely = [i for i, lab in enumerate(data.labels) if lab != 3 or data.paths[i].stem == "000"]
    with pytest.raises(DatasetError, match="class 'class3' has 1 item"):
        rank(data.subset(lonely), [str(small_model)], out=tmp_path / "r2", progress=False)
    csv_file = tmp_path / "one.csv"
    csv_file.write_text("path,label\n" + "".join(f"{p},{data.classes[lab]}\n" for p, lab in
                                                 zip([data.paths[i] for i in lonely],
                                                     [data.labels[i] for i in lonely])))
    assert cli(["rank", str(csv_file), "--weights", str(small_model), "--out", str(tmp_path / "r3"), *FAST]) == 2


def test_segments_of_a_csv_are_items_beside_whole_files(small_model, clips_data, tmp_path):
    """A CSV whose rows cut some files into two segments each (items of their own, a file decoded once) and name
    others whole: every row is an item, and what tells the classes apart still does."""
    data = VideoFolder(clips_data)
    lines = ["path,label,start,end,group"]
    for i, (path, lab) in enumerate(zip(data.paths, data.labels)):
        name = data.classes[lab]
        if i % 2:
            lines.append(f"{path},{name},,,{path.stem}-{name}")
        else:  # the two halves of one file: one group, so that they never sit on both sides of a split
            lines += [f"{path},{name},0.0,0.5,{path.stem}-{name}", f"{path},{name},0.5,1.0,{path.stem}-{name}"]
    (tmp_path / "cut.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "rank"
    report = rank(tmp_path / "cut.csv", [str(small_model)], modality="video", out=out, folds=3, repeats=1, shots=(),
                  clips=1, num_workers=0, progress=False)
    saved = json.loads((out / "rank.json").read_text())
    assert saved["context"]["items"] == len(lines) - 1 == 36 and saved["context"]["groups"]
    assert min(saved["per_class_recall"]["recalls"][f"{small_model}|video"]) >= 0.8
    (weight,) = (out / "features").iterdir()
    stores = sorted(p.name for p in weight.iterdir() if p.is_dir())
    assert stores[0] == "files" and stores[1].startswith("segments-") and len(stores) == 2
    assert report.best["modality"] == "video"
    bad = tmp_path / "half.csv"
    bad.write_text(f"path,label,start,end\n{data.paths[0]},a,0.5,\n{data.paths[1]},b,,\n")
    with pytest.raises(DatasetError, match="has a start or an end but not both"):
        rank(bad, [str(small_model)], out=tmp_path / "r2", progress=False)


def test_split_files_root_fold_and_seed_through_the_command_line(small_model, clips_data, tmp_path):
    splits = tmp_path / "splits"
    splits.mkdir()
    data = VideoFolder(clips_data)
    (splits / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(data.classes)))
    (splits / "trainlist01.txt").write_text("".join(f"{p.parent.name}/{p.name} {lab + 1}\n"
                                                    for p, lab in zip(data.paths, data.labels)))
    runs = []
    for seed in ("0", "1"):
        out = tmp_path / f"rank{seed}"
        assert cli(["rank", f"ucf101:{splits}", "--root", str(clips_data), "--fold", "1", "--seed", seed,
                    "--weights", str(small_model), "--modality", "video", "--out", str(out), "--shots", "",
                    *FAST]) == 0
        runs.append(json.loads((out / "rank.json").read_text()))
    assert runs[0]["context"]["items"] == len(data) and runs[0]["context"]["seed"] == 0
    # the suggested command finds the data as this one did
    assert runs[1]["context"]["seed"] == 1
    assert f"--train ucf101:{splits} --root {clips_data} --fold 1 " in runs[1]["context"]["finetune_command"]
