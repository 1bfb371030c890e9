"""Original checkpoints and saved folders load through every entry point, exactly."""

from __future__ import annotations

import collections
import json
import pickle

import pytest
import torch
from safetensors import safe_open

import avidzoo
from avidzoo.convert import read_original_checkpoint
from avidzoo.errors import CheckpointError, ChecksumError, WeightsNotFoundError

from conftest import assert_same_outputs


def test_original_layout_is_what_the_release_has(original):
    path, _, _ = original
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert list(raw) == ["epoch", "model", "optimizer", "train_criterion"]
    assert len(raw["model"]) == 267 and all(k.startswith("module.") for k in raw["model"])
    assert b"cuda:0" in path.read_bytes()[:4096]  # storages tagged as saved from a GPU
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(path, weights_only=True)  # why map_location is mandatory on this machine


def test_key_mapping(original):
    path, reference, _ = original
    state = read_original_checkpoint(path)
    assert set(state) == set(reference.state_dict())
    assert "video_encoder.conv5x.0.res_conv.weight" in state and "audio_head.4.bias" in state
    for k, v in reference.state_dict().items():
        assert torch.equal(state[k], v), k


def test_only_the_leading_module_prefix_is_stripped():
    from avidzoo.convert import map_original_keys

    t = torch.zeros(1)
    out = map_original_keys({"module.video_model.conv1.0.weight": t, "audio_model.block1.conv1.weight": t})
    assert set(out) == {"video_encoder.conv1.0.weight", "audio_encoder.block1.conv1.weight"}
    with pytest.raises(CheckpointError, match="unexpected key"):
        map_original_keys({"module.module.video_model.conv1.0.weight": t})


def test_from_pretrained_path_equals_direct_forward(original, clips):
    path, reference, _ = original
    model = avidzoo.from_pretrained(path)
    assert not model.training and model.modalities == ("video", "audio")
    assert_same_outputs(model, reference, clips)
    # A fresh model differs, so the equality above is not vacuous.
    fresh = avidzoo.create_model("cross_avid_r2plus1d").eval()
    with torch.inference_mode():
        assert not torch.allclose(fresh.encode_video(clips[0]), reference.encode_video(clips[0]))


def test_single_tower_load(original, clips):
    path, reference, _ = original
    video_only = avidzoo.from_pretrained(path, modalities=("video",))
    assert video_only.modalities == ("video",)
    assert not any(k.startswith("audio") for k in video_only.state_dict())
    assert_same_outputs(video_only, reference, clips, modalities=("video",))


def test_pretrained_backbone_with_new_classifier(original, clips):
    path, reference, _ = original
    model = avidzoo.from_pretrained(path, num_classes=7, label_names=[f"c{i}" for i in range(7)])
    assert model.classifier[1].out_features == 7
    with torch.inference_mode():
        torch.testing.assert_close(model.encode_video(clips[0]), reference.encode_video(clips[0]), rtol=0, atol=0)
        assert model(clips[0]).shape == (2, 7)


def test_save_pretrained_round_trip_with_head_and_labels(original, clips, tmp_path):
    path, _, _ = original
    labels = ["run", "jump", "swim"]
    model = avidzoo.from_pretrained(path, num_classes=3, label_names=labels)
    torch.nn.init.normal_(model.classifier[1].weight)  # a "finetuned" head
    out = model.save_pretrained(tmp_path / "saved")
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "README.md"}
    config = json.loads((out / "config.json").read_text())
    assert config["label_names"] == labels and config["num_classes"] == 3
    assert config["files"]["model.safetensors"]["size"] == (out / "model.safetensors").stat().st_size
    card = (out / "README.md").read_text()
    assert "run, jump, swim" in card and "CC BY-NC" in card
    for source in (out, f"local-dir:{out}", out / "model.safetensors"):
        loaded = avidzoo.from_pretrained(source)
        assert loaded.label_names == labels
        for k, v in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), (source, k)
        with torch.inference_mode():
            torch.testing.assert_close(loaded(clips[0]), model.eval()(clips[0]), rtol=0, atol=0)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["avidzoo_config"])["label_names"] == labels


def test_saved_folder_detects_tampering(original, tmp_path):
    model = avidzoo.from_pretrained(original[0], modalities=("audio",))
    out = model.save_pretrained(tmp_path / "saved")
    data = bytearray((out / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF  # same size, different bytes
    (out / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="sha256 mismatch: expected"):
        avidzoo.from_pretrained(out)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_original_checkpoint_is_a_clear_error(original, tmp_path, damage):
    data = original[0].read_bytes()
    bad = tmp_path / "broken.pth.tar"
    bad.write_bytes({"truncate": data[: len(data) // 3], "garbage": b"\x00not a checkpoint" * 100,
                     "empty": b""}[damage])
    with pytest.raises(CheckpointError, match="broken.pth.tar: not a readable PyTorch checkpoint"):
        avidzoo.from_pretrained(bad)


class Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoint_with_python_objects_is_refused(tmp_path, capsys):
    bad = tmp_path / "evil.pth"
    torch.save({"model": collections.OrderedDict(a=torch.zeros(1)), "hook": Exploit()}, bad)
    with pytest.raises(CheckpointError, match="never unpickles"):
        avidzoo.from_pretrained(bad)
    assert "this must never run" not in capsys.readouterr().out
    raw = tmp_path / "raw.pkl.pth"
    raw.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(CheckpointError, match="raw.pkl.pth"):
        avidzoo.from_pretrained(raw)
    assert "this must never run" not in capsys.readouterr().out


def test_corrupt_safetensors_is_a_clear_error(original, tmp_path):
    model = avidzoo.from_pretrained(original[0], modalities=("audio",))
    out = model.save_pretrained(tmp_path / "saved")
    data = (out / "model.safetensors").read_bytes()
    for name, payload in (("trunc.safetensors", data[: len(data) // 2]), ("junk.safetensors", b"\xff" * 64)):
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(CheckpointError, match=f"{name}: not a readable safetensors file"):
            avidzoo.from_pretrained(tmp_path / name)


def test_safetensors_without_a_config_says_what_it_assumes(original, tmp_path, caplog):
    from safetensors.torch import save_file

    model = avidzoo.from_pretrained(original[0], modalities=("video",))
    save_file(model.state_dict(), tmp_path / "bare.safetensors")  # no avidzoo header
    with caplog.at_level("WARNING", logger="avidzoo"):
        loaded = avidzoo.from_pretrained(tmp_path / "bare.safetensors")
    assert "bare.safetensors carries no avidzoo config" in caplog.text
    assert loaded.modalities == ("video",)
    torch.testing.assert_close(loaded.state_dict(), model.state_dict())


def test_missing_path_and_unknown_names():
    with pytest.raises(WeightsNotFoundError, match="no such file or directory$"):
        avidzoo.from_pretrained("./nowhere/model.safetensors")
    with pytest.raises(WeightsNotFoundError, match="write 'hf-hub:acme/avid-ucf@v1'"):
        avidzoo.from_pretrained("acme/avid-ucf@v1")  # a Hub repo without its prefix is never guessed
    with pytest.raises(avidzoo.UnknownModelError, match="Did you mean cross_avid_r2plus1d"):
        avidzoo.create_model("cross_avid_r2plus1")
    with pytest.raises(avidzoo.UnknownModelError, match="tags: audioset2m, kinetics400"):
        avidzoo.create_model("cross_avid_r2plus1d.ucf101")


def test_unreleased_methods_say_how_to_get_weights():
    for name in ("self_avid_r2plus1d", "joint_avid_r2plus1d", "robust_xid_r2plus1d"):
        with pytest.raises(avidzoo.NoPretrainedWeightsError, match=r"ever released.*avidzoo\.train"):
            avidzoo.create_model(name, pretrained=True)
        assert avidzoo.create_model(name).config["method"] == name.rsplit("_", 1)[0]


def test_list_models_filters():
    assert avidzoo.list_models("cma") == ["avid_cma_r2plus1d"]
    assert avidzoo.list_models("*avid*kinetics*", pretrained=True) == [
        "avid_cma_r2plus1d.kinetics400", "cross_avid_r2plus1d.kinetics400"]
    assert avidzoo.list_models("gdt", pretrained=True) == [
        "gdt_r2plus1d.ht100m", "gdt_r2plus1d.ig65m", "gdt_r2plus1d.kinetics400"]
    assert len(avidzoo.list_models(pretrained=True)) == 15  # AVID 4, CrissCross 3, GDT 3, XDC 3, supervised 2


def test_create_transforms_follow_the_weights_config():
    t = avidzoo.create_transforms("cross_avid_r2plus1d.kinetics")
    assert t.video.crop_size == 224 and t.video.resize == 256
    assert t.audio.sample_rate == 24000 and t.audio.output_shape == (1, 200, 257)
    video_only = avidzoo.create_model("cross_avid_r2plus1d", modalities=("video",))
    assert avidzoo.create_transforms(video_only).audio is None


def test_transforms_of_a_source_read_only_its_config(original, tmp_path):
    model = avidzoo.from_pretrained(original[0], modalities=("audio",))
    folder = model.save_pretrained(tmp_path / "saved")
    single = tmp_path / "weights.safetensors"
    (folder / "model.safetensors").rename(single)  # the folder is left with config.json alone
    for source in (folder, f"local-dir:{folder}", single):
        t = avidzoo.create_transforms(source)
        assert t.video is None and t.audio.output_shape == (1, 200, 257)
        assert avidzoo.read_config(source)["modalities"] == ["audio"]
    with pytest.raises(CheckpointError, match="missing model.safetensors"):
        avidzoo.from_pretrained(folder)
    assert avidzoo.read_config(original[0])["modalities"] == ["video", "audio"]
    assert avidzoo.read_config("cross_avid_r2plus1d.kinetics")["weights"] == "cross_avid_r2plus1d.kinetics400"
    with pytest.raises(WeightsNotFoundError, match="no such file"):
        avidzoo.read_config(f"local-dir:{tmp_path / 'nothing'}")
