"""bench/imageio.py: faithful decoding (EXIF orientation, 16-bit colour) and files others can read."""

from __future__ import annotations

import os
import stat
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from bench.imageio import ImageReadError, atomic_write_bytes, load_image, orient
from tests.conftest import compose


def _png16(path, arr: np.ndarray, orientation: int | None = None) -> None:
    """A 16-bit PNG written byte by byte (no image library involved): gray, gray+alpha, RGB or RGBA,
    optionally with an eXIf chunk holding an orientation."""
    h, w, c = arr.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))  # filter 0 per row
    exif = b""
    if orientation is not None:
        tags = Image.Exif()
        tags[0x0112] = orientation
        exif = chunk(b"eXIf", tags.tobytes().removeprefix(b"Exif\x00\x00"))  # PNG holds the bare TIFF block
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
                     + exif + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _deep(h=6, w=7, c=3, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 65536, (h, w, c), dtype=np.uint16)


def _chw(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float()


def test_16bit_rgb_png_keeps_16_bits(tmp_path):
    arr = _deep()
    _png16(tmp_path / "deep.png", arr)
    with Image.open(tmp_path / "deep.png") as img:  # what PIL alone would give: the high byte
        assert img.mode == "RGB" and np.array_equal(np.asarray(img), (arr >> 8).astype(np.uint8))
    got = load_image(tmp_path / "deep.png").double()
    assert torch.allclose(got, _chw(arr).double() / 65535, atol=1e-7)  # every 16-bit level, not 256 of them


def test_16bit_alpha_pngs_composite_at_16_bits(tmp_path):
    rgba = _deep(c=4, seed=1)
    _png16(tmp_path / "rgba.png", rgba)
    want = rgba[..., :3].astype(np.float64) / 65535 * (rgba[..., 3:].astype(np.float64) / 65535)
    assert torch.allclose(load_image(tmp_path / "rgba.png").double(), _chw(want).double(), atol=1e-6)
    ga = _deep(c=2, seed=2)
    _png16(tmp_path / "ga.png", ga)
    g = ga[..., :1].astype(np.float64) / 65535 * (ga[..., 1:].astype(np.float64) / 65535)
    assert torch.allclose(load_image(tmp_path / "ga.png").double(), _chw(np.repeat(g, 3, axis=2)).double(), atol=1e-6)


def test_16bit_gray_png_stays_exact(tmp_path):
    gray = _deep(c=1, seed=3)
    _png16(tmp_path / "gray.png", gray)
    got = load_image(tmp_path / "gray.png").double()
    assert torch.allclose(got, _chw(np.repeat(gray, 3, axis=2)).double() / 65535, atol=1e-7)


def test_16bit_rgb_tiff_and_ppm_keep_16_bits(tmp_path):
    import tifffile

    arr = _deep(seed=4)
    tifffile.imwrite(tmp_path / "deep.tif", arr, photometric="rgb")
    tifffile.imwrite(tmp_path / "planar.tif", np.ascontiguousarray(arr.transpose(2, 0, 1)), photometric="rgb",
                     planarconfig="separate")
    (tmp_path / "deep.ppm").write_bytes(b"P6\n7 6\n65535\n" + arr.astype(">u2").tobytes())
    want = _chw(arr).double() / 65535
    for name in ("deep.tif", "planar.tif", "deep.ppm"):
        assert torch.allclose(load_image(tmp_path / name).double(), want, atol=1e-7), name


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_gives_the_upright_image(tmp_path, orientation):
    arr = np.random.default_rng(orientation).integers(0, 256, (5, 8, 3), dtype=np.uint8)  # not square
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(arr).save(tmp_path / "o.png", exif=exif.tobytes())  # lossless, so exact
    with Image.open(tmp_path / "o.png") as img:
        upright = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    got = load_image(tmp_path / "o.png")
    assert got.shape == (3, *upright.shape[:2])
    assert torch.equal((got * 255).round().to(torch.uint8), torch.from_numpy(upright.copy()).permute(2, 0, 1))
    # the same on a 16-bit file (decoded by pypng, oriented by our numpy table)
    _png16(tmp_path / "o16.png", arr.astype(np.uint16) * 257, orientation=orientation)
    assert torch.equal(load_image(tmp_path / "o16.png"), got)
    assert np.array_equal(orient(arr, orientation), upright)


def test_exif_orientation_of_a_jpeg(tmp_path):
    arr = np.zeros((16, 32, 3), np.uint8)
    arr[:, :16] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape; shown rotated 90 degrees clockwise (portrait, white on top)
    Image.fromarray(arr).save(tmp_path / "p.jpg", exif=exif.tobytes(), quality=95)
    img = load_image(tmp_path / "p.jpg")
    assert img.shape == (3, 32, 16)
    assert img[:, :14].mean() > 0.95 and img[:, 18:].mean() < 0.05


def test_truncated_files_fail_to_decode(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with Image.open(tmp_path / "cut.jpg") as img:
        img.verify()  # the old header check passed this file
    with pytest.raises(ImageReadError, match="cut.jpg.*truncated"):
        load_image(tmp_path / "cut.jpg")
    _png16(tmp_path / "d.png", _deep())
    (tmp_path / "cut.png").write_bytes((tmp_path / "d.png").read_bytes()[:60])
    with pytest.raises(ImageReadError, match="cut.png"):
        load_image(tmp_path / "cut.png")


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_written_files_and_folders_respect_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "new" / "deeper" / "x.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new" / "deeper" / "x.json").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "new" / "deeper").stat().st_mode) == 0o777 & ~umask
    assert [p.name for p in (tmp_path / "new" / "deeper").iterdir()] == ["x.json"]  # no temp file left


def test_a_real_run_writes_files_colleagues_can_read(tmp_path, monkeypatch):
    """Every file and folder of a run (umask 022) is 0644 / 0755, not mkstemp's 0600."""
    from bench.cli import run_from_config

    monkeypatch.setenv("BENCH_OFFLINE", "1")
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "results"
    cfg = compose("method=bicubic", "dataset.limit=2", f"run.results_root={root}", "run.progress=false")
    old = os.umask(0o022)
    try:
        run_from_config(cfg)
    finally:
        os.umask(old)
    files = [p for p in root.rglob("*") if p.is_file()]
    assert any(p.suffix == ".png" for p in files) and any(p.name == "manifest.json" for p in files)
    wrong = {str(p.relative_to(root)): oct(stat.S_IMODE(p.stat().st_mode)) for p in root.rglob("*")
             if stat.S_IMODE(p.stat().st_mode) != (0o755 if p.is_dir() else 0o644)}
    assert not wrong, wrong


def test_cached_fid_reference_stats_are_readable_by_others(tmp_path):
    """The report's reference statistics live in the shared results tree (``_reference/``)."""
    from bench.metrics.fid import reference_stats

    old = os.umask(0o022)
    try:
        reference_stats(lambda: np.random.default_rng(0).normal(size=(6, 4)), "k", tmp_path / "ref")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "ref" / "k.npz").stat().st_mode) == 0o644
