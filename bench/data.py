"""Datasets: an image folder, a seeded ImageNet-val subset, LOL low/high pairs, and the embedded sample.

Every dataset is a list of :class:`Entry` (id, file, optional low-light file, optional label) fixed at
construction: order is deterministic (sorted names or the manifest's order), ids come from file names, and
sharding takes every ``num_shards``-th entry starting at ``shard`` so shards are disjoint, cover the
dataset, and an image's id (hence its seed) does not depend on the split.

Preprocessing (``image_size`` set, ``preprocessing`` chooses the rule; :data:`PREPROCESSING`):

* ``center_crop_arr`` (default): guided-diffusion's ``image_datasets.py::center_crop_arr``, which the ADM
  prior was trained with and official DDRM's ImageNet loader uses, bit for bit. The decoded image is
  rounded to 8-bit RGB (``round(x * 255)``, exact for 8-bit sources) and PIL does the rest on uint8:
  halve with ``Image.BOX`` while the short side is >= 2 * image_size, resize to
  ``round(side * image_size / short side)`` with ``Image.BICUBIC``, crop the square at the floor offsets
  ``(h - s) // 2``, ``(w - s) // 2``.
* ``float``: the same steps on float channels (PIL mode "F"), rounded to 8 bit once at the end. It keeps
  16-bit sources' precision but differs from ``center_crop_arr`` in most pixels (PIL rounds RGB to 8 bit
  after every resize): measured up to 4/255 (90% of values) on the sample photos at 64 px and 9/255
  (17% of values) on the real ImageNet-val JPEGs at 256 px.
* ``resize_center_crop``: torchvision ``Resize(image_size)`` + ``CenterCrop(image_size)`` on PIL, the
  loader of official GDP's ``save_random_images_*.py`` (BILINEAR, antialiased, long side
  ``int(image_size * long / short)``, crop offsets ``int(round((h - s) / 2))``), on 8-bit RGB.

The rule is a dataset config key (``dataset.preprocessing``), so it enters the run identity, and it is in
the content manifest (hence the shared ground-truth folder) and in every run manifest. The result is
8-bit exact (the ground truth every metric compares against is exactly representable in the saved PNGs).
``image_size=None`` keeps native sizes (LOL's 600x400) and only rounds to 8 bit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.data_check import check_image_files, problems_message, usable_cpus
from bench.models.assets import sha256_file  # the one file-hash helper
from bench.imageio import IMAGE_SUFFIXES, load_image, to_uint8
from bench.paths import datasets_dir

log = logging.getLogger(__name__)

DATASETS_DIR = datasets_dir()  # the checkout's datasets/ or the copy installed with the package


class DatasetError(ValueError):
    """A dataset that cannot be used as configured; the message says what to change."""


@dataclass(frozen=True)
class Entry:
    id: str
    path: Path | None  # the clean / normal-light image (None for unpaired low-light data)
    low_path: Path | None = None
    label: int | None = None


@dataclass
class Item:
    id: str
    image: torch.Tensor | None  # (3, H, W) in [0, 1], 8-bit exact
    low: torch.Tensor | None = None
    label: int | None = None
    meta: dict = field(default_factory=dict)


def quantize8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255.0).round() / 255.0


#: dataset.preprocessing choices (module docstring)
PREPROCESSING = ("center_crop_arr", "float", "resize_center_crop")


def check_preprocessing(preprocessing: str) -> str:
    if preprocessing not in PREPROCESSING:
        raise DatasetError(
            f"dataset.preprocessing={preprocessing!r} is invalid; allowed: {', '.join(PREPROCESSING)}. Fix: "
            "dataset.preprocessing=center_crop_arr (guided-diffusion / DDRM, the default)"
        )
    return preprocessing


def _to_pil_rgb8(img: torch.Tensor) -> Image.Image:
    """float (3, H, W) in [0, 1] -> 8-bit RGB PIL image, ``round(x * 255)`` (exact for 8-bit sources)."""
    return Image.fromarray(np.ascontiguousarray(to_uint8(img).permute(1, 2, 0).numpy()), mode="RGB")


def _from_u8(arr: np.ndarray) -> torch.Tensor:
    """(h, w, 3) uint8 -> float (3, h, w) = arr / 255."""
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float() / 255.0


def _center_crop_arr_u8(pil: Image.Image, size: int) -> np.ndarray:
    while min(*pil.size) >= 2 * size:
        pil = pil.resize(tuple(x // 2 for x in pil.size), resample=Image.BOX)
    scale = size / min(*pil.size)
    pil = pil.resize(tuple(round(x * scale) for x in pil.size), resample=Image.BICUBIC)
    arr = np.asarray(pil)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top : top + size, left : left + size]


def _center_crop_arr_float(img: torch.Tensor, size: int) -> torch.Tensor:
    chans = [Image.fromarray(c.numpy().astype(np.float32), mode="F") for c in img]
    while min(chans[0].size) >= 2 * size:
        chans = [c.resize(tuple(x // 2 for x in c.size), resample=Image.BOX) for c in chans]
    scale = size / min(chans[0].size)
    new = tuple(round(x * scale) for x in chans[0].size)
    chans = [c.resize(new, resample=Image.BICUBIC) for c in chans]
    arr = np.stack([np.asarray(c) for c in chans])
    top, left = (arr.shape[1] - size) // 2, (arr.shape[2] - size) // 2
    return quantize8(torch.from_numpy(np.ascontiguousarray(arr[:, top : top + size, left : left + size])))


def _resize_center_crop_u8(pil: Image.Image, size: int) -> np.ndarray:
    w, h = pil.size
    short, long = min(w, h), max(w, h)
    new_short, new_long = size, int(size * long / short)
    new = (new_short, new_long) if w <= h else (new_long, new_short)
    arr = np.asarray(pil.resize(new, resample=Image.BILINEAR))
    top, left = int(round((arr.shape[0] - size) / 2.0)), int(round((arr.shape[1] - size) / 2.0))
    return arr[top : top + size, left : left + size]


def center_crop_resize(img: torch.Tensor, size: int, allow_upscale: bool, name: str,
                       preprocessing: str = "center_crop_arr") -> torch.Tensor:
    """Resize + center-crop a float (3, H, W) image in [0, 1] to (3, size, size) by the rule
    ``preprocessing`` (module docstring); the result is 8-bit exact."""
    check_preprocessing(preprocessing)
    _, h, w = img.shape
    if min(h, w) < size and not allow_upscale:
        raise DatasetError(
            f"image {name!r} is {w}x{h}, smaller than image_size={size}. Fix: set "
            "dataset.allow_upscale=true to upscale small images (as guided-diffusion's loader does), "
            "lower dataset.image_size, or remove the image."
        )
    if preprocessing == "float":
        return _center_crop_arr_float(img, size)
    fn = _center_crop_arr_u8 if preprocessing == "center_crop_arr" else _resize_center_crop_u8
    return _from_u8(fn(_to_pil_rgb8(img), size))


class ImageDataset(torch.utils.data.Dataset):
    """Base: a fixed list of entries, preprocessing, sharding and a content manifest."""

    name = "images"

    def __init__(
        self,
        entries: list[Entry],
        image_size: int | None,
        *,
        allow_upscale: bool = False,
        preprocessing: str = "center_crop_arr",
        limit: int | None = None,
        shard: int = 0,
        num_shards: int = 1,
    ):
        if num_shards < 1 or not 0 <= shard < num_shards:
            raise DatasetError(
                f"invalid shard {shard} of num_shards={num_shards}; allowed: 0 <= shard < num_shards, "
                "num_shards >= 1. Fix: e.g. dataset.num_shards=4 dataset.shard=0"
            )
        if image_size is not None and image_size < 8:
            raise DatasetError(f"image_size={image_size} is too small; use >= 8 or null for native size")
        #: the whole dataset: the content manifest (hence the run identity) does not depend on limit/shard
        self.dataset_entries = entries
        if limit is not None:
            entries = entries[:limit]
        self.all_entries = entries
        self.entries = entries[shard::num_shards]
        self.image_size, self.allow_upscale = image_size, allow_upscale
        self.preprocessing = check_preprocessing(preprocessing)
        self.shard, self.num_shards = shard, num_shards

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def preprocessing_rule(self) -> str:
        """The preprocessing actually applied, for run manifests."""
        if self.image_size is None:
            return "none (native size), rounded to 8 bit"
        return {"center_crop_arr": "guided-diffusion center_crop_arr on 8-bit RGB (PIL BOX halving, BICUBIC, "
                                   "floor-offset crop), bit-exact",
                "float": "center_crop_arr steps on float channels (PIL mode F), rounded to 8 bit once",
                "resize_center_crop": "torchvision Resize + CenterCrop on 8-bit RGB (BILINEAR antialiased; "
                                      "official GDP's loader)"}[self.preprocessing] + f" -> {self.image_size} px"

    def _load(self, path: Path) -> torch.Tensor:
        img = load_image(path)
        if self.image_size is not None:
            return center_crop_resize(img, self.image_size, self.allow_upscale, str(path), self.preprocessing)
        return quantize8(img)

    def __getitem__(self, i: int) -> Item:
        e = self.entries[i]
        image = self._load(e.path) if e.path is not None else None
        low = self._load(e.low_path) if e.low_path is not None else None
        return Item(id=e.id, image=image, low=low, label=e.label)

    def file_sha256(self, path: Path) -> str:
        """sha256 of a dataset file, computed once per dataset object (the manifest and the up-front
        check share it)."""
        memo = self.__dict__.setdefault("_sha256", {})
        if path not in memo:
            memo[path] = sha256_file(path)
        return memo[path]

    def check_files(self, progress: bool | None = None) -> None:
        """Decode every file of this shard completely, up front and in parallel (bench/data_check.py),
        and fail with one paragraph naming every unreadable file and every one smaller than
        ``image_size`` (without ``allow_upscale``), before any work is done."""
        paths = [p for e in self.entries for p in (e.path, e.low_path) if p is not None]
        checks = check_image_files(paths, self.file_sha256, progress=progress)
        min_size = self.image_size if self.image_size is not None and not self.allow_upscale else None
        message = problems_message(checks, min_size)
        if message:
            raise DatasetError(message)

    def manifest(self) -> dict:
        """Content manifest of the whole dataset (all shards, before ``limit``): ids and file sha256."""
        paths = [p for e in self.dataset_entries for p in (e.path, e.low_path) if p is not None]
        with ThreadPoolExecutor(max_workers=usable_cpus()) as pool:  # hashlib releases the GIL
            list(pool.map(self.file_sha256, paths))
        rows = []
        for e in self.dataset_entries:
            row = {"id": e.id}
            for key, p in (("sha256", e.path), ("low_sha256", e.low_path)):
                if p is not None:
                    row[key] = self.file_sha256(p)
            if e.label is not None:
                row["label"] = e.label
            rows.append(row)
        body = {"dataset": self.name, "image_size": self.image_size, "entries": rows}
        if self.image_size is not None:  # the ground truth depends on the rule (shared reference folder)
            body["preprocessing"] = self.preprocessing
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        return {"sha256": digest, "count": len(rows), **body}


def _list_images(root: Path, what: str) -> list[Path]:
    if not root.exists():
        raise DatasetError(
            f"{what} path {str(root)!r} does not exist. Fix: pass dataset.root=/path/to/images "
            "(an existing folder of images)."
        )
    if not root.is_dir():
        raise DatasetError(f"{what} path {str(root)!r} is not a folder. Fix: pass a folder of images.")
    listed = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    files = [p for p in listed if not p.name.startswith(".")]
    hidden = [p.name for p in listed if p.name.startswith(".")]
    if hidden:  # macOS AppleDouble "._x.png" metadata (copied from a Mac volume), editor temp files, ...
        log.warning("note: ignored %d hidden file(s) in %s (dot-files such as macOS AppleDouble '._*' "
                    "metadata are not images; first: %s)", len(hidden), root, ", ".join(hidden[:3]))
    if not files:
        raise DatasetError(
            f"{what} folder {str(root)!r} holds no images (looked for {', '.join(IMAGE_SUFFIXES)}). "
            "Fix: point dataset.root at a folder that contains images."
        )
    return files


def _unique_ids(paths: list[Path]) -> list[str]:
    ids = [p.stem for p in paths]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise DatasetError(f"file names map to duplicate ids {dup} (same stem, other suffix); rename them")
    return ids


class FolderDataset(ImageDataset):
    """Any folder of images (non-recursive); ids are file stems; sorted by name."""

    name = "folder"

    def __init__(self, root: str, image_size: int | None = 256, **kw):
        files = _list_images(Path(root).expanduser(), "dataset.root")
        entries = [Entry(i, p) for i, p in zip(_unique_ids(files), files)]
        super().__init__(entries, image_size, **kw)


def imagenet_val_manifest(count: int = 2000, seed: int = 2022, total: int = 50000) -> list[str]:
    """The harness's ImageNet-val subset: ``count`` of the ``total`` official file names, drawn with
    ``random.Random(seed).sample`` and sorted. ``datasets/imagenet_val_2k.txt`` is this list."""
    names = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, total + 1)]
    return sorted(random.Random(seed).sample(names, count))


#: the ImageNet-val test subset (``datasets/imagenet_val_2k.txt``) that the tuning subset avoids
IMAGENET_TEST_SUBSET = {"count": 2000, "seed": 2022}


def imagenet_tune_manifest(count: int = 100, seed: int = 2025, total: int = 50000) -> list[str]:
    """The ImageNet-val validation (tuning) subset: ``count`` official file names drawn with
    ``random.Random(seed).sample`` from the ``total`` val images that are NOT in the test subset
    (:func:`imagenet_val_manifest` with :data:`IMAGENET_TEST_SUBSET`), sorted. Disjoint from the test
    list by construction; ``datasets/imagenet_val_tune.txt`` is this list."""
    test = set(imagenet_val_manifest(**IMAGENET_TEST_SUBSET, total=total))
    pool = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, total + 1)]
    return sorted(random.Random(seed).sample([n for n in pool if n not in test], count))


def _read_labels(path: Path) -> dict[str, int]:
    labels = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            labels[parts[0]] = int(parts[1])
    return labels


class ImageNetValDataset(ImageDataset):
    """ILSVRC2012 validation images listed in a manifest, read from a user-supplied ``root``."""

    name = "imagenet_val"

    def __init__(self, root: str, manifest: str = "imagenet_val_2k.txt", image_size: int = 256,
                 labels: str | None = None, **kw):
        root_p = Path(root).expanduser()
        if not root_p.is_dir():
            raise DatasetError(
                f"dataset.root={root!r} is not a folder. Fix: point dataset.root at your ILSVRC2012 "
                "validation folder (the one holding ILSVRC2012_val_00000001.JPEG ...)."
            )
        man = Path(manifest)
        man = man if man.is_absolute() else DATASETS_DIR / man
        if not man.exists():
            raise DatasetError(f"manifest {str(man)!r} not found. Fix: dataset.manifest=<file in datasets/>")
        names = [ln.split()[0] for ln in man.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        missing = [n for n in names if not (root_p / n).is_file()]
        if missing:
            raise DatasetError(
                f"{len(missing)} of {len(names)} images listed in {man.name} are missing under {root!r} "
                f"(first: {', '.join(missing[:5])}). Fix: point dataset.root at the full ILSVRC2012 val "
                "folder, or use dataset.manifest=<a list of the files you have>."
            )
        lab = _read_labels(Path(labels).expanduser()) if labels else {}
        entries = [Entry(Path(n).stem, root_p / n, label=lab.get(n)) for n in names]
        super().__init__(entries, image_size, **kw)


class LOLDataset(ImageDataset):
    """LOL-style low-light data: ``root/low`` and ``root/high`` paired by file name. Without ``high/``
    (or with a flat folder of low-light images) the data is unpaired: only no-reference metrics apply."""

    name = "lol"

    def __init__(self, root: str, image_size: int | None = None, **kw):
        root_p = Path(root).expanduser()
        low_dir = root_p / "low" if (root_p / "low").is_dir() else root_p
        lows = _list_images(low_dir, "dataset.root (low-light images)")
        high_dir = root_p / "high"
        highs = {p.stem: p for p in _list_images(high_dir, "high")} if high_dir.is_dir() else {}
        if highs:
            unmatched = [p.name for p in lows if p.stem not in highs]
            if unmatched:
                raise DatasetError(
                    f"{len(unmatched)} low-light images have no same-named file in {str(high_dir)!r} "
                    f"(first: {', '.join(unmatched[:5])}). Fix: pair the files or remove high/ for unpaired use."
                )
        entries = [Entry(i, highs.get(i), low_path=p) for i, p in zip(_unique_ids(lows), lows)]
        super().__init__(entries, image_size, **kw)


class SampleValDataset(FolderDataset):
    """The embedded default's validation split (``dataset=sample_val``, for ``python -m bench.tune``): the
    real ILSVRC2012 validation JPEGs of the workspace's shared data (``../shared/data/imagenet-val``, 11
    files; the ``.txt`` list beside them is not an image suffix, so it is not read). A folder dataset whose
    missing-folder error says what the folder is and where it comes from."""

    name = "sample_val"

    def __init__(self, root: str, image_size: int | None = 64, **kw):
        path = Path(root).expanduser()
        if not path.is_dir():
            where = "" if path.is_absolute() else f" (relative to the launch directory {Path.cwd()})"
            raise DatasetError(
                f"dataset=sample_val reads the real ILSVRC2012 validation JPEGs of the shared data folder "
                f"(imagenet-val/ of ../shared/data beside the repository, described in its README.md), but "
                f"dataset.root={root!r}{where} is not a folder. Fix: run from the repository root with "
                "../shared/data beside it, or set BENCH_SHARED_DATA=/path/to/shared/data (the folder holding "
                "imagenet-val/), or pass dataset.root=/path/to/imagenet-val (any folder of ImageNet "
                "validation images that are not in your test data)."
            )
        super().__init__(root, image_size, **kw)


# scikit-image ships these photographs inside the package (no download); none is an ImageNet image, so
# they are held out from the embedded priors' training data.
SAMPLE_IMAGES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                 "camera.png", "brick.png", "moon.png")


class SampleDataset(ImageDataset):
    """The embedded default: photographs shipped with scikit-image, center-cropped and resized."""

    name = "sample"

    def __init__(self, image_size: int = 64, **kw):
        import skimage

        root = Path(skimage.__file__).parent / "data"
        files = [root / n for n in SAMPLE_IMAGES]
        absent = [str(f) for f in files if not f.is_file()]
        if absent:
            raise DatasetError(f"scikit-image data files missing: {absent}. Fix: reinstall scikit-image")
        entries = [Entry(Path(n).stem, f) for n, f in zip(SAMPLE_IMAGES, files)]
        super().__init__(entries, image_size, **kw)
