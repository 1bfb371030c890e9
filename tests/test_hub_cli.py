"""torch.hub entry points and the command line, on locally built original-format checkpoints."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch

import avidzoo
from avidzoo.cli import main

from conftest import REPO_ROOT, assert_same_outputs, write_overlay

ENTRYPOINTS = ["cross_avid_r2plus1d", "avid_cma_r2plus1d", "self_avid_r2plus1d", "joint_avid_r2plus1d",
               "robust_xid_r2plus1d", "crisscross_r2plus1d", "gdt_r2plus1d", "xdc_r2plus1d"]


def load_hubconf():
    import importlib.util

    spec = importlib.util.spec_from_file_location("avidzoo_hubconf", REPO_ROOT / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hub_entrypoints_have_docstrings():
    # What torch.hub.list / torch.hub.help report: public callables and their __doc__.
    hubconf = load_hubconf()
    names = {n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")}
    assert set(ENTRYPOINTS + ["transforms"]) <= names
    for name in ENTRYPOINTS:
        assert "avidzoo.create_model" in getattr(hubconf, name).__doc__, name


def test_hub_dependencies_cover_every_import():
    import ast

    deps = load_hubconf().dependencies
    imported = set()
    for path in (REPO_ROOT / "avidzoo").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    # Optional extras (pyproject's optional-dependencies, imported only where used) are not hub dependencies:
    # torch.hub would refuse to load a model without them.
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    optional = {re.split(r"[\[<>=~! ]", req)[0] for name, reqs in extras.items() if name != "dev" for req in reqs}
    third_party = imported - set(sys.stdlib_module_names) - {"avidzoo"} - optional
    assert {"ray", "pyarrow"} <= optional and third_party <= set(deps), third_party - set(deps)


def test_hub_load_untrained():
    model = torch.hub.load(str(REPO_ROOT), "cross_avid_r2plus1d", source="local", pretrained=False, trust_repo=True)
    assert isinstance(model, avidzoo.AVIDModel) and model.config["weights"] is None
    model = torch.hub.load(str(REPO_ROOT), "self_avid_r2plus1d", source="local", trust_repo=True,
                           modalities=("video",), video_depth=10)
    assert model.modalities == ("video",) and model.video_encoder.depth == 10
    with pytest.raises(avidzoo.NoPretrainedWeightsError):
        torch.hub.load(str(REPO_ROOT), "robust_xid_r2plus1d", source="local", pretrained=True, trust_repo=True)


def test_hub_load_pretrained_through_a_mirror(original, clips, tmp_path, monkeypatch):
    """The released entry's file, re-hosted (here: a drop folder) with its hash: hub users get the same weights."""
    path, reference, sha1 = original
    name = "cross_avid_r2plus1d.kinetics400"
    overlay = write_overlay(tmp_path / "o.json", path.name, sha1, ["http://127.0.0.1:9/unreachable"], name=name)
    monkeypatch.setenv("AVIDZOO_MANIFEST", str(overlay))
    monkeypatch.setenv("AVIDZOO_WEIGHTS_DIR", str(path.parent))
    model = torch.hub.load(str(REPO_ROOT), "cross_avid_r2plus1d", source="local", dataset="kinetics",
                           trust_repo=True)
    assert_same_outputs(model, reference, clips)
    t = torch.hub.load(str(REPO_ROOT), "transforms", "cross_avid_r2plus1d.kinetics", source="local",
                       trust_repo=True)
    assert t.video.crop_size == 224


def run_cli(*args: str, capsys) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_list_and_info(capsys):
    code, out, _ = run_cli("list", capsys=capsys)
    assert code == 0 and all(n in out for n in ENTRYPOINTS) and "(no released weights)" in out
    code, out, _ = run_cli("list", "--pretrained", "--json", capsys=capsys)
    assert json.loads(out) == avidzoo.list_models(pretrained=True)
    code, out, _ = run_cli("info", "avid_cma_r2plus1d.audioset", capsys=capsys)
    info = json.loads(out)["weights"]
    assert info["hashes"] == {"sha1": "9db5eba9aab6bdbb74025be57ab532df808fe3f6"}
    assert info["license"] == "CC-BY-NC-4.0" and info["metrics"]["ucf101_video@1"] == 91.5
    assert info["preprocessing"]["audio"]["hop_length"] == 240 and info["cached"] is False
    assert info["sources"][0].startswith("https://dl.fbaipublicfiles.com/")
    code, _, err = run_cli("info", "nope", capsys=capsys)
    assert code == 2 and "unknown model" in err


def test_cli_list_columns_align(capsys):
    """Every row's columns start at the same offsets, whatever a cell's length ("HowTo100M (video-text)")."""
    m = avidzoo.manifest.get_manifest()
    weights = avidzoo.list_models(pretrained=True)
    tables = {
        ("list", "--pretrained"): [[n, m.weight(n).pretrain_data, m.weight(n).license,
                                    " ".join(f"{k}={v}" for k, v in m.weight(n).metrics.items())] for n in weights],
        ("list",): [[n, m.model(n).architecture, ", ".join(m.model(n).tags) or "(no released weights)"]
                    for n in avidzoo.list_models()],
    }
    assert any(len(m.weight(n).pretrain_data) > 20 for n in weights)  # a long name is there to misalign
    for args, rows in tables.items():
        code, out, _ = run_cli(*args, capsys=capsys)
        lines = out.splitlines()
        assert code == 0 and len(lines) == len(rows), args
        offsets = set()
        for line, cells in zip(lines, rows):
            starts, end = [], 0
            for cell in cells:
                start = line.index(cell, end)
                assert start == 0 or line[end:start].isspace() and start - end >= 2, (args, line)  # a clear gap
                starts.append(start)
                end = start + len(cell)
            assert line[end:] == "", (args, line)
            offsets.add(tuple(starts))
        assert len(offsets) == 1, (args, sorted(offsets))


def test_cli_convert_and_verify(original, clips, tmp_path, capsys):
    path, reference, _ = original
    code, out, _ = run_cli("convert", str(path), str(tmp_path / "conv"), capsys=capsys)
    assert code == 0 and "video, audio" in out
    assert_same_outputs(avidzoo.from_pretrained(tmp_path / "conv"), reference, clips)
    code, out, _ = run_cli("verify", str(tmp_path / "conv"), capsys=capsys)
    assert code == 0 and "OK" in out and "sha256" in out
    code, out, _ = run_cli("verify", str(path), capsys=capsys)
    assert code == 0 and "267 tensors readable" in out
    (tmp_path / "conv" / "model.safetensors").write_bytes(b"broken")
    code, out, _ = run_cli("verify", str(tmp_path / "conv"), capsys=capsys)
    assert code == 1 and "FAIL" in out
    code, out, _ = run_cli("verify", "cross_avid_r2plus1d.kinetics", capsys=capsys)
    assert code == 1 and "not on this machine" in out


def test_cli_download_to_portable_folder_and_verify(served, tmp_path, capsys):
    server, name, file_name = served
    code, out, _ = run_cli("download", name, "--to", str(tmp_path / "p"), "-q", capsys=capsys)
    assert code == 0 and str(tmp_path / "p" / name) in out
    code, out, _ = run_cli("verify", name, capsys=capsys)
    assert code == 0 and "converted from the expected original" in out


def test_cli_env_and_entry_point():
    # The installed console script, in a subprocess, as a user runs it.
    exe = Path(sys.executable).with_name("avidzoo")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "avidzoo"]
    res = subprocess.run([*cmd, "env"], capture_output=True, text=True, check=True, env=os.environ)
    env = json.loads(res.stdout)
    assert env["torch"] == torch.__version__ and "libavcodec" in env["ffmpeg"] and "cuda_available" in env
    res = subprocess.run([*cmd, "--help"], capture_output=True, text=True, check=True)
    assert "avidzoo download" in res.stdout
