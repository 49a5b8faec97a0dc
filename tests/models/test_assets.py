"""bench.models.assets: cache, override, offline errors, local-HTTP downloads, safe loading."""

from __future__ import annotations

import functools
import http.server
import os
import re
import socket
import threading
import warnings

import pytest
import torch

from bench.models import assets
from bench.models.assets import Asset, AssetError, asset_from_config, fetch, load_state_dict, sha256_file


class Opaque:  # a non-tensor object that weights_only unpickling must refuse
    def __init__(self):
        self.x = 1


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("BENCH_CACHE", str(d))
    monkeypatch.delenv("BENCH_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return d


@pytest.fixture
def ckpt(tmp_path):
    """A small real checkpoint (torch.save of a state dict) and its sha256."""
    sd = {"conv.weight": torch.randn(4, 3, 3, 3), "conv.bias": torch.arange(4.0)}
    p = tmp_path / "src" / "tiny.pt"
    p.parent.mkdir()
    torch.save(sd, p)
    return p, sha256_file(p), sd


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/src over http://127.0.0.1:<random port>/ and count GET requests."""
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *a):
            pass

    (tmp_path / "src").mkdir(exist_ok=True)
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path / "src")))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()


def _leftovers(d):
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_cache_dir_env(cache):
    assert assets.cache_dir() == cache


def test_cache_hit_verified_and_memoized(cache, ckpt, monkeypatch):
    src, digest, _ = ckpt
    cache.mkdir()
    (cache / "tiny.pt").write_bytes(src.read_bytes())
    a = Asset("tiny.pt", "http://127.0.0.1:9/never", digest)
    assert fetch(a, offline=True) == cache / "tiny.pt"
    assert (cache / "tiny.pt.sha256").is_file()
    assert assets.fetched_assets()["tiny.pt"]["verified"] is True
    # second fetch reuses the sidecar: no re-hash
    monkeypatch.setattr(assets, "sha256_file", lambda p: pytest.fail("re-hashed"))
    assert fetch(a, offline=True) == cache / "tiny.pt"


def test_cache_hit_wrong_sha_errors_and_keeps_file(cache, ckpt):
    src, digest, _ = ckpt
    cache.mkdir()
    (cache / "tiny.pt").write_bytes(src.read_bytes())
    fetch(Asset("tiny.pt", None, digest), offline=True)  # memo the right digest
    with open(cache / "tiny.pt", "ab") as f:  # corrupt it: size/mtime change invalidates memo
        f.write(b"junk")
    with pytest.raises(AssetError, match="expected " + digest) as ei:
        fetch(Asset("tiny.pt", None, digest), offline=True)
    assert "delete it" in str(ei.value)
    assert (cache / "tiny.pt").exists()  # user files are never deleted


def test_path_override(cache, ckpt, tmp_path):
    src, digest, _ = ckpt
    assert fetch(Asset("tiny.pt", None, digest, path=str(src)), offline=True) == src
    assert not (cache / "tiny.pt").exists()
    assert not (src.parent / "tiny.pt.sha256").exists()  # memo lives in the cache, not beside the user's file
    with pytest.raises(AssetError, match="expected"):
        fetch(Asset("tiny.pt", None, "0" * 64, path=str(src)))
    missing = tmp_path / "nope.pt"
    with pytest.raises(AssetError, match="model.asset.path") as ei:
        fetch(Asset("tiny.pt", "http://x/tiny.pt", digest, path=str(missing)))
    assert str(missing) in str(ei.value)


def test_unpinned_sha_warns_and_records(cache, ckpt):
    src, digest, _ = ckpt
    with pytest.warns(UserWarning, match="UNVERIFIED"):
        fetch(Asset("tiny.pt", None, None, path=str(src)))
    rec = assets.fetched_assets()["tiny.pt"]
    assert rec["verified"] is False and rec["sha256"] == digest and rec["expected_sha256"] is None


@pytest.mark.parametrize("how", ["arg", "BENCH_OFFLINE", "HF_HUB_OFFLINE"])
def test_miss_offline_message(cache, monkeypatch, how):
    url, sha = "https://example.invalid/models/big.pt", "ab" * 32
    if how != "arg":
        monkeypatch.setenv(how, "1")
    with pytest.raises(AssetError) as ei:
        fetch(Asset("big.pt", url, sha), offline=True if how == "arg" else None)
    msg = str(ei.value)
    for needle in (url, str(cache / "big.pt"), sha, "model.asset.path="):
        assert needle in msg
    assert not cache.exists() or _leftovers(cache) == []


def test_offline_miss_names_each_assets_own_override(cache):
    """Each kind of asset tells the user the key that points at a local copy (not model.asset.path for all;
    zero_dce once appended a correction beneath the wrong hint)."""
    from bench.methods.zero_dce import weights_asset
    from bench.metrics import fid
    from bench.metrics.lpips import _asset as lpips_asset

    cases = [
        (asset_from_config({"url": "https://h/x/m.pt", "sha256": "ab" * 32}), "model.asset.path=/path/to/m.pt"),
        (asset_from_config({"url": "https://h/g.safetensors"}, node="method.generator.asset"),
         "method.generator.asset.path=/path/to/g.safetensors"),
        (weights_asset(None), "method.weights.path=/path/to/"),
        (lpips_asset("alex"), "metrics.lpips.backbone_path=/path/to/"),
        (fid.INCEPTION_ASSET, "python -m bench.report --inception-weights=/path/to/"),
    ]
    for asset, hint in cases:
        with pytest.raises(AssetError) as ei:
            fetch(asset, offline=True)
        msg = str(ei.value)
        assert hint in msg, msg
        if not hint.startswith("model.asset.path"):
            assert "model.asset.path" not in msg, msg


def test_download_verify_and_cache(cache, ckpt, server):
    src, digest, sd = ckpt
    base, hits = server
    a = Asset("tiny.pt", f"{base}/tiny.pt", digest)
    p = fetch(a, progress=False)
    assert p == cache / "tiny.pt" and sha256_file(p) == digest
    assert hits == ["/tiny.pt"]
    assert fetch(a, progress=False) == p
    assert hits == ["/tiny.pt"]  # second fetch is a cache hit
    assert _leftovers(cache) == ["tiny.pt", "tiny.pt.sha256"]
    got = load_state_dict(p)
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)


def test_download_wrong_sha_leaves_nothing(cache, ckpt, server):
    src, digest, _ = ckpt
    base, hits = server
    bad = "f" * 64
    with pytest.raises(AssetError) as ei:
        fetch(Asset("tiny.pt", f"{base}/tiny.pt", bad), progress=False)
    msg = str(ei.value)
    assert bad in msg and digest in msg and f"{base}/tiny.pt" in msg
    assert len(hits) == 1 and _leftovers(cache) == []


def test_download_http_and_network_errors(cache, server):
    base, _ = server
    with pytest.raises(AssetError, match="404") as ei:
        fetch(Asset("absent.pt", f"{base}/absent.pt", "a" * 64), progress=False)
    assert str(cache / "absent.pt") in str(ei.value)
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(AssetError, match="place at") as ei:
        fetch(Asset("x.pt", f"http://127.0.0.1:{port}/x.pt", "a" * 64), progress=False)
    assert isinstance(ei.value.__cause__, OSError)
    assert _leftovers(cache) == []


def test_load_state_dict_formats(tmp_path, ckpt):
    from safetensors.torch import save_file

    _, _, sd = ckpt
    st = tmp_path / "w.safetensors"
    save_file(sd, str(st))
    for obj in (sd, {"state_dict": sd, "epoch": 3}, {"model": sd}):
        p = tmp_path / "w.pt"
        torch.save(obj, p)
        got = load_state_dict(p)
        assert all(torch.equal(got[k], sd[k]) for k in sd) and got.keys() == sd.keys()
    got = load_state_dict(st)
    assert all(torch.equal(got[k], sd[k]) for k in sd) and got.keys() == sd.keys()


def test_load_state_dict_rejects_unsafe_and_non_state_dicts(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "obj": Opaque()}, p)
    with pytest.raises(AssetError, match="weights_only") as ei:
        load_state_dict(p)
    assert "Opaque" in str(ei.value)
    q = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], q)
    with pytest.raises(AssetError, match="not a state dict"):
        load_state_dict(q)


def test_load_state_dict_turns_every_damaged_file_into_an_asset_error(tmp_path):
    """Random bytes and truncated checkpoints fail inside torch's unpickler with IndexError, KeyError,
    struct.error, UnicodeDecodeError, ... (os.urandom once drew an IndexError that escaped): every one,
    seeded here, must become an AssetError naming the file and the fix, never a traceback."""
    import io
    import random

    good, legacy = io.BytesIO(), io.BytesIO()
    torch.save({"w": torch.arange(10.0)}, good)
    torch.save({"w": torch.arange(10.0)}, legacy, _use_new_zipfile_serialization=False)
    cases = [good.getvalue()[:n] for n in range(0, len(good.getvalue()), 37)]
    cases += [legacy.getvalue()[:n] for n in range(0, len(legacy.getvalue()), 7)]
    for seed in range(100):
        rng = random.Random(seed)
        cases.append(bytes(rng.getrandbits(8) for _ in range(64)))
        cases.append(b"\x80\x02" + bytes(rng.getrandbits(8) for _ in range(62)))  # a pickle header first
    p = tmp_path / "damaged.pt"
    for data in cases:
        p.write_bytes(data)
        with pytest.raises(AssetError, match="download it again or check its sha256") as ei:
            load_state_dict(p)
        assert str(p) in str(ei.value)
        ref = re.search(r"it references (\S+?)\)", str(ei.value))
        if ref:  # only a legacy checkpoint cut inside one of its (allowed) GLOBAL names reads that way
            allowed = ("collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch.FloatStorage")
            assert any(a.startswith(ref.group(1)) and a != ref.group(1) for a in allowed), ei.value
        else:
            assert "damaged or not a torch checkpoint" in str(ei.value), ei.value


def test_asset_from_config():
    assert asset_from_config(None) is None
    assert asset_from_config({"url": None, "sha256": None, "path": None}) is None
    a = asset_from_config({"url": "https://h/x/256x256_diffusion_uncond.pt", "sha256": "AB" * 32})
    assert a == Asset("256x256_diffusion_uncond.pt", "https://h/x/256x256_diffusion_uncond.pt", "ab" * 32)
    b = asset_from_config({"path": "/data/m.pt"})
    assert b.name == "m.pt" and b.path == "/data/m.pt" and b.url is None
    with pytest.raises(AssetError, match="unknown"):
        asset_from_config({"url": "https://h/x.pt", "sha": "ab" * 32})
    with pytest.raises(AssetError, match="64 hex"):
        Asset("x.pt", None, "abc")
    with pytest.raises(AssetError, match="plain file name"):
        Asset("../x.pt", None, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert asset_from_config({}) is None
