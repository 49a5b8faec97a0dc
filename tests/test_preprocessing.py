"""Dataset preprocessing (bench/data.py::center_crop_resize, ``dataset.preprocessing``).

The default must equal guided-diffusion's / official DDRM's ``center_crop_arr`` BIT FOR BIT. The reference
below is an independent transcription of that function (guided_diffusion/image_datasets.py), applied to
the file exactly as upstream opens it (``Image.open(path).convert("RGB")``); ``resize_center_crop`` is
checked against torchvision's own ``Resize`` + ``CenterCrop`` (official GDP's loader).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data import PREPROCESSING, DatasetError, FolderDataset, center_crop_resize
from bench.results import config_hash
from tests.conftest import compose, shared_data


def center_crop_arr(pil_image: Image.Image, image_size: int) -> np.ndarray:
    """guided-diffusion ``center_crop_arr``, transcribed from its definition."""
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - image_size) // 2
    crop_x = (arr.shape[1] - image_size) // 2
    return arr[crop_y : crop_y + image_size, crop_x : crop_x + image_size]


def upstream(path, size: int) -> torch.Tensor:
    with Image.open(path) as img:
        img.load()
        arr = center_crop_arr(img.convert("RGB"), size)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def ours_u8(item) -> torch.Tensor:
    u8 = (item.image * 255).round()
    assert torch.equal(u8 / 255, item.image)  # 8-bit exact
    return u8.to(torch.uint8)


@pytest.mark.parametrize("size", [64, 256])
def test_default_equals_center_crop_arr_on_real_imagenet_val(size):
    root = shared_data("imagenet-val")
    ds = FolderDataset(str(root), image_size=size, allow_upscale=True)
    assert ds.preprocessing == "center_crop_arr" and len(ds) >= 10
    for i, entry in enumerate(ds.entries):
        want = upstream(entry.path, size)
        got = ours_u8(ds[i])
        assert got.shape == (3, size, size)
        assert torch.equal(got, want), (entry.id, int((got.int() - want.int()).abs().max()))


def smooth_rgb(h: int, w: int, seed: int) -> np.ndarray:
    """A photo-like 8-bit image: smooth colour gradients plus noise (resampling differences show)."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in range(3)], -1) * 100 + 128
    return np.clip(base + g.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


# (height, width, size): odd sides, both orientations, extreme aspect ratios, exactly 2x and 4x the
# target (BOX halving boundary), just under 2x, and upscaling (allow_upscale)
SHAPES = [(257, 511, 64), (511, 257, 64), (300, 411, 64), (128, 128, 64), (127, 300, 64), (1023, 129, 64),
          (97, 1001, 32), (256, 256, 64), (50, 70, 64), (33, 33, 32), (401, 603, 256)]


@pytest.mark.parametrize("h, w, size", SHAPES, ids=[f"{h}x{w}->{s}" for h, w, s in SHAPES])
def test_default_equals_center_crop_arr_on_odd_shapes(tmp_path, h, w, size):
    arr = smooth_rgb(h, w, seed=h * 7 + w)
    Image.fromarray(arr).save(tmp_path / "a.png")
    got = ours_u8(FolderDataset(str(tmp_path), image_size=size, allow_upscale=True)[0])
    assert torch.equal(got, upstream(tmp_path / "a.png", size))
    direct = center_crop_resize(torch.from_numpy(arr).permute(2, 0, 1).float() / 255, size, True, "a")
    assert torch.equal(ours_u8(type("I", (), {"image": direct})), got)


@pytest.mark.parametrize("h, w, size", [(300, 411, 64), (411, 300, 64), (257, 511, 64), (375, 500, 256)])
def test_resize_center_crop_equals_torchvision(tmp_path, h, w, size):
    from torchvision import transforms

    arr = smooth_rgb(h, w, seed=3)
    Image.fromarray(arr).save(tmp_path / "a.png")
    tv = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size)])
    want = torch.from_numpy(np.array(tv(Image.open(tmp_path / "a.png").convert("RGB")))).permute(2, 0, 1)
    ds = FolderDataset(str(tmp_path), image_size=size, preprocessing="resize_center_crop")
    assert torch.equal(ours_u8(ds[0]), want)


def test_float_option_differs_and_changes_identity(tmp_path):
    """The float variant is an option: other pixels, another content manifest and another run hash."""
    Image.fromarray(smooth_rgb(300, 411, seed=5)).save(tmp_path / "a.png")
    ds = {p: FolderDataset(str(tmp_path), image_size=64, preprocessing=p) for p in PREPROCESSING}
    d = (ds["float"][0].image - ds["center_crop_arr"][0].image).abs()
    assert 0 < float(d.max()) <= 4 / 255  # measured: up to 3-4/255 on photos at 64 px
    shas = {p: x.manifest()["sha256"] for p, x in ds.items()}
    assert len(set(shas.values())) == len(PREPROCESSING)
    assert {x.preprocessing_rule for x in ds.values()}.__len__() == len(PREPROCESSING)
    assert "center_crop_arr" in ds["center_crop_arr"].preprocessing_rule
    cfgs = {p: compose("dataset=folder", f"dataset.root={tmp_path}", f"dataset.preprocessing={p}")
            for p in ("center_crop_arr", "float")}
    from omegaconf import OmegaConf

    hashes = {p: config_hash(OmegaConf.to_container(c, resolve=True), "same") for p, c in cfgs.items()}
    assert hashes["float"] != hashes["center_crop_arr"]
    assert compose("dataset=folder", f"dataset.root={tmp_path}").dataset.preprocessing == "center_crop_arr"


def test_bad_preprocessing_names_choices(tmp_path):
    Image.fromarray(smooth_rgb(40, 40, seed=1)).save(tmp_path / "a.png")
    with pytest.raises(DatasetError) as err:
        FolderDataset(str(tmp_path), image_size=32, preprocessing="bicubic")
    for word in ("preprocessing='bicubic'", "center_crop_arr", "float", "resize_center_crop"):
        assert word in str(err.value)
