"""Preprocessing bound to the weights: the original log-spectrogram and the evaluation video transform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

import avidzoo

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def transforms():
    return avidzoo.create_transforms("cross_avid_r2plus1d")


def numpy_log_spectrogram(y: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """The original formula, written independently: librosa-style centred STFT with reflect padding."""
    n_fft, hop = 1024, 240
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    padded = np.pad(y.astype(np.float64), n_fft // 2, mode="reflect")
    n_frames = 1 + (len(padded) - n_fft) // hop
    power = np.stack([np.abs(np.fft.rfft(padded[i * hop:i * hop + n_fft] * window)) ** 2 for i in range(n_frames)],
                     axis=1)  # (513, frames)
    pooled = np.concatenate([power[:1], (power[1::2] + power[2::2]) / 2], axis=0)[:, :200]  # (257, 200)
    db = 10 * np.log10(np.maximum(pooled, 1e-10))
    db = np.maximum(db, db.max() - 100.0)
    return ((db - mean[:, None]) / (std[:, None] + 1e-5)).T[None].astype(np.float32)


def test_spectrogram_matches_numpy_reference(transforms):
    rng = np.random.default_rng(0)
    t = np.arange(48000) / 24000
    y = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(48000)
    with np.load(Path(avidzoo.__file__).parent / "assets" / "avid_spec_db_24k_norm_stats_257.npz") as stats:
        mean, std = stats["mean"], stats["std"]
    assert mean.shape == std.shape == (257,)
    expected = numpy_log_spectrogram(y, mean, std)
    got = transforms.audio(torch.tensor(y, dtype=torch.float32)[None])
    assert got.shape == (1, 200, 257) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-3, rtol=0)


def test_spectrogram_tone_lands_in_the_right_bin_and_frames(transforms):
    sr = 24000
    y = torch.zeros(2 * sr)
    t = torch.arange(sr) / sr
    y[sr:] = 0.5 * torch.sin(2 * torch.pi * 3000 * t)  # a 3 kHz tone from 1.0 s on
    spec = transforms.audio(y[None])[0]  # (200, 257)
    # 3000 Hz is STFT bin 128 (24000 / 1024 Hz per bin); pooled bin (128 + 1) // 2 = 64.
    assert int(spec[150].argmax()) == 64
    loud = spec[:, 64]
    assert loud[:95].max() < loud[105:].min()  # the onset is at frame 100 (hop 240 = 10 ms)


def test_audio_mono_trim_pad_batch_and_resample(transforms):
    g = torch.Generator().manual_seed(0)
    stereo = torch.randn(2, 30000, generator=g) * 0.1
    mono_out = transforms.audio(stereo.mean(0, keepdim=True))
    torch.testing.assert_close(transforms.audio(stereo), mono_out)  # channels are averaged
    padded = torch.cat([stereo.mean(0), torch.zeros(18000)])[None]
    torch.testing.assert_close(mono_out, transforms.audio(padded))  # short clips are zero-padded to 2 s
    long = torch.randn(1, 60000, generator=g)
    torch.testing.assert_close(transforms.audio(long), transforms.audio(long[:, :48000]))  # long ones trimmed
    batch = transforms.audio(torch.stack([stereo, stereo * 0.5]))
    assert batch.shape == (2, 1, 200, 257)
    torch.testing.assert_close(batch[0], mono_out)
    torch.testing.assert_close(batch[1], transforms.audio(stereo * 0.5))  # the 100 dB floor is per clip
    # A 48 kHz waveform is resampled to 24 kHz: a 1 kHz tone stays a 1 kHz tone (pooled bin 21 or 22).
    tone48 = torch.sin(2 * torch.pi * 1000 * torch.arange(96000) / 48000)[None]
    assert int(transforms.audio(tone48, sample_rate=48000)[0, 100].argmax()) in (21, 22)
    with pytest.raises(ValueError, match="float samples in \\[-1, 1\\], got torch.int16"):
        transforms.audio((stereo * 32767).to(torch.int16))


def test_video_transform_matches_torchvision_ops(transforms):
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (8, 240, 320, 3), dtype=torch.uint8, generator=g)
    out = transforms.video(frames)
    assert out.shape == (3, 8, 224, 224) and out.dtype == torch.float32
    ref = frames.permute(0, 3, 1, 2).float()
    ref = TF.resize(ref, [256], interpolation=TF.InterpolationMode.BILINEAR, antialias=True).clamp(0, 255)
    ref = TF.center_crop(ref, [224, 224]) / 255.0
    ref = TF.normalize(ref, MEAN, STD).permute(1, 0, 2, 3)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)
    batch = transforms.video(torch.stack([frames, frames.flip(1)]))
    assert batch.shape == (2, 3, 8, 224, 224)
    torch.testing.assert_close(batch[0], out)


def test_video_transform_constant_colour_and_portrait():
    t = avidzoo.create_transforms("avid_cma_r2plus1d").video
    frames = torch.full((4, 400, 300, 3), 128, dtype=torch.uint8)
    out = t(frames)
    assert out.shape == (3, 4, 224, 224)
    for c in range(3):
        torch.testing.assert_close(out[c], torch.full_like(out[c], (128 / 255 - MEAN[c]) / STD[c]))
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        t(torch.zeros(4, 3, 224, 224))
    torch.testing.assert_close(t(frames.float()), out)  # float frames are on the uint8 scale
    with pytest.warns(UserWarning, match=r"expects values in \[0, 255\]"):
        t(frames.float() / 255)


def test_training_video_transform_draws_one_set_of_parameters_per_clip():
    t = avidzoo.create_transforms("cross_avid_r2plus1d", train=True).video
    g = torch.Generator().manual_seed(0)
    still = torch.randint(0, 256, (1, 120, 160, 3), dtype=torch.uint8, generator=g).expand(6, -1, -1, -1)
    torch.manual_seed(0)
    out = t(still)
    assert out.shape == (3, 6, 224, 224) and out.dtype == torch.float32
    for k in range(1, 6):  # identical frames stay identical: crop, flip and jitter are per clip
        torch.testing.assert_close(out[:, k], out[:, 0])
    views = [t(still)[:, 0] for _ in range(4)]
    assert not all(torch.allclose(views[0], v) for v in views[1:])  # but differ between calls
    batch = t(torch.stack([still, still]))
    assert batch.shape == (2, 3, 6, 224, 224)


def test_training_audio_gain_is_a_per_clip_volume_change(transforms):
    train = avidzoo.create_transforms("cross_avid_r2plus1d", train=True).audio
    wave = 0.3 * torch.sin(2 * torch.pi * 440 * torch.arange(48000) / 24000)[None]
    scale = transforms.audio.std + transforms.audio.eps
    gains = []
    for _ in range(20):
        shift = (train(wave) - transforms.audio(wave))[0] * scale  # dB change per (frame, bin)
        assert float(shift.std()) < 1e-2  # one gain for the whole clip (float32 noise in quiet bins aside)
        gains.append(10 ** (float(shift.mean()) / 20))
    assert min(gains) >= 0.9 - 1e-4 and max(gains) <= 1.1 + 1e-4 and max(gains) - min(gains) > 0.05
