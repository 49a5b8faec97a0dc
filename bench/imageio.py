"""Image I/O at the harness boundary: decode anything PIL reads into float RGB in [0, 1], and write
lossless 8-bit PNGs atomically.

Conversions (documented once, applied everywhere):
* grayscale (L, I;16, I, F) -> replicated to RGB; 16-bit and 32-bit integer images are scaled by their
  full range (65535 / 2**32-1), not clipped;
* RGBA / LA -> alpha composited over black (alpha is dropped after premultiplying), P/CMYK/YCbCr -> RGB;
* float outputs are quantised to 8 bit by rounding (``round(x * 255)``), never truncation.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


class ImageReadError(ValueError):
    """An image file that cannot be decoded; the message names the file and the fix."""


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
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float64) / 255.0
        arr = rgba[..., :3] * rgba[..., 3:4]
    elif mode == "L" or mode == "1":
        arr = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
    else:
        arr = np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return arr.astype(np.float32)


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file as a float tensor (3, H, W) in [0, 1]."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            arr = _to_float_rgb(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(
            f"cannot read image {str(path)!r}: {err}. Fix: replace or remove the file, or point the "
            "dataset at a folder that holds only readable images."
        ) from err
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def check_image_header(path: str | os.PathLike) -> tuple[int, int]:
    """Cheap up-front check that a file is an image (no full decode); returns (width, height)."""
    try:
        with Image.open(path) as img:
            img.verify()
            return img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(
            f"cannot read image {str(path)!r}: {err}. Fix: replace or remove the file."
        ) from err


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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder + ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_temp_tag()}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_png(img_u8: torch.Tensor, path: str | os.PathLike) -> None:
    """Atomically save a (3, H, W) uint8 tensor as a lossless PNG."""
    import io

    arr = img_u8.permute(1, 2, 0).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(arr, mode="RGB").save(buf, format="PNG", compress_level=1)
    atomic_write_bytes(Path(path), buf.getvalue())


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
