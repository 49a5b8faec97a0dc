"""Datasets: decoding of every image mode, preprocessing, errors, sharding, manifests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data import (
    DATASETS_DIR,
    DatasetError,
    FolderDataset,
    ImageNetValDataset,
    LOLDataset,
    SampleDataset,
    center_crop_resize,
    imagenet_val_manifest,
)
from bench.imageio import load_image
from tests.conftest import shared_data


def _rgb(h=40, w=50, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_every_mode_decodes_to_float_rgb(tmp_path):
    arr = _rgb()
    Image.fromarray(arr).save(tmp_path / "rgb.png")
    Image.fromarray(arr[..., 0]).save(tmp_path / "gray.png")
    rgba = np.concatenate([arr, np.full((40, 50, 1), 255, np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(arr).convert("P").save(tmp_path / "palette.png")
    gray16 = np.full((40, 50), 32768, dtype=np.uint16)
    Image.fromarray(gray16).save(tmp_path / "deep.png")

    rgb = load_image(tmp_path / "rgb.png")
    assert rgb.shape == (3, 40, 50) and rgb.dtype == torch.float32
    assert torch.allclose(rgb, torch.from_numpy(arr).permute(2, 0, 1) / 255.0)
    gray = load_image(tmp_path / "gray.png")
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert torch.allclose(load_image(tmp_path / "rgba.png"), rgb)  # opaque alpha changes nothing
    assert load_image(tmp_path / "palette.png").shape == (3, 40, 50)
    deep = load_image(tmp_path / "deep.png")
    assert deep.shape == (3, 40, 50)
    assert torch.allclose(deep, torch.full_like(deep, 32768 / 65535), atol=1e-6)  # scaled, not clipped


def test_transparent_pixels_composite_to_black(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:4, :, 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert torch.all(img[:, 4:] == 0) and torch.allclose(img[:, :4], torch.full((3, 4, 8), 200 / 255))


def test_center_crop_matches_guided_diffusion_on_8bit(tmp_path):
    """Our float-channel path equals guided-diffusion's center_crop_arr on 8-bit RGB within 1/255."""
    arr = _rgb(300, 411, seed=3)

    pil = Image.fromarray(arr)  # guided-diffusion's algorithm, on an 8-bit RGB PIL image
    while min(*pil.size) >= 2 * 64:
        pil = pil.resize(tuple(x // 2 for x in pil.size), resample=Image.BOX)
    scale = 64 / min(*pil.size)
    pil = pil.resize(tuple(round(x * scale) for x in pil.size), resample=Image.BICUBIC)
    ref = np.asarray(pil)
    top, left = (ref.shape[0] - 64) // 2, (ref.shape[1] - 64) // 2
    ref = torch.from_numpy(ref[top : top + 64, left : left + 64].copy()).permute(2, 0, 1).float() / 255

    ours = center_crop_resize(torch.from_numpy(arr).permute(2, 0, 1).float() / 255, 64, False, "x")
    assert ours.shape == (3, 64, 64)
    # PIL rounds to 8 bit after each resize on RGB; the float path rounds once
    assert (ours - ref).abs().max() <= 2.5 / 255


def test_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(DatasetError, match="does not exist.*dataset.root"):
        FolderDataset(str(tmp_path / "nope"))
    with pytest.raises(DatasetError, match="holds no images"):
        FolderDataset(str(tmp_path))
    Image.fromarray(_rgb(20, 30)).save(tmp_path / "small.png")
    ds = FolderDataset(str(tmp_path), image_size=64)
    with pytest.raises(DatasetError, match="smaller than image_size=64.*allow_upscale"):
        ds[0]
    assert FolderDataset(str(tmp_path), image_size=64, allow_upscale=True)[0].image.shape == (3, 64, 64)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    ds = FolderDataset(str(tmp_path), image_size=16)
    with pytest.raises(DatasetError, match="broken.png"):
        ds.check_files()


def test_outputs_are_8bit_exact_and_sharding_partitions(tmp_path):
    for i in range(7):
        Image.fromarray(_rgb(32, 32, seed=i)).save(tmp_path / f"img{i}.png")
    full = FolderDataset(str(tmp_path), image_size=16)
    item = full[0]
    assert torch.equal(item.image, (item.image * 255).round() / 255)
    assert [e.id for e in full.entries] == [f"img{i}" for i in range(7)]
    shards = [FolderDataset(str(tmp_path), image_size=16, shard=s, num_shards=3) for s in range(3)]
    ids = [e.id for s in shards for e in s.entries]
    assert sorted(ids) == sorted(e.id for e in full.entries) and len(ids) == len(set(ids))
    assert shards[1].manifest()["sha256"] == full.manifest()["sha256"]  # manifest covers all shards
    with pytest.raises(DatasetError, match="0 <= shard < num_shards"):
        FolderDataset(str(tmp_path), shard=3, num_shards=3)


def test_imagenet_manifest_is_reproducible_and_missing_files_are_counted():
    listed = [ln for ln in (DATASETS_DIR / "imagenet_val_2k.txt").read_text().splitlines() if not ln.startswith("#")]
    assert listed == imagenet_val_manifest(2000, seed=2022)
    assert len(set(listed)) == 2000
    root = shared_data("imagenet-val")
    with pytest.raises(DatasetError, match=r"of 2000 images listed in imagenet_val_2k.txt are missing.*first: ILSVRC2012_val_"):
        ImageNetValDataset(str(root))


def test_imagenet_val_reads_real_images_with_a_custom_manifest(tmp_path):
    root = shared_data("imagenet-val")
    names = sorted(p.name for p in root.glob("*.JPEG"))
    (tmp_path / "mine.txt").write_text("\n".join(names) + "\n")
    labels = tmp_path / "labels.txt"
    labels.write_text(f"{names[0]} 7\n")
    ds = ImageNetValDataset(str(root), manifest=str(tmp_path / "mine.txt"), image_size=64, labels=str(labels))
    assert len(ds) == len(names) == 11
    first = ds[0]
    assert first.image.shape == (3, 64, 64) and first.label == 7 and ds[1].label is None


def test_lol_pairs_unpaired_and_mismatch(tmp_path):
    (tmp_path / "low").mkdir()
    (tmp_path / "high").mkdir()
    for n in ("1", "22"):
        Image.fromarray(_rgb(40, 60) // 4).save(tmp_path / "low" / f"{n}.png")
        Image.fromarray(_rgb(40, 60)).save(tmp_path / "high" / f"{n}.png")
    paired = LOLDataset(str(tmp_path))
    item = paired[0]
    assert item.image.shape == item.low.shape == (3, 40, 60)  # native size kept
    flat = LOLDataset(str(tmp_path / "low"))
    assert flat[0].image is None and flat[0].low is not None
    Image.fromarray(_rgb(40, 60)).save(tmp_path / "low" / "780.png")
    with pytest.raises(DatasetError, match="no same-named file.*780.png"):
        LOLDataset(str(tmp_path))


def test_sample_dataset_is_embedded():
    ds = SampleDataset(image_size=32)
    assert len(ds) == 8
    assert all(ds[i].image.shape == (3, 32, 32) for i in range(len(ds)))
    assert len(SampleDataset(image_size=32, limit=3)) == 3


# ------------------------------------------------------------------ the up-front check (bench/data_check.py)
def _jpeg_bytes(seed=0, size=(48, 48)) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(_rgb(*size, seed=seed)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def decode_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "decoded"


def test_upfront_check_decodes_fully_and_lists_every_problem(tmp_path, decode_cache):
    """A truncated JPEG (its header is fine) and small images all fail in the check, listed together."""
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "good.jpg").write_bytes(_jpeg_bytes())
    data = _jpeg_bytes(seed=1)
    (root / "cut.jpg").write_bytes(data[: len(data) // 2])
    (root / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    for i in range(7):
        Image.fromarray(_rgb(20 + i, 40, seed=i)).save(root / f"small{i}.png")
    ds = FolderDataset(str(root), image_size=32)
    with pytest.raises(DatasetError) as err:
        ds.check_files(progress=False)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("9 of 10 image files of this shard")
    assert "2 cannot be decoded (cut.jpg: image file is truncated" in msg and "junk.png: cannot identify" in msg
    assert "7 are smaller than dataset.image_size=32" in msg and "small0.png is 40x20" in msg
    assert "(2 more)" in msg and "small6.png" not in msg  # counts + the first names
    assert "Fix:" in msg and "dataset.allow_upscale=true" in msg and "good.jpg" not in msg
    # allow_upscale accepts the small ones; the broken files still fail
    with pytest.raises(DatasetError, match="^2 of 10 .*cannot be decoded") as err:
        FolderDataset(str(root), image_size=32, allow_upscale=True).check_files(progress=False)
    assert "smaller" not in str(err.value)


def test_upfront_check_is_cached_by_content_hash_and_hashes_each_file_once(tmp_path, decode_cache, monkeypatch):
    import bench.data as data_mod
    import bench.data_check as check_mod

    for i in range(4):
        Image.fromarray(_rgb(32, 32, seed=i)).save(tmp_path / f"{i}.png")
    hashed, decoded = [], []
    real_hash, real_load = data_mod.sha256_file, check_mod.load_image
    monkeypatch.setattr(data_mod, "sha256_file", lambda p: hashed.append(p.name) or real_hash(p))
    monkeypatch.setattr(check_mod, "load_image", lambda p: decoded.append(p.name) or real_load(p))

    ds = FolderDataset(str(tmp_path), image_size=16, num_shards=2, shard=0)
    ds.check_files(progress=False)
    manifest = ds.manifest()
    assert sorted(decoded) == ["0.png", "2.png"]  # this shard's files, decoded
    assert sorted(hashed) == ["0.png", "1.png", "2.png", "3.png"]  # each file hashed once: check + manifest
    entries = sorted(p.stem for p in decode_cache.rglob("*.json"))
    assert entries == sorted(r["sha256"] for r in manifest["entries"] if r["id"] in ("0", "2"))

    decoded.clear()
    FolderDataset(str(tmp_path), image_size=16).check_files(progress=False)  # a rerun: only new content decodes
    assert sorted(decoded) == ["1.png", "3.png"]
    decoded.clear()
    Image.fromarray(_rgb(32, 32, seed=9)).save(tmp_path / "0.png")  # changed content, same name
    FolderDataset(str(tmp_path), image_size=16).check_files(progress=False)
    assert decoded == ["0.png"]
    # a failure is not cached: fixing the file makes it pass without clearing anything
    (tmp_path / "3.png").write_bytes(b"broken")
    with pytest.raises(DatasetError, match="3.png"):
        FolderDataset(str(tmp_path), image_size=16).check_files(progress=False)


def test_hidden_files_are_ignored_with_one_note(tmp_path, caplog):
    Image.fromarray(_rgb(16, 16)).save(tmp_path / "a.png")
    (tmp_path / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble metadata")  # macOS resource fork
    (tmp_path / ".b.jpg").write_bytes(b"editor leftover")
    with caplog.at_level("INFO", logger="bench.data"):
        ds = FolderDataset(str(tmp_path), image_size=16)
    assert [e.id for e in ds.entries] == ["a"]
    notes = [r.getMessage() for r in caplog.records if "hidden" in r.getMessage()]
    assert len(notes) == 1 and "ignored 2 hidden file(s)" in notes[0] and "._a.png" in notes[0]
    ds.check_files(progress=False)  # the run goes on
    (tmp_path / "low").mkdir()
    Image.fromarray(_rgb(16, 16)).save(tmp_path / "low" / "1.png")
    (tmp_path / "low" / "._1.png").write_bytes(b"\x00\x05\x16\x07")
    assert [e.id for e in LOLDataset(str(tmp_path)).entries] == ["1"]


def test_cli_fails_before_creating_any_directory(tmp_path, decode_cache, monkeypatch):
    """The README's promise: bad files fail before any work, and no run directory is left behind."""
    from bench.cli import run_from_config
    from tests.conftest import compose

    monkeypatch.setenv("BENCH_OFFLINE", "1")
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "ok.jpg").write_bytes(_jpeg_bytes(size=(40, 40)))
    data = _jpeg_bytes(seed=2, size=(40, 40))
    (tmp_path / "imgs" / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    Image.fromarray(_rgb(20, 40)).save(tmp_path / "imgs" / "tiny.png")
    root = tmp_path / "results"
    cfg = compose("method=bicubic", "dataset=folder", f"dataset.root={tmp_path / 'imgs'}", "dataset.image_size=32",
                  f"run.results_root={root}", "run.progress=false")
    with pytest.raises(DatasetError, match=r"^2 of 3 .*cut.jpg.*tiny.png is 40x20"):
        run_from_config(cfg)
    assert not root.exists()
