"""avidzoo.hear as a HEAR module: the API's shapes, dtypes and timestamps, the checks hearvalidator makes, and that
row k describes the sound at k * hop."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
import torchaudio.functional as AF

import avidzoo
from avidzoo import hear

SR = 48000  # the small model's tower runs at 24 kHz, as AVID's: HEAR gives it 48 kHz


@pytest.fixture(scope="module")
def hear_model(small_model):
    return hear.load_model(str(small_model))


def tone(seconds: float, freq: float, sr: int = SR, start: float = 0.0) -> torch.Tensor:
    """A sine of ``freq`` Hz from ``start`` seconds on, silence before."""
    t = torch.arange(int(seconds * sr)) / sr
    return torch.where(t >= start, 0.5 * torch.sin(2 * math.pi * freq * t), torch.zeros(()))


def test_the_module_is_a_hear_module(hear_model):
    module = importlib.import_module("avidzoo.hear")
    for name in ("load_model", "get_scene_embeddings", "get_timestamp_embeddings"):
        assert callable(getattr(module, name))
    assert isinstance(hear_model, torch.nn.Module)
    assert hear_model.sample_rate == 48000 and hear_model.sample_rate in hear.HEAR_SAMPLE_RATES
    assert hear_model.tower_rate == 24000
    assert hear_model.scene_embedding_size == hear_model.timestamp_embedding_size == 512
    assert [hear.hear_sample_rate(r) for r in (16000, 22050, 24000, 32000, 44100, 11025)] == \
        [16000, 22050, 48000, 48000, 44100, 22050]


def test_timestamp_embeddings_shapes_dtypes_and_a_regular_hop(hear_model):
    audio = torch.rand(3, int(1.234 * SR)) * 2 - 1  # the validator passes 16 sounds of 2 s, uniform in [-1, 1)
    emb, stamps = hear.get_timestamp_embeddings(audio, hear_model)
    n = int(1.234 * 1000 // 50) + 1  # 0, 50, ..., 1200 ms
    assert emb.shape == (3, n, 512) and stamps.shape == (3, n)
    assert emb.dtype == stamps.dtype == torch.float32
    assert torch.equal(stamps[0], torch.arange(n, dtype=torch.float32) * 50) and torch.equal(stamps[0], stamps[2])
    assert torch.isfinite(emb).all()
    scene = hear.get_scene_embeddings(audio, hear_model)
    assert scene.shape == (3, 512) and scene.dtype == torch.float32
    # Beyond hearvalidator 2021.0.2 (which checks the attributes, shapes, float32 and a regular hop): the embeddings
    # follow the sound, and a batch of one gives the same rows as the batch, exactly.
    assert not torch.equal(emb[0], emb[1]) and not torch.equal(scene[0], scene[1])
    one, one_stamps = hear.get_timestamp_embeddings(audio[1:2], hear_model)
    assert torch.equal(one[0], emb[1]) and torch.equal(one_stamps[0], stamps[1])
    assert torch.equal(hear.get_scene_embeddings(audio[2:], hear_model)[0], scene[2])


def test_row_k_is_the_towers_clip_centred_at_k_hop(hear_model, small_model):
    """By hand: resample the sound to 24 kHz, cut the clip centred at k * 50 ms (zeros past the ends), and run the
    model's own transform and tower on it."""
    audio = tone(2.0, 440.0, start=1.0)[None]  # a second of silence, then a second of a 440-Hz tone
    emb, stamps = hear.get_timestamp_embeddings(audio, hear_model)
    model = avidzoo.from_pretrained(small_model, modalities=("audio",))
    t = avidzoo.create_transforms(model)
    wave = AF.resample(audio, SR, 24000)[0]
    clip = t.audio.num_samples
    for k in (0, 7, 20, 33, len(stamps[0]) - 1):
        centre = int(stamps[0, k]) * 24
        padded = torch.nn.functional.pad(wave, (clip, clip))
        window = padded[clip + centre - clip // 2: clip + centre - clip // 2 + clip]
        with torch.inference_mode():
            want = model.encode_audio(t.audio(window[None])[None])[0]
        torch.testing.assert_close(emb[0, k], want, rtol=1e-4, atol=1e-6)
    # The clip is 0.64 s: rows 7 and 13 (350, 650 ms) hear only silence, rows 27 and 33 (1350, 1650 ms) only the tone.
    rel = lambda a, b: float((a - b).norm() / a.norm())  # noqa: E731
    e = emb[0]
    assert torch.equal(e[7], e[13])
    assert rel(e[27], e[33]) < 0.1 and rel(e[27], e[7]) > 0.5 and rel(e[33], e[13]) > 0.5


def test_scene_embedding_is_the_mean_over_half_overlapping_clips(hear_model):
    audio = tone(3.0, 300.0)[None]
    scene = hear.get_scene_embeddings(audio, hear_model)[0]
    wave = AF.resample(audio, SR, 24000)[0]
    clip = hear_model.clip_samples
    centres = [clip // 2 + k * (clip // 2) for k in range(math.ceil((len(wave) - clip) / (clip // 2)) + 1)]
    assert centres[-1] + clip // 2 >= len(wave) > centres[-2] + clip // 2  # the last clip reaches the end, no more
    torch.testing.assert_close(scene, hear_model.embed_clips(wave, centres).mean(0), rtol=0, atol=0)
    short = hear.get_scene_embeddings(audio[:, : SR // 4], hear_model)  # shorter than a clip: one, centred
    wave = AF.resample(audio[:, : SR // 4], SR, 24000)[0]
    torch.testing.assert_close(short[0], hear_model.embed_clips(wave, [3000])[0], rtol=0, atol=0)


def test_clear_errors(small_model, tmp_path):
    video_only = avidzoo.create_model("cross_avid_r2plus1d", video_depth=10, modalities=("video",))
    folder = video_only.save_pretrained(tmp_path / "video-only")
    with pytest.raises(ValueError, match="no audio tower"):
        hear.load_model(str(folder))
    with pytest.raises(ValueError, match="whole number of samples"):
        hear.load_model(str(small_model), hop_ms=0.01)
    with pytest.raises(ValueError, match=r"\(n_sounds, n_samples\)"):
        hear.get_scene_embeddings(torch.zeros(SR), hear.load_model(str(small_model)))
