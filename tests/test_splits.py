"""Validation splits (what ``python -m bench.tune`` tunes on) are disjoint from the test splits.

* every test split names a validation split that exists, says ``split: validation`` and has the test split's
  image size and preprocessing;
* ``imagenet_tune``: its manifest is the builder's output, 100 distinct val names, none in the 2k test list;
* ``sample_val`` (the 11 real ILSVRC2012 val JPEGs of ../shared/data): no image is a near-duplicate of a
  ``dataset=sample`` photo or of an image the embedded priors were trained on (ImageNet-sample-96), by
  content, with a shift/scale-tolerant comparison whose threshold is shown to catch a re-encoded copy;
* ``lol_train`` vs ``lol``: different roots and variables; the real parts (when both are set) share no
  file name and no content.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image

from bench.checks import ConfigError
from bench.cli import _instantiate, _strip, run_from_config
from bench.data import (DATASETS_DIR, IMAGENET_TEST_SUBSET, DatasetError, ImageNetValDataset, LOLDataset,
                        SampleValDataset, center_crop_resize, imagenet_tune_manifest, imagenet_val_manifest)
from bench.imageio import load_image
from tests.conftest import CONF_DIR, SHARED_DATA, compose, run_cli, run_dirs, shared_data

DATASET_CONFS = {p.stem: OmegaConf.load(p) for p in sorted((CONF_DIR / "dataset").glob("*.yaml"))}
PAIRS = {name: c.validation for name, c in DATASET_CONFS.items() if c.split == "test" and c.validation}

# near-duplicate thresholds (PSNR, dB; images in [0, 1])
SAME_SIZE_DB = 25.0  # 64-px tensors of sample_val vs dataset=sample
DIRECT_DB = 30.0  # 96-px center_crop_arr render vs each ImageNet-sample-96 image
ALIGNED_DB = 25.0  # blurred 24-px thumbnails, best over shifts / crop scales / mirror (positive control below)


def _names(manifest: Path) -> list[str]:
    return [ln.split()[0] for ln in manifest.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def _dataset(name: str, *overrides: str):
    """The dataset object ``python -m bench dataset=NAME`` builds (the CLI strips the same keys)."""
    c = OmegaConf.to_container(compose(f"dataset={name}", *overrides).dataset, resolve=True)
    return _instantiate(_strip(c, "name", "split", "validation"))


def _psnr(mse: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


def pairwise_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(M, N) mean squared difference of two stacks of same-size images (one matmul, float64)."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    return ((a**2).sum(1)[:, None] - 2 * a @ b.T + (b**2).sum(1)[None]).clamp_min(0) / a.shape[1]


# ---------------------------------------------------------------------------------------------- configs

def test_every_test_split_names_its_validation_split():
    assert {k: PAIRS.get(k) for k in ("sample", "imagenet_val", "lol")} == {
        "sample": "sample_val", "imagenet_val": "imagenet_tune", "lol": "lol_train"}
    for name, c in DATASET_CONFS.items():
        assert c.split in ("test", "validation"), f"conf/dataset/{name}.yaml: split={c.split!r}"
        assert c.name == name, f"conf/dataset/{name}.yaml: name={c.name!r}"
        if c.split == "validation":
            assert c.validation is None, f"{name} is a validation split; it names no validation split of its own"
    for test, val in PAIRS.items():
        assert val in DATASET_CONFS, f"conf/dataset/{test}.yaml names validation: {val}, but conf/dataset/{val}.yaml is absent"
        v, t = DATASET_CONFS[val], DATASET_CONFS[test]
        assert v.split == "validation", f"conf/dataset/{val}.yaml (validation split of {test}) says split: {v.split}"
        # tuned at the size and preprocessing the presets are then applied at
        assert (v.image_size, v.preprocessing) == (t.image_size, t.preprocessing), (test, val)
        assert compose(f"dataset={val}").dataset.split == "validation"  # Hydra finds it under that name


# ---------------------------------------------------------------------------------------------- imagenet_tune

def test_imagenet_tune_is_reproducible_distinct_and_disjoint_from_the_test_list(tmp_path):
    assert DATASET_CONFS["imagenet_tune"].manifest == "imagenet_val_tune.txt"
    tune = _names(DATASETS_DIR / "imagenet_val_tune.txt")
    test = _names(DATASETS_DIR / "imagenet_val_2k.txt")
    assert tune == imagenet_tune_manifest(100), "datasets/imagenet_val_tune.txt drifted from its builder"
    assert test == imagenet_val_manifest(**IMAGENET_TEST_SUBSET)  # the list the builder avoids is the file's
    assert len(tune) == len(set(tune)) == 100
    for n in tune:
        m = re.fullmatch(r"ILSVRC2012_val_(\d{8})\.JPEG", n)
        assert m and 1 <= int(m.group(1)) <= 50000, n
    assert not set(tune) & set(test)
    # ImageNetValDataset reads it as it reads the 2k list: one name per line, in order, ids = stems
    for n in tune:
        (tmp_path / n).touch()
    ds = ImageNetValDataset(str(tmp_path), manifest="imagenet_val_tune.txt")
    assert [e.id for e in ds.entries] == [Path(n).stem for n in tune]


# ---------------------------------------------------------------------------------------------- sample_val

@pytest.fixture
def shared_env(monkeypatch):
    """BENCH_SHARED_DATA pointing at the shared data the tests use (also from a worktree elsewhere)."""
    shared_data("imagenet-val")
    monkeypatch.setenv("BENCH_SHARED_DATA", str(SHARED_DATA))
    return SHARED_DATA


@pytest.fixture(scope="module")
def prior_training_set() -> tuple[list[str], torch.Tensor]:
    root = shared_data("imagenet-sample-96")
    files = sorted(p for p in root.iterdir() if p.suffix == ".png")
    assert len(files) == 1000
    return [p.name for p in files], torch.stack([load_image(p) for p in files])


_G = torch.exp(-torch.arange(-3, 4.0) ** 2 / 2)
_G = _G / _G.sum()


def _thumb24(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, 96, 96) -> (N, 3, 24, 24): 4x4 box average, then a Gaussian blur (sigma 1 thumbnail px)."""
    x = F.pad(F.avg_pool2d(x, 4), (3, 3, 3, 3), mode="replicate")
    x = F.conv2d(x, _G.view(1, 1, 1, 7).repeat(3, 1, 1, 1), groups=3)
    return F.conv2d(x, _G.view(1, 1, 7, 1).repeat(3, 1, 1, 1), groups=3)


def aligned_psnr(queries: torch.Tensor, bank: torch.Tensor, r: int = 2) -> torch.Tensor:
    """(M, N) PSNR between 24-px blurred thumbnails of 96-px images, the central (24 - 2r)^2 window of each
    query against the best-matching window of each bank image (shifts up to +-r thumbnail px = +-4r px)."""
    w = 24 - 2 * r
    q = _thumb24(queries)[:, :, r : r + w, r : r + w].reshape(len(queries), -1)
    t = _thumb24(bank)
    best = None
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            tw = t[:, :, dy : dy + w, dx : dx + w].reshape(len(bank), -1)
            mse = ((tw**2).sum(1)[None] - 2 * q @ tw.T + (q**2).sum(1)[:, None]) / q.shape[1]
            best = mse if best is None else torch.minimum(best, mse)
    return _psnr(best)


def _pil_to_tensor(pil: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(pil.convert("RGB")).copy()).permute(2, 0, 1).float() / 255


def _square(pil: Image.Image, scale: float = 1.0, dx: int = 0, dy: int = 0, resample=Image.BICUBIC) -> torch.Tensor:
    """The centered square of side ``scale`` x the short side (moved by dx, dy px), resized to 96."""
    w, h = pil.size
    s = round(min(w, h) * scale)
    left, top = (w - s) // 2 + dx, (h - s) // 2 + dy
    return _pil_to_tensor(pil.crop((left, top, left + s, top + s)).resize((96, 96), resample))


def renders96(path: Path) -> torch.Tensor:
    """The ways ImageNet-sample-96 could have made a 96-px image of this photo ("center-cropped and resized
    to 96x96 (bicubic)", ../shared/data/README.md): center_crop_arr, a plain centered-square crop at four
    scales (the 96-px image may be a tighter crop), the whole photo squashed; each also mirrored (the priors
    train on random flips)."""
    pil = Image.open(path)
    out = [center_crop_resize(load_image(path), 96, False, str(path))]
    out += [_square(pil, s) for s in (1.0, 0.95, 0.9, 0.85)]
    out.append(_pil_to_tensor(pil.convert("RGB").resize((96, 96), Image.BICUBIC)))
    out += [o.flip(-1) for o in out]
    return torch.stack(out)


def _reencoded(path: Path, scale: float, dx: int, dy: int) -> torch.Tensor:
    """A near-duplicate as another pipeline would make it: another crop (shifted, a scale off the grid of
    :func:`renders96`), bilinear resize, JPEG quality 75."""
    sq = _square(Image.open(path), scale, dx, dy, Image.BILINEAR)
    buf = io.BytesIO()
    Image.fromarray((sq.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(buf, "JPEG", quality=75)
    return _pil_to_tensor(Image.open(buf))


def test_sample_val_is_the_shared_val_jpegs_and_not_the_txt(shared_env):
    ds = _dataset("sample_val")
    assert isinstance(ds, SampleValDataset) and ds.name == "sample_val"
    jpegs = sorted(p.stem for p in (shared_env / "imagenet-val").glob("*.JPEG"))
    assert [e.id for e in ds.entries] == jpegs and len(jpegs) == 11  # imagenet_val_1k.txt is not an entry
    assert ds[0].image.shape == (3, 64, 64)


def test_sample_val_missing_folder_says_what_it_is_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_SHARED_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError) as err:
        run_from_config(compose("dataset=sample_val", "method=bicubic", f"run.results_root={tmp_path / 'res'}"))
    msg = str(err.value)
    for part in ("ILSVRC2012 validation JPEGs", "shared data", str(tmp_path / "nowhere" / "imagenet-val"),
                 "Fix:", "BENCH_SHARED_DATA=", "dataset.root="):
        assert part in msg, (part, msg)
    assert not (tmp_path / "res").exists()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError, match=f"relative to the launch directory {re.escape(str(tmp_path))}"):
        SampleValDataset("shared/imagenet-val")


def test_sample_val_shares_no_content_with_the_test_photos_or_the_priors_training_set(shared_env,
                                                                                      prior_training_set):
    # 1. against dataset=sample: the 64-px tensors the runs compare, every pair
    val = _dataset("sample_val")
    sample = _dataset("sample")
    v = torch.stack([val[i].image for i in range(len(val))])
    s = torch.stack([sample[i].image for i in range(len(sample))])
    assert (len(v), len(s)) == (11, 8)
    vs = _psnr(pairwise_mse(v, s))
    i, j = divmod(int(vs.argmax()), len(s))
    print(f"\nsample_val vs sample (64 px): closest pair {val.entries[i].id} / {sample.entries[j].id}: "
          f"{vs.max():.2f} dB")
    assert vs.max() < SAME_SIZE_DB

    # 2. against the 1000 ImageNet-sample-96 images the embedded priors were trained on
    names, train = prior_training_set
    paths = [e.path for e in val.entries]
    direct = torch.stack([center_crop_resize(load_image(p), 96, False, str(p)) for p in paths])
    dp = _psnr(pairwise_mse(direct, train))
    i, j = divmod(int(dp.argmax()), len(train))
    print(f"sample_val vs ImageNet-sample-96 (96 px, direct): closest {paths[i].stem} / {names[j]}: {dp.max():.2f} dB")
    assert dp.max() < DIRECT_DB

    renders = [renders96(p) for p in paths]
    owner = torch.cat([torch.full((len(r),), k) for k, r in enumerate(renders)])
    everything = aligned_psnr(torch.cat(renders), train)  # (renders, 1000)
    al = torch.stack([everything[owner == k].max(0).values for k in range(len(paths))])  # (11, 1000)
    i, j = divmod(int(al.argmax()), len(train))
    print(f"sample_val vs ImageNet-sample-96 (24-px thumbnails, +-8 px shifts, 5 crops, mirror): closest "
          f"{paths[i].stem} / {names[j]}: {al.max():.2f} dB")
    assert al.max() < ALIGNED_DB

    # the aligned comparison would have caught each photo as another pipeline re-encodes it
    for scale, dx, dy in ((0.975, 6, -6), (0.925, -10, 10)):
        copies = torch.stack([_reencoded(p, scale, dx, dy) for p in paths])
        caught = aligned_psnr(torch.cat(renders), copies)[torch.arange(len(owner)), owner]
        caught = torch.stack([caught[owner == k].max() for k in range(len(paths))])  # each photo vs its copy
        print(f"positive control (crop scale {scale}, shift ({dx}, {dy}) px, bilinear, JPEG 75): "
              f"weakest {caught.min():.2f} dB")
        assert caught.min() > ALIGNED_DB + 2


def test_sample_val_runs_from_the_cli(shared_env, tmp_path):
    run_cli("dataset=sample_val", "method=bicubic", "task=sr4", results_root=tmp_path)
    (run,) = run_dirs(tmp_path)
    assert run.relative_to(tmp_path).parts[:3] == ("sample_val", "sr4", "bicubic")
    import json

    manifest = json.loads((run / "dataset_manifest.json").read_text())
    assert (manifest["dataset"], manifest["count"], manifest["image_size"]) == ("sample_val", 11, 64)


# ---------------------------------------------------------------------------------------------- LOL

def lol_overlap(test: LOLDataset, val: LOLDataset) -> dict:
    """What two LOL parts share: file names (ids), file contents (sha256), and the closest pair of images
    (PSNR of 48x32 thumbnails, low-light and normal-light images each against their kind)."""
    def files(ds):
        return {kind: [p for e in ds.dataset_entries for p in [getattr(e, attr)] if p is not None]
                for kind, attr in (("low", "low_path"), ("high", "path"))}

    def thumbs(paths):
        return torch.stack([_pil_to_tensor(Image.open(p).resize((48, 32), Image.BOX)) for p in paths])

    ft, fv = files(test), files(val)
    hashes = lambda fs: {test.file_sha256(p) for ps in fs.values() for p in ps}  # noqa: E731
    closest = -np.inf
    for kind in ("low", "high"):
        if ft[kind] and fv[kind]:
            a, b = thumbs(ft[kind]), thumbs(fv[kind])
            closest = max(closest, float(_psnr(pairwise_mse(a, b)).max()))
    return {"names": sorted({e.id for e in test.dataset_entries} & {e.id for e in val.dataset_entries}),
            "contents": len(hashes(ft) & hashes(fv)), "closest_db": closest}


def test_lol_train_and_lol_read_different_parts_by_default(monkeypatch):
    t, v = DATASET_CONFS["lol"], DATASET_CONFS["lol_train"]
    assert t._target_ == v._target_
    assert OmegaConf.to_container(t)["root"] == "${oc.env:LOL_ROOT,???}"
    assert OmegaConf.to_container(v)["root"] == "${oc.env:LOL_TRAIN_ROOT,???}"
    # setting the test part's variable never feeds the validation split (nor the reverse)
    monkeypatch.setenv("LOL_ROOT", "/data/LOL/eval15")
    monkeypatch.delenv("LOL_TRAIN_ROOT", raising=False)
    assert compose("dataset=lol").dataset.root == "/data/LOL/eval15"
    with pytest.raises(ConfigError, match="dataset.root is required for dataset=lol_train.*LOL_TRAIN_ROOT"):
        run_from_config(compose("dataset=lol_train", "task=lowlight", "method=bicubic"))
    monkeypatch.setenv("LOL_TRAIN_ROOT", "/data/LOL/our485")
    monkeypatch.delenv("LOL_ROOT")
    assert compose("dataset=lol_train").dataset.root == "/data/LOL/our485"
    with pytest.raises(ConfigError, match="dataset.root is required for dataset=lol;.*LOL_ROOT"):
        run_from_config(compose("dataset=lol", "task=lowlight", "method=bicubic"))


def _lol_part(root: Path, names: list[str], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for kind in ("low", "high"):
        (root / kind).mkdir(parents=True)
        for n in names:
            Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(root / kind / n)
    return root


def test_lol_overlap_check_finds_shared_names_and_contents(tmp_path):
    test = LOLDataset(str(_lol_part(tmp_path / "eval15", ["1.png", "22.png"], 0)))
    val = LOLDataset(str(_lol_part(tmp_path / "our485", ["2.png", "5.png", "6.png"], 1)))
    clean = lol_overlap(test, val)
    assert clean["names"] == [] and clean["contents"] == 0 and clean["closest_db"] < 15
    # a renamed copy of a test pair and a re-encoded copy of another
    for kind in ("low", "high"):
        (tmp_path / "our485" / kind / "7.png").write_bytes((tmp_path / "eval15" / kind / "1.png").read_bytes())
        img = np.asarray(Image.open(tmp_path / "eval15" / kind / "22.png")).astype(int)
        Image.fromarray(np.clip(img + 1, 0, 255).astype(np.uint8)).save(tmp_path / "our485" / kind / "22.png")
    dirty = lol_overlap(test, LOLDataset(str(tmp_path / "our485")))
    assert dirty["names"] == ["22"] and dirty["contents"] == 2 and dirty["closest_db"] > 40


def test_real_lol_parts_are_disjoint(monkeypatch):
    import os

    roots = {var: os.environ.get(var) for var in ("LOL_ROOT", "LOL_TRAIN_ROOT")}
    if not all(roots.values()):
        pytest.skip("the LOL data is not here (not obtainable on these machines): set LOL_ROOT=/data/LOL/eval15 "
                    "and LOL_TRAIN_ROOT=/data/LOL/our485 to check that the parts share no file name or content")
    assert Path(roots["LOL_ROOT"]).resolve() != Path(roots["LOL_TRAIN_ROOT"]).resolve()
    found = lol_overlap(_dataset("lol"), _dataset("lol_train"))
    print(f"\nlol vs lol_train: closest thumbnails {found['closest_db']:.2f} dB")
    assert found["names"] == [] and found["contents"] == 0 and found["closest_db"] < DIRECT_DB
