"""Image I/O at the harness boundary: decode image files faithfully into float RGB in [0, 1], and write
lossless 8-bit PNGs atomically, readable by colleagues.

Decoding (:func:`load_image`; documented once, applied everywhere, docs/datasets-and-tasks.md):
* the EXIF orientation is applied (as ``PIL.ImageOps.exif_transpose``), so the ground truth is the
  upright picture a viewer shows, not the sensor's raw row order;
* 16-bit colour keeps 16-bit precision: PIL reduces 16-bit RGB(A) / gray+alpha PNGs and TIFFs and 16-bit
  colour PPMs to 8 bits (planar 16-bit TIFFs it even scrambles), so those are decoded with ``pypng``
  (PNG), ``tifffile`` (TIFF) or numpy (PPM) instead; 16-bit gray (PIL's ``I;16``) is read by PIL;
* grayscale -> replicated to RGB; integer samples are scaled by their full range (65535 for 16 bit),
  not clipped; alpha is composited over black (premultiplied, then dropped); P/CMYK/YCbCr -> RGB;
* the decode is complete (a truncated file is an error here, not a grey tail), see
  ``bench/data_check.py`` for the up-front check that decodes every file before a run.

Writing: float outputs are quantised to 8 bit by rounding (``round(x * 255)``), never truncation; every
file is written through :func:`atomic_write_bytes` (temp file + rename) with the mode ``open()`` would
give it (``0o666 & ~umask``, i.e. 0644 under the usual umask 022; mkstemp's 0600 would hide results
from colleagues on a shared cluster).
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import os
import socket
import tempfile
import threading
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
#: bump when :func:`load_image` changes what it accepts or returns (keys the up-front check's cache)
DECODER_REVISION = 2  # 2: EXIF orientation, 16-bit colour, full decode


class ImageReadError(ValueError):
    """An image file that cannot be decoded; the message names the file and the fix."""


@functools.cache
def decoder_version() -> str:
    """What decodes images here: our revision plus the decoding libraries' versions."""
    libs = []
    for name in ("pypng", "tifffile"):
        try:
            libs.append(f"{name}-{md.version(name)}")
        except md.PackageNotFoundError:
            libs.append(f"{name}-none")
    return "/".join([f"bench-decode-{DECODER_REVISION}", f"pillow-{PIL.__version__}", *libs])


def _compose_rgb(arr: np.ndarray) -> np.ndarray:
    """(H, W, C) floats in [0, 1] with C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA) -> (H, W, 3):
    alpha is composited over black."""
    if arr.ndim == 2:
        arr = arr[..., None]
    c = arr.shape[2]
    if c in (2, 4):
        arr = arr[..., : c - 1] * arr[..., c - 1 :]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.shape[2] != 3:
        raise ValueError(f"unsupported number of channels: {c}")
    return arr


def _to_float_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.float64) / 65535.0
    elif mode == "I":
        arr = np.asarray(img, dtype=np.float64)
        arr = arr / (65535.0 if arr.max() <= 65535 else 4294967295.0)
    elif mode == "F":
        arr = np.clip(np.asarray(img, dtype=np.float64), 0.0, 1.0)
    elif mode in ("RGBA", "LA", "PA"):
        arr = np.asarray(img.convert("RGBA"), dtype=np.float64) / 255.0
    elif mode == "L" or mode == "1":
        arr = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
    else:
        arr = np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
    return _compose_rgb(arr)


def _keeps_only_8_bits(img: Image.Image) -> bool:
    """True when the file stores more than 8 bits per colour sample but PIL would decode it to an
    8-bit mode (it keeps the high byte, or worse: planar 16-bit TIFFs come out scrambled): 16-bit
    RGB(A)/LA PNGs (raw modes ``*;16*``), TIFFs with more than 8 bits per sample, PPMs with maxval > 255.
    Read from the header and the decoder tile, so call it before ``load()``."""
    if img.mode not in ("RGB", "RGBA", "LA", "PA"):
        return False  # I;16 / I / F keep their precision
    if img.format == "TIFF":
        bits = img.tag_v2.get(258, (8,))  # BitsPerSample
        return max(bits if isinstance(bits, tuple) else (bits,)) > 8
    for tile in img.tile:
        codec, args = tile[0], tile[3]
        raw = args[0] if isinstance(args, tuple) else args
        if isinstance(raw, str) and ";16" in raw:
            return True
        if codec == "ppm" and isinstance(args, tuple) and len(args) > 1 and int(args[1]) > 255:
            return True
    return False


def _decode_deep(path: Path, img: Image.Image) -> np.ndarray:
    """16-bit colour samples -> (H, W, 3) floats, with a reader that keeps all bits."""
    if img.format == "PNG":
        import png

        width, height, rows, info = png.Reader(filename=str(path)).asDirect()
        planes = info["planes"]
        arr = np.vstack([np.asarray(r, dtype=np.float64) for r in rows]).reshape(height, width, planes)
        return _compose_rgb(arr / (2 ** info["bitdepth"] - 1))  # asDirect applies sBIT to bitdepth
    if img.format == "TIFF":
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            arr = page.asarray()
            if page.axes.startswith("S"):  # planar (separate) samples
                arr = np.moveaxis(arr, 0, -1)
            if arr.dtype.kind != "u":
                raise ValueError(f"unsupported TIFF sample type {arr.dtype}")
            arr = arr.astype(np.float64) / (2 ** int(page.bitspersample) - 1)  # 12-bit in uint16: 4095
            if arr.ndim == 3 and arr.shape[2] in (2, 4) and tuple(page.extrasamples)[:1] == (1,):
                arr = arr[..., :-1]  # associated (premultiplied) alpha: the colour is composited already
            return _compose_rgb(arr)
    if img.format == "PPM":
        tile = img.tile[0]  # binary P6: big-endian 16-bit samples after the header
        w, h, offset, maxval = tile[1][2] - tile[1][0], tile[1][3] - tile[1][1], tile[2], int(tile[3][1])
        data = np.frombuffer(path.read_bytes(), dtype=">u2", count=w * h * 3, offset=offset)
        return _compose_rgb(data.reshape(h, w, 3).astype(np.float64) / maxval)
    raise ValueError(f"{img.format} with more than 8 bits per colour sample is not supported; "
                     "convert it to a 16-bit PNG or TIFF")


def _exif_orientation(img: Image.Image) -> int:
    value = img.getexif().get(0x0112, 1)  # ExifTags.Base.Orientation
    return value if value in range(1, 9) else 1


def orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an (H, W, C) array, exactly as ``ImageOps.exif_transpose``."""
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],                      # FLIP_LEFT_RIGHT
        3: lambda a: a[::-1, ::-1],                   # ROTATE_180
        4: lambda a: a[::-1],                         # FLIP_TOP_BOTTOM
        5: lambda a: a.transpose(1, 0, 2),            # TRANSPOSE
        6: lambda a: np.rot90(a, k=-1),               # ROTATE_270 (90 degrees clockwise)
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # TRANSVERSE
        8: lambda a: np.rot90(a, k=1),                # ROTATE_90 (counter-clockwise)
    }
    return ops[orientation](arr)


def _decode_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (UnidentifiedImageError, OSError, SyntaxError, ValueError,
                                               EOFError, Image.DecompressionBombError)
    try:
        import png

        errors += (png.Error,)
    except ImportError:
        pass
    return errors


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file completely into a float tensor (3, H, W) in [0, 1], upright (EXIF
    orientation applied) and at the file's full bit depth (see the module docstring)."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            deep = _keeps_only_8_bits(img)  # before anything loads the pixels (it reads the tile)
            orientation = _exif_orientation(img)
            if deep:
                arr = _decode_deep(path, img)
            else:
                img.load()
                arr = _to_float_rgb(img)
    except _decode_errors() as err:
        raise ImageReadError(
            f"cannot read image {str(path)!r}: {err}. Fix: replace or remove the file, or point the "
            "dataset at a folder that holds only readable images."
        ) from err
    arr = orient(arr, orientation).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Quantise [0, 1] floats to uint8 by rounding (clamped); NaNs are an error, not black pixels."""
    if torch.isnan(x).any():
        raise FloatingPointError("image contains NaN values; refusing to quantise it to 8 bit")
    return (x.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8)


TEMP_SUFFIX = ".tmp"


def _temp_tag() -> str:
    """host and pid of the writer, so a later run can tell a killed writer's leftovers from a live one's."""
    return f"{_host()}~{os.getpid()}"


def _host() -> str:
    return socket.gethostname().replace(".", "_")  # no dots: the tag sits between dots in the name


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask, read without changing it (Linux: /proc), else by the set-and-restore idiom."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode ``open()`` gives a new file: ``0o666 & ~umask`` (0644 under umask 022)."""
    return 0o666 & ~_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder + ``os.replace``; the file gets
    :func:`default_file_mode` (mkstemp creates 0600) and new folders ``0o777 & ~umask``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_temp_tag()}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), default_file_mode())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def png_bytes(img_u8: torch.Tensor) -> bytes:
    """A (3, H, W) uint8 tensor encoded as a lossless PNG (what :func:`save_png` writes)."""
    import io

    arr = img_u8.permute(1, 2, 0).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(arr, mode="RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def save_png(img_u8: torch.Tensor, path: str | os.PathLike) -> None:
    """Atomically save a (3, H, W) uint8 tensor as a lossless PNG."""
    atomic_write_bytes(Path(path), png_bytes(img_u8))


def read_png_u8(path: str | os.PathLike) -> torch.Tensor:
    """Read back a PNG written by :func:`save_png` as (3, H, W) uint8."""
    with Image.open(path) as img:
        arr = np.asarray(img.convert("RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def remove_stale_temps(root: Path) -> list[Path]:
    """Delete temp files under ``root`` left by writers on this host that are no longer running (a
    SIGKILLed run). Temp files of live processes, or of other hosts sharing the folder, are kept."""
    removed = []
    host = _host()
    for tmp in Path(root).rglob(f".*{TEMP_SUFFIX}"):
        parts = tmp.name.split(".")
        tag = next((p for p in parts if "~" in p), None)
        if tag is None:
            continue
        t_host, _, t_pid = tag.rpartition("~")
        if t_host != host or not t_pid.isdigit() or _alive(int(t_pid)):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
