"""CrissCross, GDT and XDC weights through the registry: checkpoints written the way each original saves them (built
here from the facts sheet, random weights), loaded offline from a drop folder, strictly; the torchvision graph
against torchvision itself; feature maps per graph; their audio inputs against NumPy references; extraction and a
finetuning step for one model of each graph."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, R2Plus1dStem, VideoResNet

import avidzoo
from avidzoo.cli import main as cli
from avidzoo.errors import CheckpointError, ChecksumError
from avidzoo.extract import FeatureExtractor
from avidzoo.models.video import R2Plus1D
from avidzoo.train import FinetuneConfig, finetune, read_metrics

from conftest import REPO_ROOT, randomize_bn
from media import make_action_videos, make_video

TOL = dict(rtol=1e-4, atol=1e-5)


def seeded(module: nn.Module, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    for p in module.parameters():
        nn.init.normal_(p, std=0.05)
    randomize_bn(module, seed)
    return module.eval()


# -- the originals' layouts, from the facts sheet ------------------------------------------------------------------
def crisscross_audio_state(seed: int) -> dict[str, torch.Tensor]:
    """CrissCross's audio ResNet-18 as its code names it: stem ``conv1.{0,1}``, stages ``block1..4``, no fc."""
    net = torchvision.models.resnet18()
    net.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    seeded(net, seed)
    out = {}
    for k, v in net.state_dict().items():
        if k.startswith("fc."):
            continue
        k = k.replace("conv1.", "conv1.0.", 1) if k.startswith("conv1.") else k
        k = "conv1.1." + k[len("bn1."):] if k.startswith("bn1.") else k
        k = "block" + k[len("layer"):] if k.startswith("layer") else k
        out[k] = v.clone()
    return out


def zipped(path: Path, inner: str, obj) -> Path:
    """A zip around a torch file (CrissCross's ``.pth.tar.zip``)."""
    raw = path.with_suffix(".tmp")
    torch.save(obj, raw)
    with zipfile.ZipFile(path, "w") as z:
        z.write(raw, inner)
    raw.unlink()
    return path


def gdt_checkpoint(seed: int, *, audio: bool = True, args: argparse.Namespace | None = None) -> dict:
    """GDT's ``save_checkpoint``: ``{"model", "optimizer", "lr_scheduler", "epoch", "args"}``; the model holds
    ``video_network.base.*`` (torchvision r2plus1d_18 without fc), ``audio_network.base.*`` (a ResNet-9 with its
    unused 1000-way fc) and the MLP heads; the video-text model has ``text_network.*`` instead of audio."""
    video = seeded(torchvision.models.video.r2plus1d_18(), seed)
    model = {f"video_network.base.{k}": v for k, v in video.state_dict().items() if not k.startswith("fc.")}
    if audio:
        net = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1])
        net.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
        model.update({f"audio_network.base.{k}": v for k, v in seeded(net, seed + 1).state_dict().items()})
    heads = ("mlp_v", "mlp_a") if audio else ("mlp_v", "mlp_t")
    for h in heads:
        model.update({f"{h}.block_forward.2.weight": torch.randn(512, 512),
                      f"{h}.block_forward.4.weight": torch.ones(512), f"{h}.block_forward.4.bias": torch.zeros(512),
                      f"{h}.block_forward.4.running_mean": torch.zeros(512),
                      f"{h}.block_forward.4.running_var": torch.ones(512),
                      f"{h}.block_forward.4.num_batches_tracked": torch.tensor(5),
                      f"{h}.block_forward.8.weight": torch.randn(256, 512),
                      f"{h}.block_forward.8.bias": torch.zeros(256)})
    if not audio:
        model.update({"text_network.word_embd.weight": torch.randn(50, 300), "text_network.fc1.weight":
                      torch.randn(2048, 300), "text_network.fc1.bias": torch.zeros(2048)})
    args = args if args is not None else argparse.Namespace(aud_spec_type=1, z_normalize=True, model="av_gdt",
                                                            use_mlp=True, lr=0.01, num_frames=30)
    return {"model": model, "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": []}]},
            "lr_scheduler": {"last_epoch": 100}, "epoch": 101, "args": args}


class _VMZConv(Conv2Plus1D):
    """XDC's (2+1)D conv: mid channels from its own widths (facts §2.3), whatever the block passes."""

    def __init__(self, in_planes, out_planes, midplanes, stride=1, padding=1):
        super().__init__(in_planes, out_planes, (in_planes * out_planes * 27) // (in_planes * 9 + 3 * out_planes),
                         stride, padding)


def xdc_state(seed: int) -> dict[str, torch.Tensor]:
    """XDC's released layout: its VideoResNet's state dict, no fc, no ``num_batches_tracked`` (a Caffe2 export)."""
    net = VideoResNet(BasicBlock, [_VMZConv] * 4, [2, 2, 2, 2], R2Plus1dStem)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.eps = 1e-3
    seeded(net, seed)
    return {k: v for k, v in net.state_dict().items() if not k.startswith("fc.") and "num_batches" not in k}, net


@pytest.fixture
def drop(tmp_path, monkeypatch):
    folder = tmp_path / "drop"
    folder.mkdir()
    monkeypatch.setenv("AVIDZOO_WEIGHTS_DIR", str(folder))
    monkeypatch.setenv("AVIDZOO_OFFLINE", "1")
    return folder


def overlay(tmp_path, monkeypatch, name: str, entry: dict) -> None:
    base = json.loads((REPO_ROOT / "weights_manifest.json").read_text())
    path = tmp_path / f"overlay-{name}.json"  # the manifest is cached per AVIDZOO_MANIFEST value
    path.write_text(json.dumps({"schema_version": 1, "weights": {name: {**base["weights"][entry.pop("like")],
                                                                        **entry}}}))
    monkeypatch.setenv("AVIDZOO_MANIFEST", str(path))


# -- CrissCross ----------------------------------------------------------------------------------------------------
def test_crisscross_files_load_strictly_and_the_first_download_is_the_reference(drop, tmp_path, caplog):
    video = seeded(R2Plus1D(18, pool="avg"), 1).state_dict()
    audio = crisscross_audio_state(2)
    zipped(drop / "vid_crisscross_audioset.pth.tar.zip", "vid_crisscross_audioset.pth.tar", video)
    torch.save(audio, drop / "aud_crisscross_audioset.pth.tar.zip")  # a torch zip file, only renamed: also read
    with caplog.at_level(logging.WARNING, logger="avidzoo"):
        model = avidzoo.from_pretrained("crisscross_r2plus1d")  # the default tag: audioset2m
    assert model.config["weights"] == "crisscross_r2plus1d.audioset2m" and model.modalities == ("video", "audio")
    assert "no published hash" in caplog.text
    state = model.state_dict()
    assert {k for k in state if k.startswith("video_encoder.")} == {f"video_encoder.{k}" for k in video}
    for k, v in video.items():
        assert torch.equal(state[f"video_encoder.{k}"], v)
    assert torch.equal(state["audio_encoder.bn1.running_var"], audio["conv1.1.running_var"])
    assert torch.equal(state["audio_encoder.layer4.1.conv2.weight"], audio["block4.1.conv2.weight"])
    assert len([k for k in state if k.startswith("audio_encoder.")]) == len(audio)
    assert isinstance(model.video_encoder.pool, nn.AdaptiveAvgPool3d)
    # the registry name straight into `avidzoo extract`, offline, from the drop folder
    video_file = make_video(tmp_path / "v.mp4", fps=30, seconds=2.5, size=(160, 120), pattern="texture")
    assert cli(["extract", str(video_file), "--model", "crisscross_r2plus1d", "--out", str(tmp_path / "feats"),
                "--clips-per-video", "1", "-q"]) == 0
    feats = avidzoo.load_features(tmp_path / "feats")
    assert feats["video"].shape == (1, 512) and feats["audio"].shape == (1, 512)
    assert feats.meta["weights"] == "crisscross_r2plus1d.audioset2m"
    records = sorted(p.name for p in (tmp_path / "cache" / "hashes").iterdir())
    assert records == ["aud_crisscross_audioset.pth.tar.zip.json", "vid_crisscross_audioset.pth.tar.zip.json"]
    # a different file under the same name, later: refused, naming the recorded digest
    zipped(drop / "vid_crisscross_audioset.pth.tar.zip", "vid_crisscross_audioset.pth.tar",
           seeded(R2Plus1D(18), 3).state_dict())
    for folder in (tmp_path / "cache" / "weights").iterdir():
        for f in folder.iterdir():
            f.unlink()
    with pytest.raises(ChecksumError, match="recorded when vid_crisscross_audioset.pth.tar.zip was first downloaded"):
        avidzoo.from_pretrained("crisscross_r2plus1d.audioset")


def test_crisscross_towers_load_from_their_own_files(drop):
    """One tower of a per-tower release needs only its file: offline, the video tower loads from the ``vid_`` file
    alone; both towers then ask for the ``aud_`` file; once it is there the audio tower joins the cached video tower
    (the video file is not read again)."""
    video = seeded(R2Plus1D(18, pool="avg"), 11).state_dict()
    audio = crisscross_audio_state(12)
    zipped(drop / "vid_crisscross_kinetics_400.pth.tar.zip", "vid_crisscross_kinetics_400.pth.tar", video)
    model = avidzoo.from_pretrained("crisscross_r2plus1d.kinetics400", modalities=("video",))
    assert model.modalities == ("video",)
    key = "conv5x.1.tmp_conv2.weight"
    assert torch.equal(model.state_dict()[f"video_encoder.{key}"], video[key])
    with pytest.raises(avidzoo.errors.WeightsNotFoundError, match="aud_crisscross_kinetics_400.pth.tar.zip"):
        avidzoo.from_pretrained("crisscross_r2plus1d.kinetics400")
    zipped(drop / "aud_crisscross_kinetics_400.pth.tar.zip", "aud_crisscross_kinetics_400.pth.tar", audio)
    (drop / "vid_crisscross_kinetics_400.pth.tar.zip").rename(drop / "moved_away.zip")  # served from the cache now
    both = avidzoo.from_pretrained("crisscross_r2plus1d.kinetics400")
    assert both.modalities == ("video", "audio")
    state = both.state_dict()
    assert torch.equal(state[f"video_encoder.{key}"], video[key])
    assert torch.equal(state["audio_encoder.layer4.1.bn2.running_var"], audio["block4.1.bn2.running_var"])
    assert avidzoo.from_pretrained("crisscross_r2plus1d.kinetics400", modalities=("audio",)).modalities == ("audio",)


def test_release_files_load_by_path(tmp_path, caplog):
    """Each sibling's release file given by path: by its release name (the weight's layout, config and
    preprocessing), renamed (the layout its contents show, said in a warning) or named with release=; CrissCross's
    zip, the file inside it, and a zip with archive-tool noise; `avidzoo convert` of each."""
    video = seeded(R2Plus1D(18, pool="avg"), 21).state_dict()
    audio = crisscross_audio_state(22)
    key = "conv5x.1.tmp_conv2.weight"
    vid_zip = zipped(tmp_path / "vid_crisscross_audioset.pth.tar.zip", "vid_crisscross_audioset.pth.tar", video)
    torch.save(video, tmp_path / "vid_crisscross_audioset.pth.tar")  # what CrissCross's own evaluation reads
    with zipfile.ZipFile(vid_zip, "a") as z:  # a Mac's archive utility adds these
        z.writestr("__MACOSX/._vid_crisscross_audioset.pth.tar", b"\0\5\x16\x07")
        z.writestr(".DS_Store", b"Bud1")
    for path in (vid_zip, tmp_path / "vid_crisscross_audioset.pth.tar"):
        m = avidzoo.from_pretrained(path)
        assert m.modalities == ("video",) and m.config["weights"] == "crisscross_r2plus1d.audioset2m"
        assert torch.equal(m.state_dict()[f"video_encoder.{key}"], video[key])
        assert m.config["preprocessing"]["audio"]["kind"] == "log_mel"  # CrissCross's inputs, not AVID's
    torch.save(audio, tmp_path / "aud_crisscross_audioset.pth.tar")
    m = avidzoo.from_pretrained(tmp_path / "aud_crisscross_audioset.pth.tar")
    assert m.modalities == ("audio",) and isinstance(m.audio_encoder, type(avidzoo.create_model(
        "crisscross_r2plus1d", modalities=("audio",)).audio_encoder))
    with pytest.raises(ValueError, match="holds no video tower"):
        avidzoo.from_pretrained(tmp_path / "aud_crisscross_audioset.pth.tar", modalities=("video",))
    # renamed: the contents show the layout; the warning says which preprocessing was taken
    torch.save(video, tmp_path / "my_video_tower.pt")
    with caplog.at_level(logging.WARNING, logger="avidzoo"):
        m = avidzoo.from_pretrained(tmp_path / "my_video_tower.pt")
    assert "read as a crisscross release file" in caplog.text and m.modalities == ("video",)
    m = avidzoo.from_pretrained(tmp_path / "my_video_tower.pt", release="crisscross_r2plus1d.kinetics400")
    assert m.config["weights"] == "crisscross_r2plus1d.kinetics400" and m.modalities == ("video",)
    # GDT by its release name, renamed, and named
    torch.save(gdt_checkpoint(23), tmp_path / "gdt_K400.pth")
    m = avidzoo.from_pretrained(tmp_path / "gdt_K400.pth")
    assert m.config["weights"] == "gdt_r2plus1d.kinetics400" and m.modalities == ("video", "audio")
    (tmp_path / "gdt_K400.pth").rename(tmp_path / "checkpoint.pth")  # GDT's own save name
    assert avidzoo.from_pretrained(tmp_path / "checkpoint.pth").config["weights"] == "gdt_r2plus1d.ig65m"
    assert avidzoo.from_pretrained(tmp_path / "checkpoint.pth", release="gdt_r2plus1d.kinetics400").config[
        "weights"] == "gdt_r2plus1d.kinetics400"
    # XDC renamed (its release name carries a hash prefix our random file cannot have) and named
    state, _ = xdc_state(24)
    torch.save(state, tmp_path / "xdc.pth")
    m = avidzoo.from_pretrained(tmp_path / "xdc.pth", release="xdc_r2plus1d.audioset2m")
    assert m.config["weights"] == "xdc_r2plus1d.audioset2m" and m.modalities == ("video",)
    assert torch.equal(m.state_dict()["video_encoder.layer2.0.conv2.0.0.weight"], state["layer2.0.conv2.0.0.weight"])
    assert avidzoo.from_pretrained(tmp_path / "xdc.pth").config["weights"] == "xdc_r2plus1d.ig65m_kinetics"
    # anything else is refused with what was tried
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="nor a release file of CrissCross, GDT or XDC"):
        avidzoo.from_pretrained(tmp_path / "other.pth")
    # the command line converts each
    for src in (vid_zip, tmp_path / "checkpoint.pth"):
        assert cli(["convert", str(src), str(tmp_path / f"conv_{src.stem}")]) == 0
        assert avidzoo.from_pretrained(tmp_path / f"conv_{src.stem}").config["weights"] in (
            "crisscross_r2plus1d.audioset2m", "gdt_r2plus1d.ig65m")
    assert cli(["convert", str(tmp_path / "checkpoint.pth"), str(tmp_path / "conv_named"), "--release",
                "gdt_r2plus1d.kinetics400"]) == 0
    assert avidzoo.from_pretrained(tmp_path / "conv_named").config["weights"] == "gdt_r2plus1d.kinetics400"


def test_a_drop_folder_finds_crisscross_files_unzipped(drop):
    video = seeded(R2Plus1D(18, pool="avg"), 25).state_dict()
    torch.save(video, drop / "vid_crisscross_kinetics_sound.pth.tar")  # unzipped, as CrissCross's scripts read it
    torch.save(crisscross_audio_state(26), drop / "aud_crisscross_kinetics_sound.pth.tar.zip")
    model = avidzoo.from_pretrained("crisscross_r2plus1d.kinetics_sound")
    assert model.modalities == ("video", "audio")
    assert torch.equal(model.state_dict()["video_encoder.conv1.0.weight"], video["conv1.0.weight"])
    records = sorted(p.name for p in (Path(os.environ["AVIDZOO_HOME"]) / "hashes").iterdir())
    assert records == ["aud_crisscross_kinetics_sound.pth.tar.zip.json", "vid_crisscross_kinetics_sound.pth.tar.json"]
    again = avidzoo.from_pretrained("crisscross_r2plus1d.kinetics_sound")  # served from the cache, not reconverted
    assert torch.equal(again.state_dict()["video_encoder.conv1.0.weight"], video["conv1.0.weight"])


def test_crisscross_audio_input_is_librosa_log_mel():
    """The torch log-mel (batched, any device) against a NumPy reference written from the formula: Slaney mel scale
    and area normalisation (librosa's defaults), |STFT|^2 + eps, ln(mel + eps), the scalar normalisation."""
    t = avidzoo.create_transforms("crisscross_r2plus1d").audio
    g = np.random.default_rng(0)
    wave = (g.standard_normal((2, 1, 32000)) * 0.1).astype(np.float32)
    out = t(torch.from_numpy(wave))
    assert out.shape == (2, 1, 80, 201) == (2, *t.output_shape)

    def hz_to_mel(f):  # Slaney: linear to 1 kHz, logarithmic above
        f = np.asarray(f, np.float64)
        return np.where(f < 1000, f / (200 / 3), 15 + np.log(np.maximum(f, 1e-9) / 1000) / (np.log(6.4) / 27))

    def mel_to_hz(m):
        return np.where(m < 15, m * 200 / 3, 1000 * np.exp((m - 15) * np.log(6.4) / 27))

    sr, n_fft, hop, n_mels = 16000, 1024, 160, 80
    fft_hz = np.linspace(0, sr / 2, n_fft // 2 + 1)
    pts = mel_to_hz(np.linspace(hz_to_mel(0), hz_to_mel(sr / 2), n_mels + 2))
    weights = np.zeros((n_mels, n_fft // 2 + 1))
    for i in range(n_mels):
        lower = (fft_hz - pts[i]) / (pts[i + 1] - pts[i])
        upper = (pts[i + 2] - fft_hz) / (pts[i + 2] - pts[i + 1])
        weights[i] = np.maximum(0, np.minimum(lower, upper)) * 2.0 / (pts[i + 2] - pts[i])
    for b in range(2):
        y = np.pad(wave[b, 0].astype(np.float64), n_fft // 2, mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop]
        window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
        power = np.abs(np.fft.rfft(frames * window, axis=1)).T ** 2 + np.finfo(float).eps
        ref = (np.log(weights @ power + np.finfo(np.float32).eps) + 5.3688107) / 4.410007
        np.testing.assert_allclose(out[b, 0].numpy(), ref, rtol=1e-4, atol=2e-4)


# -- GDT -----------------------------------------------------------------------------------------------------------
def test_gdt_checkpoint_with_namespace_args(drop, tmp_path):
    args = argparse.Namespace(aud_spec_type=2, z_normalize=False, model="av_gdt", use_mlp=True)
    ckpt = gdt_checkpoint(4, args=args)
    torch.save(ckpt, drop / "gdt_K400.pth")
    model = avidzoo.from_pretrained("gdt_r2plus1d.kinetics400")
    state = model.state_dict()
    model_keys = {k for k in ckpt["model"] if k.startswith(("video_network.", "audio_network."))}
    assert len(state) == len(model_keys) - 2  # the audio network's unused fc (weight, bias) is dropped
    assert torch.equal(state["video_encoder.layer2.0.conv1.0.0.weight"],
                       ckpt["model"]["video_network.base.layer2.0.conv1.0.0.weight"])
    assert torch.equal(state["audio_encoder.layer3.0.downsample.1.running_mean"],
                       ckpt["model"]["audio_network.base.layer3.0.downsample.1.running_mean"])
    assert not any("mlp" in k or k.startswith("audio_encoder.fc") for k in state)
    # the checkpoint's args decide the audio input: aud_spec_type 2 is 257 filters, and no z-normalisation
    audio = model.config["preprocessing"]["audio"]
    assert (audio["n_filters"], audio["z_normalize"]) == (257, False)
    assert avidzoo.create_transforms(model).audio.output_shape == (1, 257, 99)
    # the video-text model has no audio tower
    torch.save(gdt_checkpoint(5, audio=False), drop / "gdt_HT100M.pth")
    ht = avidzoo.from_pretrained("gdt_r2plus1d.ht100m")
    assert ht.modalities == ("video",)
    with pytest.raises(ValueError, match="no audio tower"):
        avidzoo.from_pretrained("gdt_r2plus1d.ht100m", modalities=("audio",))
    # any other class in the pickle is refused, never unpickled
    bad = gdt_checkpoint(6, args=argparse.Namespace(aud_spec_type=1, when=datetime.date(2021, 1, 1)))
    torch.save(bad, drop / "gdt_IG65M.pth")
    with pytest.raises(CheckpointError, match="other than tensors"):
        avidzoo.from_pretrained("gdt_r2plus1d.ig65m")


class _Warmup(torch.optim.lr_scheduler.LRScheduler):
    """A warm-up scheduler handing over to another, as GDT's pretraining uses one (a 10-epoch warm-up): its
    ``state_dict()`` (what GDT's ``save_checkpoint`` stores) keeps ``after_scheduler``, the torch scheduler object
    itself, which holds the optimizer."""

    def __init__(self, optimizer, total_epoch: int, after_scheduler) -> None:
        self.total_epoch, self.after_scheduler, self.finished = total_epoch, after_scheduler, True
        super().__init__(optimizer)

    def get_lr(self):
        return [lr * min(1.0, (self.last_epoch + 1) / self.total_epoch) for lr in self.base_lrs]


def test_gdt_checkpoint_with_a_pickled_warmup_scheduler_loads(drop):
    """GDT's save path with warm-up: ``lr_scheduler`` pickles a MultiStepLR object with its SGD optimizer (momentum
    buffers in a defaultdict, milestones in a Counter). Read with inert stand-ins, nothing of them run; a file with
    a real payload is still refused."""
    ckpt = gdt_checkpoint(7)
    params = [nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(3))]
    sgd = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-5)
    (params[0].sum() + params[1].sum()).backward()
    sgd.step()
    for cls in (torch.optim.lr_scheduler.MultiStepLR, torch.optim.lr_scheduler.CosineAnnealingLR):
        after = cls(sgd, [30, 60]) if cls is torch.optim.lr_scheduler.MultiStepLR else cls(sgd, 100)
        warmup = _Warmup(sgd, 10, after)
        ckpt.update(optimizer=sgd.state_dict(), lr_scheduler=warmup.state_dict())
        raw = drop / "raw.pth"
        torch.save(ckpt, raw)
        pickled = raw.read_bytes()
        for name in (cls.__name__.encode(), b"SGD", b"defaultdict"):  # the file really holds those objects
            assert name in pickled
        with pytest.raises(pickle.UnpicklingError, match="Unsupported global"):
            torch.load(raw, weights_only=True)  # what a plain weights-only read says of such a file
        raw.rename(drop / "gdt_K400.pth")
        for folder in (Path(os.environ["AVIDZOO_HOME"]) / "weights").glob("gdt_*"):
            shutil.rmtree(folder)
        (Path(os.environ["AVIDZOO_HOME"]) / "hashes" / "gdt_K400.pth.json").unlink(missing_ok=True)
        model = avidzoo.from_pretrained("gdt_r2plus1d.kinetics400")
        assert torch.equal(model.state_dict()["video_encoder.layer4.1.conv2.0.3.weight"],
                           ckpt["model"]["video_network.base.layer4.1.conv2.0.3.weight"])
    # a real payload is refused, never run
    ckpt["lr_scheduler"] = _Payload()
    torch.save(ckpt, drop / "gdt_IG65M.pth")
    with pytest.raises(CheckpointError, match="other than tensors"):
        avidzoo.from_pretrained("gdt_r2plus1d.ig65m")
    assert not (drop / "pwned").exists()


class _Payload:
    """What a malicious checkpoint carries: unpickling it would run a shell command."""

    def __reduce__(self):
        return os.system, (f"touch {os.environ['AVIDZOO_HOME']}/../drop/pwned",)


def gdt_view(frames: torch.Tensor, size: int = 128, crop: int = 112) -> torch.Tensor:
    """GDT's evaluation view, written from its transform's steps: uint8 ``(T, H, W, 3)`` / 255, mean 0.45 and std
    0.225, to ``(T, 3, H, W)``, short side to ``size`` with the long side ``floor(long / short * size)`` by
    ``F.interpolate(bilinear, align_corners=False)`` (no antialiasing), the crop at ``ceil((H - crop) / 2)``;
    returns ``(3, T, crop, crop)``."""
    x = ((frames.float() / 255.0 - 0.45) / 0.225).permute(0, 3, 1, 2)
    h, w = x.shape[2:]
    nh, nw = (math.floor(h / w * size), size) if w < h else (size, math.floor(w / h * size))
    x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
    y0, x0 = math.ceil((nh - crop) / 2), math.ceil((nw - crop) / 2)
    return x[:, :, y0:y0 + crop, x0:x0 + crop].permute(1, 0, 2, 3)


def test_gdt_video_input_is_gdts_own_transform(tmp_path):
    """GDT's inputs on real decoded frames of a 1280x714 file (its resized width, 229, leaves an odd margin): the
    weights' transform and extraction's decoding give GDT's view to float precision; AVID's keep their antialiased
    resize and rounded crop."""
    from avidzoo.extract.dataset import ClipDataset
    from avidzoo.io import MediaFile
    from avidzoo.io.frame_rules import rule_clips

    path = make_video(tmp_path / "odd.mp4", fps=30, seconds=1.5, size=(1280, 714), pattern="scene", crf=20)
    with MediaFile(path) as f:
        frames = f.read_video([0.1], num_frames=30, fps=30)[0]  # full resolution
    t = avidzoo.create_transforms("gdt_r2plus1d")
    assert t.video.decoder_scale is None  # the decoder must not pre-scale GDT's frames
    expected = gdt_view(frames)
    torch.testing.assert_close(t.video(frames), expected, rtol=0, atol=2e-5)
    # through extraction's dataset (decoded at full size, transformed in the worker)
    item = ClipDataset([path], t, ["video"], 1)[0]
    with MediaFile(path) as f:  # the frames GDT's decoder takes (tests/test_frame_rules.py)
        clip = f.read_frames([c.times for c in rule_clips(f, "gdt", 1, num_frames=30, fps=30)])[0]
    torch.testing.assert_close(item["video"][0], gdt_view(clip), rtol=0, atol=2e-5)
    # AVID's weights: antialiased, rounded crop, pre-scaled by the decoder, as before
    avid = avidzoo.create_transforms("cross_avid_r2plus1d").video
    assert avid.decoder_scale == 256 and avid.antialias and avid.crop_rounding == "round"


def test_torchvision_graph_equals_torchvision():
    ref = seeded(torchvision.models.video.r2plus1d_18(), 7)
    ref.fc = nn.Identity()
    ours = avidzoo.create_model("gdt_r2plus1d", modalities=("video",)).eval()
    ours.video_encoder.load_state_dict({k: v for k, v in ref.state_dict().items()}, strict=True)
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(ours.encode_video(x), ref(x), **TOL)
        # folded BatchNorm (extraction) keeps the outputs
        fx = FeatureExtractor(ours, device="cpu", dtype="fp32")
        torch.testing.assert_close(fx.encode(video=x)["video"], ref(x), rtol=1e-3, atol=1e-3)


def test_gdt_audio_input_is_python_speech_features_logfbank():
    """The torch log filterbank against a NumPy reference of logfbank's steps (pre-emphasis, rectangular frames with
    the last one zero-padded, |rfft|^2 / n_fft, integer-bin triangular filters, log) and GDT's z-normalisation."""
    t = avidzoo.create_transforms("gdt_r2plus1d").audio
    g = np.random.default_rng(1)
    wave = (g.standard_normal((2, 2, 24000)) * 0.1).astype(np.float32)
    out = t(torch.from_numpy(wave))
    assert out.shape == (2, 1, 40, 99)
    sr, nfft, nfilt, win, hop = 24000, 1024, 40, 480, 240
    mel = np.linspace(2595 * np.log10(1), 2595 * np.log10(1 + sr / 2 / 700), nfilt + 2)
    bins = np.floor((nfft + 1) * 700 * (10 ** (mel / 2595) - 1) / sr)
    fb = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        for i in range(int(bins[j]), int(bins[j + 1])):
            fb[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(int(bins[j + 1]), int(bins[j + 2])):
            fb[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    for b in range(2):
        sig = wave[b].mean(0).astype(np.float64) * 32767
        sig = np.append(sig[0], sig[1:] - 0.97 * sig[:-1])
        n = 1 + math.ceil((len(sig) - win) / hop)
        sig = np.concatenate([sig, np.zeros((n - 1) * hop + win - len(sig))])
        frames = np.stack([sig[i * hop:i * hop + win] for i in range(n)])
        power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
        feat = power @ fb.T
        ref = (np.log(np.where(feat == 0, np.finfo(float).eps, feat)) - 1.93) / 17.89
        np.testing.assert_allclose(out[b, 0].numpy(), ref.T, rtol=1e-4, atol=1e-4)


# -- XDC -----------------------------------------------------------------------------------------------------------
def test_xdc_vmz_graph_loads_strictly_and_checks_the_name_prefix(drop, tmp_path, monkeypatch):
    state, net = xdc_state(8)
    raw = tmp_path / "xdc.pth"
    torch.save(state, raw)
    import hashlib

    prefix = hashlib.sha256(raw.read_bytes()).hexdigest()[:8]
    name = f"r2plus1d_18_xdc_test-{prefix}.pth"
    raw.rename(drop / name)
    overlay(tmp_path, monkeypatch, "xdc_r2plus1d.test", {"like": "xdc_r2plus1d.audioset2m", "file_name": name,
                                                         "sources": [], "sha256_prefix": prefix})
    model = avidzoo.from_pretrained("xdc_r2plus1d.test")
    assert model.modalities == ("video",)
    # a portable copy says whose weights they are and under which terms
    portable = avidzoo.download(["xdc_r2plus1d.test"], to=tmp_path / "portable")["xdc_r2plus1d.test"]
    license_text = (portable / "LICENSE").read_text()
    assert "MIT license" in license_text and "HumamAlwassel/XDC" in license_text
    enc = model.video_encoder
    assert enc.layer2[0].conv2[0][0].weight.shape == (288, 128, 1, 3, 3)  # per-conv mid-planes: 288/576/1152
    assert enc.layer4[0].conv2[0][0].weight.shape == (1152, 512, 1, 3, 3)
    assert all(m.eps == 1e-3 for m in enc.modules() if isinstance(m, nn.BatchNorm3d))
    assert sum(p.numel() for p in enc.parameters()) == 33_165_639
    x = torch.randn(1, 3, 8, 64, 64)
    net.fc = nn.Identity()
    with torch.inference_mode():
        torch.testing.assert_close(model.encode_video(x), net(x), **TOL)
    # stock torchvision cannot hold these weights (size mismatch in the three wider convs)
    with pytest.raises(RuntimeError, match="size mismatch"):
        torchvision.models.video.r2plus1d_18().load_state_dict(state, strict=False)
    # a file whose digest does not start with the prefix its name carries is refused
    wrong = f"r2plus1d_18_xdc_bad-{'0' * 8 if prefix != '0' * 8 else '1' * 8}.pth"
    torch.save(state, drop / wrong)
    overlay(tmp_path, monkeypatch, "xdc_r2plus1d.bad", {"like": "xdc_r2plus1d.audioset2m", "file_name": wrong,
                                                        "sources": [], "sha256_prefix": wrong[-12:-4]})
    with pytest.raises(ChecksumError, match="prefix its release name carries"):
        avidzoo.from_pretrained("xdc_r2plus1d.bad")


def test_info_and_list_show_every_family(capsys):
    assert cli(["list", "--pretrained"]) == 0
    out = capsys.readouterr().out
    for name in ("cross_avid_r2plus1d.kinetics400", "avid_cma_r2plus1d.audioset2m", "gdt_r2plus1d.ig65m",
                 "crisscross_r2plus1d.kinetics_sound", "xdc_r2plus1d.ig65m_kinetics", "supervised_r2plus1d.imagenet"):
        assert name in out
    assert cli(["info", "xdc_r2plus1d"]) == 0
    info = json.loads(capsys.readouterr().out)
    check = info["weights"]["hash_check"][0]
    assert "sha256 prefix f24f6ffb" in check and "first download" in check
    assert cli(["info", "avid_cma_r2plus1d"]) == 0
    assert ": published: sha1" in json.loads(capsys.readouterr().out)["weights"]["hash_check"][0]


# -- every graph end to end ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, video_px, audio_shape, video_maps", [
    ("crisscross_r2plus1d", 224, (1, 80, 201), {"conv1": (64, 8, 56, 56), "conv5x": (512, 1, 7, 7)}),
    ("gdt_r2plus1d", 112, (1, 40, 99), {"conv1": (64, 30, 56, 56), "conv5x": (512, 4, 7, 7)}),
    ("xdc_r2plus1d", 112, None, {"conv1": (64, 32, 56, 56), "conv5x": (512, 4, 7, 7)}),
])
def test_feature_maps_extraction_and_a_finetuning_step(name, video_px, audio_shape, video_maps, tmp_path):
    model = avidzoo.create_model(name).eval()
    t = avidzoo.create_transforms(model)
    frames = int(model.config["preprocessing"]["video"]["num_frames"])
    x = torch.randn(1, 3, frames, video_px, video_px)
    with torch.inference_mode():
        maps = model.forward_features(x, modality="video")
    for layer, shape in video_maps.items():
        assert tuple(maps[layer].shape[1:]) == shape, (layer, maps[layer].shape)
    assert {k: v.shape[1] for k, v in maps.items()} == model.feature_channels("video")
    if audio_shape:
        assert t.audio.output_shape == audio_shape
        with torch.inference_mode():
            amaps = model.forward_features(torch.randn(1, *audio_shape), modality="audio")
        assert {k: v.shape[1] for k, v in amaps.items()} == model.feature_channels("audio")
        # no projection heads were released: the shared space score-av needs does not exist, and it says so
        with pytest.raises(ValueError, match="needs the projection heads"):
            avidzoo.score_av(model, [], progress=False)
    else:
        assert "audio" not in model.modalities and t.audio is None
    # extraction: pooled features and an intermediate layer, through the output folder
    video = make_video(tmp_path / "v.mp4", fps=30, seconds=2.5, size=(160, 120), pattern="texture")
    out = avidzoo.extract_features(model, [video], out=tmp_path / "feats", clips_per_video=2, num_workers=0,
                                   progress=False)
    feats = avidzoo.load_features(out)
    assert feats["video"].shape == (1, 512) and torch.isfinite(feats["video"]).all()
    assert set(feats.features) == set(model.modalities)
    conv = FeatureExtractor(model, layer="conv5x", clips_per_video=1, progress=False).extract([video])
    assert conv["video"].shape == (1, 512 * 16)
    # one finetuning epoch on a tiny action set (classifier warm-up off: the backbone trains)
    folder = model.save_pretrained(tmp_path / "model")
    make_action_videos(tmp_path / "actions", per_class=2, seed=0)
    run = finetune(FinetuneConfig(model=str(folder), train=str(tmp_path / "actions"), out=str(tmp_path / "ft"),
                                  epochs=1, warmup_epochs=0, frames=4, batch_size=4, clips_per_video=1, lr=1e-4,
                                  milestones=[5], test_clips=1, video={"crop_size": 32, "resize": 36},
                                  num_workers=0, log_every=1))
    losses = [r["value"] for r in read_metrics(run) if r["name"] == "loss" and r["kind"] == "train"]
    assert losses and all(math.isfinite(v) for v in losses)
    tuned = avidzoo.from_pretrained(run / "best")
    assert tuned.config["video"] == model.config["video"] and tuned.classifier is not None
