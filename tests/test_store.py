"""Many writers on one output folder: real processes, overlapping inputs, a SIGKILL at a random moment, --shard
workers, --status, and settings that differ. Every file's features must equal a clean single-process run's."""

from __future__ import annotations

import csv
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import avidzoo
from avidzoo.cli import main as cli
from avidzoo.errors import OutputWriteError
from avidzoo.extract import load_features, read_rows, status
from avidzoo.extract.store import ShardWriter, collect_garbage, live_writers, read_index

from media import make_linked_videos

FILES = 16


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    paths = make_linked_videos(root, classes=4, per_class=FILES // 4, seconds=1.0)
    (root / "zz_broken.mp4").write_bytes(b"not a video" * 100)
    return sorted([*paths, root / "zz_broken.mp4"])


@pytest.fixture(scope="module")
def clean(small_model, media, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "feats"
    avidzoo.extract_features(small_model, media, out=out, clips_per_video=2, num_workers=0, progress=False)
    return load_features(out)


WRITER = """
import sys, json, avidzoo
paths = json.loads(sys.argv[3])
avidzoo.extract_features(sys.argv[1], paths, out=sys.argv[2], clips_per_video=2, num_workers=0, shard_size=1,
                         progress=False)
"""


def writer(model, out, paths) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", WRITER, str(model), str(out), json.dumps([str(p) for p in paths])],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def assert_same_as_clean(out: Path, clean) -> None:
    """Every file once, with the features a clean single-process run gives it (row by row), the same failures."""
    got = load_features(out)
    assert sorted(got.paths) == sorted(set(got.paths)) == sorted(clean.paths)
    assert got.failed.keys() == clean.failed.keys()
    row = {p: i for i, p in enumerate(got.paths)}
    for i, p in enumerate(clean.paths):
        for m in ("video", "audio"):
            torch.testing.assert_close(got[m][row[p]], clean[m][i], rtol=1e-5, atol=1e-5, msg=f"{p} {m}")
        assert got.clip_starts[row[p]] == clean.clip_starts[i]


def test_concurrent_writers_with_a_sigkill_then_a_rerun(small_model, media, clean, tmp_path):
    out = tmp_path / "shared"
    # Three writers at once with overlapping inputs (A: 0-9, B: 6-16, C: all, killed at a random moment).
    procs = [writer(small_model, out, media[:10]), writer(small_model, out, media[6:]), writer(small_model, out, media)]
    rng = random.Random(int(time.time()))
    kill_after_rows = rng.randint(1, 6)
    deadline = time.time() + 240
    while time.time() < deadline and procs[2].poll() is None:  # C killed after its k-th indexed file, k random
        mine = list((out / "parts").glob(f"*-{procs[2].pid}-*.jsonl")) if (out / "parts").is_dir() else []
        if mine and len(mine[0].read_text().splitlines()) >= kill_after_rows:
            break
        time.sleep(0.005)
    procs[2].send_signal(signal.SIGKILL)
    for p in procs:
        p.wait(timeout=240)
    assert [p.returncode for p in procs] == [0, 0, -signal.SIGKILL], [p.stderr.read() for p in procs[:2]]
    print(f"writer C killed after {kill_after_rows} indexed files")
    # Whatever the kill left, the folder reads as a consistent picture already: each file once, its own features.
    rows = read_rows(out)
    assert len(rows) == len(set(rows)) and all(r["path"] in map(str, media) for r in rows.values())
    # A rerun over everything finishes the job and clears what the dead writer left unindexed.
    (out / "shards" / f".{procs_writer_of_kill(out, procs)}-000099.safetensors.half.tmp").write_bytes(b"partial")
    rerun = writer(small_model, out, media)
    assert rerun.wait(timeout=240) == 0, rerun.stderr.read()
    assert_same_as_clean(out, clean)
    indexed = {r["shard"] for r in read_rows(out).values() if r["status"] == "ok"}
    used = {json.loads(line).get("shard") for f in (out / "parts").glob("*.jsonl")
            for line in f.read_text().splitlines() if line.strip()}
    on_disk = {p.name for p in (out / "shards").iterdir()}
    assert indexed <= on_disk and on_disk <= used, on_disk - used  # no orphan shard, no temporary file
    st = status(out, [str(p) for p in media])
    assert (st.done, len(st.failed), st.remaining, st.running, st.orphans) == (FILES, 1, [], [], 0)
    assert len(st.writers) >= 3


def procs_writer_of_kill(out: Path, procs) -> str:
    """The writer name of the killed process (parts/<host>-<pid>-<random>.jsonl)."""
    pid = procs[2].pid
    names = [p.stem for p in (out / "parts").glob("*.jsonl") if p.stem.split("-")[-2] == str(pid)]
    return names[0] if names else f"deadhost-{pid}-00000000"


def test_shard_workers_cover_the_inputs_once(small_model, media, clean, tmp_path, capsys):
    out = tmp_path / "sharded"
    inputs = [str(p) for p in media]
    broken = inputs.index(str(media[-1])) % 3
    for k in (2, 0, 1):  # any order, no coordinator
        # the worker whose share holds the broken file finishes, and says so by its exit status
        assert cli(["extract", *inputs, "--model", str(small_model), "--out", str(out), "--shard", f"{k}/3",
                    "--clips-per-video", "2", "--workers", "0", "-q"]) == (3 if k == broken else 0)
        printed = capsys.readouterr().out
        assert f"(shard {k}/3)" in printed
        assert f"done: {len(inputs[k::3]) - (k == broken)} of {len(inputs[k::3])} inputs" in printed
    assert_same_as_clean(out, clean)
    writers = {p.stem for p in (out / "parts").glob("*.jsonl")}
    assert len(writers) == 3
    for f in (out / "parts").glob("*.jsonl"):  # each worker took exactly its own files
        mine = {json.loads(line)["path"] for line in f.read_text().splitlines()}
        k = next(k for k in range(3) if mine <= set(inputs[k::3]))
        assert mine == set(inputs[k::3])
    assert cli(["extract", "--status", str(out), *inputs]) == 0
    assert f"done: {FILES}, failed: 1, remaining: 0; writers: 3 (0 running)" in capsys.readouterr().out
    with pytest.raises(ValueError, match="K/N with 0 <= K < N"):
        avidzoo.extract.parse_shard("3/3")


def test_shard_slurm_reads_the_job_array(monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    assert avidzoo.extract.parse_shard("slurm") == (2, 4)
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    with pytest.raises(ValueError, match="SLURM_ARRAY_TASK_ID"):
        avidzoo.extract.parse_shard("slurm")


def test_a_writer_with_other_settings_is_refused(small_model, media, tmp_path):
    out = tmp_path / "mixed"
    avidzoo.extract_features(small_model, media[:2], out=out, clips_per_video=2, num_workers=0, progress=False)
    with pytest.raises(ValueError, match="other settings .*clips_per_video"):
        avidzoo.extract_features(small_model, media[2:4], out=out, clips_per_video=3, num_workers=0, progress=False)
    # a torn line in any writer's part is ignored
    part = next((out / "parts").glob("*.jsonl"))
    part.write_text(part.read_text() + '{"path": "x.mp4", "status": "o')
    assert len(read_rows(out)) == 2


def test_live_writers_are_left_alone(tmp_path):
    """Garbage collection removes what dead writers left, never what a running one is writing."""
    out = tmp_path / "gc"
    w = ShardWriter(out, shard_size=10, modalities=("video",))
    (out / "shards" / f"{w.writer}-000000.safetensors").write_bytes(b"in flight")  # written, not yet indexed
    (out / "shards" / "deadhost-1-abcdef12-000000.safetensors").write_bytes(b"orphan")
    (out / "shards" / ".deadhost-1-abcdef12-000001.safetensors.x.tmp").write_bytes(b"half")
    assert w.writer in live_writers(out)
    removed = sorted(p.name for p in collect_garbage(out))
    assert removed == [".deadhost-1-abcdef12-000001.safetensors.x.tmp", "deadhost-1-abcdef12-000000.safetensors"]
    assert (out / "shards" / f"{w.writer}-000000.safetensors").exists()
    w.close()
    assert w.writer not in live_writers(out)


def test_ray_engine_equals_the_plain_path(small_model, media, clean, tmp_path, capsys):
    """`avidzoo extract --engine ray` from the command line: decoding as Ray Data tasks, the encoder as an actor, on
    a local Ray it starts (--ray-address local, 2 CPUs here); the same folder format, resume, a plain writer after."""
    ray = pytest.importorskip("ray", reason='the Ray engine is an extra: pip install "avidzoo[ray]"')
    from avidzoo.extract import extract_with_ray

    out = tmp_path / "ray"
    args = ["extract", *map(str, media), "--model", str(small_model), "--out", str(out), "--clips-per-video", "2",
            "--engine", "ray", "--ray-address", "local", "--device", "cpu", "-q"]
    try:
        assert cli(args) == 3  # finished; the broken file is recorded
        printed = capsys.readouterr().out
        assert "engine: ray" in printed and f"done: {FILES} of {FILES + 1} inputs, failed: 1" in printed
        assert_same_as_clean(out, clean)
        assert status(out).done == FILES
        # resume: a second run finds nothing to do, and a plain writer may share the folder
        shards = sorted((out / "shards").iterdir())
        assert cli([*args, "--allow-failures"]) == 0
        assert sorted((out / "shards").iterdir()) == shards
        extract_with_ray(small_model, media, out, clips_per_video=2, files_per_batch=4)
        avidzoo.extract_features(small_model, media, out=out, clips_per_video=2, num_workers=0, progress=False)
        assert_same_as_clean(out, clean)
        # features over time: the Ray engine's rows (parts joined in the driver, published together) equal the local
        # engine's, in the main process and in two DataLoader workers (files in parts, interleaved)
        timed = extract_with_ray(small_model, media, tmp_path / "ray_rows", segments=0.25, files_per_batch=2)
        with warnings.catch_warnings():  # two workers beside the model on 2 cores: the plan warns, as it should
            warnings.simplefilter("ignore", UserWarning)
            here = [avidzoo.extract_features(small_model, media, segments=0.25, num_workers=w, progress=False,
                                             batch_size=2) for w in (0, 2)]
        got = load_features(timed)
        for r in here:
            assert r.paths == got.paths and list(r.failed) == list(got.failed)
            assert torch.equal(r.times, got.times) and torch.equal(r.row_file, got.row_file)
            torch.testing.assert_close(r["video"], got["video"])
            torch.testing.assert_close(r["audio"], got["audio"])
    finally:
        ray.shutdown()


def test_export_to_parquet_and_npz(small_model, media, clean, tmp_path, capsys):
    out = tmp_path / "feats"
    avidzoo.extract_features(small_model, media, out=out, clips_per_video=2, num_workers=0, progress=False)
    assert cli(["export", str(out), "--to", str(tmp_path / "f.npz")]) == 0
    with np.load(tmp_path / "f.npz") as z:  # no pickles needed
        assert list(z["paths"]) == clean.paths and list(z["failed_paths"]) == list(clean.failed)
        torch.testing.assert_close(torch.from_numpy(z["video"]), clean["video"])
        assert z["clip_starts"].shape == (FILES, 2) and z["has_audio"].all()
    pq = pytest.importorskip("pyarrow.parquet", reason='Parquet export needs pyarrow: pip install "avidzoo[parquet]"')
    assert cli(["export", str(out), "--to", str(tmp_path / "f.parquet")]) == 0
    table = pq.read_table(tmp_path / "f.parquet")
    assert table.num_rows == FILES + 1 and table.column("status").to_pylist().count("error") == 1
    df = table.to_pandas()
    ok = df[df.status == "ok"]
    assert list(ok.path) == clean.paths
    torch.testing.assert_close(torch.from_numpy(np.stack(list(ok.audio))), clean["audio"])
    assert b"avidzoo_meta" in table.schema.metadata
    # embeddings are fixed-size lists: one contiguous (rows, 512) float32 buffer, read without a copy
    import pyarrow as pa

    video = table.column("video").combine_chunks()
    assert pa.types.is_fixed_size_list(video.type) and video.type.list_size == 512 and video.null_count == 1
    done = table.filter(pa.compute.equal(table.column("status"), "ok")).column("video").combine_chunks()
    matrix = done.values.to_numpy(zero_copy_only=True).reshape(len(done), 512)
    torch.testing.assert_close(torch.tensor(matrix), clean["video"])
    with pytest.raises(ValueError, match=r"export to \.parquet, \.npz, \.h5, \.hdf5, or to a folder"):
        avidzoo.extract.export_features(out, tmp_path / "f.csv")


def test_export_as_ave_and_video_features_read_it(small_model, media, tmp_path):
    """HDF5 with one ``[N, T, D]`` dataset per modality, read as AVE's dataloader reads its features (a whole
    dataset by key, rows in the order of ``paths``); a folder of ``.npy`` as video_features lays it out, loaded as its
    users load it (``np.load`` of ``<stem>_<key>.npy`` and ``<stem>_timestamps_ms.npy``), names unique where two
    inputs in different folders share a stem."""
    h5py = pytest.importorskip("h5py", reason='HDF5 export needs h5py: pip install "avidzoo[hdf5]"')
    twin = tmp_path / "elsewhere" / Path(media[0]).name
    twin.parent.mkdir()
    shutil.copy(media[0], twin)
    out = tmp_path / "feats"
    avidzoo.extract_features(small_model, [*media, twin], out=out, clips_per_video=3, clip_agg="none",
                             num_workers=0, progress=False)
    clean = load_features(out)
    assert cli(["export", str(out), "--to", str(tmp_path / "f.h5")]) == 0
    with h5py.File(tmp_path / "f.h5", "r") as hf:
        video, audio = hf["video"][:], hf["audio"][:]
        paths = [p.decode() for p in hf["paths"][:]]
        starts, meta = hf["clip_starts"][:], json.loads(hf.attrs["avidzoo_meta"])
        failed = [p.decode() for p in hf["failed_paths"][:]]
    assert video.shape == audio.shape == (FILES + 1, 3, 512) and paths == clean.paths and failed == list(clean.failed)
    torch.testing.assert_close(torch.from_numpy(video), clean["video"])
    torch.testing.assert_close(torch.from_numpy(audio), clean["audio"])
    assert starts.tolist() == clean.clip_starts and meta["clip_agg"] == "none"

    folder = tmp_path / "npy"
    assert cli(["export", str(out), "--to", f"{folder}/"]) == 0
    index = list(csv.DictReader((folder / "index.csv").read_text().splitlines()))
    assert list(index[0]) == ["name", "path", "has_video", "has_audio"] and len(index) == FILES + 1
    stem = Path(media[0]).stem
    names = {r["name"] for r in index}
    assert stem not in names and f"elsewhere__{stem}" in names and f"{Path(media[0]).parent.name}__{stem}" in names
    by_path = {r["name"]: r["path"] for r in index}
    row = {p: i for i, p in enumerate(clean.paths)}
    for name, path in by_path.items():
        i = row[path]
        features = np.load(folder / f"{name}_video.npy")  # (T, D), as video_features' users load it
        assert features.shape == (3, 512)
        torch.testing.assert_close(torch.from_numpy(features), clean["video"][i])
        torch.testing.assert_close(torch.from_numpy(np.load(folder / f"{name}_audio.npy")), clean["audio"][i])
        assert np.load(folder / f"{name}_timestamps_ms.npy").tolist() == [t * 1000 for t in clean.clip_starts[i]]


def test_keyframe_sampling_starts_each_clip_at_a_keyframe(small_model, tmp_path):
    """--sampling keyframe: every clip starts at the keyframe nearest its uniform start (the index records the real
    starts), and its features are those of clips read at those starts."""
    from avidzoo.io import MediaFile, snap_to_keyframes, uniform_starts

    from media import make_video

    path = make_video(tmp_path / "long.mp4", fps=30, seconds=12, size=(96, 64), pattern="texture", gop=60,
                      bframes=2, tone_start=0.1)
    with MediaFile(path) as f:
        keys = f.keyframe_times()
        uniform = uniform_starts(f.info.duration, 0.64, 4)
    assert keys == pytest.approx([0, 2, 4, 6, 8, 10], abs=1e-6)
    assert snap_to_keyframes([0.0, 2.9, 3.1, 11.9], keys, latest=11.3) == [0, 2, 4, 10]
    out = tmp_path / "kf"
    assert cli(["extract", str(path), "--model", str(small_model), "--out", str(out), "--clips-per-video", "4",
                "--sampling", "keyframe", "--workers", "0", "-q"]) == 0
    got = load_features(out)
    assert got.meta["sampling"] == "keyframe"
    half = 0.5 / 30  # half a frame after the keyframe: its first frame is the keyframe under either frame rule
    expected_starts = snap_to_keyframes(uniform, keys, lag=half, latest=12 - 0.64)
    assert expected_starts == pytest.approx([half, 4 + half, 8 + half, 10 + half])
    assert got.clip_starts[0] == pytest.approx(expected_starts, abs=1e-6)
    ref = avidzoo.FeatureExtractor(small_model, clip_agg="none", num_workers=0)
    t = ref.transforms
    with MediaFile(path) as f:
        v = t.video(torch.stack(f.read_video(got.clip_starts[0], num_frames=4, fps=16, short_side=36)))
        a = t.audio(torch.stack(f.read_audio(got.clip_starts[0], 0.64)))
    expected = ref.encode(video=v, audio=a)
    torch.testing.assert_close(got["video"][0], expected["video"].mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["audio"][0], expected["audio"].mean(0), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="other settings .*sampling"):  # a uniform run may not resume this folder
        avidzoo.extract_features(small_model, path, out=out, clips_per_video=4, num_workers=0, progress=False)


@pytest.fixture
def small_disk(tmp_path):
    """A real file system of 48 kB (tmpfs), to fill up; skipped where mounting is not allowed (CI runs as root)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill_up(model, media, out, **options) -> str:
    """Extracts into ``out`` on a disk too small for it: the OutputWriteError's message, checked to be one line that
    opens with the folder and why."""
    with pytest.raises(OutputWriteError) as caught:
        avidzoo.extract_features(model, media, out=out, num_workers=0, shard_size=1, progress=False, **options)
    message = str(caught.value)
    assert message.startswith(f"{out}: cannot write the features, its disk is full") and "\n" not in message
    return message


def test_a_full_disk_is_one_line_and_a_rerun_elsewhere_resumes(small_model, media, clean, small_disk, tmp_path):
    """Extraction into a folder whose disk fills up: an OutputWriteError naming the folder, why, what is kept and
    about how much the rest needs, not safetensors' traceback; what was written is complete, and the folder moved
    to a disk with room finishes without redoing a finished input."""
    out = small_disk / "feats"
    message = fill_up(small_model, media, out, clips_per_video=2)
    written = int(re.search(r"(\d+) input\(s\) of this run are written and kept", message).group(1))
    left = int(re.search(r"the (\d+) left need about [\d.]+ kB more, [\d.]+ (?:bytes|kB) free there", message).group(1))
    assert 0 < written < len(media) and written + left == len(media)
    moved = tmp_path / "elsewhere"
    shutil.copytree(out, moved)
    kept = {p for p, r in read_rows(moved).items() if r["status"] == "ok"}
    assert len(kept) == written and set(load_features(moved).paths) == kept
    before = {f.name for f in (moved / "parts").glob("*.jsonl")}
    avidzoo.extract_features(small_model, media, out=moved, clips_per_video=2, num_workers=0, progress=False)
    assert_same_as_clean(moved, clean)
    new_rows = [r for f in (moved / "parts").glob("*.jsonl") if f.name not in before for r in read_index(f)]
    assert not kept & {r["path"] for r in new_rows}  # nothing finished was done again


def test_a_full_disk_over_time_counts_each_file_s_rows(small_model, media, small_disk):
    """Over time a file takes as many rows as its length gives: what the rest needs is counted at the rows the run's
    files averaged, each row the size of every modality's vector, plus an index row per file."""
    out = small_disk / "feats"
    message = fill_up(small_model, media, out, stride=0.1)
    found = re.search(r"the (\d+) left need about ([\d.]+) kB more \(at ([\d.,]+) rows a file, this run's average\)",
                      message)
    assert found, message
    left, need, rows = int(found.group(1)), float(found.group(2)) * 1000, float(found.group(3).replace(",", ""))
    kept = load_features(out)
    assert rows > 1 and rows == pytest.approx(len(kept.times) / len(kept.paths), rel=0.01)
    row_bytes = 4 * (kept["video"].shape[-1] + kept["audio"].shape[-1])
    assert need == pytest.approx(left * (rows * row_bytes + 512), rel=0.01)


def test_full_and_read_only_output_exit_4_with_one_line(small_model, media, small_disk, capsys):
    """The command line: status 4 (documented) and one line, for a full disk and for a folder turned read-only."""
    out = small_disk / "feats"
    args = ["extract", *map(str, media), "--model", str(small_model), "--out", str(out), "--clips-per-video", "2",
            "--clip-agg", "none", "--workers", "0", "-q"]
    assert cli(args) == 4
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"avidzoo extract: error: {out}: cannot write the features, its disk is full") \
        and "\n" not in err and "rerun" in err
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    assert cli(args) == 4
    err = capsys.readouterr().err.strip()
    assert "it is on a read-only file system" in err and "free there" not in err and "\n" not in err
