"""The siblings' frame rules (io/frame_rules.py) against references written from their decoders' steps: GDT's
``datasets/decoder.py`` (selective decoding by header timestamps, or the whole stream) and VMZ's Caffe2 uniform test
sampling, which XDC points to. Each reference decodes with PyAV directly, as the originals did."""

from __future__ import annotations

import math
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

import avidzoo
from avidzoo.extract.dataset import ClipDataset
from avidzoo.io import MediaFile
from avidzoo.io.frame_rules import rule_clips

from media import make_video


def _linspace(lo, hi, num, length):
    return torch.clamp(torch.linspace(lo, hi, num), 0, length - 1).long().tolist()


def gdt_reference(path, k, n, num_frames=30, target_fps=30):
    """GDT's pyav_decode + pyav_decode_stream + temporal_sampling for test clip k of n: (pts, rgb frames, audio s)."""
    container = av.open(str(path))
    stream = container.streams.video[0]
    fps, frames_length, duration = float(stream.average_rate), stream.frames, stream.duration

    def start_end(size, clip_size, idx, num):
        start = int(max(size - clip_size, 0) * idx / num)
        return start, start + clip_size - 1

    if duration is None or not frames_length:  # GDT decodes everything (and, with frames_length 0, fails)
        frames = list(container.decode(video=0))
        lo, hi = start_end(len(frames), num_frames * 1 * fps / target_fps, k, n)
        audio_at = lo / fps
        picked = [frames[i] for i in _linspace(lo, hi, num_frames, len(frames))]
    else:
        lo, hi = start_end(frames_length, 1 * num_frames / target_fps * fps, k, n)
        audio_at = lo / fps
        tb = duration / frames_length
        start_pts, end_pts = int(lo * tb), int(hi * tb)
        container.seek(max(start_pts - 1024, 0), any_frame=False, backward=True, stream=stream)
        got, extra = {}, 0
        for frame in container.decode(video=0):
            if frame.pts < start_pts:
                continue
            got[frame.pts] = frame
            if frame.pts > end_pts:
                extra += 1
                if extra >= 0:
                    break
        window = [got[p] for p in sorted(got)]
        _, pick_hi = start_end(len(window), num_frames * 1 * fps / target_fps, 0, 1)
        picked = [window[i] for i in _linspace(0, pick_hi, num_frames, len(window))]
    out = [f.pts for f in picked], np.stack([f.to_rgb().to_ndarray() for f in picked]), audio_at
    container.close()
    return out


def vmz_reference(path, n, length=32):
    """VMZ's Caffe2 DO_UNIFORM_SMP: all frames (native rate), clip i at floor(i * float(N - L) / (n - 1))."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))[:10000]
        step = np.float32(0) if n <= 1 else np.float32(len(frames) - length) / np.float32(n - 1)
        clips = []
        for i in range(n):
            start = int(math.floor(np.float32(i) * step))
            picked = frames[start:start + length]
            scaled = [f.reformat(width=171, height=128, format="rgb24",
                                 interpolation=av.video.reformatter.Interpolation.FAST_BILINEAR).to_ndarray()
                      for f in picked]
            clips.append(([f.pts for f in picked], np.stack(scaled)))
        return clips


@pytest.fixture(scope="module")
def rule_media(tmp_path_factory):
    d = tmp_path_factory.mktemp("rules")
    return {
        # B-frames, a long GOP, 29.97 fps: timestamps that are not whole frames of 30
        "bframes.mp4": make_video(d / "bframes.mp4", fps=Fraction(30000, 1001), seconds=4, size=(96, 64), gop=48,
                                  bframes=2),
        "24fps.mp4": make_video(d / "24fps.mp4", fps=24, seconds=3.5, size=(96, 64)),
        # video starting 0.25 s late: GDT's window is in absolute timestamps, not from the stream's start
        "late.mp4": make_video(d / "late.mp4", fps=24, size=(96, 64), audio=False,
                               frame_times=[0.25 + i / 24 for i in range(84)]),
        "nodur.mkv": make_video(d / "nodur.mkv", fps=25, seconds=3, size=(96, 64)),  # declares no frames
        "short.mp4": make_video(d / "short.mp4", fps=30, seconds=0.6, size=(96, 64)),  # shorter than a clip
        # an edit list that starts 3 frames in: those frames' packets are read (and decoded as references) but
        # the decoder outputs none of them; the originals counted decoded frames
        "editlist.mp4": make_video(d / "editlist.mp4", fps=24, size=(96, 64), audio=False,
                                   frame_times=[(i - 3) / 24 for i in range(84)]),
    }


@pytest.mark.parametrize("name", ["bframes.mp4", "24fps.mp4", "late.mp4", "nodur.mkv", "short.mp4", "editlist.mp4"])
def test_gdt_rule_takes_gdts_frames(rule_media, name):
    path = rule_media[name]
    n = 4
    with MediaFile(path) as f:
        clips = rule_clips(f, "gdt", n, num_frames=30, fps=30)
        frames = f.read_frames([c.times for c in clips])
        tb = f.frame_table().time_base
    for k, (clip, got) in enumerate(zip(clips, frames)):
        pts, rgb, audio_at = gdt_reference(path, k, n)
        assert [round(t / tb) for t in clip.times] == pts, (name, k)
        assert torch.equal(got, torch.from_numpy(rgb)), (name, k)
        assert clip.audio_from == pytest.approx(audio_at, abs=1e-9)


@pytest.mark.parametrize("name", ["bframes.mp4", "24fps.mp4", "late.mp4", "nodur.mkv", "editlist.mp4"])
def test_vmz_rule_takes_vmzs_frames(rule_media, name):
    path = rule_media[name]
    with MediaFile(path) as f:
        clips = rule_clips(f, "vmz", 10, num_frames=32, fps=30)
        frames = f.read_frames([c.times for c in clips], short_side=(171, 128))
        tb = f.frame_table().time_base
    for (pts, rgb), clip, got in zip(vmz_reference(path, 10), clips, frames):
        assert [round(t / tb) for t in clip.times] == pts
        assert torch.equal(got, torch.from_numpy(rgb))


def test_vmz_rule_loops_a_short_stream(rule_media):
    with MediaFile(rule_media["short.mp4"]) as f:  # 18 frames, clips of 32: looped from the first frame
        (clip,) = rule_clips(f, "vmz", 1, num_frames=32, fps=30)
        pts = f.frame_table().pts
        tb = f.frame_table().time_base
    assert [round(t / tb) for t in clip.times] == [pts[j % 18] for j in range(32)]


def test_sibling_weights_extract_by_their_rule(rule_media):
    """Extraction's dataset gives GDT's and XDC's weights their own clips, frames, resize and crop, with no option."""
    path = rule_media["bframes.mp4"]
    gdt = avidzoo.create_transforms("gdt_r2plus1d")
    item = ClipDataset([path], gdt, ["video", "audio"], 3)[0]
    assert item["placement"] == "gdt"
    for k in range(3):
        pts, rgb, audio_at = gdt_reference(path, k, 3)
        torch.testing.assert_close(item["video"][k], gdt.video(torch.from_numpy(rgb)), rtol=0, atol=0)
        assert item.get("audio_starts", item["starts"])[k] == pytest.approx(audio_at, abs=1e-6)  # audio starts at 0
    xdc = avidzoo.create_transforms("xdc_r2plus1d")
    assert xdc.video.decoder_scale == (171, 128) and xdc.video.crop_rounding == "floor"
    item = ClipDataset([path], xdc, ["video"], 10)[0]
    assert item["placement"] == "vmz"
    for k, (_, rgb) in enumerate(vmz_reference(path, 10)):
        crop = torch.from_numpy(rgb)[:, 8:120, 29:141]  # (128 - 112) // 2, (171 - 112) // 2
        torch.testing.assert_close(item["video"][k], xdc.video.normalize(crop[None])[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="frame rule"):
        ClipDataset([path], xdc, ["video"], 2, "keyframe")


def test_gdt_audio_moves_back_to_end_with_the_stream(tmp_path):
    """GDT's get_spec: an audio clip that would run past the audio's end is moved back to end with it."""
    path = make_video(tmp_path / "short_audio.mp4", fps=24, video_seconds=4, audio_seconds=2, size=(96, 64))
    gdt = avidzoo.create_transforms("gdt_r2plus1d")
    item = ClipDataset([path], gdt, ["video", "audio"], 4)[0]
    with MediaFile(path) as f:
        lo, hi = f.info.span("audio")
    # clip k of 4 starts at frame int((96 - 24) * k / 4): 0, 18, 36, 54 -> 0, 0.75, 1.5, 2.25 s; 1 s of audio each
    expected = [min(lo + t, hi - 1.0) for t in (0.0, 0.75, 1.5, 2.25)]
    assert item["audio_starts"] == pytest.approx(expected, abs=1e-6)
    assert expected[2] < 1.5 and expected[2] == expected[3]


def test_datasets_test_clips_follow_the_rule(rule_media):
    """Finetuning's evaluation clips (LabelledClips, train=False) take XDC's frames by VMZ's rule on whole files."""
    from avidzoo.datasets import LabelledClips, LabelledMedia

    path = rule_media["24fps.mp4"]
    video = avidzoo.create_transforms("xdc_r2plus1d").video
    data = LabelledMedia([path], [0], ["a"])
    clips, label, i = LabelledClips(data, video, train=False, test_clips=3)[0]
    assert clips.shape == (4, 3, 32, 112, 112) and label == 0
    for k, (_, rgb) in enumerate(vmz_reference(path, 3)):  # clip 0 is the seeded random one, for Clip@1
        torch.testing.assert_close(clips[1 + k], video(torch.from_numpy(rgb)), rtol=0, atol=0)


def test_cli_extracts_gdt_weights_by_their_rule(rule_media, tmp_path):
    """`avidzoo extract` with GDT's preset (a saved random-weight model): the index says the placement;
    --sampling keyframe is refused before any work (exit 2)."""
    import json

    from avidzoo.cli import main

    model = avidzoo.create_model("gdt_r2plus1d", pretrained=False)
    model.save_pretrained(tmp_path / "gdt")
    path = rule_media["24fps.mp4"]
    args = ["extract", str(path), "--model", str(tmp_path / "gdt"), "-q"]
    assert main(args + ["--out", str(tmp_path / "k"), "--sampling", "keyframe"]) == 2
    assert main(args + ["--out", str(tmp_path / "o"), "--clips-per-video", "2"]) == 0
    row = json.loads((tmp_path / "o" / "index.jsonl").read_text().splitlines()[0])
    assert row["placement"] == "gdt" and row["status"] == "ok"
    with MediaFile(path) as f:
        assert row["clip_starts"] == [round(c.times[0], 6) for c in rule_clips(f, "gdt", 2, num_frames=30, fps=30)]
