"""Hugging Face Hub sources, against a Hub-protocol server on 127.0.0.1 (tests/hf_server.py)."""

from __future__ import annotations

import hashlib

import pytest

import avidzoo
from avidzoo.errors import ChecksumError, WeightsNotFoundError

from conftest import assert_same_outputs, write_overlay
from hf_server import FakeHub


@pytest.fixture
def hub(monkeypatch):
    with FakeHub() as h:
        monkeypatch.setenv("HF_ENDPOINT", h.url)
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        yield h


@pytest.fixture
def pushed(hub, original):
    """The original checkpoint, converted and pushed to ``acme/avid`` with a classifier and labels."""
    model = avidzoo.from_pretrained(original[0], num_classes=2, label_names=["quiet", "loud"])
    url = model.push_to_hub("acme/avid", token="test-token")
    commit = hub.refs["acme/avid"]["main"]
    assert url.endswith(commit)
    return model, commit


def test_push_then_load_by_name_and_pinned_revision(hub, pushed, clips):
    model, commit = pushed
    assert sorted(hub.repos["acme/avid"][commit]) == ["README.md", "config.json", "model.safetensors"]
    for source in ("hf-hub:acme/avid", f"hf-hub:acme/avid@{commit}"):
        loaded = avidzoo.from_pretrained(source)
        assert loaded.label_names == ["quiet", "loud"]
        assert_same_outputs(loaded, model, clips)


def test_transforms_of_a_hub_repo_fetch_only_its_config(hub, pushed):
    t = avidzoo.create_transforms("hf-hub:acme/avid")
    assert t.video.crop_size == 224 and t.audio.output_shape == (1, 200, 257)
    fetched = {path.rsplit("/", 1)[-1] for method, path in hub.log if method == "GET" and "/resolve/" in path}
    assert fetched == {"config.json"}


def test_hf_offline_reads_the_hf_cache_without_requests(hub, pushed, clips, monkeypatch):
    model, commit = pushed
    avidzoo.from_pretrained(f"hf-hub:acme/avid@{commit}")
    before = len(hub.log)
    for var in ("HF_HUB_OFFLINE", "AVIDZOO_OFFLINE"):
        monkeypatch.setenv(var, "1")
        assert_same_outputs(avidzoo.from_pretrained(f"hf-hub:acme/avid@{commit}"), model, clips)
        monkeypatch.delenv(var)
    assert len(hub.log) == before
    monkeypatch.setenv("AVIDZOO_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="hf-hub:acme/other: cannot get config.json: offline"):
        avidzoo.from_pretrained("hf-hub:acme/other")
    assert len(hub.log) == before


def test_tampered_hub_weights_fail_verification(hub, pushed):
    _, commit = pushed
    files = hub.repos["acme/avid"][commit]
    data = bytearray(files["model.safetensors"])
    data[-5] ^= 0xFF
    files["model.safetensors"] = bytes(data)
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        avidzoo.from_pretrained("hf-hub:acme/avid")


def test_missing_repo_is_a_clear_error(hub):
    with pytest.raises(WeightsNotFoundError, match="hf-hub:acme/nothing: cannot get config.json"):
        avidzoo.from_pretrained("hf-hub:acme/nothing")


def test_manifest_hf_source_is_tried_first_and_verified(hub, original, clips, tmp_path, monkeypatch):
    """A registry weight whose manifest lists an HF copy of the original file ahead of its URL."""
    path, reference, sha1 = original
    commit = hashlib.sha1(b"rehost").hexdigest()
    hub.repos["acme/rehost"] = {commit: {path.name: path.read_bytes()}}
    source = {"hf_hub_id": "acme/rehost", "filename": path.name, "revision": commit}
    overlay = write_overlay(tmp_path / "o.json", path.name, sha1, ["http://127.0.0.1:9/never-tried", source])
    monkeypatch.setenv("AVIDZOO_MANIFEST", str(overlay))
    assert_same_outputs(avidzoo.create_model("test_avid.local", pretrained=True), reference, clips)
    assert any(path.name in p for _, p in hub.log)


def test_a_sibling_graph_round_trips_through_the_hub(hub):
    """GDT's torchvision-graph video and ResNet-9 audio towers push and load like AVID's, preprocessing included."""
    import torch

    torch.manual_seed(0)
    model = avidzoo.create_model("gdt_r2plus1d").eval()
    model.push_to_hub("acme/gdt", token="test-token")
    loaded = avidzoo.from_pretrained("hf-hub:acme/gdt")
    assert loaded.config["video"]["arch"] == "tv_r2plus1d" and loaded.config["audio"] == {"arch": "resnet2d",
                                                                                          "depth": 9}
    t = avidzoo.create_transforms("hf-hub:acme/gdt")
    assert t.video.crop_size == 112 and t.audio.output_shape == (1, 40, 99)
    video, audio = torch.randn(1, 3, 8, 64, 64), torch.randn(1, 1, 40, 99)
    with torch.inference_mode():
        assert torch.equal(loaded.encode_video(video), model.encode_video(video))
        assert torch.equal(loaded.encode_audio(audio), model.encode_audio(audio))
