"""The README repeats numbers from the manifest for readers; these tests keep the two in step."""

from __future__ import annotations

import re

import avidzoo
from avidzoo.config import resolve_weights
from avidzoo.manifest import get_manifest

from conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def test_readme_opens_with_install_and_test_commands():
    block = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert block == ['pip install -c constraints.txt ".[dev,ray,remote]"', "pytest"]
    assert README.index("```bash") < README.index("## ")


def test_readme_weights_table_matches_manifest():
    rows = {m.group(1): m.groups()[1:] for m in re.finditer(
        r"^\| `([\w.]+)` \| ([^|]+) \| ([^|]+) \| (yes|no) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+|-) \| ([\w/]+) "
        r"\| ([^|]+) \|$",
        README, re.M)}
    manifest = get_manifest()
    weights = manifest.data["weights"]
    assert set(rows) == set(weights)
    for name, (method, data, audio, ucf, hmdb, kin, protocol, lic) in rows.items():
        w = weights[name]
        spec, make_config = resolve_weights(name)
        title = manifest.model(spec.model).method_info["title"]
        assert title.lower().startswith(method.strip().lower()), (name, method)
        assert data.strip() == w["pretrain_data"] and lic.strip() == w["license"] and protocol == w["protocol"]
        assert (audio == "yes") == ("audio" in make_config()["modalities"])
        assert (float(ucf), float(hmdb)) == (w["metrics"]["ucf101_video@1"], w["metrics"]["hmdb51_video@1"])
        assert (None if kin == "-" else float(kin)) == w["metrics"].get("kinetics400_linear")


def test_readme_names_every_model():
    for name in avidzoo.list_models():
        assert f"`{name}`" in README, name
