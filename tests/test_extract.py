"""Feature extraction on generated videos with a locally built original-format checkpoint."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from numpy import load as np_load

import avidzoo
from avidzoo.cli import main as cli
from avidzoo.extract import FeatureExtractor, load_features
from avidzoo.extract.store import human_size
from avidzoo.io import MediaFile

from media import make_video

TOL = dict(rtol=1e-4, atol=1e-4)  # the extractor folds BatchNorm and uses channels_last_3d


@pytest.fixture(scope="module")
def model(original, tmp_path_factory):
    m = avidzoo.from_pretrained(original[0])
    folder = m.save_pretrained(tmp_path_factory.mktemp("model") / "avid")
    return m, folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    for i in range(4):
        make_video(d / f"clip{i}.mp4", fps=25 + 5 * (i % 2), seconds=2.5 + i * 0.5, tone_start=0.3 * i,
                   tone_freq=500 + 400 * i)
    (d / "sub").mkdir()
    make_video(d / "sub" / "silent.mp4", fps=30, seconds=3, audio=False)
    (d / "broken.mp4").write_bytes(b"definitely not a video" * 200)
    return d


def expected_starts(path: Path, n: int, video_clip: float = 0.5, audio_clip: float = 2.0) -> list[float]:
    """The clip starts, by the rule: from the later stream start to the earlier ``end - clip`` of the two streams
    (the video's span alone for a file without audio), evenly spaced."""
    with MediaFile(path) as f:
        i = f.info
    v_end = i.video_start + probe_stream_seconds(path, "video")
    first, last = i.video_start, v_end - video_clip
    if i.has_audio:
        first = max(first, i.audio_start)
        last = min(last, i.audio_start + probe_stream_seconds(path, "audio") - audio_clip)
    return [first + (last - first) * k / (n - 1) for k in range(n)]


def probe_stream_seconds(path: Path, kind: str) -> float:
    """A stream's own duration as the container declares it (PyAV, read here without avidzoo)."""
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0] if kind == "video" else c.streams.audio[0]
        return float(stream.duration * stream.time_base)


def reference(model: avidzoo.AVIDModel, path: Path, n: int, layer: str = "pool",
              maps: str = "grid") -> dict[str, torch.Tensor]:
    """Per-clip features by hand: decode, transform, forward each clip alone through the unfused model (an
    intermediate layer pooled to its probe grid, or its map: ``maps="map"`` pools time as the probe pools)."""
    t = avidzoo.create_transforms(model)
    starts = expected_starts(path, n)
    with MediaFile(path) as f:
        frames = f.read_video(starts, num_frames=8, fps=16)  # full resolution; the transform resizes
        waves = f.read_audio(starts, 2.0)
    out = {"video": [], "audio": []}
    with torch.inference_mode():
        for fr, wv in zip(frames, waves):
            v, a = t.video(fr)[None], t.audio(wv)[None]
            if layer == "pool":
                out["video"].append(model.encode_video(v)[0])
                out["audio"].append(model.encode_audio(a)[0])
            elif layer == "proj":
                out["video"].append(model.encode_video(v, project=True)[0])
                out["audio"].append(model.encode_audio(a, project=True)[0])
            else:
                fv = model.forward_features(v, modality="video")[layer][0]
                fa = model.forward_features(a, modality="audio")[layer][0]
                if maps == "grid":
                    fv, fa = F.adaptive_max_pool3d(fv, (1, 4, 4)).flatten(), F.adaptive_avg_pool2d(fa, (4, 4)).flatten()
                elif maps == "map":
                    fv, fa = fv.amax(1), fa.mean(1)
                out["video"].append(fv)
                out["audio"].append(fa)
    return {k: torch.stack(v) for k, v in out.items()}


def test_features_equal_a_direct_per_clip_forward(model, folder):
    m, _ = model
    n = 3
    fx = FeatureExtractor(m, clips_per_video=n, clip_agg="none", batch_size=4, num_workers=1)
    result = fx.extract(folder)
    names = [Path(p).name for p in result.paths]
    assert names == ["clip0.mp4", "clip1.mp4", "clip2.mp4", "clip3.mp4", "silent.mp4"]
    assert list(result.failed) == [str(folder / "broken.mp4")] and "NotMediaError" in result.failed[
        str(folder / "broken.mp4")]
    assert result["video"].shape == (5, n, 512) and result["audio"].shape == (5, n, 512)
    # the file without a soundtrack: audio marked missing, NaN, never the features of silence
    assert result.present["audio"].tolist() == [True] * 4 + [False] and result.present["video"].all()
    assert result.no_audio == [str(folder / "sub" / "silent.mp4")] and result["audio"][4].isnan().all()
    for i, p in enumerate(result.paths):
        ref = reference(m, Path(p), n)
        torch.testing.assert_close(result["video"][i], ref["video"], rtol=2e-3, atol=2e-3)  # decoder vs torch resize
        if result.present["audio"][i]:
            torch.testing.assert_close(result["audio"][i], ref["audio"], **TOL)
        assert result.clip_starts[i] == pytest.approx(expected_starts(Path(p), n), abs=1e-6)
        assert result.coverage[i] == {m: [1.0] * n for m in ("video", "audio") if result.present[m][i]}
    # aggregation over clips, on a file with a soundtrack and one without (rows 1 and 4)
    pair, rows = [folder / "clip1.mp4", folder / "sub" / "silent.mp4"], [1, 4]
    for agg, fn in (("mean", lambda x: x.mean(1)), ("max", lambda x: x.amax(1))):
        r = FeatureExtractor(m, clips_per_video=n, clip_agg=agg, num_workers=0).extract(pair)
        torch.testing.assert_close(r["video"], fn(result["video"][rows]), **TOL)
        torch.testing.assert_close(r["audio"], fn(result["audio"][rows]), **TOL, equal_nan=True)
    r = FeatureExtractor(m, clips_per_video=n, normalize=True, num_workers=0).extract(pair)
    torch.testing.assert_close(r["audio"], F.normalize(F.normalize(result["audio"][rows], dim=-1).mean(1), dim=-1),
                               **TOL, equal_nan=True)


@pytest.mark.parametrize("layer", ["proj", "conv5x"])
def test_other_layers(model, folder, layer):
    m, _ = model
    fx = FeatureExtractor(m, clips_per_video=2, clip_agg="none", layer=layer, num_workers=0, channels_last=False)
    r = fx.extract(folder / "clip1.mp4")
    ref = reference(m, folder / "clip1.mp4", 2, layer)
    assert r["video"].shape[-1] == fx.feature_dim("video") == ref["video"].shape[-1]
    torch.testing.assert_close(r["audio"][0], ref["audio"], **TOL)
    torch.testing.assert_close(r["video"][0], ref["video"], rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("maps,video_shape,audio_shape", [("map", (512, 7, 7), (512, 17)),
                                                        ("full", (512, 1, 7, 7), (512, 13, 17))])
def test_spatial_maps(model, folder, maps, video_shape, audio_shape):
    """``maps``: conv5x kept as its map per clip (512 x 7 x 7 at 224 px with time pooled as the probe pools, or the
    whole map), equal to the layer's map of each clip by hand, and in that shape in memory."""
    m, _ = model
    fx = FeatureExtractor(m, clips_per_video=2, clip_agg="none", layer="conv5x", maps=maps, num_workers=0,
                          channels_last=False)
    assert fx.map_shapes == {"video": video_shape, "audio": audio_shape}
    r = fx.extract(folder / "clip1.mp4")
    assert r["video"].shape == (1, 2, *video_shape) and r["audio"].shape == (1, 2, *audio_shape)
    ref = reference(m, folder / "clip1.mp4", 2, "conv5x", maps)
    torch.testing.assert_close(r["audio"][0], ref["audio"], **TOL)
    torch.testing.assert_close(r["video"][0], ref["video"], rtol=2e-3, atol=2e-3)
    with pytest.raises(ValueError, match="keeps an intermediate layer's map"):
        FeatureExtractor(m, layer="pool", maps="map")


def test_spatial_maps_from_the_command_line(model, folder, tmp_path, capsys):
    """``--maps map``: the plan line says what a file's features take, the folder loads back as maps, and an export
    keeps their shape."""
    _, saved = model
    out = tmp_path / "maps"
    assert cli(["extract", str(folder / "clip1.mp4"), "--model", str(saved), "--out", str(out), "--layer", "conv5x",
                "--maps", "map", "--clips-per-video", "2", "--workers", "0", "-q"]) == 0
    size = human_size(4 * (512 * 7 * 7 + 512 * 17))
    assert f"; features {size} per file" in capsys.readouterr().out
    loaded = load_features(out)
    assert loaded["video"].shape == (1, 512, 7, 7) and loaded.meta["feature_shapes"]["audio"] == [512, 17]
    assert cli(["export", str(out), "--to", str(tmp_path / "maps.npz")]) == 0
    with np_load(tmp_path / "maps.npz") as z:
        assert z["video"].shape == (1, 512, 7, 7)
    # a folder of maps is not resumed as vectors
    assert cli(["extract", str(folder / "clip1.mp4"), "--model", str(saved), "--out", str(out), "--layer", "conv5x",
                "--clips-per-video", "2", "--workers", "0", "-q"]) == 2
    assert "maps differ" in capsys.readouterr().err


def test_tensors_decoded_by_the_user(model):
    m, _ = model
    fx = FeatureExtractor(m, device="cpu", dtype="fp32")
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (3, 8, 120, 160, 3), dtype=torch.uint8, generator=g)
    waves = torch.randn(3, 2, 30000, generator=g) * 0.1
    feats = fx(frames, waves, sample_rate=16000)
    t = avidzoo.create_transforms(m)
    with torch.inference_mode():
        torch.testing.assert_close(feats["video"], m.encode_video(t.video(frames)), **TOL)
        torch.testing.assert_close(feats["audio"], m.encode_audio(t.audio(waves, 16000)), **TOL)
    one = fx(frames[1], waves[1], sample_rate=16000)  # a single unbatched clip gives a batch of one
    for modality in ("video", "audio"):
        torch.testing.assert_close(one[modality], feats[modality][1:2], **TOL)


class OOMAbove(FeatureExtractor):
    """A device that runs out of memory above ``limit`` clips (what a full GPU does)."""

    limit = 2

    def _forward(self, modality, x):
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated device limit)")
        return super()._forward(modality, x)


def test_out_of_memory_halves_the_batch(model):
    m, _ = model
    x = torch.randn(7, 1, 200, 257)
    fx = OOMAbove(m, modalities=("audio",), batch_size=8)
    feats = fx.encode(audio=x)["audio"]
    assert fx.batch_size == 2 and feats.shape == (7, 512)
    with torch.inference_mode():
        torch.testing.assert_close(feats, m.encode_audio(x), **TOL)
    fx.limit = 0
    with pytest.raises(torch.OutOfMemoryError):
        fx.encode(audio=x)


def test_output_folder_is_self_describing_and_guards_settings(model, folder, tmp_path):
    m, _ = model
    out = avidzoo.extract_features(m, folder, out=tmp_path / "feats", clips_per_video=2, num_workers=0)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["layer"] == "pool" and meta["feature_dims"] == {"video": 512, "audio": 512}
    assert meta["preprocessing"]["audio"]["hop_length"] == 240 and len(meta["model_fingerprint"]) == 64
    rows = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows].count("error") == 1 and len(rows) == 6
    assert len(list((out / "parts").glob("*.jsonl"))) == 1  # one writer; index.jsonl is the snapshot of its part
    back = load_features(out)
    direct = FeatureExtractor(m, clips_per_video=2, num_workers=0).extract(folder)
    assert back.paths == direct.paths and back.clip_starts == direct.clip_starts
    silent = [r["path"] for r in rows if r.get("has_audio") is False]
    assert [Path(p).name for p in silent] == ["silent.mp4"] and back.no_audio == direct.no_audio == silent
    torch.testing.assert_close(back["video"], direct["video"], **TOL)
    with pytest.raises(ValueError, match="other settings .*layer"):
        avidzoo.extract_features(m, folder, out=out, clips_per_video=2, layer="proj", num_workers=0)


KILL_CHILD = """
import sys, avidzoo
avidzoo.extract_features(sys.argv[1], sys.argv[2], out=sys.argv[3], clips_per_video=2, num_workers=0,
                         shard_size=1, progress=False)
"""


def test_resume_after_sigkill_gives_every_video_exactly_once(model, folder, tmp_path):
    _, saved = model
    out = tmp_path / "killed"
    cmd = [sys.executable, "-c", KILL_CHILD, str(saved), str(folder), str(out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        parts = list((out / "parts").glob("*.jsonl")) if (out / "parts").is_dir() else []
        if parts and sum(1 for line in parts[0].read_text().splitlines() if '"ok"' in line) >= 2:
            part = parts[0]
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "index.jsonl").exists()  # killed before the end
    done_before = len(part.read_text().splitlines())
    assert 2 <= done_before < 6
    # a kill during a shard write leaves its temporary file; make sure this run has one either way
    (out / "shards" / f".{part.stem}-000099.safetensors.half.tmp").write_bytes(b"partial")
    subprocess.run(cmd, check=True, capture_output=True)
    rows = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert sorted(r["path"] for r in rows) == sorted({r["path"] for r in rows})  # exactly once
    assert len(rows) == 6
    clean = avidzoo.extract_features(saved, folder, out=tmp_path / "clean", clips_per_video=2, num_workers=0)
    a, b = load_features(out), load_features(clean)
    assert a.paths == b.paths and a.failed == b.failed
    torch.testing.assert_close(a["video"], b["video"], rtol=0, atol=0)
    torch.testing.assert_close(a["audio"], b["audio"], rtol=0, atol=0, equal_nan=True)
    shards = {r["shard"] for r in rows if r["status"] == "ok"}
    assert {p.name for p in (out / "shards").iterdir()} == shards  # no orphans


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_torchrun_equals_one_process(model, folder, tmp_path):
    _, saved = model
    env = {**os.environ, "AVIDZOO_DISABLE_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    common = [str(folder), "--model", str(saved), "--clips-per-video", "2", "--workers", "0", "-q",
              "--device", "cpu"]
    # the broken file fails: rank 0 would exit 3 (a failure to torchrun); --allow-failures makes the run a success
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
                    "-m", "avidzoo", "extract", *common, "--out", str(tmp_path / "ddp"), "--allow-failures"],
                   check=True, env=env, capture_output=True, timeout=300)
    res = subprocess.run([sys.executable, "-m", "avidzoo", "extract", *common, "--out", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 3 and "done: 5 of 6 inputs, failed: 1" in res.stdout
    ddp, one = load_features(tmp_path / "ddp"), load_features(tmp_path / "one")
    assert ddp.paths == one.paths and ddp.failed.keys() == one.failed.keys()
    torch.testing.assert_close(ddp["video"], one["video"], **TOL)
    torch.testing.assert_close(ddp["audio"], one["audio"], **TOL, equal_nan=True)
    writers = {p.stem for p in (tmp_path / "ddp" / "parts").glob("*.jsonl")}
    shards = {p.name.rsplit("-", 1)[0] for p in (tmp_path / "ddp" / "shards").iterdir()}
    assert len(writers) == 2 and shards == writers  # each rank is a writer of its own


def test_score_av_and_similarity(model, folder, tmp_path):
    m, _ = model
    rows = avidzoo.score_av(m, folder, clips_per_video=2, num_workers=0, out_csv=tmp_path / "s.csv")
    ok = [r for r in rows if r["score"] is not None]
    assert [r["score"] for r in ok] == sorted(r["score"] for r in ok)
    assert ok[0]["percentile"] == 0.0 and ok[-1]["percentile"] == 100.0
    r = FeatureExtractor(m, clips_per_video=2, layer="proj", clip_agg="none", num_workers=0).extract(folder)
    i = r.paths.index(ok[0]["path"])
    expected = F.cosine_similarity(r["video"][i], r["audio"][i], dim=-1).mean()
    assert ok[0]["score"] == pytest.approx(float(expected), abs=1e-4)
    assert (tmp_path / "s.csv").read_text().startswith("path,score,percentile,error")
    # a file without a soundtrack is listed after the ranking, not ranked as if it were silent
    unscored = {Path(r["path"]).name: r["error"] for r in rows if r["score"] is None}
    assert unscored["silent.mp4"] == "no audio stream" and unscored["broken.mp4"].startswith("NotMediaError")
    assert len(ok) == 4 and rows[4]["path"].endswith("silent.mp4")
    v, a = torch.randn(4, 128), torch.randn(5, 128)
    assert avidzoo.similarity(v, a, pairwise=True).shape == (4, 5)
    torch.testing.assert_close(avidzoo.similarity(v, v), torch.ones(4))


def test_autocast_path_runs_on_cpu(model):
    """The reduced-precision path (CUDA's default) runs unchanged on the CPU and stays close to fp32."""
    m, _ = model
    x = torch.randn(2, 3, 8, 112, 112)
    fp32 = FeatureExtractor(m, modalities=("video",), dtype="fp32").encode(video=x)["video"]
    bf16 = FeatureExtractor(m, modalities=("video",), dtype="bf16").encode(video=x)["video"]
    assert bf16.dtype == torch.float32
    assert float(F.cosine_similarity(bf16, fp32).min()) > 0.99
    with pytest.raises(ValueError, match="dtype must be"):
        FeatureExtractor(m, dtype="int8")


def test_inputs_from_globs_and_lists(folder, tmp_path):
    from avidzoo.io import find_media

    (tmp_path / "list.txt").write_text(f"# a comment\n{folder / 'clip1.mp4'}\nrelative.mp4\n")
    (tmp_path / "list.csv").write_text(f"label,path\na,{folder / 'clip2.mp4'}\nb,{folder / 'clip1.mp4'}\n")
    found = find_media([tmp_path / "list.txt", tmp_path / "list.csv", str(folder / "sub" / "*.mp4")])
    assert [p.name for p in found] == ["clip1.mp4", "relative.mp4", "clip2.mp4", "silent.mp4"]
    assert found[1] == tmp_path / "relative.mp4"  # relative to the list file, kept so it is reported missing
    with pytest.raises(FileNotFoundError, match="matches no file"):
        find_media(str(folder / "*.mkv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no media files"):
        find_media(tmp_path / "empty")


def test_preprocessing_on_the_device_equals_the_workers(model, tmp_path):
    """preprocess="device": workers send uint8 frames and waveforms, the main process crops, normalises and makes
    spectrograms batched (files of one frame size together); the features equal the worker placement's."""
    m, _ = model
    make_video(tmp_path / "wide.mp4", fps=30, seconds=2.5, size=(160, 120), pattern="texture", tone_freq=700)
    make_video(tmp_path / "tall.mp4", fps=25, seconds=3.0, size=(120, 160), pattern="texture", tone_freq=900)
    make_video(tmp_path / "wide2.mp4", fps=30, seconds=2.2, size=(160, 120), pattern="texture", tone_freq=300)
    (tmp_path / "bad.mp4").write_bytes(b"no video here" * 300)
    runs = {}
    for where in ("worker", "device"):
        fx = FeatureExtractor(m, clips_per_video=3, clip_agg="none", batch_size=5, num_workers=1, preprocess=where)
        assert fx.plan.preprocess == where
        runs[where] = fx.extract(tmp_path)
    a, b = runs["worker"], runs["device"]
    assert a.paths == b.paths and len(a.paths) == 3 and a.failed == b.failed and len(a.failed) == 1
    for modality in ("video", "audio"):
        torch.testing.assert_close(b[modality], a[modality], rtol=1e-5, atol=1e-5)
    # the items a device-placement worker sends: uint8 frames after FFmpeg's resize, float waveforms
    from avidzoo.extract.dataset import ClipDataset, prepare_batch

    t = avidzoo.create_transforms(m)
    raw = ClipDataset([tmp_path / "tall.mp4", tmp_path / "wide.mp4"], t, ("video", "audio"), 3, preprocess="device")
    done = ClipDataset([tmp_path / "tall.mp4", tmp_path / "wide.mp4"], t, ("video", "audio"), 3)
    items = [raw[0], raw[1]]
    assert items[0]["raw"] == {"video": "crop", "audio": "wave"}
    assert items[0]["video"].dtype == torch.uint8 and items[0]["video"].shape == (3, 8, 224, 224, 3)
    assert items[1]["video"].shape == (3, 8, 224, 224, 3) and items[1]["audio"].shape == (3, 1, 48000)
    items.append({**done[0], "n": 3})  # a transformed item joins as it is
    inputs = prepare_batch(items, ("video", "audio"), t, torch.device("cpu"))
    for modality in ("video", "audio"):
        torch.testing.assert_close(inputs[modality], torch.cat([done[0][modality], done[1][modality],
                                                                done[0][modality]]))
    # frames that still need resizing (not scaled by a decoder) are sent whole and transformed on the device
    frames = torch.randint(0, 256, (2, 8, 90, 120, 3), dtype=torch.uint8)
    assert t.video.crop(frames) is None
    mixed = prepare_batch([{"video": frames, "raw": {"video": "frames"}}], ("video",), t, torch.device("cpu"))
    torch.testing.assert_close(mixed["video"], t.video(frames))


def test_thread_plan_fits_the_cores():
    from avidzoo.extract.plan import plan_threads

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for cores in range(1, 65):
        for device in (cpu, cuda):
            plan = plan_threads(device, cores=cores)
            assert plan.threads <= cores, plan
            assert plan.torch_threads >= 1 and plan.decoder_threads >= 1
            assert plan.preprocess == ("device" if device is cuda else "worker")
            if device is cuda:  # every core that the model does not need decodes
                assert plan.threads >= cores - 1 and plan.workers == cores - plan.torch_threads
            else:  # most cores run the model; small machines decode between batches
                assert plan.torch_threads >= cores * 3 // 4 and (plan.workers == 0) == (cores <= 4)
    # explicit settings are kept and the rest fits around them
    plan = plan_threads(cpu, cores=16, workers=6)
    assert (plan.workers, plan.decoder_threads, plan.torch_threads) == (6, 1, 10)
    assert (plan_threads(cpu, cores=2).workers, plan_threads(cpu, cores=2).torch_threads) == (0, 2)
    plan = plan_threads(cuda, cores=16, decoder_threads=2, preprocess="worker")
    assert plan.threads <= 16 and plan.decoder_threads == 2 and plan.workers == 7 and plan.preprocess == "worker"
    assert "7 decoding worker(s) x 2 decoder thread(s) + 2 torch thread(s) = 16 of 16 cores" in str(plan)
    with pytest.warns(UserWarning, match="more threads than this process has cores"):
        plan_threads(cpu, cores=2, workers=2, torch_threads=2)
    with pytest.raises(ValueError, match="preprocess"):
        plan_threads(cpu, preprocess="gpu")
    # applied for a run, then put back
    before = torch.get_num_threads()
    with plan_threads(cpu, cores=4, torch_threads=1).applied():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_thread_plan_reads_the_cpu_affinity(model, tmp_path):
    """Cores are those the process may use (taskset, SLURM, cpusets), not the machine's: pinned to one core, the run
    decodes in the main process with one torch thread, and the CLI prints the plan."""
    m, folder = model
    make_video(tmp_path / "v.mp4", seconds=2.2)
    code = ("import os, sys, avidzoo.cli; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "sys.exit(avidzoo.cli.main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "extract", str(tmp_path / "v.mp4"), "--model", str(folder),
                        "--out", str(tmp_path / "out"), "--clips-per-video", "2", "-q"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "plan: 0 decoding worker(s) x 1 decoder thread(s) + 1 torch thread(s) = 1 of 1 cores; " \
           "preprocessing in the main process, as decoding" in r.stdout
    assert load_features(tmp_path / "out")["video"].shape == (1, 512)
