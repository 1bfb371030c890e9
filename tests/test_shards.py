"""WebDataset tar shards as inputs (local here; from a bucket in tests/test_remote.py): each media member of a sample
is an input named <shard>/<key>.<ext> with the sample's .json carried into its row, brace patterns, one pass per
shard, resume, --shard K/N over shards, a damaged member and a shard cut off mid-member."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import avidzoo
from avidzoo.cli import main as cli
from avidzoo.io import find_media
from avidzoo.io.shards import expand_braces

from media import make_video, write_shard


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[Path, list[Path], dict[str, Path]]:
    d = tmp_path_factory.mktemp("shards")
    v = [make_video(d / "v0.mp4", fps=25, seconds=1.5, size=(64, 48), tone_freq=500),
         make_video(d / "v1.mkv", fps=30, seconds=2.0, size=(64, 48), tone_freq=700),
         make_video(d / "v2.mp4", fps=25, seconds=1.2, size=(72, 40), tone_freq=900)]
    s0 = write_shard(d / "shard-000000.tar", [
        ("part/clip0001.mp4", v[0].read_bytes()), ("part/clip0001.json", b'{"caption": "a dog", "id": 1}'),
        ("clip0002.json", b'{"caption": "rain"}'), ("clip0002.mkv", v[1].read_bytes()),  # .json first
        ("clip0003.txt", b"a caption without media")])
    s1 = write_shard(d / "shard-000001.tar", [("clip0004.mp4", v[2].read_bytes()), ("clip0005.mp4", b"x" * 500)])
    names = {f"{s0}/part/clip0001.mp4": v[0], f"{s0}/clip0002.mkv": v[1], f"{s1}/clip0004.mp4": v[2]}
    return d, [s0, s1], names


def test_brace_patterns():
    assert expand_braces("s-{008..011}.tar") == ["s-008.tar", "s-009.tar", "s-010.tar", "s-011.tar"]
    assert expand_braces("{a,b}/s-{1..2}.tar") == ["a/s-1.tar", "a/s-2.tar", "b/s-1.tar", "b/s-2.tar"]


def test_members_are_inputs_with_their_samples_metadata(small_model, shards, tmp_path):
    d, (s0, s1), names = shards
    assert find_media(str(d / "shard-{000000..000001}.tar")) == [s0, s1]
    result = avidzoo.extract_features(small_model, str(d / "shard-{000000..000001}.tar"), clips_per_video=2,
                                      num_workers=0, progress=False)
    assert result.paths == list(names) and list(result.failed) == [f"{s1}/clip0005.mp4"]
    local = avidzoo.extract_features(small_model, list(names.values()), clips_per_video=2, num_workers=0,
                                     progress=False)
    for m in ("video", "audio"):
        torch.testing.assert_close(result[m], local[m], rtol=1e-6, atol=1e-6)
    # to a folder: the .json travels into the rows; a rerun reads the shards again but decodes nothing new
    out = tmp_path / "feats"
    assert cli(["extract", str(d / "shard-{000000..000001}.tar"), "--model", str(small_model), "--out", str(out),
                "-q", "--clips-per-video", "2"]) == 3  # the damaged member fails; the run finishes
    rows = {json.loads(line)["path"]: json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()}
    assert rows[f"{s0}/part/clip0001.mp4"]["metadata"] == {"caption": "a dog", "id": 1}
    assert rows[f"{s0}/clip0002.mkv"]["metadata"] == {"caption": "rain"}
    assert "metadata" not in rows[f"{s1}/clip0004.mp4"] and rows[f"{s1}/clip0005.mp4"]["status"] == "error"
    shard_files = sorted((out / "shards").iterdir())
    assert cli(["extract", str(s0), str(s1), "--model", str(small_model), "--out", str(out), "-q",
                "--clips-per-video", "2", "--allow-failures"]) == 0
    assert sorted((out / "shards").iterdir()) == shard_files


def test_a_member_is_an_input_by_its_name(small_model, shards, tmp_path, capsys):
    """`<shard>/<key>.<ext>`, as the index and failed.txt name a member, is an input: its shard is streamed up to it;
    so failed.txt with --retry-failed tries exactly the failed members again. A member the shard lacks is a failed
    input, not a lost one; a member of a shard that does not exist is said at once."""
    d, (s0, s1), names = shards
    second = f"{s0}/clip0002.mkv"
    one = avidzoo.extract_features(small_model, [second, f"{s1}/nothing.mp4"], clips_per_video=2, num_workers=0,
                                   progress=False)
    assert one.paths == [second] and "no such member" in one.failed[f"{s1}/nothing.mp4"]
    local = avidzoo.extract_features(small_model, [names[second]], clips_per_video=2, num_workers=0, progress=False)
    for m in ("video", "audio"):
        torch.testing.assert_close(one[m], local[m], rtol=1e-6, atol=1e-6)
    out = tmp_path / "feats"
    args = ["--model", str(small_model), "--out", str(out), "-q", "--clips-per-video", "2"]
    assert cli(["extract", str(s0), str(s1), *args]) == 3
    assert (out / "failed.txt").read_text() == f"{s1}/clip0005.mp4\n"
    capsys.readouterr()
    assert cli(["extract", str(out / "failed.txt"), *args, "--retry-failed"]) == 3  # still damaged, tried once more
    assert "done: 0 of 1 inputs, failed: 1" in capsys.readouterr().out
    tried = [r for part in (out / "parts").glob("*.jsonl") for r in map(json.loads, part.read_text().splitlines())
             if r["path"] == f"{s1}/clip0005.mp4"]
    assert len(tried) == 2 and all(r["status"] == "error" for r in tried)  # once per run, by its own writer
    assert cli(["extract", str(d / "shard-000009.tar" / "clip0001.mp4"), *args]) == 2
    assert "no such shard" in capsys.readouterr().err


def test_shard_k_of_n_splits_shards(small_model, shards, tmp_path, capsys):
    d, (s0, s1), _ = shards
    out = tmp_path / "feats"
    assert cli(["extract", str(s0), str(s1), "--model", str(small_model), "--out", str(out), "-q",
                "--clips-per-video", "2", "--shard", "1/2"]) == 3
    assert "done: 1 of 2 inputs, failed: 1" in capsys.readouterr().out  # shard 1's two members
    assert {Path(p).parent for p in avidzoo.load_features(out).paths} == {s1}


def test_a_shard_cut_off_mid_member(small_model, shards, tmp_path):
    """The members before the cut are extracted; the rest of the shard is one recorded error, named by the shard."""
    d, (s0, _), names = shards
    cut = tmp_path / "cut.tar"
    data = s0.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])  # inside the second video
    result = avidzoo.extract_features(small_model, cut, clips_per_video=2, num_workers=0, progress=False)
    assert result.paths == [f"{cut}/part/clip0001.mp4"]
    assert list(result.failed) == [str(cut)] and "ShardError" in result.failed[str(cut)]


def test_status_counts_a_read_shard(small_model, shards, tmp_path, capsys):
    d, (s0, s1), _ = shards
    out = tmp_path / "feats"
    args = ["extract", str(s0), "--model", str(small_model), "--out", str(out), "-q", "--clips-per-video", "2"]
    assert cli(args) == 0
    assert cli(["extract", "--status", str(out), str(s0), str(s1)]) == 0
    assert "done: 2, failed: 0, remaining: 1" in capsys.readouterr().out  # s1 not read yet
