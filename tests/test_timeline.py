"""Features over time: rows on a stride grid, fixed segments and annotated segments; row k of the video and of the
audio describe second k; long files in parts; outputs read back as AVE's and video_features' users read them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import avidzoo
from avidzoo.cli import main as cli
from avidzoo.extract import FeatureExtractor, load_features, per_second, pipeline
from avidzoo.extract.dataset import ClipDataset, join_parts
from avidzoo.extract.pipeline import PartJoiner
from avidzoo.extract.timeline import Timeline
from avidzoo.io import MediaFile
from avidzoo.io.sampling import row_clip_starts, segment_rows, stride_rows, timeline_span

from media import make_video, second_colour, second_tone

TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def model(original):
    return avidzoo.from_pretrained(original[0])


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Files whose second s shows second_colour(s) and plays second_tone(s)."""
    d = tmp_path_factory.mktemp("seconds")
    make_video(d / "ten.mp4", seconds=10, pattern="seconds", fps=30, size=(128, 96))
    make_video(d / "long.mp4", seconds=13, pattern="seconds", fps=25, size=(128, 96), gop=250, bframes=2)
    make_video(d / "silent.mp4", seconds=4, pattern="seconds", fps=30, size=(128, 96), audio=False)
    (d / "other").mkdir()
    make_video(d / "other" / "ten.mp4", seconds=10, pattern="seconds", fps=30, size=(128, 96))
    return d


# -- where rows and their clips lie -------------------------------------------------------------------------------


def test_rows_on_a_grid_and_in_segments():
    assert stride_rows((0.0, 10.0), 2.0, 1.0) == [(float(k), k + 2.0) for k in range(9)]
    assert stride_rows((0.0, 1.0), 2.0, 1.0) == [(0.0, 2.0)]  # shorter than a row: one, padded
    # a 10-s file in 1-s segments has 10 whether its streams end a little early or late
    for end in (9.98, 10.0, 10.03):
        assert len(segment_rows((0.0, end), 1.0)) == 10
    assert segment_rows((0.5, 3.5), 1.5) == [(0.5, 2.0), (2.0, 3.5)]
    # clips centred on the row (both towers alike), moved inside their stream at its ends
    assert row_clip_starts([(0.0, 1.0), (1.0, 2.0)], 1, 0.5) == [0.25, 1.25]
    assert row_clip_starts([(0.0, 1.0), (9.0, 10.0)], 1, 2.0, (0.0, 10.0)) == [0.0, 8.0]
    assert row_clip_starts([(0.0, 2.0)], 2, 0.5) == [0.25, 1.25]
    # the streams' overlap, unless it is shorter than a row: then the video's span (the audio padded)
    assert timeline_span({"video": (0.0, 10.0), "audio": (0.2, 9.5)}, 2.0) == (0.2, 9.5, "overlap")
    assert timeline_span({"video": (0.0, 10.0), "audio": (9.0, 10.0)}, 2.0) == (0.0, 10.0, "video")


def test_per_second_takes_the_rows_over_each_second():
    times = torch.tensor([[0.0, 2.0], [1.0, 3.0], [2.0, 4.0]])
    feats = torch.tensor([[1.0], [2.0], [3.0]])
    got = per_second(times, feats, [0, 1, 2, 3, 7])
    # second 1 lies in rows 0 and 1 wholly: their mean; second 7 in none: the nearest row
    assert got.flatten().tolist() == [1.0, 1.5, 2.5, 3.0, 3.0]
    with pytest.raises(ValueError, match="times must be"):
        per_second(times[:2], feats, 3)


def test_timeline_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="give one"):
        Timeline.build(stride=1.0, segments=1.0, clips_per_row=None)
    with pytest.raises(ValueError, match="one clip per row"):
        Timeline.build(stride=1.0, segments=None, clips_per_row=3)
    bad = tmp_path / "bad.csv"
    bad.write_text("path,start,end\na.mp4,3,2\n")
    with pytest.raises(ValueError, match=r"bad.csv, line 2: a segment must end after it starts"):
        Timeline.build(stride=None, segments=bad, clips_per_row=None)
    (tmp_path / "nohead.csv").write_text("a.mp4,1,2\n")
    with pytest.raises(ValueError, match="needs a header with path,start,end"):
        Timeline.build(stride=None, segments=tmp_path / "nohead.csv", clips_per_row=None)


# -- row k shows second k -----------------------------------------------------------------------------------------


def _dominant_hz(wave: torch.Tensor, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave.flatten().numpy()))
    return float(np.fft.rfftfreq(wave.numel(), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("chunk", [4, 64])
def test_row_k_shows_and_plays_second_k(model, media, chunk):
    """1-s segments: row k's video frames have second k's colour and its audio clip (2 s, centred on the segment)
    plays second k's tone loudest, read in parts of 4 clips (a second reader for the audio) or in one."""
    t = avidzoo.create_transforms(model)
    ds = ClipDataset([media / "long.mp4"], t, ("video", "audio"), 1, preprocess="device",
                     timeline=Timeline("segments", 1.0, 1), chunk_clips=chunk)
    parts = list(ds.read_parts(0, media / "long.mp4"))
    assert len(parts) == (4 if chunk == 4 else 1) and all(len(p["starts"]) <= chunk for p in parts)
    item = join_parts(parts)
    assert len(item["times"]) == 13 and item["times"][3] == [3.0, 4.0]
    assert item["starts"][3] == 3.25 and item["audio_starts"][3] == 2.5 and item["audio_starts"][0] == 0.0
    rate = int(t.config["audio"]["sample_rate"])
    for k in range(13):
        colour = item["video"][k].float().mean((0, 1, 2))  # (T, S, S, 3) crops
        assert torch.allclose(colour, torch.tensor(second_colour(k), dtype=torch.float32), atol=6), k
        if 0 < k < 12:  # the first and last rows' audio clips, moved inside the stream, hold two seconds alike
            assert abs(_dominant_hz(item["audio"][k], rate) - second_tone(k)) < 5, k


def test_parts_equal_one_read_and_a_dense_pass_equals_clips_alone(model, media):
    t = avidzoo.create_transforms(model)
    timeline = Timeline("stride", 0.25, 1)
    whole, parts = (ClipDataset([], t, ("video", "audio"), 1, timeline=timeline, chunk_clips=chunk,
                                preprocess="device").read(0, media / "long.mp4") for chunk in (1000, 8))
    assert len(whole["starts"]) == 45 and whole["starts"] == parts["starts"]
    assert torch.equal(whole["video"], parts["video"])
    # each part's audio is its own resampler run: the samples differ from one run's by its phase, under a sample
    torch.testing.assert_close(whole["audio"], parts["audio"], atol=0.05, rtol=0)
    assert torch.nn.functional.cosine_similarity(whole["audio"].flatten(1), parts["audio"].flatten(1)).min() > 0.99
    # the dense pass (45 clips, one decoding pass streamed out) takes the frames each clip takes decoded alone
    with MediaFile(media / "long.mp4") as f:
        dense = f.read_video(whole["starts"], num_frames=8, fps=16)
    for s, clip in list(zip(whole["starts"], dense))[::7]:
        with MediaFile(media / "long.mp4") as f:
            assert torch.equal(f.read_video([s], num_frames=8, fps=16)[0], clip), s


# -- end to end ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(small_model):
    """A model whose clips take milliseconds (4 frames at 32 px, 0.64-s audio), and its folder."""
    return avidzoo.from_pretrained(small_model), small_model


def _by_hand(model, path: Path, starts: list[float], audio_starts: list[float]) -> dict[str, torch.Tensor]:
    t = avidzoo.create_transforms(model)
    v, a = model.config["preprocessing"]["video"], model.config["preprocessing"]["audio"]
    with MediaFile(path) as f, torch.inference_mode():
        video = torch.stack([t.video(c) for c in f.read_video(starts, num_frames=v["num_frames"], fps=v["fps"])])
        audio = torch.stack([t.audio(w) for w in f.read_audio(audio_starts, a["clip_duration"])])
        return {"video": model.encode_video(video), "audio": model.encode_audio(audio)}


def test_segments_from_the_command_line_read_as_ave_and_video_features_read_them(small, media, tmp_path):
    model, folder = small
    out = tmp_path / "ave"
    inputs = [str(media / "ten.mp4"), str(media / "other" / "ten.mp4"), str(media / "silent.mp4")]
    assert cli(["extract", *inputs, "--model", str(folder), "--out", str(out), "--segments", "1",
                "--device", "cpu", "--batch-size", "8", "-q"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["timeline"] == {"kind": "segments", "step": 1.0, "clips_per_row": 1} and meta["clips_per_video"] == 1
    r = load_features(out)
    assert r.features["video"].shape == (24, 512) and r.times.shape == (24, 2)
    assert r.row_file.tolist() == [0] * 10 + [1] * 10 + [2] * 4
    ten = r.paths.index(str(media / "ten.mp4"))
    seq = r.sequences("video")[ten]
    assert seq.shape == (10, 512) and r.file_times(ten)[:, 0].tolist() == [float(k) for k in range(10)]
    row = json.loads((out / "index.jsonl").read_text().splitlines()[0])
    want = _by_hand(model, media / "ten.mp4", row["clip_starts"], row["audio_starts"])
    torch.testing.assert_close(seq, want["video"], **TOL)
    torch.testing.assert_close(r.sequences("audio")[ten], want["audio"], **TOL)
    silent = r.paths.index(str(media / "silent.mp4"))
    assert not r.present["audio"][silent] and r.sequences("audio")[silent].isnan().all()
    assert r.sequences("video")[silent].isfinite().all()

    # AVE's dataloader: h5py.File(path, "r")[key][:] -> [N, 10, ...] (here 3 files of 10, 10, 4 rows: per-file groups)
    h5py = pytest.importorskip("h5py")
    assert cli(["extract", *inputs[:2], "--model", str(folder), "--out", str(tmp_path / "ave10"),
                "--segments", "1", "--device", "cpu", "-q"]) == 0
    assert cli(["export", str(tmp_path / "ave10"), "--to", str(tmp_path / "visual.h5")]) == 0
    with h5py.File(tmp_path / "visual.h5", "r") as hf:
        video, times = hf["video"][:], hf["times"][:]
        paths = [p.decode() for p in hf["paths"][:]]
    assert video.shape == (2, 10, 512) and times.shape == (2, 10, 2)
    np.testing.assert_allclose(video[paths.index(str(media / "ten.mp4"))], seq.numpy(), rtol=1e-6)
    assert cli(["export", str(out), "--to", str(tmp_path / "ragged.h5")]) == 0
    with h5py.File(tmp_path / "ragged.h5", "r") as hf:
        sizes = {hf["files"][k].attrs["path"]: hf["files"][k]["video"].shape for k in hf["files"]}
    assert sizes[str(media / "silent.mp4")] == (4, 512) and sizes[str(media / "ten.mp4")] == (10, 512)

    # video_features' users: np.load(<stem>_<key>.npy) of (T, D) beside <stem>_timestamps_ms.npy; equal stems
    # in different folders get different names
    assert cli(["export", str(out), "--to", str(tmp_path / "npy") + "/"]) == 0
    index = list(csv.DictReader((tmp_path / "npy" / "index.csv").open()))
    names = {r["path"]: r["name"] for r in index}
    name = names[str(media / "ten.mp4")]
    assert len(set(names.values())) == 3
    np.testing.assert_array_equal(np.load(tmp_path / "npy" / f"{name}_video.npy"), seq.numpy())
    np.testing.assert_array_equal(np.load(tmp_path / "npy" / f"{name}_timestamps_ms.npy"),
                                  np.arange(10) * 1000.0)
    assert np.load(tmp_path / "npy" / f"{name}_windows_ms.npy")[9].tolist() == [9000.0, 10000.0]

    # Parquet: a file's rows as a list of vectors, its times beside; .npz: rows one after another
    pq = pytest.importorskip("pyarrow.parquet")
    assert cli(["export", str(out), "--to", str(tmp_path / "f.parquet")]) == 0
    table = pq.read_table(tmp_path / "f.parquet").to_pydict()
    i = table["path"].index(str(media / "ten.mp4"))
    np.testing.assert_allclose(np.array(table["video"][i]), seq.numpy(), rtol=1e-6)
    assert table["times"][i][2] == [2.0, 3.0]
    assert cli(["export", str(out), "--to", str(tmp_path / "f.npz")]) == 0
    z = np.load(tmp_path / "f.npz")
    assert z["video"].shape == (24, 512) and z["row_file"].tolist() == r.row_file.tolist()

    # a rerun with another timeline is refused; the same one resumes with nothing to do
    with pytest.raises(ValueError, match="timeline"):
        FeatureExtractor(folder, device="cpu", stride=1.0, progress=False).extract(inputs, out)
    assert cli(["extract", *inputs, "--model", str(folder), "--out", str(out), "--segments", "1",
                "--device", "cpu", "-q"]) == 0


def test_stride_grid_from_python_and_the_command_line(small, media, tmp_path):
    r = avidzoo.extract_features(small[0], [media / "long.mp4"], stride=1.0, device="cpu", progress=False,
                                 batch_size=4)
    # rows of 0.64 s (the audio clip) every second over 13 s: 13; the 0.25-s video clip and the audio share centres
    assert r.times.shape == (13, 2) and r.times[0].tolist() == [0.0, 0.64] and r.times[-1].tolist() == [12.0, 12.64]
    assert r.clip_starts[0][:2] == [0.195, 1.195]
    secs = per_second(r.file_times(0), r.sequences("video")[0], 10)
    assert secs.shape == (10, 512)
    torch.testing.assert_close(secs[0], r.features["video"][0])  # second 0 lies only in row 0
    # the same through the command line (--stride), into a folder
    out = tmp_path / "grid"
    assert cli(["extract", str(media / "long.mp4"), "--model", str(small[1]), "--out", str(out), "--stride", "1",
                "--device", "cpu", "--batch-size", "4", "-q"]) == 0
    back = load_features(out)
    assert json.loads((out / "meta.json").read_text())["timeline"]["kind"] == "stride"
    assert torch.equal(back.times, r.times)
    torch.testing.assert_close(back["audio"], r["audio"])


def test_annotated_segments_with_labels_decode_each_file_once(small, media, tmp_path):
    model, folder = small
    table = tmp_path / "moments.csv"
    table.write_text("path,start,end,label,id\n"
                     f"{media / 'ten.mp4'},1.0,3.0,jump,a\n"
                     f"{media / 'long.mp4'},0.0,12.0,run,b\n"
                     f"{media / 'ten.mp4'},6.5,9.5,fall,c\n")
    out = tmp_path / "moments"
    assert cli(["extract", "--segments", str(table), "--model", str(folder), "--out", str(out),
                "--clips-per-video", "2", "--device", "cpu", "-q"]) == 0
    r = load_features(out)
    assert r.paths == [str(media / "ten.mp4"), str(media / "long.mp4")]  # ten.mp4 once, with both its segments
    assert [s["label"] for s in r.segments] == ["jump", "fall", "run"]
    assert [s["id"] for s in r.segments] == ["a", "c", "b"]
    assert r.times.tolist() == [[1.0, 3.0], [6.5, 9.5], [0.0, 12.0]]
    # two clips per segment, centred in its halves, averaged
    rows = {json.loads(line)["path"]: json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()}
    starts = rows[str(media / "ten.mp4")]["clip_starts"]
    assert starts == [1.375, 2.375, 7.125, 8.625]  # 0.25-s clips centred at 1.5, 2.5 and 7.25, 8.75
    want = _by_hand(model, media / "ten.mp4", starts, rows[str(media / "ten.mp4")]["audio_starts"])
    torch.testing.assert_close(r.features["video"][:2], want["video"].reshape(2, 2, -1).mean(1), **TOL)
    assert cli(["export", str(out), "--to", str(tmp_path / "m.npz")]) == 0
    assert np.load(tmp_path / "m.npz")["labels"].tolist() == ["jump", "fall", "run"]


def test_a_file_that_fails_part_way_leaves_no_rows(small, media, tmp_path, monkeypatch):
    """A long file read in parts that turns out truncated after its first parts is an error as a whole: none of
    its rows are published, and the other files' are."""
    monkeypatch.setattr(pipeline, "CHUNK_CLIPS", 4)  # parts of 4 rows
    cut = tmp_path / "cut.mp4"
    data = (media / "long.mp4").read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    ex = FeatureExtractor(small[0], device="cpu", segments=1.0, progress=False, batch_size=4)
    r = ex.extract([cut, media / "ten.mp4"], tmp_path / "out")
    r = load_features(r)
    assert list(r.failed) == [str(cut)] and r.paths == [str(media / "ten.mp4")] and len(r.times) == 10
    joiner = PartJoiner()
    first = {"path": "x", "part": 0, "parts": 2, "last": False, "starts": [0.0], "times": [[0, 1]]}
    assert joiner.add(first, {"video": torch.ones(1, 2)}) is None
    joiner.fail({"path": "x"})
    assert joiner.add({**first, "part": 1, "last": True}, {"video": torch.ones(1, 2)}) is None
