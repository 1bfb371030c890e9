"""No real file lost: streams of different lengths both ways, late-starting audio, one-modality files in both
directions, several codecs and containers, rotation and a non-ASCII name. Every such file gives features for every
clip at any clip count, clips lie where the rule puts them (computed here from PyAV's stream fields, not avidzoo's),
coverage says how much of each clip is real, and a missing modality is marked, never filled with silence."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest
import torch

import avidzoo
from avidzoo.cli import main as cli
from avidzoo.io import MediaFile

from media import make_video

VIDEO_CLIP, AUDIO_CLIP = 0.25, 0.64  # the small model's clip lengths (conftest.small_model)
SMALL = (64, 48)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """A folder of phone clips and web videos as users have them, each a few seconds long."""
    d = tmp_path_factory.mktemp("corpus")
    files = {
        # trailer-like: one stream ends 3 s before the other
        "audio_ends_early.mp4": dict(video_seconds=5, audio_seconds=2),
        "video_ends_early.mp4": dict(video_seconds=2, audio_seconds=5),
        "mp3_ends_early.mp4": dict(video_seconds=4.5, audio_seconds=1.5, acodec="libmp3lame"),
        "video_ends_early.webm": dict(video_seconds=1.5, audio_seconds=4.5, vcodec="libvpx-vp9", acodec="libopus",
                                      audio_rate=48000),
        "audio_starts_late.mkv": dict(seconds=4, audio_offset=1.0, audio_seconds=3.0, vcodec="libx265",
                                      acodec="libopus", audio_rate=48000),
        "hevc10.mkv": dict(seconds=2, vcodec="libx265", pix_fmt="yuv420p10le", size=(66, 50)),
        "ffv1_surround.mkv": dict(seconds=2, vcodec="ffv1", acodec="flac", channels=8, audio_rate=96000),
        "mpeg2.ts": dict(seconds=2.5, vcodec="mpeg2video", acodec="mp2", audio_rate=48000),
        "mjpeg_pcm_ends_early.avi": dict(video_seconds=3, audio_seconds=1.5, vcodec="mjpeg", acodec="pcm_s16le",
                                         pix_fmt="yuvj420p"),
        "phone_rotated.mov": dict(seconds=2, rotation=90, size=(64, 36)),
        "vidéo ünïcode.mp4": dict(seconds=2),
        "tiny.mp4": dict(seconds=0.3),
        "silent.webm": dict(seconds=2, audio=False, vcodec="libvpx-vp9"),
        "voice.m4a": dict(seconds=2.5, video=False),
        "phone_8k.wav": dict(seconds=1.5, video=False, acodec="pcm_s16le", audio_rate=8000),
    }
    out = {}
    for name, kw in files.items():
        kw = {"fps": 25, "size": SMALL, "tone_start": 0.0, **kw}
        out[name] = make_video(d / name, **kw)
    (d / "broken.mp4").write_bytes(b"not a video at all" * 64)
    out["broken.mp4"] = d / "broken.mp4"
    return out


def stream_span(path: Path, kind: str) -> tuple[float, float] | None:
    """A stream's (start, end) from PyAV's own fields: start_time and duration, or Matroska's DURATION tag (the end
    time of its last packet), or the end of its last packet (PCM in AVI declares none)."""
    with av.open(str(path)) as c:
        streams = c.streams.video if kind == "video" else c.streams.audio
        if not streams:
            return None
        s = streams[0]
        start = float(s.start_time * s.time_base) if s.start_time is not None else 0.0
        if s.duration is not None:
            return start, start + float(s.duration * s.time_base)
        if "DURATION" in s.metadata:
            h, m, sec = s.metadata["DURATION"].split(":")
            return start, int(h) * 3600 + int(m) * 60 + float(sec)
        end = max(float((p.pts + p.duration) * s.time_base) for p in c.demux(s) if p.pts is not None)
        return start, end


def expected(path: Path, n: int) -> tuple[list[float], dict[str, list[float]]]:
    """Clip starts and per-clip coverage by the rule: both streams' overlap (later start to the earlier end minus
    that stream's clip), else the video's span; each clip's coverage is its fraction inside each stream."""
    clip = {"video": VIDEO_CLIP, "audio": AUDIO_CLIP}
    spans = {k: s for k in ("video", "audio") if (s := stream_span(path, k)) is not None}
    first = max(lo for lo, _ in spans.values())
    last = min(hi - clip[k] for k, (_, hi) in spans.items())
    if last < first and len(spans) == 2:
        first, last = spans["video"][0], spans["video"][1] - VIDEO_CLIP
    last = max(last, first)
    starts = [first + (last - first) * i / (n - 1) for i in range(n)] if n > 1 else [first]
    cover = {k: [max(min((min(s + clip[k], hi) - max(s, lo)) / clip[k], 1.0), 0.0) for s in starts]
             for k, (lo, hi) in spans.items()}
    return starts, cover


@pytest.mark.parametrize("n", [1, 2, 3, 10])
def test_every_file_gives_features_for_every_clip(small_model, corpus, n):
    result = avidzoo.extract_features(small_model, list(corpus.values()), clips_per_video=n, clip_agg="none",
                                      num_workers=0, progress=False)
    assert list(result.failed) == [str(corpus["broken.mp4"])] and "NotMediaError" in result.failed[
        str(corpus["broken.mp4"])]
    assert sorted(Path(p).name for p in result.paths) == sorted(set(corpus) - {"broken.mp4"})
    for i, p in enumerate(result.paths):
        path = Path(p)
        for m in ("video", "audio"):
            has = stream_span(path, m) is not None
            assert bool(result.present[m][i]) == has, (path.name, m)
            feats = result[m][i]
            assert feats.shape == (n, 512)
            # the modality that is there gets features for every clip; the missing one is NaN, never silence
            assert bool(torch.isfinite(feats).all()) if has else bool(feats.isnan().all()), (path.name, m)
        starts, cover = expected(path, n)
        assert result.clip_starts[i] == pytest.approx(starts, abs=2e-3), path.name
        for m, c in cover.items():
            # the decoded data may end up to an audio frame (26 ms for MP3) before the declared end: encoder padding
            assert result.coverage[i][m] == pytest.approx(c, abs=0.045), (path.name, m)
    assert [Path(p).name for p in result.no_audio] == ["silent.webm"]


def test_trailer_clips_are_the_clips_read_at_their_starts(small_model, corpus):
    """For streams ending 3 s apart (both ways) and audio starting late, each clip's features are those of the clip
    read at its start by hand; every clip lies inside both streams (coverage 1)."""
    fx = avidzoo.FeatureExtractor(small_model, clips_per_video=2, clip_agg="none", num_workers=0)
    names = ["audio_ends_early.mp4", "video_ends_early.mp4", "audio_starts_late.mkv", "mjpeg_pcm_ends_early.avi"]
    result = fx.extract([corpus[k] for k in names])
    assert not result.failed
    t = fx.transforms
    for i, name in enumerate(names):
        starts, cover = expected(corpus[name], 2)
        assert all(c == pytest.approx(1.0) for cs in cover.values() for c in cs)
        with MediaFile(corpus[name]) as f:
            v = t.video(torch.stack(f.read_video(starts, num_frames=4, fps=16, short_side=36)))
            a = t.audio(torch.stack(f.read_audio(starts, AUDIO_CLIP)))
        ref = fx.encode(video=v, audio=a)
        torch.testing.assert_close(result["video"][i], ref["video"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(result["audio"][i], ref["audio"], rtol=1e-5, atol=1e-5)


def test_streams_that_overlap_by_less_than_a_clip(small_model, tmp_path):
    """Audio of 0.2 s under 3 s of video: the clips span the video (the released evaluation's rule), the audio is
    zero-padded, and the index says how little of each clip is real."""
    path = make_video(tmp_path / "blip.mp4", fps=25, size=SMALL, video_seconds=3, audio_seconds=0.2)
    out = tmp_path / "feats"
    assert cli(["extract", str(path), "--model", str(small_model), "--out", str(out), "--clips-per-video", "3",
                "-q"]) == 0
    row = json.loads((out / "index.jsonl").read_text())
    assert row["placement"] == "video" and row["status"] == "ok"
    starts, cover = expected(path, 3)
    assert row["clip_starts"] == pytest.approx(starts, abs=2e-3) and starts[-1] == pytest.approx(3 - VIDEO_CLIP)
    assert row["coverage"]["video"] == [1.0, 1.0, 1.0]
    assert row["coverage"]["audio"] == pytest.approx(cover["audio"], abs=2e-3) and row["coverage"]["audio"][-1] == 0
    assert row["coverage"]["audio"][0] == pytest.approx(0.2 / AUDIO_CLIP, abs=0.03)


def test_one_modality_files_alike_in_both_directions(small_model, corpus, tmp_path):
    """A video-only and an audio-only file given to an audio-visual model: each gets the features of the stream it
    has, the other marked missing, in memory, on disk, in the index and in both export formats."""
    files = [corpus["silent.webm"], corpus["voice.m4a"], corpus["vidéo ünïcode.mp4"]]
    out = tmp_path / "feats"
    assert cli(["extract", *map(str, files), "--model", str(small_model), "--out", str(out), "--clips-per-video",
                "2", "-q"]) == 0
    got = avidzoo.load_features(out)
    assert [Path(p).name for p in got.paths] == [p.name for p in files]
    assert got.present["video"].tolist() == [True, False, True] and got.present["audio"].tolist() == [False, True, True]
    assert got["audio"][0].isnan().all() and got["video"][1].isnan().all()
    assert torch.isfinite(got["video"][0]).all() and torch.isfinite(got["audio"][1]).all()
    rows = {Path(r["path"]).name: r for r in map(json.loads, (out / "index.jsonl").read_text().splitlines())}
    assert rows["silent.webm"]["missing"] == ["audio"] and rows["voice.m4a"]["missing"] == ["video"]
    assert "missing" not in rows["vidéo ünïcode.mp4"]
    # the audio-only file's features are its own audio's, as if extracted with the audio tower alone
    alone = avidzoo.extract_features(small_model, corpus["voice.m4a"], modalities="audio", clips_per_video=2,
                                     num_workers=0, progress=False)
    torch.testing.assert_close(got["audio"][1], alone["audio"][0], rtol=1e-5, atol=1e-5)
    assert cli(["export", str(out), "--to", str(tmp_path / "f.npz")]) == 0
    with __import__("numpy").load(tmp_path / "f.npz") as z:
        assert z["has_video"].tolist() == [True, False, True] and z["has_audio"].tolist() == [False, True, True]
        assert z["audio_coverage"].shape == (3, 2) and z["audio_coverage"][0].tolist() == [0.0, 0.0]
    pq = pytest.importorskip("pyarrow.parquet", reason='Parquet export needs pyarrow: pip install "avidzoo[parquet]"')
    assert cli(["export", str(out), "--to", str(tmp_path / "f.parquet")]) == 0
    table = pq.read_table(tmp_path / "f.parquet").to_pylist()
    assert [r["has_audio"] for r in table] == [False, True, True] and [r["has_video"] for r in table] == [True,
                                                                                                          False, True]
    assert table[0]["audio"] is None and table[1]["video"] is None and len(table[2]["video"]) == 512


def test_a_file_without_any_requested_stream_is_recorded(small_model, corpus):
    result = avidzoo.extract_features(small_model, [corpus["silent.webm"], corpus["voice.m4a"]], modalities="audio",
                                      clips_per_video=2, num_workers=0, progress=False)
    assert [Path(p).name for p in result.paths] == ["voice.m4a"]
    assert result.failed == {str(corpus["silent.webm"]): "MissingStreamError: has no audio stream"}


def test_keyframe_sampling_gives_distinct_starts_where_the_file_has_room(small_model, tmp_path):
    """Keyframes at 0 and 2 s in a 2.64-s file whose last start is 2.0 s: the second clip starts at the second
    keyframe (half a frame in), not at the first again; with more clips than keyframes the index says so."""
    path = make_video(tmp_path / "kf.mp4", fps=30, seconds=2.64, size=SMALL, gop=60)
    with MediaFile(path) as f:
        assert f.keyframe_times() == pytest.approx([0.0, 2.0], abs=1e-6)
    half = 0.5 / 30
    for n, starts, distinct in ((2, [half, 2 + half], None), (4, [half, half, 2 + half, 2 + half], 2)):
        out = tmp_path / f"kf{n}"
        assert cli(["extract", str(path), "--model", str(small_model), "--out", str(out), "--clips-per-video",
                    str(n), "--sampling", "keyframe", "-q"]) == 0
        row = json.loads((out / "index.jsonl").read_text())
        assert row["clip_starts"] == pytest.approx(starts, abs=1e-6)
        assert row.get("distinct_starts") == distinct
