"""The examples run as documented (on generated videos and a local checkpoint)."""

from __future__ import annotations

import subprocess
import sys

from PIL import Image

import avidzoo

from conftest import REPO_ROOT
from media import make_action_videos, make_video


def run(script: str, *args: str) -> str:
    res = subprocess.run([sys.executable, str(REPO_ROOT / "examples" / script), *args], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_examples(original, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(4):
        make_video(videos / f"v{i}.mp4", seconds=2, tone_freq=400 + 300 * i, tone_start=0.2 * i)
    ckpt = str(original[0])
    out = run("embedding_map.py", str(videos), "--model", ckpt, "--clips-per-video", "1", "--out",
              str(tmp_path / "map.png"))
    assert "4 videos" in out and Image.open(tmp_path / "map.png").size == (900, 900)
    out = run("audio_to_video_retrieval.py", str(videos), "--model", ckpt, "--clips-per-video", "1")
    assert out.count("audio of v") == 4 and "recall@1" in out
    out = run("load_and_embed.py", ckpt)
    assert "video (1, 128), audio (1, 128)" in out


def test_finetune_custom_dataset_example(tmp_path):
    make_action_videos(tmp_path / "videos", per_class=5)
    model = avidzoo.create_model("cross_avid_r2plus1d", video_depth=10, modalities=("video",))
    model._config["preprocessing"]["video"].update(num_frames=4, crop_size=32, resize=36, clip_duration=0.25)
    model.save_pretrained(tmp_path / "small")
    out = run("finetune_custom_dataset.py", str(tmp_path / "videos"), "--model", str(tmp_path / "small"),
              "--out", str(tmp_path / "run"), "--frames", "4", "--epochs", "1", "--warmup-epochs", "1",
              "--batch-size", "8", "--workers", "0")
    assert "16 training and 4 validation videos, 4 classes" in out
    assert "Video@1" in out and "true class" in out
    assert avidzoo.from_pretrained(tmp_path / "run" / "best").label_names == [
        "bars_down", "bars_right", "checker_flicker", "square_diagonal"]
