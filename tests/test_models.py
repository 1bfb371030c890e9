"""The encoders match the original architecture: parameter counts, key layout, shapes, block semantics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import avidzoo
from avidzoo.manifest import get_manifest
from avidzoo.models import Conv2D, R2Plus1D
from avidzoo.models.video import BasicR2P1DBlock

from conftest import randomize_bn


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_the_release():
    expected = get_manifest().data["architectures"]["avid_r2plus1d_18"]["num_params"]
    assert expected == {"video": 15_379_136, "audio": 4_725_696, "head": 590_976}
    m = avidzoo.create_model("cross_avid_r2plus1d")
    assert n_params(m.video_encoder) == expected["video"]
    assert n_params(m.audio_encoder) == expected["audio"]
    assert n_params(m.video_head) == n_params(m.audio_head) == expected["head"]
    # 267 state-dict entries, as the released `model` dict.
    assert len(m.state_dict()) == 267


def test_video_key_layout_per_depth():
    keys10 = set(R2Plus1D(10).state_dict())
    assert "conv2x.spt_conv1.weight" in keys10 and "conv2x.0.spt_conv1.weight" not in keys10
    keys18 = set(R2Plus1D(18).state_dict())
    assert {"conv2x.1.out_bn.running_var", "conv5x.0.res_conv.weight"} <= keys18
    assert "conv2x.0.res_conv.weight" not in keys18  # same width, stride 1: identity shortcut
    assert not any("bias" in k and "conv" in k.split(".")[-2] for k in keys18)  # no conv has a bias
    keys34 = set(R2Plus1D(34).state_dict())
    assert "conv4x.5.tmp_conv2.weight" in keys34 and "conv4x.6.tmp_conv2.weight" not in keys34
    assert R2Plus1D(18).state_dict()["conv5x.0.res_conv.weight"].shape == (512, 256, 1, 1, 1)
    assert R2Plus1D(18).state_dict()["conv1.0.weight"].shape == (64, 3, 3, 7, 7)
    with pytest.raises(ValueError, match="depth"):
        R2Plus1D(50)


def test_video_feature_shapes():
    enc = R2Plus1D(18).eval()
    with torch.inference_mode():
        f = enc.forward_features(torch.randn(1, 3, 8, 224, 224))
        assert {k: tuple(v.shape[1:]) for k, v in f.items()} == {
            "conv1": (64, 8, 56, 56), "conv2x": (64, 8, 56, 56), "conv3x": (128, 4, 28, 28),
            "conv4x": (256, 2, 14, 14), "conv5x": (512, 1, 7, 7), "pool": (512, 1, 1, 1),
        }
        # 32 frames keep 4 time steps at conv5x; smaller frames keep the time arithmetic.
        assert enc.forward_features(torch.randn(1, 3, 32, 112, 112))["conv5x"].shape == (1, 512, 4, 4, 4)
        # pooling is a max, not a mean
        torch.testing.assert_close(enc(torch.ones(1, 3, 8, 64, 64) * 0.3),
                                   f_max(enc.forward_features(torch.ones(1, 3, 8, 64, 64) * 0.3)["conv5x"]))


@pytest.mark.parametrize("depth", [10, 34])
def test_feature_channels_describe_the_maps(depth):
    model = avidzoo.create_model("cross_avid_r2plus1d", video_depth=depth).eval()
    with torch.inference_mode():
        for modality, x in (("video", torch.randn(1, 3, 4, 64, 64)), ("audio", torch.randn(1, 1, 40, 64))):
            maps = model.forward_features(x, modality=modality)
            assert model.feature_channels(modality) == {k: v.shape[1] for k, v in maps.items()}


def f_max(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).amax(-1)


def test_audio_feature_shapes():
    enc = Conv2D().eval()
    with torch.inference_mode():
        f = enc.forward_features(torch.randn(1, 1, 200, 257))
    assert {k: tuple(v.shape[1:]) for k, v in f.items()} == {
        "conv2x": (64, 50, 65), "conv3x": (128, 25, 33), "conv4x": (256, 13, 17), "conv5x": (512, 13, 17),
        "pool": (512, 1, 1),
    }
    with pytest.raises(ValueError, match="depth 10"):
        Conv2D(18)


def test_video_block_is_post_add_bn_without_mid_channels():
    torch.manual_seed(0)
    block = BasicR2P1DBlock(64, 128, (2, 2, 2))
    randomize_bn(block, 0)
    block.eval()
    assert block.spt_conv1.out_channels == block.tmp_conv1.in_channels == 128  # no (2+1)D mid-channel formula
    x = torch.randn(2, 64, 4, 16, 16)
    b = block
    h = F.relu(b.spt_bn1(b.spt_conv1(x)))
    h = F.relu(b.tmp_bn1(b.tmp_conv1(h)))
    h = F.relu(b.spt_bn2(b.spt_conv2(h)))
    h = b.tmp_conv2(h)  # no BN on the last temporal conv
    expected = F.relu(b.out_bn(h + b.res_conv(x)))  # BN after the residual sum; shortcut conv has no BN
    with torch.inference_mode():
        torch.testing.assert_close(block(x), expected)
        assert block(x).shape == (2, 128, 2, 8, 8)


def test_audio_block_is_not_residual():
    torch.manual_seed(0)
    enc = Conv2D()
    randomize_bn(enc, 1)
    enc.eval()
    b = enc.block4  # 256 -> 512, stride 1
    x = torch.randn(1, 256, 13, 17)
    expected = F.relu(b.bn2(b.conv2(F.relu(b.bn1(b.conv1(x))))))
    with torch.inference_mode():
        torch.testing.assert_close(b(x), expected)


def test_encode_project_normalize_and_forward():
    torch.manual_seed(0)
    m = avidzoo.create_model("avid_cma_r2plus1d").eval()
    v, a = torch.randn(2, 3, 8, 64, 64), torch.randn(2, 1, 200, 257)
    with torch.inference_mode():
        assert m.encode_video(v).shape == (2, 512)
        assert m.encode_audio(a).shape == (2, 512)
        pv = m.encode_video(v, project=True)
        assert pv.shape == (2, 128)
        torch.testing.assert_close(pv, m.video_head(m.video_encoder(v)))
        nv = m.encode_video(v, project=True, normalize=True)
        torch.testing.assert_close(nv.norm(dim=1), torch.ones(2))
        ev, ea = m(video=v, audio=a)  # the original AV_Wrapper output: projected, unnormalised
        torch.testing.assert_close(ev, pv)
        assert ea.shape == (2, 128)
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        m.encode_video(torch.randn(3, 8, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, 1, T, F\)"):
        m.encode_audio(torch.randn(2, 200, 257))
    with pytest.raises(ValueError, match="modality"):
        m.forward_features(v)


def test_single_tower_models_build_only_that_tower():
    m = avidzoo.create_model("cross_avid_r2plus1d", modalities=("video",)).eval()
    assert m.modalities == ("video",)
    assert not any(k.startswith(("audio_encoder", "audio_head")) for k in m.state_dict())
    assert m.forward_features(torch.randn(1, 3, 8, 32, 32))["pool"].shape == (1, 512, 1, 1, 1)
    with pytest.raises(ValueError, match="no audio tower"):
        m.encode_audio(torch.randn(1, 1, 200, 257))
    a = avidzoo.create_model("cross_avid_r2plus1d", modalities="audio")
    assert not any(k.startswith("video") for k in a.state_dict())
    with pytest.raises(ValueError, match="modalities"):
        avidzoo.create_model("cross_avid_r2plus1d", modalities=("depth",))


def test_classifier_head():
    m = avidzoo.create_model("cross_avid_r2plus1d", num_classes=5, label_names=list("abcde"))
    assert isinstance(m.classifier[0], torch.nn.Dropout) and m.classifier[0].p == 0.5
    assert m.classifier[1].in_features == 512 and m.classifier[1].out_features == 5
    m.eval()
    with torch.inference_mode():
        logits = m(torch.randn(2, 3, 8, 32, 32))
    assert logits.shape == (2, 5)
    assert m.label_names == list("abcde")
    m.reset_classifier(3)
    assert m.classifier[1].out_features == 3 and m.config["num_classes"] == 3 and m.label_names is None
    with pytest.raises(ValueError, match="label names"):
        m.reset_classifier(2, ["only-one"])
    with pytest.raises(ValueError, match="video tower"):
        avidzoo.create_model("cross_avid_r2plus1d", modalities=("audio",), num_classes=3)


def test_architecture_overrides_for_untrained_models():
    m = avidzoo.create_model("self_avid_r2plus1d", video_depth=10, proj_dims=None)
    assert m.video_encoder.depth == 10 and m.video_head is None and m.embed_dim is None
    assert m.config["method"] == "self_avid" and m.config["weights"] is None
    with pytest.raises(ValueError, match="no projection heads"):
        m.encode_video(torch.randn(1, 3, 8, 32, 32), project=True)


def test_fused_batchnorm_gives_the_same_outputs():
    from avidzoo.models.fuse import fuse_batchnorm

    torch.manual_seed(0)
    m = avidzoo.create_model("cross_avid_r2plus1d")
    randomize_bn(m, 3)
    m.eval()
    fused = fuse_batchnorm(m)
    bns = [x for x in fused.modules() if isinstance(x, torch.nn.modules.batchnorm._BatchNorm)]
    # Only post-add BNs after identity shortcuts remain: both conv2x blocks and the second of conv3x..conv5x.
    assert sorted(x.num_features for x in bns) == [64, 64, 128, 256, 512]
    v, a = torch.randn(2, 3, 8, 64, 64), torch.randn(2, 1, 200, 257)
    with torch.inference_mode():
        torch.testing.assert_close(fused.encode_video(v, project=True), m.encode_video(v, project=True),
                                   rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(fused.encode_audio(a), m.encode_audio(a), rtol=1e-4, atol=1e-4)
        for name, f in fused.forward_features(v, modality="video").items():
            torch.testing.assert_close(f, m.forward_features(v, modality="video")[name], rtol=1e-4, atol=1e-4)
    assert any(isinstance(x, torch.nn.BatchNorm3d) for x in m.modules())  # the original is untouched
