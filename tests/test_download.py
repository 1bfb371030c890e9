"""Fetching weights over real HTTP on 127.0.0.1: verify, resume, fail cleanly, lock, stay offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import avidzoo
from avidzoo.errors import ChecksumError, DownloadError, WeightsNotFoundError
from avidzoo.hub import download_url

from conftest import assert_same_outputs, write_overlay

HERE = Path(__file__).resolve().parent


def cache_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "locks" not in p.parts)


def test_first_load_downloads_verifies_converts_then_reads_only_the_cache(served, original, clips):
    server, name, file_name = served
    cache = Path(os.environ["AVIDZOO_HOME"])
    model = avidzoo.create_model(name, pretrained=True)
    assert_same_outputs(model, original[1], clips)
    assert len(server.gets(file_name)) == 1
    # The multi-GB training checkpoint is replaced by the converted weights; nothing partial is left.
    files = cache_files(cache)
    assert f"weights/{name}/model.safetensors" in files and f"weights/{name}/config.json" in files
    assert not any(f.startswith("downloads/") for f in files), files
    config = json.loads((cache / "weights" / name / "config.json").read_text())
    assert config["source"]["hashes"] == {"sha1": original[2]} and config["license"] == "CC-BY-NC-4.0"
    # Second load: no request at all, same numbers; also a single tower from the same cache.
    again = avidzoo.from_pretrained(name)
    video_only = avidzoo.create_model(name, pretrained=True, modalities=("video",))
    assert len(server.gets(file_name)) == 1
    assert_same_outputs(again, original[1], clips)
    assert_same_outputs(video_only, original[1], clips, modalities=("video",))


def test_resume_after_a_dropped_connection(served, original):
    server, name, file_name = served
    size = original[0].stat().st_size
    server.faults.drop_after, server.faults.drop_times = 5_000_000, 2
    dest = Path(os.environ["AVIDZOO_HOME"]) / "dl" / file_name
    download_url(f"{server.url}/{file_name}", dest, hashes={"sha1": original[2]}, progress=False)
    assert dest.read_bytes() == original[0].read_bytes()
    gets = server.gets(file_name)
    assert [g.status for g in gets] == [200, 206, 206]
    assert gets[1].range == "bytes=5000000-" and gets[2].range == "bytes=10000000-"
    assert sum(g.bytes_sent for g in gets) == size  # nothing was downloaded twice


def test_server_without_range_support_restarts_cleanly(served, original):
    server, name, file_name = served
    server.faults.drop_after, server.faults.drop_times, server.faults.ignore_range = 3_000_000, 1, True
    dest = Path(os.environ["AVIDZOO_HOME"]) / "dl" / file_name
    download_url(f"{server.url}/{file_name}", dest, hashes={"sha1": original[2]}, progress=False)
    assert dest.read_bytes() == original[0].read_bytes()
    assert [g.status for g in server.gets(file_name)] == [200, 200]


def test_hash_mismatch_names_both_hashes_and_leaves_no_file(served, original, tmp_path, monkeypatch):
    server, name, file_name = served
    wrong = "0" * 40
    overlay = write_overlay(tmp_path / "wrong.json", file_name, wrong, [f"{server.url}/{file_name}"])
    monkeypatch.setenv("AVIDZOO_MANIFEST", str(overlay))
    with pytest.raises(DownloadError) as err:
        avidzoo.create_model(name, pretrained=True)
    msg = str(err.value)
    assert f"expected {wrong}" in msg and f"got {original[2]}" in msg and "partial download was deleted" in msg
    assert cache_files(Path(os.environ["AVIDZOO_HOME"])) == []


def test_mirrors_are_tried_in_order(served, original, clips, monkeypatch):
    server, name, file_name = served
    server.faults.not_found = {f"missing/{file_name}"}
    monkeypatch.setenv("AVIDZOO_MIRRORS", f"{server.url}/missing {server.url}/")
    avidzoo.from_pretrained(name)
    assert [r.path for r in server.requests if r.method == "GET"] == [f"missing/{file_name}", file_name]


def test_404_everywhere_is_one_error_listing_every_source(served, monkeypatch):
    server, name, file_name = served
    server.faults.not_found = {file_name}
    monkeypatch.setenv("AVIDZOO_MIRRORS", f"{server.url}/elsewhere")
    with pytest.raises(DownloadError) as err:
        avidzoo.create_model(name, pretrained=True)
    msg = str(err.value)
    assert "every source" in msg and msg.count("HTTP 404") == 2 and f"{server.url}/elsewhere/{file_name}" in msg


def test_truncated_body_fails_after_retries_and_leaves_no_file(served):
    server, name, file_name = served
    server.faults.always_truncate = True
    with pytest.raises(DownloadError, match="IncompleteRead|attempts"):
        avidzoo.create_model(name, pretrained=True)
    assert len(server.gets(file_name)) == 5  # the first try and 4 resumptions
    files = cache_files(Path(os.environ["AVIDZOO_HOME"]))
    assert not any(f.startswith("weights/") for f in files)


def test_offline_mode_makes_no_request_and_says_what_to_do(served, monkeypatch):
    server, name, file_name = served
    for var in ("AVIDZOO_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(var, "1")
        with pytest.raises(WeightsNotFoundError) as err:
            avidzoo.create_model(name, pretrained=True)
        msg = str(err.value)
        assert file_name in msg and "AVIDZOO_WEIGHTS_DIR" in msg and f"avidzoo download {name}" in msg
        monkeypatch.delenv(var)
    assert server.requests == []


def test_offline_message_for_a_released_weight_names_its_url(monkeypatch):
    monkeypatch.setenv("AVIDZOO_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match=r"dl\.fbaipublicfiles\.com/avid-cma/checkpoints/AVID_Kinetics"):
        avidzoo.from_pretrained("cross_avid_r2plus1d.kinetics")


def test_drop_folder_with_the_original_file_works_offline(served, original, clips, tmp_path, monkeypatch):
    server, name, file_name = served
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / file_name).write_bytes(original[0].read_bytes())
    monkeypatch.setenv("AVIDZOO_WEIGHTS_DIR", str(drop))
    monkeypatch.setenv("AVIDZOO_OFFLINE", "1")
    assert_same_outputs(avidzoo.from_pretrained(name), original[1], clips)
    assert server.requests == [] and (drop / file_name).exists()  # a read-only drop folder is left as it was


def test_drop_folder_file_with_wrong_bytes_is_rejected(served, original, tmp_path, monkeypatch):
    server, name, file_name = served
    drop = tmp_path / "drop"
    drop.mkdir()
    data = original[0].read_bytes()
    # The last byte flipped, never merely set: legacy files order storages by memory address, so the last byte may
    # be an int64's zero (num_batches_tracked) on one run and a float's on the next.
    (drop / file_name).write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    monkeypatch.setenv("AVIDZOO_WEIGHTS_DIR", str(drop))
    with pytest.raises(ChecksumError, match="sha1 mismatch"):
        avidzoo.from_pretrained(name)


def test_portable_folder_round_trip(served, original, clips, tmp_path, monkeypatch):
    server, name, file_name = served
    folders = avidzoo.download([name], tmp_path / "portable")
    folder = folders[name]
    assert sorted(p.name for p in folder.iterdir()) == ["LICENSE", "README.md", "config.json", "model.safetensors"]
    assert "Attribution-NonCommercial" in (folder / "LICENSE").read_text()
    # On the "air-gapped" side: a fresh cache, offline, and the folder as drop folder or local-dir.
    monkeypatch.setenv("AVIDZOO_HOME", str(tmp_path / "other-cache"))
    monkeypatch.setenv("AVIDZOO_OFFLINE", "1")
    monkeypatch.setenv("AVIDZOO_WEIGHTS_DIR", str(tmp_path / "portable"))
    assert_same_outputs(avidzoo.create_model(name, pretrained=True), original[1], clips)
    assert_same_outputs(avidzoo.from_pretrained(f"local-dir:{folder}"), original[1], clips)
    assert len(server.gets(file_name)) == 1


def test_download_to_copies_weights_served_from_a_drop_folder(served, original, clips, tmp_path, monkeypatch):
    """``download(to=)`` copies the folder the weights were served from; with a drop folder, the cache has none."""
    server, name, file_name = served
    first = avidzoo.download([name], tmp_path / "portable")[name]
    monkeypatch.setenv("AVIDZOO_HOME", str(tmp_path / "other-cache"))
    monkeypatch.setenv("AVIDZOO_OFFLINE", "1")
    monkeypatch.setenv("AVIDZOO_WEIGHTS_DIR", str(tmp_path / "portable"))
    again = avidzoo.download([name], tmp_path / "copy")[name]
    assert sorted(p.name for p in again.iterdir()) == ["LICENSE", "README.md", "config.json", "model.safetensors"]
    for f in again.iterdir():
        assert f.read_bytes() == (first / f.name).read_bytes(), f.name
    assert not (tmp_path / "other-cache" / "weights").exists() and len(server.gets(file_name)) == 1
    assert_same_outputs(avidzoo.from_pretrained(f"local-dir:{again}"), original[1], clips)


def test_damaged_cache_is_refetched(served, original, clips):
    server, name, file_name = served
    avidzoo.from_pretrained(name)
    weights = Path(os.environ["AVIDZOO_HOME"]) / "weights" / name / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))  # also changes mtime, so the verified stamp no longer applies
    assert_same_outputs(avidzoo.from_pretrained(name), original[1], clips)
    assert len(server.gets(file_name)) == 2


CHILD = textwrap.dedent(
    """
    import sys, torch, avidzoo
    sys.path.insert(0, sys.argv[1])
    model = avidzoo.from_pretrained(sys.argv[2])
    x = torch.load(sys.argv[3], weights_only=True)
    with torch.inference_mode():
        torch.save(model.encode_video(x), sys.argv[4])
    """
)


def test_concurrent_processes_download_once(served, clips, tmp_path):
    server, name, file_name = served
    server.faults.drop_after, server.faults.drop_times = 20_000_000, 0  # full speed, no faults
    x_path = tmp_path / "x.pt"
    torch.save(clips[0], x_path)
    env = {**os.environ, "AVIDZOO_DISABLE_PROGRESS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(HERE), name, str(x_path), str(tmp_path / f"out{i}.pt")],
                         env=env, stderr=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert len(server.gets(file_name)) == 1
    outs = [torch.load(tmp_path / f"out{i}.pt", weights_only=True) for i in range(4)]
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=0, atol=0)


def test_a_converted_folder_is_bound_to_the_bytes_it_came_from(original, tmp_path, monkeypatch):
    """Weights without a published hash (as XDC's, GDT's, CrissCross's): pointing the weight at another file, or
    replacing its file (after removing the first-download record, as the error says to), converts afresh; neither is
    served from the folder converted from the first file."""
    from conftest import randomize_bn
    from original_format import save_original_checkpoint

    drop = tmp_path / "drop"
    drop.mkdir()
    torch.manual_seed(99)
    other = avidzoo.create_model("cross_avid_r2plus1d")
    randomize_bn(other, 99)
    (drop / "first.pth.tar").write_bytes(original[0].read_bytes())
    save_original_checkpoint(other, drop / "second.pth.tar")
    monkeypatch.setenv("AVIDZOO_WEIGHTS_DIR", str(drop))
    monkeypatch.setenv("AVIDZOO_OFFLINE", "1")

    def point_at(file_name: str) -> None:
        overlay = write_overlay(tmp_path / f"overlay-{file_name}.json", file_name, "", [])  # cached per path
        entry = json.loads(overlay.read_text())
        entry["weights"]["test_avid.local"].update(hashes={}, hash_provenance="none published")  # trust on first use
        overlay.write_text(json.dumps(entry))
        monkeypatch.setenv("AVIDZOO_MANIFEST", str(overlay))

    def weights(model) -> torch.Tensor:
        return model.state_dict()["video_encoder.conv1.0.weight"]

    point_at("first.pth.tar")
    assert torch.equal(weights(avidzoo.from_pretrained("test_avid.local")), weights(original[1]))
    point_at("second.pth.tar")  # renamed: the other file's tensors, not the first conversion's
    assert torch.equal(weights(avidzoo.from_pretrained("test_avid.local")), weights(other))
    point_at("first.pth.tar")  # and back: the first file's tensors again
    assert torch.equal(weights(avidzoo.from_pretrained("test_avid.local")), weights(original[1]))
    # the same name with other bytes: the record of the first download stands, so the folder that matches it is
    # served, and converting the changed file is refused ...
    cache = Path(os.environ["AVIDZOO_HOME"])
    (drop / "first.pth.tar").write_bytes((drop / "second.pth.tar").read_bytes())
    assert torch.equal(weights(avidzoo.from_pretrained("test_avid.local")), weights(original[1]))
    converted = cache / "weights" / "test_avid.local"
    (converted / "model.safetensors").rename(tmp_path / "kept.safetensors")
    with pytest.raises(ChecksumError, match="recorded when first.pth.tar was first downloaded"):
        avidzoo.from_pretrained("test_avid.local")
    (tmp_path / "kept.safetensors").rename(converted / "model.safetensors")
    # ... until the record is removed to accept the new file: then it is converted afresh, not served stale
    (cache / "hashes" / "first.pth.tar.json").unlink()
    assert torch.equal(weights(avidzoo.from_pretrained("test_avid.local")), weights(other))
