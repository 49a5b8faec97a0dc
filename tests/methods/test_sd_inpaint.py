"""sd_inpaint on tiny random Stable Diffusion parts built here (diffusers' own tests do the same): both paths
through the real run path (bench.api.run), known pixels, reproducibility, batch independence, counted UNet / VAE
calls, the blend sampler's schedule, geometry, and the loader's refusals. Outputs are NOT meaningful."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

pytest.importorskip("transformers", reason="transformers is not installed (pip install -e '.[sd]'): sd_inpaint needs "
                                           "the CLIP text encoder and tokenizer")

from diffusers import PNDMScheduler, StableDiffusionInpaintPipeline  # noqa: E402
from PIL import Image  # noqa: E402

import bench  # noqa: E402
from bench.methods.repaint_schedule import jump_schedule  # noqa: E402
from bench.methods.sd_inpaint import SDInpaint, latent_keep_mask, sample_latent_blend  # noqa: E402
from bench.models.assets import AssetError  # noqa: E402
from bench.models.stable_diffusion import DEFAULT_SOURCES, load_sd  # noqa: E402
from bench.operators import Inpainting, SuperResolution  # noqa: E402
from bench.tasks import Degradation, Task  # noqa: E402
from tests.tiny_sd import SD_SCHEDULER, tiny_sd  # noqa: E402


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_sd")
    return {"pipeline": tiny_sd(root / "inpaint9", 9), "blend": tiny_sd(root / "t2i4", 4)}


def method(dirs, mode: str, steps: int = 3, parts: str | None = None, **kw) -> SDInpaint:
    m = SDInpaint(steps=steps, mode=mode, weights={"local_dir": str(dirs[parts or mode])}, **kw)
    m.setup(torch.device("cpu"))
    return m


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def inpaint_task(size: int) -> Degradation:
    """The ``inpaint`` operator (25% random pixels missing) at ``size`` px."""
    return Degradation(Task("inpaint", 1, Inpainting), Inpainting(3, size, seed=1, missing=0.25), 0.0)


# ------------------------------------------------------------------------------------------- the real run path
@pytest.mark.parametrize("mode, extra, nfe", [
    ("pipeline", [], 2 * (3 + 1)),              # PNDM: steps + 1 UNet calls, x2 for guidance 7.5
    ("blend", ["method.jump_n_sample=2", "method.jump_length=1"], 2 * 5),  # jumps at index 0, 1: 3 + 2 calls, x2
])
def test_cli_run_on_tiny_weights(dirs, tmp_path, monkeypatch, mode, extra, nfe):
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run_dir = bench.run("sd_inpaint", "inpaint", steps=3, dataset__limit=1, run__results_root=tmp_path,
                        run__progress=False, overrides=[f"method.mode={mode}", f"method.weights.local_dir={dirs[mode]}",
                                                        *extra])
    (png,) = sorted((run_dir / "images").glob("*.png"))
    assert Image.open(png).size == (64, 64)  # the sample photos (64 px) mapped to the tiny model's 32 px and back
    desc = json.loads((run_dir / "manifest.json").read_text())["method"]
    assert desc["mode"] == mode and desc["sd"]["origin"].startswith("local:") and desc["sd"]["resolution"] == 32
    assert desc["nfe_per_image"] == nfe and desc["vae_calls_per_image"] == {"encode": 1, "decode": 1}
    row = pd.read_parquet(run_dir / "per_image.parquet").iloc[0]
    assert row["nfe"] == nfe  # counted at the UNet during the run
    assert row["consistency"] == 0.0  # the saved output holds the measured pixels exactly (pasted)


# ------------------------------------------------------------------------------------------------ behaviour
@pytest.mark.parametrize("mode, parts", [("pipeline", "pipeline"), ("blend", "blend"),
                                         ("pipeline", "blend")])  # the last: diffusers' own 4-channel blending
def test_known_pixels_reproducibility_and_batch_independence(dirs, mode, parts):
    m = method(dirs, mode, parts=parts)
    deg = inpaint_task(24)  # 24 px -> 32 px model side and back
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    y = deg.degrade(x, gens(0, 1))
    a = m.restore(y, deg, gens(5, 6))
    keep = deg.operator.mask
    assert a.shape == (2, 3, 24, 24) and torch.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a[:, :, keep], x[:, :, keep])  # pasted exactly
    assert not torch.allclose(a[:, :, ~keep], x[:, :, ~keep], atol=1e-2)  # the hole is generated
    assert torch.equal(a, m.restore(y, deg, gens(5, 6)))  # same seeds, same output
    assert not torch.allclose(a, m.restore(y, deg, gens(7, 8)), atol=1e-4)
    alone = m.restore(y[1:], deg, gens(6))
    torch.testing.assert_close(a[1:], alone, atol=1e-5, rtol=0)
    raw = SDInpaint(steps=3, mode=mode, weights=m.weights, paste_known=False)
    raw.sd, raw.counter = m.sd, m.counter
    r = raw.restore(y, deg, gens(5, 6))
    torch.testing.assert_close(r[:, :, ~keep], a[:, :, ~keep], atol=1e-6, rtol=0)
    assert not torch.equal(r[:, :, keep], x[:, :, keep])  # the VAE round trip does not keep them


def test_pipeline_path_equals_a_direct_pipeline_call(dirs):
    """At the model's own size, unpasted: our output is diffusers' pipeline called by hand with the hole mask
    (1 = repaint), the picture with grey holes, the empty prompt, guidance 7.5 and the image's generator."""
    m = method(dirs, "pipeline", paste_known=False)
    deg = inpaint_task(32)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    ours = m.restore(deg.degrade(x, gens(0)), deg, gens(11))
    sd = m.sd
    pipe = StableDiffusionInpaintPipeline(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=sd.unet,
                                          scheduler=PNDMScheduler.from_config(SD_SCHEDULER), safety_checker=None,
                                          feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    hole = (~deg.operator.mask).float()[None, None]
    ref = pipe(prompt=[""], image=x * (1 - hole) + 0.5 * hole, mask_image=hole, height=32, width=32,
               num_inference_steps=3, generator=gens(11), output_type="pt").images
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_blend_schedule_injection_and_nfe(dirs):
    """The UNet sees exactly the RePaint time list's descending steps, mapped to the checkpoint's timesteps."""
    m = method(dirs, "blend", steps=4, jump_length=2, jump_n_sample=3, guidance_scale=1.0)
    seen = []
    hook = m.sd.unet.register_forward_pre_hook(lambda mod, args, kw: seen.append(int(args[1][0])), with_kwargs=True)
    try:
        deg = inpaint_task(32)
        y = deg.degrade(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2)), gens(0))
        m.restore(y, deg, gens(3))
    finally:
        hook.remove()
    times = jump_schedule(t_T=4, jump_length=2, jump_n_sample=3)
    kept = [1, 251, 501, 751]  # SD's "leading" spacing with steps_offset 1, 4 steps
    assert seen == [kept[i] for i, j in zip(times[:-1], times[1:]) if j < i]
    assert m.last_nfe == len(seen) == 8  # no guidance: one row per image and call
    assert m.last_vae == {"encode": 1, "decode": 1}


def test_blend_sampler_math_with_a_zero_eps_network():
    """sample_latent_blend against its equations written out by hand (eps = 0, eta = 0): injection of the noised
    z0k at the current level before each call, the DDIM step, RePaint's undo, the final paste; noise drawn in
    order from the image's generator. Time list [1, 0, 1, 0, -1] (t_T 2, one jump of length 1)."""
    calls = []

    def unet(z, t, encoder_hidden_states):
        calls.append((z.clone(), int(t[0])))
        return SimpleNamespace(sample=torch.zeros_like(z))

    shape, kept = (4, 2, 2), [10, 500]
    abar = torch.linspace(0.999, 0.01, 1000, dtype=torch.float64)
    A0, A1 = float(abar[10]), float(abar[500])
    z0k = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
    M = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 1, 2, 2)
    times = jump_schedule(t_T=2, jump_length=1, jump_n_sample=2)
    assert times == [1, 0, 1, 0, -1]
    out = sample_latent_blend(unet, z0k, M, torch.zeros(1, 3, 16), None, kept, abar, times, gens(9), 1.0, 0.0)
    xi = [torch.randn(shape, generator=g)[None] for g in [torch.Generator().manual_seed(9)] for _ in range(5)]
    inject = lambda a, k, z: M * (a ** 0.5 * z0k + (1 - a) ** 0.5 * xi[k]) + (1 - M) * z  # noqa: E731
    zin1 = inject(A1, 1, xi[0])
    z = (A0 / A1) ** 0.5 * zin1
    z = (A1 / A0) ** 0.5 * z + (1 - A1 / A0) ** 0.5 * xi[2]  # undo with beta'_1 = 1 - A1 / A0
    zin2 = inject(A1, 3, z)
    zin3 = inject(A0, 4, (A0 / A1) ** 0.5 * zin2)
    want = M * z0k + (1 - M) * zin3 / A0 ** 0.5
    assert [t for _, t in calls] == [500, 500, 10]
    for (got, _), ref in zip(calls, (zin1, zin2, zin3)):
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)


def test_latent_mask_is_min_pool():
    keep = torch.ones(1, 1, 4, 6, dtype=torch.bool)
    keep[0, 0, 0, 1] = False  # one missing pixel spoils its 2 x 2 cell only
    M = latent_keep_mask(keep, 2)
    assert M.shape == (1, 1, 2, 3) and M.tolist() == [[[[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]]]]


def test_work_size(dirs):
    m = method(dirs, "pipeline")
    assert m.work_size(64, 64) == (32, 32) and m.work_size(32, 32) == (32, 32)
    assert m.work_size(40, 20) == (32, 16)  # longer side -> 32, aspect kept, multiples of 4
    m.resolution = 48
    assert m.work_size(64, 64) == (48, 48)


def test_only_inpainting_tasks():
    m = SDInpaint()
    assert m.unsupported_reason(Task("inpaint_box", 1, Inpainting)) is None
    assert "inpainting tasks" in m.unsupported_reason(Task("sr4", 1, SuperResolution))


# ------------------------------------------------------------------------------------------- loading, errors
def test_wrong_checkpoint_kind(dirs):
    with pytest.raises(ValueError, match="mode=blend needs a UNet with 4 input channels but .* has 9"):
        SDInpaint(mode="blend", weights={"local_dir": str(dirs["pipeline"])}).setup(torch.device("cpu"))


def test_unpinned_hub_revision_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    src = DEFAULT_SOURCES["pipeline"]
    with pytest.raises(AssetError, match=r"no pinned revision(.|\n)*method.weights.local_dir"):
        load_sd(src, None, None, "cpu", torch.float32)
    with pytest.raises(AssetError, match=r"not in the hub cache(.|\n)*HF_HUB_OFFLINE"):
        load_sd(src, "0" * 40, None, "cpu", torch.float32)
    with pytest.raises(AssetError, match=r"missing subfolder"):
        load_sd(None, None, str(tmp_path), "cpu", torch.float32)


@pytest.mark.parametrize("kw, message", [
    ({"mode": "blned"}, "did you mean 'blend'"),
    ({"weights": {"revison": "x"}}, "did you mean revision"),
    ({"weights": {"revision": "main"}}, "40-hex commit"),
    ({"jump_n_sample": 10}, "need mode=blend"),
    ({"eta": 2.0}, "eta"),
    ({"steps": 0}, "steps"),
    ({"dtype": "half"}, "dtype"),
])
def test_config_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        SDInpaint(**kw)
