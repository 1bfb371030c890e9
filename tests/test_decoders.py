"""The decoder choice (``--decoder software|cuda|auto``) and the GPU path's frame conversion, on a CPU.

NVDEC itself needs a GPU (``benchmarks/gpu.py`` measures it there). What runs the same everywhere is tested here:
the torch conversion the GPU path uses (``avidzoo.io.colour``, run on CPU frames in NVDEC's NV12/P010 layouts) against
swscale's, the same frames chosen by the frame rules when frames are converted on a device, the threaded reading
that keeps device frames in one process, the plan for the CUDA decoder, and that asking for CUDA where there is
none fails at once while ``auto`` gives the software path's features."""

from __future__ import annotations

import json
import subprocess
import sys

import av
import numpy as np
import pytest
import torch
from PIL import Image

import avidzoo
from avidzoo.cli import main as cli
from avidzoo.errors import HardwareDecoderError
from avidzoo.extract.dataset import ClipDataset, stage_item, threaded_items
from avidzoo.extract.plan import plan_threads
from avidzoo.io import MediaFile, cuda_decoder_problem, cuda_decoder_works, uniform_starts
from avidzoo.io.colour import frame_to_rgb, resize_rgb
from avidzoo.io.hardware import nvdec_session_problem

from conftest import REPO_ROOT
from media import make_video

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")


def first_frame(path):
    with av.open(str(path)) as c:
        return next(c.decode(c.streams.video[0]))


@pytest.mark.parametrize("pattern", ["texture", "scene"])
def test_torch_colour_conversion_matches_swscale(tmp_path, pattern):
    """8-bit 4:2:0 as the decoder gives it and as NVDEC's NV12: within rounding of swscale's RGB (measured mean
    0.64, max 2); the resize within a grey level of PIL's bilinear (the originals'), nearly every value equal."""
    frame = first_frame(make_video(tmp_path / "v.mp4", fps=30, seconds=0.2, size=(640, 360), pattern=pattern,
                                   audio=False))
    ref = frame.to_ndarray(format="rgb24").astype(np.float32)
    ours = frame_to_rgb(frame, "cpu")
    assert ours.dtype == torch.uint8 and ours.shape == (360, 640, 3)
    d = np.abs(ours.numpy().astype(np.float32) - ref)
    assert d.mean() < 1.0 and d.max() <= 3, (d.mean(), d.max())
    assert torch.equal(frame_to_rgb(frame.reformat(format="nv12"), "cpu"), ours)  # NVDEC's layout, same pixels
    pil = np.asarray(Image.fromarray(ours.numpy()).resize((455, 256), Image.BILINEAR)).astype(np.float32)
    d = np.abs(resize_rgb(ours, (455, 256)).numpy().astype(np.float32) - pil)
    assert d.max() <= 1 and (d == 0).mean() > 0.99, (d.max(), (d == 0).mean())


def test_ten_bit_frames_convert_with_their_measured_difference(tmp_path):
    """HEVC Main 10 (NVDEC gives P010): swscale interpolates 10-bit chroma where the torch path repeats it, so they
    differ at sharp colour edges; on average by about 2.5 grey levels (docs/gpu_extraction.md)."""
    frame = first_frame(make_video(tmp_path / "v.mkv", fps=30, seconds=0.2, size=(320, 180), pattern="scene",
                                   vcodec="libx265", pix_fmt="yuv420p10le", audio=False))
    ref = frame.to_ndarray(format="rgb24").astype(np.float32)
    ours = frame_to_rgb(frame, "cpu")
    assert torch.equal(frame_to_rgb(frame.reformat(format="p010le"), "cpu"), ours)
    d = np.abs(ours.numpy().astype(np.float32) - ref)
    assert d.mean() < 4.0 and np.percentile(d, 99) < 30, (d.mean(), np.percentile(d, 99))


@pytest.mark.parametrize("frame_times", ["original", "timestamps"])
def test_frames_converted_on_a_device_are_the_same_frames(tmp_path, frame_times):
    """Converting on a device (the GPU path's code, here on the CPU) takes exactly the frames the software path
    takes: every frame is within rounding of its software twin and far from its neighbours; a rotated file comes
    upright; VMZ's fixed-size scale stays swscale's, bit for bit."""
    path = make_video(tmp_path / "v.mp4", fps=30, seconds=6, size=(320, 180), pattern="texture", gop=60, bframes=3,
                      audio=False)
    rotated = make_video(tmp_path / "r.mp4", fps=25, seconds=2, size=(96, 64), pattern="texture", rotation=90,
                         audio=False)
    for file, sizes in ((path, (None, 128, (171, 128))), (rotated, (None,))):
        for size in sizes:
            with MediaFile(file, frame_times=frame_times) as f:
                starts = uniform_starts(f.info.duration, 0.5, 4)
                want = torch.stack(f.read_video(starts, short_side=size)).float()
            with MediaFile(file, frame_times=frame_times, frames_on="cpu") as f:
                clips = f.read_video(starts, short_side=size)
            assert all(isinstance(c, torch.Tensor) and c.dtype == torch.uint8 for c in clips)
            got = torch.stack(clips).float()
            assert got.shape == want.shape, (file.name, size)
            if isinstance(size, tuple):
                assert torch.equal(got, want)
                continue
            per_frame = (got - want).abs().mean(dim=(2, 3, 4))
            neighbours = (want[:, 1:] - want[:, :-1]).abs().mean(dim=(2, 3, 4))
            assert per_frame.max() < 1.5 and neighbours[neighbours > 0].min() > 5 * per_frame.max(), (file.name, size)


def test_threaded_reading_gives_the_dataloaders_items_in_order(small_model, tmp_path):
    """The CUDA decoder's files are read by threads of the model's process: the same items, in input order, as the
    DataLoader gives, here with frames converted on the CPU device; staging without a copy stream changes nothing."""
    files = [make_video(tmp_path / f"v{i}.mp4", fps=25, seconds=1.0 + 0.3 * i, size=(64, 48)) for i in range(5)]
    (tmp_path / "broken.mp4").write_bytes(b"x" * 300)
    files.insert(2, tmp_path / "broken.mp4")
    transforms = avidzoo.create_transforms(avidzoo.from_pretrained(small_model))
    args = (files, transforms, ("video", "audio"), 2)
    loader = torch.utils.data.DataLoader(ClipDataset(*args, preprocess="device"), batch_size=1, num_workers=0,
                                         collate_fn=lambda x: x)
    threaded = list(threaded_items(ClipDataset(*args, preprocess="device", frames_on="cpu"), threads=3, ahead=1))
    expected = [b[0] for b in loader]
    assert [b[0]["path"] for b in threaded] == [it["path"] for it in expected]
    for (got,), want in zip(threaded, expected):
        assert ("error" in got) == ("error" in want)
        if "error" in want:
            continue
        assert got["starts"] == want["starts"] and got["raw"] == want["raw"]
        assert (got["video"].float() - want["video"].float()).abs().mean() < 1.5
        assert torch.equal(got["audio"], want["audio"])
        assert stage_item(got, ("video", "audio"), torch.device("cpu"), None) is got and "copied" not in got


def test_the_plan_for_the_cuda_decoder():
    cuda = torch.device("cuda")
    plan = plan_threads(cuda, cores=16, decoder="cuda")
    assert (plan.workers, plan.decoder_threads, plan.torch_threads, plan.preprocess) == (8, 1, 2, "device")
    assert str(plan).startswith("decoder cuda: 8 NVDEC decoding thread(s) in this process + 2 torch thread(s)")
    assert plan_threads(cuda, cores=4, decoder="cuda").workers == 3
    assert plan_threads(cuda, cores=16, workers=3, decoder="cuda").workers == 3
    assert str(plan_threads(cuda, cores=16)).endswith("decoder software")
    with pytest.raises(ValueError, match="decodes on the GPU the model runs on"):
        plan_threads(torch.device("cpu"), decoder="cuda")


@no_cuda
def test_cuda_decoder_without_cuda_fails_at_once_and_auto_is_software(small_model, tmp_path, capsys):
    video = make_video(tmp_path / "v.mp4", fps=25, seconds=1.5, size=(64, 48))
    assert "no CUDA device" in cuda_decoder_problem()
    assert "no CUDA device" in cuda_decoder_works(video)
    with pytest.raises(HardwareDecoderError, match="no CUDA device"):
        MediaFile(video, decoder="cuda")
    with pytest.raises(HardwareDecoderError, match="decoder 'cuda' is not available here"):
        avidzoo.FeatureExtractor(small_model, decoder="cuda", device="cpu")
    # the command line: exit 2 and the reason, before the model loads or anything is written
    out = tmp_path / "feats"
    args = ["extract", str(video), "--model", str(small_model), "--out", str(out), "-q", "--clips-per-video", "2"]
    assert cli([*args, "--decoder", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "decoder 'cuda' is not available here" in err and "no CUDA device" in err
    assert not (out / "meta.json").exists()
    # auto: the software path, said in the plan line and meta.json, the same features bit for bit
    assert cli([*args, "--decoder", "auto"]) == 0
    assert "decoder software" in capsys.readouterr().out
    assert json.loads((out / "meta.json").read_text())["decoder"] == "software"
    software = avidzoo.extract_features(small_model, [video], decoder="software", clips_per_video=2, num_workers=0,
                                        progress=False)
    auto = avidzoo.load_features(out)
    for m in ("video", "audio"):
        assert torch.equal(auto[m], software[m])
    # a folder written before the decoder was recorded reads as the software decoder's: it resumes
    meta = json.loads((out / "meta.json").read_text())
    del meta["decoder"]
    (out / "meta.json").write_text(json.dumps(meta))
    assert cli([*args, "--decoder", "software"]) == 0


@pytest.mark.slow
def test_gpu_benchmark_dry_run_writes_every_key(tmp_path):
    """benchmarks/gpu.py --dry-run: every path of the GPU benchmark on this CPU with tiny sizes, one JSON file with
    every top-level key; the paths that need CUDA are null and say why."""
    out = tmp_path / "gpu.json"
    # a budget no section reaches: on a loaded machine the dry run's own 60 s skipped the decoding sections
    r = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "gpu.py"), "--dry-run", "--budget", "3600",
                        "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(out.read_text())
    assert {"machine", "encoder", "decode", "hw_decode", "pipeline", "agreement"} <= rep.keys()
    assert rep["machine"]["cores"] >= 1 and rep["machine"]["av"] == av.__version__
    rows = rep["encoder"]["rows"]
    assert {(r["dtype"], r["compile"]) for r in rows} >= {("fp32", False), ("bf16", False)}
    # what the benchmark promises: a compiled row of the fastest eager dtype and batch, whichever that is on this
    # CPU (bf16 wins on an AVX-512 BF16 machine, fp32 elsewhere)
    eager = [r for r in rows if not r["compile"]]
    fastest = max(eager, key=lambda r: r["clips_per_s"])
    compiled = [r for r in rows if r["compile"]]
    assert [(r["dtype"], r["batch_size"]) for r in compiled] == [(fastest["dtype"], fastest["batch_size"])]
    assert all(r["clips_per_s"] > 0 for r in rows) and rep["encoder"]["best"] in rows
    assert rep["decode"]["one_core"]["clips_per_s"] > 0 and rep["decode"]["plan"]["clips"] == 6
    software = rep["pipeline"]["software"]
    assert software["failed"] == 0 and software["clips"] == 6 and software["fraction_of_encoder"] > 0
    assert all(rep["agreement"]["rows"][0][m]["cosine_min"] > 0.99 for m in ("video", "audio"))
    if not torch.cuda.is_available():
        assert rep["hw_decode"]["cuda"] is None and "no CUDA device" in rep["hw_decode"]["reason"]
        assert rep["pipeline"]["cuda"] is None


def test_a_gpu_without_nvdec_sessions_is_found_before_any_file(monkeypatch):
    """Where torch sees a GPU but NVDEC cannot start (a container whose NVIDIA_DRIVER_CAPABILITIES lacks 'video', as
    on one H200 machine: every file then failed to open, reported as damaged), the check that ``auto`` and
    ``cuda`` ask first finds it by decoding a clip made in memory, and says what to change. Run here for real: this
    machine's torch is made to report a GPU, and FFmpeg's CUDA set-up fails as it does there."""
    from avidzoo.extract.pipeline import resolve_decoder  # noqa: PLC0415
    if torch.cuda.is_available() or "cuda" not in av.codec.hwaccel.hwdevices_available():
        pytest.skip("needs a machine without CUDA and PyAV's CUDA hwaccel build")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setenv("NVIDIA_DRIVER_CAPABILITIES", "compute,graphics,utility")
    nvdec_session_problem.cache_clear()
    try:
        problem = cuda_decoder_problem()
        assert problem.startswith("NVDEC does not start on GPU 0") and "needs 'video'" in problem, problem
        assert resolve_decoder("auto", torch.device("cuda")) == "software"
        with pytest.raises(HardwareDecoderError, match="NVDEC does not start"):
            resolve_decoder("cuda", torch.device("cuda"))
    finally:
        nvdec_session_problem.cache_clear()
