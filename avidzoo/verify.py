"""``avidzoo verify``: check weights on disk without loading a model."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import hub
from ._files import verify_file
from .config import resolve_weights
from .convert import read_original_checkpoint
from .errors import AvidzooError
from .manifest import get_manifest
from .serialization import CONFIG_FILE, WEIGHTS_FILE, read_pretrained_dir, read_safetensors

__all__ = ["VerifyReport", "verify"]


@dataclass
class VerifyReport:
    """What was checked (``checks``) and what failed (``problems``); ``ok`` when nothing failed."""

    target: str
    checks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.checks)

    def __str__(self) -> str:
        lines = [f"{self.target}: {'OK' if self.ok else 'FAILED'}"]
        lines += [f"  ok   {c}" for c in self.checks] + [f"  FAIL {p}" for p in self.problems]
        return "\n".join(lines)


def verify(name_or_path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> VerifyReport:
    """Re-hash and read a registry weight's cached files, a saved folder, a ``.safetensors`` or a ``.pth.tar``.

    Hashes are recomputed from the bytes (no stamp is trusted). Nothing is downloaded.
    """
    target = os.fspath(name_or_path)
    report = VerifyReport(target)
    path = Path(target.removeprefix("local-dir:")).expanduser()
    try:
        if path.is_dir():
            _verify_folder(path, report)
        elif path.is_file():
            _verify_file(path, report)
        else:
            _verify_registry(target, cache_dir, report)
    except AvidzooError as e:
        report.problems.append(str(e))
    return report


def _verify_folder(folder: Path, report: VerifyReport) -> None:
    cfg = json.loads((folder / CONFIG_FILE).read_text()) if (folder / CONFIG_FILE).is_file() else {}
    recorded = (cfg.get("files") or {}).get(WEIGHTS_FILE)
    if recorded:
        verify_file(folder / WEIGHTS_FILE, {"sha256": recorded["sha256"]}, recorded.get("size"), use_stamp=False)
        report.checks.append(f"{folder / WEIGHTS_FILE}: sha256 {recorded['sha256']} and size {recorded['size']}")
    else:
        report.problems.append(f"{folder / CONFIG_FILE}: records no hash of {WEIGHTS_FILE}")
    _, state = read_pretrained_dir(folder)
    report.checks.append(f"{folder}: {len(state)} tensors readable")


def _verify_file(path: Path, report: VerifyReport) -> None:
    manifest = get_manifest()
    known = [(spec, f) for spec in map(manifest.weight, manifest.data["weights"]) for f in spec.files
             if f.file_name == path.name]
    if known:
        spec, file = known[0]
        digests = verify_file(path, file.hashes, file.size_bytes, use_stamp=False)
        if file.published:
            report.checks.append(f"{path}: matches {spec.name} "
                                 f"({', '.join(f'{k} {digests[k]}' for k in file.hashes)})")
        else:
            report.checks.append(f"{path}: {spec.name} publishes no full hash; sha256 {digests['sha256']}")
    if path.suffix == ".safetensors":
        _, state = read_safetensors(path)
    else:
        state = read_original_checkpoint(path)
    report.checks.append(f"{path}: {len(state)} tensors readable")


def _verify_registry(name: str, cache_dir: str | os.PathLike | None, report: VerifyReport) -> None:
    spec, _ = resolve_weights(name)
    report.target = spec.name
    found = False
    for folder in hub.weights_folders(spec, cache_dir):
        if (folder / WEIGHTS_FILE).is_file():
            found = True
            source = (json.loads((folder / CONFIG_FILE).read_text()).get("source") or {}).get("hashes")
            if source != dict(spec.hashes):
                report.problems.append(f"{folder}: converted from a file with hashes {source}, not {dict(spec.hashes)}")
            else:
                report.checks.append(f"{folder}: converted from the expected original ({dict(spec.hashes)})")
            _verify_folder(folder, report)
    if not found:
        report.problems.append(f"{spec.name}: not on this machine; `avidzoo download {spec.name}` fetches it")
