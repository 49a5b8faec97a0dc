"""Named, hash-pinned model assets (checkpoints): resolve, download, verify, load.

An :class:`Asset` is a file name plus where it comes from (``url``) and what it must hash to
(``sha256``). :func:`fetch` returns a verified local path, in this order:

1. ``asset.path`` (config ``model.asset.path=...``): the user's own file; it must exist and is
   verified against ``sha256`` when one is given.
2. ``cache_dir()/<name>``: verified; the digest is remembered in a sidecar ``<name>.sha256``
   keyed by (size, mtime) so multi-GB checkpoints are hashed once, not on every run.
3. Download from ``url`` (unless offline): streamed into a temp file in the cache directory,
   hashed while streaming, verified, then ``os.replace``-d into place. Nothing half-written is
   ever left at the final path, and a failed download leaves no temp file behind.

A mismatching file that the user owns (cache or override) is never deleted: the error says what
to do. Offline is the ``offline`` argument, else ``BENCH_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``.

Every fetch is recorded in :func:`fetched_assets` (actual digest, expected digest, verified or
not) for run provenance; an asset without ``sha256`` is used with a loud warning and recorded as
unverified.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import pickle
import re
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.imageio import default_file_mode
from bench.paths import package_root

log = logging.getLogger(__name__)

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
_TRUE = {"1", "true", "yes", "on"}


class AssetError(RuntimeError):
    """An asset is missing, unreachable, corrupt or not a loadable state dict."""


@dataclass(frozen=True)
class Asset:
    name: str  # file name in the cache, e.g. "256x256_diffusion_uncond.pt"
    url: str | None
    sha256: str | None  # lowercase hex; None = unverifiable (warned about, recorded)
    path: str | None = None  # local override: use this file instead of cache/download
    override: str = "model.asset.path"  # where a user points at a local copy (named in the error messages)

    def __post_init__(self) -> None:
        if not self.name or Path(self.name).name != self.name or self.name in (".", ".."):
            raise AssetError(f"asset name must be a plain file name, got {self.name!r}")
        if self.sha256 is not None:
            digest = str(self.sha256).strip().lower()
            if not _HEX64.match(digest):
                raise AssetError(f"asset {self.name}: sha256 must be 64 hex digits, got {self.sha256!r}")
            object.__setattr__(self, "sha256", digest)


_FETCHED: dict[str, dict] = {}


def fetched_assets() -> dict[str, dict]:
    """Provenance of every asset fetched in this process: name -> {path, url, sha256, ...}."""
    return {k: dict(v) for k, v in _FETCHED.items()}


def cache_dir() -> Path:
    """``$BENCH_CACHE`` or ``~/.cache/bench`` (not created here)."""
    env = os.environ.get("BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bench"


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _is_offline(offline: bool | None) -> bool:
    if offline is not None:
        return bool(offline)
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("BENCH_OFFLINE", "HF_HUB_OFFLINE"))


def _sidecar_for(path: Path, in_cache: bool) -> Path:
    if in_cache:
        return path.with_name(path.name + ".sha256")
    # user files: keep the memo in the cache, never next to the user's file
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return cache_dir() / ".hashes" / f"{path.name}.{key}.sha256"


def _write_sidecar(sidecar: Path, st: os.stat_result, digest: str) -> None:
    try:
        sidecar.parent.mkdir(parents=True, exist_ok=True)
        tmp = sidecar.with_name(f".{sidecar.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}))
        os.replace(tmp, sidecar)
    except OSError as e:  # a read-only cache only costs re-hashing
        log.debug("could not write hash sidecar %s: %s", sidecar, e)


def _memo_sha256(path: Path, sidecar: Path) -> str:
    """sha256 of ``path``, reusing ``sidecar`` when size and mtime are unchanged."""
    st = path.stat()
    try:
        memo = json.loads(sidecar.read_text())
        if memo.get("size") == st.st_size and memo.get("mtime_ns") == st.st_mtime_ns:
            return str(memo["sha256"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    digest = sha256_file(path)
    _write_sidecar(sidecar, st, digest)
    return digest


def _how_to_place(asset: Asset, target: Path) -> str:
    lines = [f"  download:  {asset.url}" if asset.url else "  download:  (no URL known for this asset)"]
    lines.append(f"  place at:  {target}")
    lines.append(f"  or set:    {asset.override}=/path/to/{asset.name}")
    lines.append(f"  sha256:    {asset.sha256 or '(none pinned; the file cannot be verified)'}")
    return "\n".join(lines)


def _accept(asset: Asset, path: Path, actual: str, source: str) -> Path:
    if asset.sha256 is None:
        msg = (f"asset {asset.name}: no sha256 pinned, using {path} UNVERIFIED "
               f"(actual sha256 {actual}); pin it in the asset config to make runs reproducible")
        warnings.warn(msg, stacklevel=3)
        log.warning(msg)
    _FETCHED[asset.name] = {"name": asset.name, "path": str(path), "url": asset.url, "source": source,
                            "sha256": actual, "expected_sha256": asset.sha256,
                            "verified": asset.sha256 is not None}
    return path


def resolve_local_path(path: str) -> Path:
    """A user path as given (absolute or relative to the working directory); a relative path that does
    not exist there is tried against :func:`bench.paths.package_root` (a checkout's root, or the
    site-packages of a ``pip install .``), where the embedded priors live at ``bench/priors/...``, so
    configs work from any working directory and in both layouts."""
    p = Path(path).expanduser()
    if not p.is_absolute() and not p.exists() and (package_root() / p).exists():
        return package_root() / p
    return p


def fetch(asset: Asset, *, offline: bool | None = None, progress: bool = True) -> Path:
    """Return a local, verified path for ``asset`` (see the module docstring for the order)."""
    if asset.path:
        p = resolve_local_path(asset.path)
        if not p.is_file():
            raise AssetError(
                f"asset {asset.name}: model.asset.path={asset.path} does not exist or is not a file.\n"
                f"Fix the path, or unset model.asset.path to use the cache/download:\n"
                + _how_to_place(asset, cache_dir() / asset.name))
        actual = _memo_sha256(p, _sidecar_for(p, in_cache=False))
        if asset.sha256 is not None and actual != asset.sha256:
            raise AssetError(
                f"asset {asset.name}: {p} has sha256 {actual}, expected {asset.sha256}.\n"
                f"Point model.asset.path at the right file (from {asset.url or 'the original source'}).")
        return _accept(asset, p, actual, "path")

    target = cache_dir() / asset.name
    if target.is_file():
        actual = _memo_sha256(target, _sidecar_for(target, in_cache=True))
        if asset.sha256 is not None and actual != asset.sha256:
            raise AssetError(
                f"asset {asset.name}: cached file {target} has sha256 {actual}, expected {asset.sha256}.\n"
                f"It is corrupt or a different version; delete it (it will be re-downloaded) or replace it:\n"
                + _how_to_place(asset, target))
        return _accept(asset, target, actual, "cache")

    if _is_offline(offline):
        raise AssetError(f"asset {asset.name} is missing and downloads are disabled (offline mode); "
                         f"missing file: {target}\n" + _how_to_place(asset, target))
    if not asset.url:
        raise AssetError(f"asset {asset.name} is missing and has no URL to download it from; "
                         f"missing file: {target}\n" + _how_to_place(asset, target))
    actual = _download(asset, target, progress)
    return _accept(asset, target, actual, "download")


def _download(asset: Asset, target: Path, progress: bool) -> str:
    from tqdm.auto import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{asset.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        h, n = hashlib.sha256(), 0
        try:
            req = urllib.request.Request(asset.url, headers={"User-Agent": "bench-assets"})
            with os.fdopen(fd, "wb") as f, urllib.request.urlopen(req, timeout=60) as r:
                total = int(r.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=asset.name, disable=not progress) as bar:
                    while chunk := r.read(_CHUNK):
                        f.write(chunk)
                        h.update(chunk)
                        n += len(chunk)
                        bar.update(len(chunk))
                f.flush()
                os.fsync(f.fileno())
        except (OSError, http.client.HTTPException) as e:  # URLError/HTTPError, timeouts, resets
            raise AssetError(f"asset {asset.name}: download from {asset.url} failed: {e}\n"
                             f"Download it yourself and place it:\n" + _how_to_place(asset, target)) from e
        if total is not None and n != total:
            raise AssetError(f"asset {asset.name}: download from {asset.url} truncated "
                             f"({n} of {total} bytes)")
        actual = h.hexdigest()
        if asset.sha256 is not None and actual != asset.sha256:
            raise AssetError(f"asset {asset.name}: downloaded file has sha256 {actual}, expected "
                             f"{asset.sha256} (URL {asset.url}); nothing was saved")
        os.chmod(tmp, default_file_mode())  # mkstemp makes 0600; a cache may be shared
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)  # no-op after a successful replace
    _write_sidecar(_sidecar_for(target, in_cache=True), target.stat(), actual)
    return actual


def _tensor_dict(obj) -> bool:
    return isinstance(obj, Mapping) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                             for k, v in obj.items())


def load_state_dict(path) -> dict[str, torch.Tensor]:
    """Load a state dict on CPU without running arbitrary pickle code.

    ``.safetensors`` -> ``safetensors.torch.load_file``; anything else -> ``torch.load(...,
    weights_only=True)``. A ``{"state_dict": {...}}`` or ``{"model": {...}}`` wrapper is unwrapped
    when its payload is a dict of tensors.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as e:  # safetensors raises its own error types
            raise AssetError(f"could not read safetensors file {path}: {e}") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged pickle fails in the unpickler with any of IndexError, KeyError, ...
        name = r"([A-Za-z_][\w.]*\.[A-Za-z_]\w*)"  # module.attr; random bytes rarely spell one
        m = re.search(rf"Unsupported global: GLOBAL {name}\s|GLOBAL {name} whose module \S+ is blocked", str(e))
        if isinstance(e, pickle.UnpicklingError) and m:
            raise AssetError(
                f"{path} is a pickle that needs arbitrary Python objects, which are not loaded for safety "
                f"(torch.load weights_only=True). Convert it once, in a trusted environment, to a plain "
                f"state dict (torch.save(model.state_dict(), ...)) or to .safetensors (it references "
                f"{m.group(1) or m.group(2)}). A truncated checkpoint reads the same way: if the name is "
                f"cut short, the file is damaged; download it again or check its sha256.") from e
        # torch wraps the unpickler's own reason ("Unsupported operand 60") in paragraphs of advice
        r = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:Check the documentation|$)", str(e), re.S)
        detail = r.group(1) if r else (str(e).strip().splitlines() or [""])[0]
        raise AssetError(f"could not read checkpoint {path}: it is damaged or not a torch checkpoint "
                         f"({type(e).__name__}: {' '.join(detail.split())[:200]}); download it again or "
                         f"check its sha256") from e
    if _tensor_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if _tensor_dict(obj.get(key)):
                return dict(obj[key])
        desc = ", ".join(f"{k!r}: {type(v).__name__}" for k, v in list(obj.items())[:8])
    else:
        desc = type(obj).__name__
    raise AssetError(f"{path} is not a state dict (a dict of tensors, possibly under 'state_dict' or "
                     f"'model'); found {{{desc}}}")


def asset_from_config(d: Mapping | None, node: str = "model.asset") -> Asset | None:
    """Build an Asset from a config mapping ``{name, url, sha256, path}``; None if nothing is set.

    ``name`` defaults to the file name of ``url`` (else of ``path``). Unknown keys are an error so
    that typos such as ``sha`` do not silently disable verification. ``node`` is where the mapping sits
    in the run config; error messages tell the user to set ``<node>.path``.
    """
    if d is None:
        return None
    d = {str(k): d[k] for k in d}
    unknown = set(d) - {"name", "url", "sha256", "path"}
    if unknown:
        raise AssetError(f"unknown asset config keys {sorted(unknown)}; allowed: name, url, sha256, path")
    vals = {k: (None if d.get(k) in (None, "") else str(d[k])) for k in ("name", "url", "sha256", "path")}
    if not any(vals.values()):
        return None
    name = vals["name"]
    if not name:
        src = vals["url"].split("?")[0].rstrip("/") if vals["url"] else vals["path"]
        name = Path(src or "").name
    if not name:
        raise AssetError(f"asset config needs a name (or a url/path ending in a file name): {d}")
    return Asset(name=name, url=vals["url"], sha256=vals["sha256"], path=vals["path"], override=f"{node}.path")
