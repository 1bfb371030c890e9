"""Colour as the originals decoded it (``avidzoo.io.colour``): every released weight's frames are converted from YUV
by BT.601 whatever the stream declares (with old swscale's range rule), as PyAV <= 11 and VMZ's decoder did; the
``"tagged"`` rule follows the tags. Saturated colour bars, not grey: grey hides matrix errors.

The reference is the legacy conversion of the same decoded frame (``reformat(src_colorspace="ITU601")`` with the
range old swscale read: full for ``yuvj*``, else limited), and independently the BT.601 formula in floating point.
``benchmarks/colour.py --legacy-python`` measures the same against PyAV 11 itself."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch

from avidzoo import create_transforms
from avidzoo.config import default_preprocessing
from avidzoo.extract.dataset import ClipDataset
from avidzoo.extract.store import check_meta
from avidzoo.io import MediaFile
from avidzoo.io.colour import frame_to_rgb, preset_colour, swscale_colour
from avidzoo.manifest import get_manifest
from avidzoo.serialization import read_config_file
from avidzoo.transforms import Transforms, VideoTransform

from media import make_video

# file kind -> make_video arguments: the tags the issue names, 4:2:0 as cameras and the web give it
KINDS = {
    "bt709": dict(colorspace="bt709", color_range="tv"),
    "bt601": dict(colorspace="bt601", color_range="tv"),
    "untagged": dict(),
    "bt2020_10bit": dict(colorspace="bt2020", color_range="tv", vcodec="libx265", pix_fmt="yuv420p10le"),
    "full_yuvj": dict(colorspace="bt709", color_range="pc", pix_fmt="yuvj420p"),
    "full_vp9": dict(colorspace="bt709", color_range="pc", vcodec="libvpx-vp9"),
}
SUFFIX = {"bt2020_10bit": ".mkv", "full_vp9": ".webm"}
PRESETS = ("avid_original", "crisscross", "gdt", "xdc")


@pytest.fixture(scope="module")
def tagged_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("colour")
    return {kind: make_video(folder / f"{kind}{SUFFIX.get(kind, '.mp4')}", fps=16, seconds=0.25, size=(320, 180),
                             pattern="bars", audio=False, **kw) for kind, kw in KINDS.items()}


def decoded(path):
    """The first decoded frame, as the decoder gives it."""
    with av.open(str(path)) as c:
        return next(c.decode(c.streams.video[0]))


def legacy(frame, size=None) -> np.ndarray:
    """The reference: the legacy conversion (BT.601, old swscale's range), at full size or resized as the presets
    do (a short side: swscale's bilinear RGB resize after converting; a (width, height): VMZ's one pass)."""
    old = {"src_colorspace": "ITU601", "src_color_range": "JPEG" if frame.format.name.startswith("yuvj") else "MPEG"}
    if isinstance(size, tuple):
        return frame.reformat(size[0], size[1], "rgb24", interpolation="FAST_BILINEAR", **old).to_ndarray()
    rgb = frame.reformat(format="rgb24", **old)
    if size is not None:
        w, h = frame.width, frame.height
        dims = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        rgb = rgb.reformat(width=dims[0], height=dims[1], interpolation=av.video.reformatter.Interpolation.BILINEAR
                           | av.video.reformatter.Interpolation.FULL_CHR_H_INT
                           | av.video.reformatter.Interpolation.FULL_CHR_H_INP)
    return rgb.to_ndarray()


def bt601_formula(frame) -> np.ndarray:
    """BT.601 in floating point from the frame's own planes (4:2:0, chroma repeated), independent of swscale."""
    h, w = frame.height, frame.width
    raw = frame.to_ndarray().astype(np.float64) / (4.0 if "10" in frame.format.name else 1.0)
    y = raw[:h]
    u = raw[h:h + h // 4].reshape(h // 2, w // 2).repeat(2, 0).repeat(2, 1)
    v = raw[h + h // 4:].reshape(h // 2, w // 2).repeat(2, 0).repeat(2, 1)
    if frame.format.name.startswith("yuvj"):
        luma, cb, cr = y, u - 128, v - 128
    else:
        luma, cb, cr = (y - 16) * 255 / 219, (u - 128) * 255 / 224, (v - 128) * 255 / 224
    r, b = luma + 1.402 * cr, luma + 1.772 * cb
    g = (luma - 0.299 * r - 0.114 * b) / 0.587
    return np.clip(np.stack([r, g, b], -1), 0, 255)


def diff(a, b) -> np.ndarray:
    a = a.numpy() if isinstance(a, torch.Tensor) else a
    return np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))


def preset_sizes(preset: str) -> list:
    """Full size and the preset's own resize (what its extraction asks the decoder for)."""
    return [None, VideoTransform(default_preprocessing(preset)["video"]).decoder_scale]


def test_every_released_weight_names_the_bt601_rule():
    """The manifest is the source of truth: every preset and so every released weight says BT.601."""
    m = get_manifest()
    assert {name: pre["video"]["colour"] for name, pre in m.data["preprocessing"].items() if pre.get("video")} \
        == dict.fromkeys(PRESETS, "bt601")
    for name in m.data["weights"]:
        assert create_transforms(name).config["video"]["colour"] == "bt601"


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("preset", PRESETS)
def test_frames_equal_the_legacy_conversion(tagged_files, kind, preset):
    """Each weight family's frames, at full size and after its resize, equal the legacy conversion of the same
    frame within rounding (the same swscale call: exactly), on every tag and range."""
    rule = preset_colour(default_preprocessing(preset)["video"])
    frame = decoded(tagged_files[kind])
    for size in preset_sizes(preset):
        with MediaFile(tagged_files[kind], colour=rule) as f:
            got = f.read_frames([[frame.time]], short_side=size)[0][0]
        d = diff(got, legacy(frame, size))
        assert d.mean() <= 1 / 8, (kind, preset, size, d.mean(), d.max())


@pytest.mark.parametrize("kind", ["bt709", "full_yuvj", "full_vp9", "bt601", "untagged"])
def test_the_rules_differ_where_the_tags_say_otherwise(tagged_files, kind):
    """The BT.601 rule is the BT.601 formula (independent of swscale: within truncation and chroma siting); the
    tag rule differs from it by grey levels on BT.709 or full-range VP9 bars and not at all where the tags already
    say BT.601 limited range (untagged files included)."""
    frame = decoded(tagged_files[kind])
    formula = bt601_formula(frame)
    with MediaFile(tagged_files[kind], colour="bt601") as f:
        ours = f.read_frames([[frame.time]])[0][0]
    with MediaFile(tagged_files[kind], colour="tagged") as f:
        tagged = f.read_frames([[frame.time]])[0][0]
    assert diff(ours, formula).mean() < 1.0
    if kind in ("bt601", "untagged"):
        assert torch.equal(ours, tagged)
    else:
        assert diff(tagged, ours).mean() > 2.0, diff(tagged, ours).mean()


@pytest.mark.parametrize("kind", list(KINDS))
def test_cuda_conversion_follows_the_rule(tagged_files, kind):
    """``--decoder cuda``'s torch conversion, run on the CPU (on decoded frames and in NVDEC's NV12/P010 layouts,
    which do not say yuvj: MediaFile passes what the software decoder gives), against the same reference: rounding
    only (8-bit: under 0.5 grey on average; 10-bit chroma is interpolated by swscale, repeated here: about 2.2)."""
    frame = decoded(tagged_files[kind])
    ref = legacy(frame)
    ours = frame_to_rgb(frame, "cpu", "bt601")
    bound = 3.0 if "10bit" in kind else 0.5
    assert diff(ours, ref).mean() < bound, diff(ours, ref).mean()
    hw_layout = "p010le" if "10bit" in kind else "nv12"
    yuvj = frame.format.name.startswith("yuvj")
    assert torch.equal(frame_to_rgb(frame.reformat(format=hw_layout), "cpu", "bt601", yuvj), ours)
    with MediaFile(tagged_files[kind], colour="bt601", frames_on="cpu") as f:
        assert torch.equal(f.read_frames([[frame.time]])[0][0], ours)
    # the tag rule on the device path agrees with swscale's tag rule
    tagged = frame.to_ndarray(format="rgb24")
    assert diff(frame_to_rgb(frame, "cpu", "tagged"), tagged).mean() < (3.0 if "10bit" in kind else 0.5)


def test_swscale_arguments_name_the_range_old_swscale_read(tagged_files):
    """yuvj* reads full range; a full-range-tagged yuv420p (VP9) reads limited, as old swscale ignored the tag;
    an NV12 frame of a yuvj stream (NVDEC's, downloaded) is told; RGB needs no matrix."""
    assert swscale_colour(decoded(tagged_files["full_yuvj"]), "bt601")["src_color_range"] == "JPEG"
    vp9 = decoded(tagged_files["full_vp9"])
    assert vp9.format.name == "yuv420p" and int(vp9.color_range) == 2
    assert swscale_colour(vp9, "bt601") == {"src_colorspace": "ITU601", "src_color_range": "MPEG"}
    nv12 = decoded(tagged_files["full_yuvj"]).reformat(format="nv12")
    assert swscale_colour(nv12, "bt601", yuvj=True)["src_color_range"] == "JPEG"
    assert swscale_colour(vp9.reformat(format="rgb24"), "bt601") == {} and swscale_colour(vp9, "tagged") == {}
    with pytest.raises(ValueError, match="colour must be one of"):
        MediaFile(tagged_files["bt709"], colour="bt709")


def test_datasets_decode_by_the_weights_rule(tagged_files):
    """Extraction's dataset reads a weight's frames by its rule: the raw centre crops equal the legacy conversion's
    (resized and cropped alike); a preset that says ``tagged`` gets the tag rule's."""
    transforms = create_transforms("cross_avid_r2plus1d.kinetics400")
    path = tagged_files["bt709"]
    ds = ClipDataset([path], transforms, ("video",), 1, preprocess="device")
    assert ds.colour == "bt601"
    crop = ds[0]["video"][0]  # (T, S, S, 3) uint8
    tagged_cfg = {**transforms.config, "video": {**transforms.config["video"], "colour": "tagged"}}
    tagged = ClipDataset([path], Transforms(transforms.video, None, tagged_cfg), ("video",), 1, preprocess="device")
    assert tagged.colour == "tagged"
    assert diff(tagged[0]["video"][0], crop).mean() > 2.0
    with MediaFile(path) as f:  # the frame times the clip took, through the default (BT.601) rule
        same = f.read_video(ds[0]["starts"], num_frames=crop.shape[0], fps=16, short_side=256)[0]
    s = crop.shape[1]
    top, left = (same.shape[1] - s) // 2, (same.shape[2] - s) // 2  # the centre crop, rounded either way
    assert any(torch.equal(same[:, t:t + s, x:x + s], crop) for t in (top, top + 1) for x in (left, left + 1))


def test_saved_folders_say_which_rule_their_weights_saw(tmp_path):
    """Folders saved before the rule was recorded: weights avidzoo trained (a training record) saw frames by the
    tags, converted releases BT.601."""
    for training, want in ((None, "bt601"), ({"epochs": 1}, "tagged")):
        cfg = {"preprocessing": {"video": {"fps": 16}}, "training": training}
        (tmp_path / "config.json").write_text(json.dumps(cfg))
        assert read_config_file(tmp_path)["preprocessing"]["video"]["colour"] == want
    cfg = {"preprocessing": {"video": {"fps": 16, "colour": "bt601"}}, "training": {"epochs": 1}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert read_config_file(tmp_path)["preprocessing"]["video"]["colour"] == "bt601"


def test_an_output_folder_from_before_the_rule_is_not_resumed(tmp_path):
    """A meta.json without the rule (or with another) is other settings, and the message says why."""
    pre = default_preprocessing()
    meta = {"modalities": ["video"], "preprocessing": {"video": pre["video"]}}
    old = {"modalities": ["video"], "preprocessing": {"video": {k: v for k, v in pre["video"].items()
                                                               if k != "colour"}}}
    (tmp_path / "meta.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match="before avidzoo recorded the colour rule"):
        check_meta(tmp_path / "meta.json", meta)
    (tmp_path / "meta.json").write_text(json.dumps({**old, "preprocessing": {"video": {**pre["video"],
                                                                                      "colour": "tagged"}}}))
    with pytest.raises(ValueError, match="converted from YUV to RGB 'tagged', these by 'bt601'"):
        check_meta(tmp_path / "meta.json", meta)
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    check_meta(tmp_path / "meta.json", meta)  # the same settings resume
