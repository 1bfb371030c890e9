"""Reading media from object storage against local files, measured in one run on the same files.

    python benchmarks/remote.py [--clips 10] [--repeat 3]

Starts moto's S3 server on 127.0.0.1 (pip install -e ".[dev,remote]"), uploads generated media (four 10-s 640x360
clips, a 60-s 720p H.264 High file with a keyframe every 5 s and 3 B-frames, a 30-s 720p Matroska file), and decodes
each file's clips as extraction does (both model inputs: video at short side 256, audio), in one process, from local
files, then from s3:// with avidzoo's reader: ranged GETs kept in its LRU of blocks at block sizes of 256 KiB to 16
MiB (``AVIDZOO_REMOTE_BLOCK_SIZE``, whole-object reads off), and each object whole in one GET (the default up to
``AVIDZOO_REMOTE_WHOLE_BYTES``). Prints
wall seconds, the ratio to local, the bytes fetched against the objects' size, and the ranged GETs. The server is on
this machine: the figures are the protocol's and the reader's cost, not a network's; a real store adds its latency
to every GET, which is what the block size trades against the bytes fetched.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from avidzoo.io import MediaFile, uniform_starts  # noqa: E402

from media import make_video  # noqa: E402


def decode(source, clips: int) -> dict[str, int]:
    """One file's clips as extraction reads them; the reads' cost for a URL."""
    with MediaFile(source, threads=1) as f:
        starts = uniform_starts(f.info.duration, 2.0, clips)
        f.read_video(starts, num_frames=8, fps=16, short_side=256)
        f.read_audio(starts, 2.0)
    return f.read_stats or {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3, help="timed repetitions (the median is reported)")
    args = ap.parse_args()
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="test",
                      AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1")
    client = boto3.client("s3")
    client.create_bucket(Bucket="bench")
    high = dict(pattern="scene", crf=20, preset="veryfast", audio_rate=44100, channels=2)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        files = [make_video(d / f"short{i}.mp4", fps=30, seconds=10, size=(640, 360), pattern="texture", crf=23,
                            tone_start=float(i)) for i in range(4)]
        files.append(make_video(d / "long_gop.mp4", fps=30, seconds=60, size=(1280, 720), gop=150, bframes=3, **high))
        files.append(make_video(d / "matroska.mkv", fps=30, seconds=30, size=(1280, 720), gop=60, **high))
        for p in files:
            client.upload_file(str(p), "bench", p.name)
        total = sum(p.stat().st_size for p in files)
        print(f"{len(files)} files, {total / 2**20:.1f} MiB, {args.clips} clips each, both inputs; S3 server (moto) on "
              "127.0.0.1", flush=True)

        def timed(sources) -> tuple[float, dict[str, int]]:
            times, cost = [], {}
            for _ in range(args.repeat):
                t = time.perf_counter()
                stats = [decode(s, args.clips) for s in sources]
                times.append(time.perf_counter() - t)
                cost = {k: sum(s.get(k, 0) for s in stats) for k in ("bytes", "gets")}
            return statistics.median(times), cost

        local, _ = timed(files)
        print(f"  local files                {local:7.2f} s  1.00x", flush=True)
        urls = [f"s3://bench/{p.name}" for p in files]
        for label, block, whole in (("ranged, 256 KiB", 256 << 10, 0), ("ranged, 1 MiB", 1 << 20, 0),
                                    ("ranged, 4 MiB", 4 << 20, 0), ("ranged, 16 MiB", 16 << 20, 0),
                                    ("whole object", 4 << 20, 1 << 40)):
            os.environ["AVIDZOO_REMOTE_BLOCK_SIZE"] = str(block)
            os.environ["AVIDZOO_REMOTE_WHOLE_BYTES"] = str(whole)
            seconds, cost = timed(urls)
            print(f"  s3://, {label:18s} {seconds:7.2f} s  {seconds / local:.2f}x   fetched "
                  f"{cost['bytes'] / total:.2f}x the objects' bytes in {cost['gets']} GETs "
                  f"({cost['gets'] / len(files):.1f} per file)", flush=True)
    srv.stop()


if __name__ == "__main__":
    main()
