"""Inputs in object storage, against a real S3-protocol server on 127.0.0.1 (moto's server mode), with s3fs as users
run it: a prefix, a glob, an object, list files of URLs (local and remote), resume by ETag, an object that vanishes,
and reads that are throttled or cut off by a proxy in front of the server. Skipped where the remote extra is not
installed (pip install 'avidzoo[remote]'; CI installs it)."""

from __future__ import annotations

import http.client
import http.server
import itertools
import json
import threading
import time
from pathlib import Path

import pytest
import torch

import avidzoo
from avidzoo.cli import main as cli
from avidzoo.io import find_media

from media import make_video, write_shard

s3fs = pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


class FlakyProxy:
    """An HTTP proxy to the S3 server that can answer ranged object reads with 503 SlowDown (``throttle_every``: one
    GET in that many) or send only half of the body of objects whose key contains ``cut`` and drop the connection."""

    def __init__(self, upstream: str) -> None:
        self.upstream, self.throttle_every, self.cut, self.throttled = upstream, 0, None, 0
        self._count = itertools.count(1)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                is_read = self.command == "GET" and "Range" in self.headers
                if is_read and proxy.throttle_every and next(proxy._count) % proxy.throttle_every == 0:
                    proxy.throttled += 1
                    payload = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                conn.request(self.command, self.path, body=body or None,
                             headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                # a HEAD's length is the object's, not that of its (empty) body
                self.send_header("Content-Length", resp.getheader("Content-Length", "0") if self.command == "HEAD"
                                 else str(len(data)))
                self.end_headers()
                if is_read and proxy.cut and proxy.cut in self.path and len(data) > 16:
                    self.wfile.write(data[: len(data) // 2])  # cut off mid-body
                    self.close_connection = True
                    return
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def server():
    srv = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    proxy = FlakyProxy(f"{host}:{port}")
    yield f"http://{host}:{port}", proxy
    proxy.stop()
    srv.stop()


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("remote_media")
    return [make_video(d / "a.mp4", fps=25, seconds=1.5, size=(64, 48), tone_freq=500),
            make_video(d / "b.mp4", fps=30, seconds=2.0, size=(64, 48), gop=30, tone_freq=700),
            make_video(d / "c.mkv", fps=25, seconds=1.2, size=(72, 40), tone_freq=900)]


_buckets = itertools.count()


@pytest.fixture
def bucket(server, videos, monkeypatch):
    """A new bucket holding the videos under ``videos/`` and a text file beside them; s3fs sees the server through
    the standard AWS variables, as a user's would."""
    endpoint, proxy = server
    for k, v in {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(k, v)
    s3fs.S3FileSystem.clear_instance_cache()
    proxy.throttle_every, proxy.cut, proxy.throttled = 0, None, 0
    client = boto3.client("s3", endpoint_url=endpoint, **{"region_name": "us-east-1"})
    name = f"media-{next(_buckets)}"
    client.create_bucket(Bucket=name)
    for v in videos:
        client.upload_file(str(v), name, f"videos/{v.name}")
    client.put_object(Bucket=name, Key="videos/notes.txt", Body=b"not media")
    return name, client


def extract(model, inputs, **kw):
    return avidzoo.extract_features(model, inputs, clips_per_video=2, num_workers=0, progress=False, **kw)


def assert_same_features(got: avidzoo.ExtractionResult, want: avidzoo.ExtractionResult) -> None:
    assert len(got.paths) == len(want.paths) and not got.failed and not want.failed, got.failed
    for m in ("video", "audio"):
        torch.testing.assert_close(got[m], want[m], rtol=1e-6, atol=1e-6, msg=m)
    assert got.clip_starts == want.clip_starts


def test_a_prefix_a_glob_an_object_and_lists_give_the_local_features(small_model, videos, bucket, tmp_path):
    name, client = bucket
    local = extract(small_model, videos)
    urls = [f"s3://{name}/videos/{v.name}" for v in videos]
    # a prefix: listed recursively, filtered by media extension (notes.txt is not media), sorted
    assert find_media(f"s3://{name}/videos/") == urls
    assert_same_features(got := extract(small_model, f"s3://{name}/videos/"), local)
    assert got.paths == urls
    # read in a DataLoader worker process (forked after this process has used s3fs), as larger machines do
    workers = avidzoo.extract_features(small_model, urls, clips_per_video=2, num_workers=1, progress=False)
    assert_same_features(workers, local)
    # a glob, an object, and each input once
    assert find_media([f"s3://{name}/videos/*.mp4", urls[0], urls[2]]) == urls
    # a local list of URLs and a remote list with entries relative to its prefix
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(urls) + "\n")
    client.put_object(Bucket=name, Key="lists/all.txt", Body="\n".join(f"../videos/{v.name}" for v in videos))
    assert find_media(listing) == urls
    remote_list = find_media(f"s3://{name}/lists/all.txt")
    assert [u.rsplit("/", 1)[1] for u in remote_list] == [v.name for v in videos]
    assert_same_features(extract(small_model, remote_list), local)


def test_the_command_line_on_a_bucket_resumes_by_etag(small_model, videos, bucket, tmp_path, capsys):
    name, client = bucket
    out = tmp_path / "feats"
    args = ["extract", f"s3://{name}/videos/", "--model", str(small_model), "--out", str(out), "-q",
            "--clips-per-video", "2"]
    assert cli(args) == 0
    assert "done: 3 of 3 inputs, failed: 0" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert all(r["version"] for r in rows)  # the ETags
    shards = sorted((out / "shards").iterdir())
    assert cli(args) == 0  # resumed: nothing redone
    assert sorted((out / "shards").iterdir()) == shards
    # the object a.mp4 is replaced: only it is done again, and its features are the new content's
    client.upload_file(str(videos[1]), name, f"videos/{videos[0].name}")
    assert cli(args) == 0
    assert len(sorted((out / "shards").iterdir())) == len(shards) + 1
    feats = avidzoo.load_features(out)
    again = extract(small_model, [videos[1]])
    torch.testing.assert_close(feats["video"][0], again["video"][0], rtol=1e-6, atol=1e-6)


def test_an_object_that_vanishes_is_a_recorded_failure(small_model, bucket, capsys, tmp_path):
    name, client = bucket
    urls = find_media(f"s3://{name}/videos/")
    client.delete_object(Bucket=name, Key="videos/b.mp4")
    result = extract(small_model, urls)
    assert list(result.failed) == [urls[1]] and "MediaNotFoundError" in result.failed[urls[1]]
    assert result.paths == [urls[0], urls[2]]
    # named on the command line, a missing object is said at once (exit 2)
    assert cli(["extract", urls[1], "--model", "x", "--out", str(tmp_path / "o")]) == 2
    assert "no such object or prefix" in capsys.readouterr().err


def test_throttled_and_cut_off_reads(small_model, videos, bucket, server, monkeypatch):
    """Through a proxy that answers every third ranged read with 503 SlowDown, the reads are retried and the features
    are the local ones; an object whose reads are always cut off mid-body fails on its own, in bounded time."""
    name, _ = bucket
    _, proxy = server
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    s3fs.S3FileSystem.clear_instance_cache()
    local = extract(small_model, videos)
    proxy.throttle_every = 3
    assert_same_features(extract(small_model, f"s3://{name}/videos/"), local)
    assert proxy.throttled > 0
    proxy.throttle_every, proxy.cut = 0, "b.mp4"
    t0 = time.perf_counter()
    result = extract(small_model, f"s3://{name}/videos/")
    assert list(result.failed) == [f"s3://{name}/videos/b.mp4"], result.failed
    assert len(result.paths) == 2 and time.perf_counter() - t0 < 120


def test_a_scheme_without_its_package_is_named():
    """(The command line's exit 2 for it: tests/test_cli.py.)"""
    with pytest.raises(ValueError, match=r"gs:// URLs need gcsfs, which is not installed \(pip install gcsfs\)"):
        find_media("gs://bucket/videos/")


def test_export_writes_to_a_bucket(small_model, videos, bucket, tmp_path):
    """`avidzoo export` to s3://: Parquet with the per-clip embeddings as nested fixed-size lists (clips of D), .npz
    and HDF5, read back from the bucket equal to the folder's features; a folder of .npy is local only."""
    name, _ = bucket
    out = tmp_path / "feats"
    avidzoo.extract_features(small_model, videos, out=out, clips_per_video=2, clip_agg="none", num_workers=0,
                             progress=False)
    feats = avidzoo.load_features(out)
    assert cli(["export", str(out), "--to", f"s3://{name}/exports/f.parquet"]) == 0
    assert cli(["export", str(out), "--to", f"s3://{name}/exports/f.npz"]) == 0
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    fs = s3fs.S3FileSystem()
    with fs.open(f"{name}/exports/f.parquet", "rb") as f:
        table = pq.read_table(f)
    video = table.column("video").combine_chunks()
    assert pa.types.is_fixed_size_list(video.type) and video.type.list_size == 2  # clips
    assert pa.types.is_fixed_size_list(video.type.value_type) and video.type.value_type.list_size == 512
    matrix = video.values.values.to_numpy(zero_copy_only=True).reshape(len(video), 2, 512)
    import numpy as np

    np.testing.assert_allclose(matrix, feats["video"].numpy(), rtol=1e-6, atol=1e-6)

    with fs.open(f"{name}/exports/f.npz", "rb") as f, np.load(f) as z:
        torch.testing.assert_close(torch.from_numpy(z["audio"]), feats["audio"])
        assert list(z["paths"]) == feats.paths

    h5py = pytest.importorskip("h5py")
    assert cli(["export", str(out), "--to", f"s3://{name}/exports/f.h5"]) == 0  # made locally, then uploaded
    fs.get(f"{name}/exports/f.h5", str(tmp_path / "f.h5"))
    with h5py.File(tmp_path / "f.h5", "r") as hf:
        torch.testing.assert_close(torch.from_numpy(hf["video"][:]), feats["video"])
    with pytest.raises(ValueError, match="a folder of .npy files is written on this machine"):
        avidzoo.extract.export_features(out, f"s3://{name}/exports/npy/")


def test_shards_in_a_bucket_stream_by(small_model, videos, bucket, tmp_path):
    """WebDataset shards at a URL, named by a brace pattern or one by one: each member an input, read in one pass
    over each shard (sequential ranged GETs, nothing on disk), the same features as the local files."""
    pattern = upload_shards(videos, bucket, tmp_path)
    name, _ = bucket
    result = extract(small_model, pattern)
    assert result.paths == [f"s3://{name}/shards/shard-000000.tar/s00.mp4",
                            f"s3://{name}/shards/shard-000000.tar/s01.mp4",
                            f"s3://{name}/shards/shard-000001.tar/s10.mkv"]
    assert_same_features(result, extract(small_model, videos))
    one = extract(small_model, f"s3://{name}/shards/shard-000000.tar")
    assert one.paths == result.paths[:2]
    assert_same_features(one, extract(small_model, videos[:2]))


def upload_shards(videos: list[Path], bucket, tmp_path: Path) -> str:
    """Two shards in the bucket, ``s00.mp4 s01.mp4`` and ``s10.mkv`` (the videos in order), each with a ``.json``;
    their brace pattern."""
    name, client = bucket
    for k, group in enumerate((videos[:2], videos[2:])):
        shard = write_shard(tmp_path / f"shard-{k:06d}.tar",
                            [m for i, v in enumerate(group) for m in ((f"s{k}{i}{v.suffix}", v.read_bytes()),
                                                                       (f"s{k}{i}.json", b'{"k": %d}' % k))])
        client.upload_file(str(shard), name, f"shards/{shard.name}")
    return f"s3://{name}/shards/shard-{{000000..000001}}.tar"


def test_ray_lists_and_reads_in_its_tasks(small_model, videos, bucket, tmp_path, monkeypatch, capsys):
    """`--engine ray` on a bucket prefix, a shard and a member named by itself, with a driver that cannot reach the
    store (its endpoint is a closed port once Ray has started with the real one, as a laptop driving a cluster would
    be): Ray's tasks list the prefix and the shard pattern, stream the shards and, on resume, check the objects'
    versions. The features are the local files', each input once."""
    ray = pytest.importorskip("ray", reason='the Ray engine is an extra: pip install "avidzoo[ray]"')
    from botocore.exceptions import EndpointConnectionError

    from avidzoo.extract import find_media_with_ray

    name, _ = bucket
    pattern = upload_shards(videos, bucket, tmp_path)
    local = extract(small_model, videos)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # its processes see the store
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # this process no longer does
        s3fs.S3FileSystem.clear_instance_cache()
        with pytest.raises(EndpointConnectionError):
            find_media(f"s3://{name}/videos/")
        prefix = [f"s3://{name}/videos/{v.name}" for v in videos]
        members = [f"s3://{name}/shards/shard-000000.tar/s00.mp4", f"s3://{name}/shards/shard-000000.tar/s01.mp4",
                   f"s3://{name}/shards/shard-000001.tar/s10.mkv"]
        assert find_media_with_ray([f"s3://{name}/videos/", pattern]) == [
            *prefix, f"s3://{name}/shards/shard-000000.tar", f"s3://{name}/shards/shard-000001.tar"]

        # inputs: the prefix, a member by its name (its shard streamed up to it), a whole shard
        out = tmp_path / "ray"
        args = ["extract", f"s3://{name}/videos/", members[2], f"s3://{name}/shards/shard-000000.tar", "--model",
                str(small_model), "--out", str(out), "--engine", "ray", "--device", "cpu", "--clips-per-video", "2",
                "-q"]
        assert cli(args) == 0
        assert "done: 6 of 6 inputs, failed: 0" in capsys.readouterr().out
        feats = avidzoo.load_features(out)
        assert sorted(feats.paths) == sorted(prefix + members) and not feats.failed
        for k, path in enumerate(prefix + members):
            row = feats.paths.index(path)
            for m in ("video", "audio"):
                torch.testing.assert_close(feats[m][row], local[m][k % 3], rtol=1e-6, atol=1e-6)
        rows = {r["path"]: r for r in map(json.loads, (out / "index.jsonl").read_text().splitlines())}
        assert rows[members[2]]["metadata"] == {"k": 1} and all(rows[p]["version"] for p in prefix)

        # resumed, as worker 1 of 2 (b.mp4 and the member): versions checked by tasks, nothing redone
        shards = sorted((out / "shards").iterdir())
        assert cli([*args, "--shard", "1/2"]) == 0
        assert "done: 2 of 2 inputs, failed: 0" in capsys.readouterr().out
        assert sorted((out / "shards").iterdir()) == shards
        # a prefix without media is said at once, from the listing task (exit 2), as by the local engine
        assert cli(["extract", f"s3://{name}/nothing/", "--model", str(small_model), "--out", str(tmp_path / "x"),
                    "--engine", "ray"]) == 2
        assert f"s3://{name}/nothing/: no media objects" in capsys.readouterr().err
    finally:
        ray.shutdown()
