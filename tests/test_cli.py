"""The command line itself, end to end on small media: every extract option combination README and --help document
(engines elsewhere: tests/test_store.py runs --engine ray and --shard), each compared with the Python API's
features; exit codes a script can trust; score-av. Commands tested in other files: list, info (test_siblings),
download, convert, verify, env (test_hub_cli), export (test_store, test_no_file_lost), pretrain (test_train),
finetune, evaluate, linear-probe (test_finetune), torchrun extract (test_extract)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import avidzoo
from avidzoo.cli import main as cli

from media import make_video


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("cli_media")
    files = [make_video(d / "a.mp4", fps=30, seconds=2.0, size=(64, 48), gop=30, tone_freq=600),
             make_video(d / "b.mkv", fps=25, seconds=2.5, size=(72, 40), video_seconds=2.5, audio_seconds=1.5),
             make_video(d / "silent.mp4", fps=25, seconds=1.5, size=(64, 48), audio=False),
             make_video(d / "voice.m4a", seconds=1.5, video=False)]
    (d / "zz_broken.mp4").write_bytes(b"no video here" * 50)
    return [*files, d / "zz_broken.mp4"]


def run(model: Path, inputs, out: Path, *flags: str) -> int:
    return cli(["extract", *map(str, inputs), "--model", str(model), "--out", str(out), "-q", *flags])


def python_api(model: Path, inputs, **kwargs) -> avidzoo.ExtractionResult:
    return avidzoo.extract_features(model, list(inputs), num_workers=0, progress=False, **kwargs)


def assert_same(folder: Path, expected: avidzoo.ExtractionResult, tol: float = 1e-5) -> None:
    got = avidzoo.load_features(folder)
    assert got.paths == expected.paths and got.failed.keys() == expected.failed.keys()
    for m, feats in expected.features.items():
        torch.testing.assert_close(got[m], feats, rtol=tol, atol=tol, equal_nan=True, msg=m)
        assert got.present[m].tolist() == expected.present[m].tolist()
    assert got.clip_starts == expected.clip_starts


# Each documented combination: (command-line flags, the same settings for the Python API, tolerance).
COMBINATIONS = {
    "defaults": ([], {}, 1e-5),
    "video conv5x max, one worker and thread each": (
        ["--modalities", "video", "--layer", "conv5x", "--clip-agg", "max", "--clips-per-video", "3",
         "--batch-size", "2", "--workers", "1", "--decoder-threads", "1", "--torch-threads", "1"],
        dict(modalities="video", layer="conv5x", clip_agg="max", clips_per_video=3), 1e-5),
    "audio proj per clip, normalised, on the device": (
        ["--modalities", "audio", "--layer", "proj", "--clip-agg", "none", "--normalize", "--preprocess", "device",
         "--device", "cpu", "--dtype", "fp32"],
        dict(modalities="audio", layer="proj", clip_agg="none", normalize=True), 1e-5),
    "both towers, keyframe sampling, bf16": (
        ["--modalities", "video,audio", "--sampling", "keyframe", "--dtype", "bf16", "--clips-per-video", "2"],
        dict(sampling="keyframe", dtype="bf16", clips_per_video=2), 1e-5),
}


@pytest.mark.parametrize("name", list(COMBINATIONS))
def test_extract_option_combinations(small_model, media, tmp_path, capsys, name):
    flags, kwargs, tol = COMBINATIONS[name]
    out = tmp_path / "feats"
    expected = python_api(small_model, media, **kwargs)
    # the broken file (and, with one tower, the file without that stream) fails: the run finishes, records it and
    # exits 3
    failed = len(expected.failed)
    assert failed == (1 if "--modalities" not in flags or "video,audio" in flags else 2)
    assert run(small_model, media, out, *flags) == 3
    printed = capsys.readouterr().out
    assert printed.startswith("plan: ") and f"done: {len(media) - failed} of {len(media)} inputs, failed: {failed}" \
        in printed
    assert f"all failed files: {out / 'failed.txt'}" in printed
    assert_same(out, expected, tol)
    assert (out / "failed.txt").read_text() == "".join(f"{p}\n" for p in expected.failed)
    # rerun: resumes, redoes nothing (the failure stays recorded) and may be told failures are fine
    shards = sorted((out / "shards").iterdir())
    assert run(small_model, media, out, *flags, "--allow-failures") == 0
    assert sorted((out / "shards").iterdir()) == shards


def test_resume_options_and_the_failed_list(small_model, media, tmp_path, capsys):
    out = tmp_path / "feats"
    good = media[:2]
    assert run(small_model, good, out) == 0
    assert (out / "failed.txt").read_text() == ""
    assert run(small_model, media, out) == 3  # only the new files are read; one of them fails
    rows = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert [Path(r["path"]).name for r in rows] == [p.name for p in media]
    # failed.txt is an input list: --retry-failed tries the failed file again (still broken: 3 again)
    assert run(small_model, [out / "failed.txt"], out, "--retry-failed") == 3
    assert "done: 0 of 1 inputs, failed: 1" in capsys.readouterr().out
    # --no-resume starts the folder over: only this run's files remain
    assert run(small_model, good[:1], out, "--no-resume") == 0
    assert [Path(p).name for p in avidzoo.load_features(out).paths] == [good[0].name]
    # other settings on the same folder are refused before any work
    assert run(small_model, good, out, "--clips-per-video", "3") == 2
    assert "made with other settings (clips_per_video differ)" in capsys.readouterr().err
    # --status reports every writer's work and exits 0
    assert cli(["extract", "--status", str(out), *map(str, media)]) == 0
    assert f"done: 1, failed: 0, remaining: {len(media) - 1}" in capsys.readouterr().out


def test_exit_codes_a_script_can_trust(small_model, media, tmp_path, capsys):
    out = tmp_path / "feats"
    # said at once, before any work: nothing is written
    for inputs, message in (([tmp_path / "nope.mp4"], "nope.mp4: no such file or folder"),
                            ([media[0], "gs://bucket/videos/"], "gs:// URLs need gcsfs, which is not installed"),
                            ([tmp_path / "empty_dir"], "no media files")):
        (tmp_path / "empty_dir").mkdir(exist_ok=True)
        assert run(small_model, inputs, out) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()
    listing = tmp_path / "list.txt"
    listing.write_text(f"{media[0]}\ngs://bucket/v.mp4\n")
    assert run(small_model, [listing], out) == 2
    assert "gs://bucket/v.mp4: gs:// URLs need gcsfs" in capsys.readouterr().err
    # a missing file named inside a list is one recorded failure, not a refusal
    listing.write_text(f"{media[0]}\n{tmp_path / 'gone.mp4'}\n")
    assert run(small_model, [listing], out) == 3
    assert "gone.mp4: MediaNotFoundError" in capsys.readouterr().out
    # every input failed: still a finished run, exit 3
    assert run(small_model, [media[-1]], tmp_path / "all_failed") == 3
    # the installed entry point gives the same status to a shell
    exe = Path(sys.executable).with_name("avidzoo")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "avidzoo"]
    res = subprocess.run([*cmd, "extract", str(media[-1]), "--model", str(small_model), "--out",
                          str(tmp_path / "sub"), "-q"], capture_output=True, text=True)
    assert res.returncode == 3, res.stderr
    res = subprocess.run([*cmd, "extract", str(tmp_path / "nope.mp4"), "--model", str(small_model), "--out",
                          str(tmp_path / "sub")], capture_output=True, text=True)
    assert res.returncode == 2 and "no such file or folder" in res.stderr


def test_shard_slurm_from_the_command_line(small_model, media, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    out = tmp_path / "feats"
    assert run(small_model, media, out, "--shard", "slurm") == 0  # task 1 of 2: b.mkv and voice.m4a
    assert "(shard 1/2)" in capsys.readouterr().out
    assert [Path(p).name for p in avidzoo.load_features(out).paths] == ["b.mkv", "voice.m4a"]


def test_compile_from_the_command_line(small_model, media, tmp_path):
    """``--compile`` (torch.compile of the fused encoder) gives the eager features; a one-tower model needs no
    ``--modalities``: the extractor runs the towers the model has."""
    audio_only = avidzoo.from_pretrained(small_model, modalities=("audio",)).save_pretrained(tmp_path / "audio")
    out = tmp_path / "feats"
    assert run(audio_only, media[:2], out, "--compile") == 0
    assert avidzoo.load_features(out).meta["modalities"] == ["audio"]
    assert_same(out, python_api(audio_only, media[:2]), 1e-4)


def test_score_av_from_the_command_line(small_model, media, tmp_path, capsys):
    table = tmp_path / "scores.csv"
    assert cli(["score-av", *map(str, media), "--model", str(small_model), "--csv", str(table), "--top", "1",
                "--clips-per-video", "2", "-q"]) == 0
    printed = capsys.readouterr().out.splitlines()
    rows = list(csv.DictReader(table.read_text().splitlines()))
    assert len(rows) == len(media)
    scored = [r for r in rows if r["score"]]
    assert [Path(r["path"]).name for r in scored] == sorted([p.name for p in media[:2]],
                                                            key=lambda n: float(next(r["score"] for r in rows if
                                                                                     r["path"].endswith(n))))
    assert printed[0].endswith(scored[0]["path"]) and "not scored: 3" in printed
    reasons = {Path(r["path"]).name: r["error"] for r in rows if not r["score"]}
    assert reasons["silent.mp4"] == "no audio stream" and reasons["voice.m4a"] == "no video stream"
    assert reasons["zz_broken.mp4"].startswith("NotMediaError")
    assert cli(["score-av", str(tmp_path / "nope.mp4"), "--model", str(small_model)]) == 2
