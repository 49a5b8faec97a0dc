"""The up-front check of a dataset shard's image files: everything that would fail mid-run fails first.

Every file is decoded completely with :func:`bench.imageio.load_image`, the decoder the run itself uses,
so a truncated JPEG or a corrupt PNG fails here and not after an hour of sampling. Files whose short side
is below ``image_size`` (without ``allow_upscale``) fail here too, measured after the EXIF orientation.
The work runs in a thread pool sized to the usable CPUs (PIL's decoders, zlib and hashlib release the GIL)
behind a progress bar. All problems are collected into ONE error paragraph (counts, the first
names, the fix); the CLI runs this before it creates any directory, so nothing has been written then.

A successful decode is remembered in a small JSON file per image content,
``$BENCH_CACHE/decoded/<decoder version>/<sha[:2]>/<sha256>.json`` (default cache ``~/.cache/bench``),
keyed by the file's sha256 (the hash the dataset manifest needs anyway, computed once per file) and
:func:`bench.imageio.decoder_version`, so a rerun or a resumed run does not decode again. Failures are
never cached. An unwritable cache only costs decoding again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from bench.imageio import ImageReadError, atomic_write_bytes, decoder_version, load_image

log = logging.getLogger(__name__)

#: how many names of each kind of problem the error message lists
SHOW = 5


def usable_cpus() -> int:
    """CPUs this process may run on (affinity / cgroup cpusets, e.g. a SLURM allocation), else cpu_count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def decode_cache_dir() -> Path:
    from bench.models.assets import cache_dir

    return cache_dir() / "decoded" / decoder_version().replace("/", "_")


@dataclass(frozen=True)
class FileCheck:
    path: Path
    size: tuple[int, int] | None  # (width, height) after the EXIF orientation; None: not decodable
    error: str | None = None
    cached: bool = False


def _check_one(path: Path, sha256: Callable[[Path], str], cache: Path | None) -> FileCheck:
    digest = sha256(path)
    entry = cache / digest[:2] / f"{digest}.json" if cache is not None else None
    if entry is not None:
        try:
            memo = json.loads(entry.read_text())
            return FileCheck(path, (int(memo["width"]), int(memo["height"])), cached=True)
        except (OSError, ValueError, KeyError, TypeError):
            pass
    try:
        img = load_image(path)
    except ImageReadError as err:
        return FileCheck(path, None, error=str(err.__cause__ or err))
    size = (int(img.shape[2]), int(img.shape[1]))
    if entry is not None:
        try:
            body = {"width": size[0], "height": size[1], "decoder": decoder_version(), "sha256": digest}
            atomic_write_bytes(entry, (json.dumps(body) + "\n").encode())
        except OSError as err:  # read-only or full cache: the next run decodes again
            log.debug("could not write decode cache entry %s: %s", entry, err)
    return FileCheck(path, size)


def check_image_files(paths: list[Path], sha256: Callable[[Path], str], *,
                      progress: bool | None = None, workers: int | None = None,
                      cache: Path | None | bool = True) -> list[FileCheck]:
    """Decode (or find in the cache) every file of ``paths``; the per-file results in their order
    (:func:`problems_message` turns them into the error).

    ``sha256(path)`` returns the file's content hash (the dataset's memoised manifest hash);
    ``progress=None`` shows the bar on a terminal only; ``cache=True`` uses :func:`decode_cache_dir`,
    ``False``/None decodes every file.
    """
    cache_root = decode_cache_dir() if cache is True else (cache or None)
    workers = max(1, min(workers or usable_cpus(), len(paths) or 1))
    from tqdm.auto import tqdm

    results: dict[Path, FileCheck] = {}
    bar = tqdm(total=len(paths), desc="checking images", unit="img",
               disable=None if progress is None else not progress)
    with bar, ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_check_one, p, sha256, cache_root) for p in paths]
        for fut in as_completed(futures):
            res = fut.result()
            results[res.path] = res
            bar.update(1)
    return [results[p] for p in paths]


def _names(paths: list[Path]) -> tuple[str, list[str]]:
    """A common folder and the paths relative to it (short names for the message)."""
    try:
        common = Path(os.path.commonpath([p.parent for p in paths]))
        return str(common), [str(p.relative_to(common)) for p in paths]
    except ValueError:  # different drives
        return "", [str(p) for p in paths]


def _first(items: list[str]) -> str:
    more = f", ... ({len(items) - SHOW} more)" if len(items) > SHOW else ""
    return "; ".join(items[:SHOW]) + more


def problems_message(checks: list[FileCheck], min_size: int | None) -> str | None:
    """One paragraph about every unusable file (None when all are fine)."""
    broken = [c for c in checks if c.size is None]
    small = [c for c in checks if c.size is not None and min_size is not None and min(c.size) < min_size]
    if not broken and not small:
        return None
    folder, names = _names([c.path for c in broken + small])
    name = dict(zip([c.path for c in broken + small], names))
    parts, fixes = [], []
    if broken:
        parts.append(f"{len(broken)} cannot be decoded ("
                     + _first([f"{name[c.path]}: {c.error}" for c in broken]) + ")")
        fixes.append("replace the unreadable files (re-download or re-export them) or remove them")
    if small:
        verb = "is" if len(small) == 1 else "are"
        parts.append(f"{len(small)} {verb} smaller than dataset.image_size={min_size} on the short side ("
                     + _first([f"{name[c.path]} is {c.size[0]}x{c.size[1]}" for c in small]) + ")")
        fixes.append("for the small ones set dataset.allow_upscale=true (upscale them, as guided-diffusion's "
                     "loader does), lower dataset.image_size, or remove them")
    where = f" under {folder!r}" if folder else ""
    return (f"{len(broken) + len(small)} of {len(checks)} image files of this shard{where} cannot be used: "
            + "; ".join(parts) + ". Nothing was run and no run directory was created. Fix: " + "; ".join(fixes) + ".")
