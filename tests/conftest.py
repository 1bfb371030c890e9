from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import avidzoo

from http_server import FileServer
from original_format import save_original_checkpoint

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_VARS = ("AVIDZOO_HOME", "AVIDZOO_OFFLINE", "AVIDZOO_WEIGHTS_DIR", "AVIDZOO_MIRRORS", "AVIDZOO_MANIFEST",
            "HF_HUB_OFFLINE", "AVIDZOO_DISABLE_PROGRESS")


def pytest_configure(config):
    # .ci/sweep_learning runs the learning tests under several torch thread counts and seeds. Under pytest-xdist each
    # worker gets an equal share of the cores (two workers of two threads each on two cores would fight).
    if os.environ.get("AVIDZOO_TEST_THREADS"):
        torch.set_num_threads(int(os.environ["AVIDZOO_TEST_THREADS"]))
    elif os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
        workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
        torch.set_num_threads(max(1, usable_cores() // workers))


def usable_cores() -> int:
    """The cores this process may use (its affinity where the system says, else all)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: one worker per core this process may use, at most 4 (each imports torch and makes its own session
    fixtures; more workers would mostly add memory)."""
    return max(1, min(usable_cores(), 4))


@pytest.fixture(scope="session")
def learning_seed() -> int:
    """The seed of the tests marked ``learning`` (0 unless .ci/sweep_learning sets ``AVIDZOO_TEST_SEED``)."""
    return int(os.environ.get("AVIDZOO_TEST_SEED", "0"))


@pytest.fixture
def margin(record_property):
    """``margin(name, value, threshold)``: assert ``value >= threshold`` and record both for .ci/sweep_learning's
    table (junit XML properties)."""

    def check(name: str, value: float, threshold: float, detail: object = "") -> None:
        record_property(name, f"{value:.4f}>={threshold:.4f}")
        assert value >= threshold, (name, value, threshold, detail)

    return check


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Every test gets its own cache and HF home, and no avidzoo variables from the caller's shell."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AVIDZOO_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")


def randomize_bn(model: torch.nn.Module, seed: int) -> None:
    """Give BatchNorm layers non-trivial statistics, so a wrong BN placement changes the outputs."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            m.num_batches_tracked.fill_(1234)


@pytest.fixture(scope="session")
def original(tmp_path_factory):
    """An original-format checkpoint of a seeded random model: ``(path, reference_model, sha1)``."""
    torch.manual_seed(1234)
    model = avidzoo.create_model("cross_avid_r2plus1d")
    randomize_bn(model, 1234)
    model.eval()
    path = tmp_path_factory.mktemp("original") / "AVID_Test_Cross-N1024_checkpoint.pth.tar"
    save_original_checkpoint(model, path)
    sha1 = hashlib.sha1(path.read_bytes()).hexdigest()
    return path, model, sha1


@pytest.fixture(scope="session")
def small_model(tmp_path_factory) -> Path:
    """A saved depth-10 model on 4x32x32 clips and 0.64-s audio, so that a file takes a few milliseconds."""
    torch.manual_seed(0)
    m = avidzoo.create_model("cross_avid_r2plus1d", video_depth=10)
    pre = m.config["preprocessing"]
    pre["video"].update(num_frames=4, crop_size=32, resize=36, clip_duration=0.25)
    pre["audio"].update(clip_duration=0.64, num_frames=64)
    m.update_config(preprocessing=pre)
    return m.save_pretrained(tmp_path_factory.mktemp("small") / "model")


@pytest.fixture(scope="session")
def clips():
    g = torch.Generator().manual_seed(7)
    return torch.randn(2, 3, 8, 112, 112, generator=g), torch.randn(2, 1, 200, 257, generator=g)


def assert_same_outputs(model, reference, clips, modalities=("video", "audio")):
    video, audio = clips
    with torch.inference_mode():
        for mod, x in (("video", video), ("audio", audio)):
            if mod not in modalities:
                continue
            enc = getattr(model, f"encode_{mod}")
            ref = getattr(reference, f"encode_{mod}")
            torch.testing.assert_close(enc(x), ref(x), rtol=0, atol=0)
            torch.testing.assert_close(enc(x, project=True), ref(x, project=True), rtol=0, atol=0)


@pytest.fixture
def served(original, tmp_path, monkeypatch):
    """The original checkpoint served over HTTP and registered as ``test_avid.local`` through a manifest overlay.

    Yields ``(server, weight_name, file_name)``.
    """
    path, _, sha1 = original
    root = tmp_path / "www"
    root.mkdir()
    shutil.copy(path, root / path.name)
    with FileServer(root) as server:
        overlay = write_overlay(tmp_path / "overlay.json", path.name, sha1, [f"{server.url}/{path.name}"])
        monkeypatch.setenv("AVIDZOO_MANIFEST", str(overlay))
        yield server, "test_avid.local", path.name


def write_overlay(dest: Path, file_name: str, sha1: str, sources: list, name: str = "test_avid.local") -> Path:
    """A manifest overlay adding a model ``test_avid`` whose weight ``name`` is ``file_name``."""
    base = json.loads((REPO_ROOT / "weights_manifest.json").read_text())
    entry = dict(base["weights"]["cross_avid_r2plus1d.kinetics400"])
    entry.update(file_name=file_name, sources=sources, hashes={"sha1": sha1}, description="test weights")
    model = name.partition(".")[0]
    overlay = {
        "schema_version": 1,
        "models": {model: {"architecture": "avid_r2plus1d_18", "method": "cross_avid",
                           "default_tag": name.partition(".")[2]}},
        "weights": {name: entry},
    }
    dest.write_text(json.dumps(overlay))
    return dest
