"""Decoding real H.264/AAC files: frame selection, padding, alignment, down-mixing, bad input."""

from __future__ import annotations

import contextlib
import math
import os
import random

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import avidzoo
from avidzoo.errors import (
    CorruptMediaError,
    DecodeError,
    EmptyMediaError,
    MediaNotFoundError,
    MissingStreamError,
    NotMediaError,
    RotationError,
    VariableFrameRateError,
)
from avidzoo.io import MediaFile, probe, random_start, read_audio_clip, read_video_clip, sliding_starts, uniform_starts

from media import frame_index, make_video


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    return {
        30: make_video(d / "v30.mp4", fps=30, seconds=3, tone_start=1.0),
        25: make_video(d / "v25.mp4", fps=25, seconds=3, audio=False),
        12: make_video(d / "v12.mp4", fps=12, seconds=3, audio=False),
    }


def original_indices(start: float, native_fps: float, n: int, num_frames: int = 8, fps: float = 16) -> list[int]:
    """The original rule: frame floor((start + k/fps) * native_fps); past the end, loop from the clip start."""
    idx = [math.floor((start + k / fps) * native_fps + 1e-9) for k in range(num_frames)]
    have = [i for i in idx if i < n]
    while len(have) < num_frames:
        have += have[: num_frames - len(have)]
    return have


@pytest.mark.parametrize("native", [30, 25, 12])
def test_frame_selection_follows_the_original_rule(videos, native):
    starts = [0.0, 0.37, 1.0, 2.5, 2.9]
    with MediaFile(videos[native]) as f:
        assert f.info.fps == native and f.info.num_frames == 3 * native
        clips = f.read_video(starts, num_frames=8, fps=16)
    for s, clip in zip(starts, clips):
        assert clip.shape == (8, 120, 160, 3) and clip.dtype == torch.uint8
        assert [frame_index(fr.numpy()) for fr in clip] == original_indices(s, native, 3 * native), s
    if native == 12:  # below 16 fps frames repeat
        assert [frame_index(fr.numpy()) for fr in clips[0]] == [0, 0, 1, 2, 3, 3, 4, 5]


def test_clips_read_together_equal_clips_read_alone(videos):
    starts = [2.0, 0.0, 1.1, 0.4]
    with MediaFile(videos[30]) as f:
        together = f.read_video(starts, num_frames=8)
        alone = [f.read_video([s], num_frames=8)[0] for s in starts]
    for a, b in zip(together, alone):
        assert torch.equal(a, b)
    assert torch.equal(read_video_clip(videos[30], 1.1), alone[2])


def test_thirty_two_frame_clips_and_other_rates(videos):
    clip = read_video_clip(videos[25], 0.5, num_frames=32, fps=16)
    assert [frame_index(f.numpy()) for f in clip] == original_indices(0.5, 25, 75, num_frames=32)
    clip = read_video_clip(videos[30], 0.0, num_frames=4, fps=30)  # native rate: every frame once
    assert [frame_index(f.numpy()) for f in clip] == [0, 1, 2, 3]
    with MediaFile(videos[30]) as f:  # (start, duration) instead of a frame count
        assert torch.equal(f.read_video([1.0], duration=2.0)[0], f.read_video([1.0], num_frames=32)[0])


def test_short_video_is_padded_by_looping(tmp_path):
    path = make_video(tmp_path / "short.mp4", fps=30, seconds=0.2, audio=False)  # 6 frames, 0.2 s
    clip = read_video_clip(path, 0.0, num_frames=8, fps=16)
    # targets 0, 1/16, 2/16, 3/16 fall inside (frames 0, 1, 3, 5); the rest loop from the clip start
    assert [frame_index(f.numpy()) for f in clip] == [0, 1, 3, 5, 0, 1, 3, 5]
    with pytest.raises(DecodeError, match="starts after the video ends"):
        read_video_clip(path, 5.0)


def test_decoder_scaling_matches_full_resolution_resize(tmp_path):
    path = make_video(tmp_path / "tex.mp4", fps=30, seconds=1, size=(640, 360), pattern="texture", crf=18,
                      audio=False)
    with MediaFile(path) as f:
        full = f.read_video([0.2], num_frames=4)[0]
        small = f.read_video([0.2], num_frames=4, short_side=128)[0]
    assert small.shape == (4, 128, 227, 3)
    ref = F.interpolate(full.permute(0, 3, 1, 2).float(), size=(128, 227), mode="bilinear", antialias=True)
    diff = (small.permute(0, 3, 1, 2).float() - ref).abs()
    assert float(diff.mean()) < 1.0, float(diff.mean())  # swscale's bilinear vs torch's antialiased bilinear


def test_metadata(videos, tmp_path):
    info = probe(videos[30])
    assert (info.has_video, info.has_audio, info.width, info.height, info.fps) == (True, True, 160, 120, 30.0)
    assert info.sample_rate == 44100 and info.channels == 1 and info.rotation == 0
    assert abs(info.duration - 3.0) < 0.1 and not info.variable_frame_rate
    assert not probe(videos[25]).has_audio


def spectrogram(wave: torch.Tensor) -> torch.Tensor:
    return avidzoo.create_transforms("cross_avid_r2plus1d").audio(wave)[0]  # (200, 257)


def onset_frame(spec: torch.Tensor, bin_: int) -> int:
    level = spec[:, bin_]
    threshold = (level.max() + level.min()) / 2
    return int(torch.nonzero(level > threshold)[0])


def test_audio_is_24k_mono_and_aligned_with_the_tone(videos):
    # The tone (1 kHz: STFT bin 42.7, pooled bin 21 or 22) starts at 1.0 s.
    with MediaFile(videos[30]) as f:
        a0, a05 = f.read_audio([0.0, 0.5], 2.0)
        assert a0.shape == (1, 48000) and a0.dtype == torch.float32
        assert float(a0[:, :20000].abs().max()) < 0.02 and 0.4 < float(a0[:, 30000:].abs().max()) <= 1.0
    spec0, spec05 = spectrogram(a0), spectrogram(a05)
    bin_ = int(spec0[150].argmax())
    assert bin_ in (21, 22)
    # 100 spectrogram frames per second; AAC delay and the STFT window allow a few frames of slack.
    assert abs(onset_frame(spec0, bin_) - 100) <= 4
    assert abs(onset_frame(spec05, bin_) - 50) <= 4
    # The same samples, whichever clip they are read from (the AAC frame grid does not move them).
    torch.testing.assert_close(a0[:, 12000:36000], a05[:, :24000], atol=1e-4, rtol=0)


def test_audio_clips_far_apart_are_read_in_separate_runs(tmp_path):
    """Exact savings read audio clips more than a second apart with a seek between them, not the whole span: a clip
    that starts a run is exactly the clip read alone (as the original read each clip); the samples of the plain
    decoder's one joint run differ only by the resampler's phase (under a sample), and their spectrograms agree."""
    path = make_video(tmp_path / "long.mp4", seconds=20, size=(64, 48), tone_start=0.0, tone_freq=440.0,
                      channels=2, audio_rate=44100)
    starts = [0.5, 2.6, 9.0, 16.25]  # runs: (0.5, 2.6), (9.0,), (16.25,)
    with MediaFile(path) as f:
        together = f.read_audio(starts, 2.0)
    with MediaFile(path, exact_savings=False) as f:
        joint = f.read_audio(starts, 2.0)
    spectrogram = avidzoo.create_transforms("cross_avid_r2plus1d").audio
    # a phase shift of under one 24-kHz sample moves a 440-Hz tone of amplitude 0.5 by < 2 pi 440 0.5 / 24000
    bound = 2 * math.pi * 440 * 0.5 / 24000
    for k, (s, clip, whole) in enumerate(zip(starts, together, joint)):
        with MediaFile(path) as f:
            alone = f.read_audio([s], 2.0)[0]
        assert clip.shape == alone.shape == whole.shape == (1, 48000)
        assert float(clip.abs().max()) > 0.2  # the tone is there
        if k != 1:  # first of its run
            assert torch.equal(clip, alone)
        for other in (alone, whole):
            assert float((clip - other).abs().max()) < bound
            assert float((spectrogram(clip) - spectrogram(other)).abs().mean()) < 0.02
    assert not torch.equal(together[2], joint[2])  # the runs are really separate


def test_audio_past_the_end_is_zero_padded(videos):
    clip = read_audio_clip(videos[30], 2.0, 2.0)
    assert clip.shape == (1, 48000)
    assert float(clip[:, :20000].abs().max()) > 0.3
    # 1 s of audio remains (AAC may add up to 1024 samples of padding at 44.1 kHz, about 560 at 24 kHz)
    assert float(clip[:, 24000 + 600:].abs().max()) == 0.0


def test_multichannel_audio_is_downmixed_symmetrically(tmp_path):
    left = make_video(tmp_path / "l.mp4", channels=2, tone_channels=(0,), video=False, seconds=1)
    right = make_video(tmp_path / "r.mp4", channels=2, tone_channels=(1,), video=False, seconds=1)
    both = make_video(tmp_path / "b.mp4", channels=2, tone_channels=(0, 1), video=False, seconds=1)
    surround = make_video(tmp_path / "s.mp4", channels=6, tone_channels=(0, 1), video=False, seconds=1)
    a_l, a_r, a_b = (read_audio_clip(p, 0, 1.0) for p in (left, right, both))
    torch.testing.assert_close(a_l, a_r, atol=1.5e-2, rtol=0)  # AAC codes each channel with its own noise
    # a linear mix (after the first AAC frame, whose pre-echo differs between encodes)
    torch.testing.assert_close(a_b[:, 1024:], (a_l + a_r)[:, 1024:], atol=3e-2, rtol=0)
    a_s = read_audio_clip(surround, 0, 1.0)
    assert a_s.shape == (1, 24000) and float(a_s.abs().max()) > 0.1


def test_files_without_one_of_the_streams(videos, tmp_path):
    silent = videos[25]
    assert torch.count_nonzero(read_audio_clip(silent, 0, 2.0)) == 0
    with pytest.raises(MissingStreamError, match="v25.mp4: has no audio stream"):
        read_audio_clip(silent, 0, 2.0, missing="error")
    audio_only = make_video(tmp_path / "a.m4a", video=False, seconds=1)
    with pytest.raises(MissingStreamError, match="a.m4a: has no video stream"):
        read_video_clip(audio_only)


def test_bad_files_get_specific_errors(videos, tmp_path):
    with pytest.raises(MediaNotFoundError, match="nope.mp4: no such file"):
        MediaFile(tmp_path / "nope.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(NotMediaError, match="empty.mp4: the file is empty"):
        MediaFile(tmp_path / "empty.mp4")
    (tmp_path / "notes.txt").write_text("hello, I am not a video\n" * 50)
    with pytest.raises(NotMediaError, match="notes.txt: not a media file"):
        MediaFile(tmp_path / "notes.txt")
    (tmp_path / "noise.mp4").write_bytes(random.Random(0).randbytes(50_000))
    with pytest.raises(NotMediaError, match="noise.mp4"):
        MediaFile(tmp_path / "noise.mp4")


def test_truncated_files(tmp_path):
    # moov at the end (no faststart): cut-off files cannot even be opened.
    late = make_video(tmp_path / "late.mp4", fps=30, seconds=3, faststart=False)
    cut = tmp_path / "late_cut.mp4"
    cut.write_bytes(late.read_bytes()[: late.stat().st_size // 2])
    with pytest.raises(CorruptMediaError, match="late_cut.mp4: cannot be opened, the file is damaged or truncated"):
        MediaFile(cut)
    # moov first: the header promises 3 s, the data stops early.
    early = make_video(tmp_path / "early.mp4", fps=30, seconds=3, size=(320, 240), pattern="texture", gop=10)
    cut = tmp_path / "early_cut.mp4"
    cut.write_bytes(early.read_bytes()[: early.stat().st_size // 3])
    with MediaFile(cut) as f:
        assert f.read_video([0.0])[0].shape == (8, 240, 320, 3)  # the start is still there
        # decoding restarts at the last keyframe the damaged file still has, and runs into its end
        with pytest.raises(CorruptMediaError, match=r"early_cut.mp4: video stops at 0\.\d+ s .* truncated or corrupt "
                                                    r"before the clip at 2.50 s"):
            f.read_video([2.5])
        with pytest.raises(CorruptMediaError, match="early_cut.mp4: video stops at .* truncated"):
            f.read_video([0.5])  # straddles the end of the surviving data


def test_corrupt_bytes_mid_stream_never_escape_as_other_errors(tmp_path):
    path = make_video(tmp_path / "c.mp4", fps=30, seconds=2, size=(320, 240), pattern="texture")
    data = bytearray(path.read_bytes())
    rng = random.Random(1)
    for _ in range(40):
        i = rng.randrange(len(data) // 3, len(data))
        data[i:i + 64] = rng.randbytes(64)
    path.write_bytes(bytes(data))
    try:
        with MediaFile(path) as f:
            clips = f.read_video(uniform_starts(f.info.duration, 0.5, 4))
            audio = f.read_audio([0.0, 1.0], 1.0)
        assert all(c.shape == (8, 240, 320, 3) for c in clips) and all(a.shape == (1, 24000) for a in audio)
    except DecodeError as e:
        assert "c.mp4" in str(e)


def test_zero_length_video(tmp_path):
    path = make_video(tmp_path / "zero.mkv", frame_times=[], seconds=0.5)  # a video stream with no frames
    with MediaFile(path) as f:
        assert f.info.has_video
        with pytest.raises(EmptyMediaError, match="zero.mkv: the video stream has no decodable frames"):
            f.read_video([0.0])


def test_rotation_metadata(tmp_path):
    path = make_video(tmp_path / "rot.mp4", fps=30, seconds=0.5, size=(160, 96), rotation=90, audio=False)
    with MediaFile(path) as f:
        assert f.info.rotation == 90
        upright = f.read_video([0.0], num_frames=2)[0]
    assert upright.shape == (2, 160, 96, 3)  # displayed portrait
    stored = read_video_clip(path, num_frames=2, rotation="ignore")
    assert stored.shape == (2, 96, 160, 3)
    assert torch.equal(upright, torch.rot90(stored, 1, dims=(1, 2)))
    with pytest.raises(RotationError, match="rot.mp4: the video is rotated by 90 degrees"):
        read_video_clip(path, rotation="error")


def original_rule(times: list[float], targets: list[float], rate: float) -> list[int]:
    """The original AVID code's pick, from the facts: target number int((t - start) * rate), then the first frame
    whose absolute number time * rate reaches it."""
    start = times[0]
    return [min(i for i, ft in enumerate(times) if ft * rate >= int((x - start) * rate) - 1e-9) for x in targets]


def test_variable_frame_rate(tmp_path):
    times = [0.0, 0.05, 0.1, 0.3, 0.32, 0.34, 0.5, 0.7, 0.75, 0.9, 1.0, 1.1]
    path = make_video(tmp_path / "vfr.mp4", frame_times=times, audio=False)
    clip = read_video_clip(path, 0.0, num_frames=8, fps=16, frame_times="timestamps")
    targets = [k / 16 for k in range(8)]
    expected = [max(i for i, t in enumerate(times) if t <= x + 1e-6) for x in targets]  # the frame on screen
    assert [frame_index(f.numpy()) for f in clip] == expected
    with MediaFile(path) as f:  # the original rule counts frames at the stream's average rate
        rate = f.info.fps  # the stream's average rate
        picked = [frame_index(x.numpy()) for x in f.read_video([0.0], num_frames=8, fps=16)[0]]
    assert picked == original_rule(times, targets, rate)
    with pytest.raises(VariableFrameRateError, match="vfr.mp4: frame intervals vary"):
        read_video_clip(path, on_vfr="error")


@pytest.mark.parametrize("rule", ["original", "timestamps"])
def test_a_stream_that_starts_late(tmp_path, rule):
    """H.264 in MP4 often starts two frames in (B-frame delay). The original lags by that start and repeats the
    first frame; the timestamp rule takes the frame on screen. On a stream starting at 0 both are the same."""
    times = [2 / 24 + i / 24 for i in range(48)]
    late = make_video(tmp_path / "late.mp4", fps=24, frame_times=times, audio=False)
    zero = make_video(tmp_path / "zero.mp4", fps=24, seconds=2, audio=False)
    starts, targets = [0.0, 0.9], [[s + k / 16 for k in range(8)] for s in (0.0, 0.9)]
    with MediaFile(late, frame_times=rule) as f:
        assert f.info.video_start == pytest.approx(2 / 24, abs=1e-3)
        ms = [round(t, 3) for t in times]  # the file's millisecond timestamps
        rate = f.info.fps  # the stream's average rate
        got = [[frame_index(x.numpy()) for x in clip] for clip in f.read_video(starts, num_frames=8, fps=16)]
    if rule == "original":
        assert got == [original_rule(ms, t, rate) for t in targets]
        assert got[0][:3] == [0, 0, 0]  # the lag: the first frame repeats
    else:
        assert got == [[max(i for i, ft in enumerate(ms) if ft <= x + 1e-6) if x >= ms[0] else 0 for x in t]
                       for t in targets]
    with MediaFile(zero, frame_times="original") as a, MediaFile(zero, frame_times="timestamps") as b:
        assert all(torch.equal(x, y) for x, y in zip(a.read_video(starts), b.read_video(starts)))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


def test_no_file_handles_leak_on_any_path(videos, tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"\0" * 1000)
    before = open_fds()
    for _ in range(20):
        for call in (lambda: read_video_clip(videos[30], 9.0), lambda: MediaFile(tmp_path / "bad.mp4"),
                     lambda: read_audio_clip(videos[25], missing="error"), lambda: probe(videos[12])):
            with contextlib.suppress(DecodeError):
                call()
    assert open_fds() <= before + 2


def test_samplers():
    assert uniform_starts(10.0, 0.5, 10) == pytest.approx(list(np.linspace(0, 9.5, 10)))
    assert uniform_starts(0.3, 0.5, 3) == [0.0, 0.0, 0.0] and uniform_starts(5, 1, 1) == [0.0]
    assert sliding_starts(10.0, 2.0) == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert sliding_starts(9.0, 2.0, 3.0) == [0.0, 3.0, 6.0, 7.0]  # the last window ends at the end
    rng = random.Random(0)
    draws = [random_start(10.0, 2.0, rng) for _ in range(1000)]
    assert 0 <= min(draws) < 0.1 and 7.9 < max(draws) <= 8.0


def test_pipeline_matches_the_original_pil_path(tmp_path):
    """Decode at short side 256 + eval transform == PIL decode/resize/crop/normalise of the same frames: the resized
    frames within one grey level of PIL's, nearly all equal (measured 99.7%)."""
    from PIL import Image

    path = make_video(tmp_path / "hd.mp4", fps=30, seconds=1, size=(640, 360), pattern="texture", crf=18,
                      audio=False)
    t = avidzoo.create_transforms("cross_avid_r2plus1d").video
    with MediaFile(path) as f:
        small = f.read_video([0.25], short_side=256)[0]
        frames = f.read_video([0.25])[0]  # full resolution, same frame selection
    ours = t(small)
    pil = np.stack([np.asarray(Image.fromarray(fr).resize((455, 256), Image.BILINEAR)) for fr in frames.numpy()])
    d = np.abs(small.numpy().astype(np.int16) - pil)
    assert d.max() <= 1 and (d == 0).mean() > 0.99, (d.max(), (d == 0).mean())
    mean, std = np.array(t.mean)[:, None, None], np.array(t.std)[:, None, None]
    ref = []
    for fr in frames.numpy():
        img = Image.fromarray(fr).resize((455, 256), Image.BILINEAR)  # PIL's bilinear, as the original
        left, top = int(round((455 - 224) / 2.0)), int(round((256 - 224) / 2.0))
        arr = np.asarray(img.crop((left, top, left + 224, top + 224)), np.float32).transpose(2, 0, 1) / 255
        ref.append((arr - mean) / std)
    ref = torch.from_numpy(np.stack(ref, axis=1)).float()
    assert ours.shape == ref.shape == (3, 8, 224, 224)
    assert float((ours - ref).abs().mean()) < 0.001  # normalised units: a twentieth of a grey level


def all_frames(path) -> tuple[list[float], list[np.ndarray], float]:
    """Every frame of the video, decoded with nothing skipped: (times, RGB arrays, average rate)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [(f.time, f.to_ndarray(format="rgb24")) for f in c.decode(s)]
        return [t for t, _ in frames], [a for _, a in frames], float(s.average_rate)


@pytest.mark.parametrize("kind", ["long_gop_bframes", "short_gop", "late_start", "index"])
def test_exact_savings_give_the_same_frames_as_decoding_everything(tmp_path, kind):
    """Skipping non-reference frames outside the clips and seeking by keyframes must not change one bit of the
    frames a clip takes, under either frame rule."""
    if kind == "long_gop_bframes":  # a keyframe every 5 s, 3 B-frames: most frames are never needed
        path = make_video(tmp_path / "v.mp4", fps=30, seconds=20, size=(160, 96), pattern="texture", gop=150,
                          bframes=3, audio=False)
    elif kind == "short_gop":
        path = make_video(tmp_path / "v.mp4", fps=25, seconds=8, size=(160, 96), pattern="texture", gop=12,
                          bframes=2, audio=False)
    elif kind == "late_start":  # starts 2 frames in, keyframe every 2 s: the original rule's lag crosses keyframes
        path = make_video(tmp_path / "v.mp4", fps=24, frame_times=[(i + 2) / 24 for i in range(240)], size=(160, 96),
                          pattern="texture", gop=48, bframes=2, audio=False)
    else:
        path = make_video(tmp_path / "v.mp4", fps=30, seconds=6, audio=False)
    times, arrays, rate = all_frames(path)
    with MediaFile(path) as f:
        starts = uniform_starts(f.info.duration, 0.5, 7)
        keys = f.keyframe_times()
        starts += [k + d for k in keys[1:3] for d in (-0.05, 0.0, 0.02, 0.09)]  # clips at and around keyframes
        original = f.read_video(starts, num_frames=8, fps=16)
        stats = [f.decode_stats]
    with MediaFile(path, frame_times="timestamps") as f:
        on_screen = f.read_video(starts, num_frames=8, fps=16)
        stats.append(f.decode_stats)
    if kind != "index":  # B-frames inside the windows that no target takes were skipped, and the prediction held
        assert all(s["skipped_in_window"] > 0 and s["redone"] == 0 for s in stats), stats
    for s, clip_o, clip_t in zip(starts, original, on_screen):
        targets = [s + k / 16 for k in range(8)]
        want_o = original_rule(times, targets, rate)
        want_t = [max([i for i, t in enumerate(times) if t <= x + 1e-6] or [0]) for x in targets]
        for got, want in ((clip_o, want_o), (clip_t, want_t)):
            assert all(np.array_equal(g.numpy(), arrays[i]) for g, i in zip(got, want)), (s, want)


class _WrongPrediction(MediaFile):
    """A decoder whose prediction of the frames the targets take is off by one frame (as a stream whose packets'
    timestamps misled it would be)."""

    def _predict(self, stream, targets, wanted, rate, keyframe):
        predicted = super()._predict(stream, targets, wanted, rate, keyframe)
        if predicted is None:
            return None
        step = round(1 / (self.info.fps * stream.time_base))
        return {key: pts + step for key, pts in predicted.items()}


@pytest.mark.parametrize("frame_times", ["original", "timestamps"])
def test_a_wrong_in_window_prediction_is_caught_and_redone(tmp_path, frame_times):
    """Frames skipped on a wrong prediction are never used: the group is decoded again without in-window skipping,
    and the clips are still bit-identical to decoding everything."""
    path = make_video(tmp_path / "v.mp4", fps=30, seconds=6, size=(160, 96), pattern="texture", gop=60, bframes=3,
                      audio=False)
    times, arrays, rate = all_frames(path)
    with _WrongPrediction(path, frame_times=frame_times) as f:
        starts = uniform_starts(f.info.duration, 0.5, 4)
        clips = f.read_video(starts, num_frames=8, fps=16)
        assert f.decode_stats["redone"] > 0
    for s, clip in zip(starts, clips):
        targets = [s + k / 16 for k in range(8)]
        want = original_rule(times, targets, rate) if frame_times == "original" else \
            [max([i for i, t in enumerate(times) if t <= x + 1e-6] or [0]) for x in targets]
        assert all(np.array_equal(g.numpy(), arrays[i]) for g, i in zip(clip, want)), s
