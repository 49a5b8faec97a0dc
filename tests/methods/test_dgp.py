"""DGP on the tiny random BigGAN: the reconstruction loss falls on a representable target, every linear
task runs (shapes, range, determinism, batch independence), labels, config errors, BigGAN loading
(local dir, package cache, offline error) and one CLI run."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from bench.cli import build_task
from bench.methods.dgp import DGP, multiscale_loss, truncated_normal
from bench.models.assets import AssetError
from bench.models.biggan import finetune_groups, load_biggan, save_biggan, tiny_biggan, urls

REPO = Path(__file__).resolve().parents[2]
TASKS = sorted(p.stem for p in (REPO / "conf" / "task").glob("*.yaml"))
SMALL = dict(candidates=3, iterations=[2, 1], stages=[1, 4], lr_z=0.05, lr_g=1e-3)
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("single_thread")


def task(name: str):
    return build_task(OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "task" / f"{name}.yaml")))


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def dgp(**kw) -> DGP:
    m = DGP({"source": "tiny", "seed": 0}, **{**SMALL, **kw})
    m.setup(CPU)
    return m


def hidden_target(m: DGP, label: int, seed: int, size: int = 32) -> torch.Tensor:
    """x* = G(z*, c*) for a hidden z* (the tiny generator can represent it exactly)."""
    z = m.truncation * truncated_normal(torch.Generator().manual_seed(seed), (1, m.G.config.z_dim))
    with torch.no_grad():
        e = m.G.embeddings(F.one_hot(torch.tensor([label]), m.G.config.num_classes).float())
        return m.generate(m.G, z, e, (size, size))


# ------------------------------------------------------------------------------------------ algorithm
def test_reconstruction_loss_drops_tenfold_on_representable_sr4():
    m = dgp(candidates=8, iterations=[30, 30, 30], stages=[0, 2, 4], lr_z=0.05, lr_g=3e-4)
    deg = task("sr4").build(32)
    x_star = hidden_target(m, label=7, seed=123)
    y = deg.operator.A(x_star)
    out = m.restore(y, deg, gens(5), labels=[7])
    rec = m.last_losses[0]
    mse = rec["mse"]
    assert len(mse) == 90 and rec["class"] == 7
    assert mse[0] == pytest.approx(rec["selected_mse"], rel=1e-4)  # stage 1 starts from the selected z
    tail = sum(mse[-5:]) / 5
    assert tail <= mse[0] / 10, f"measurement MSE fell only from {mse[0]:.3g} to {tail:.3g}"
    # the restoration is consistent with y, and closer to x* than the best candidate was
    assert (deg.operator.A(out) - y).pow(2).mean() <= mse[0] / 5
    assert m.last_nfe == 8 + 90


def test_fine_tuning_groups_follow_resolutions():
    g = tiny_biggan(0)
    groups = finetune_groups(g)
    assert len(groups) == 4  # gen_z + 8x8, 16x16, 32x32 (attention inside the last); output layer excluded
    ids = {id(p) for grp in groups for p in grp}
    head = list(g.generator.bn.parameters()) + list(g.generator.conv_to_rgb.parameters())
    assert not any(id(p) in ids for p in head)
    assert len(ids) == sum(len(grp) for grp in groups)


def test_stages_unfreeze_shallow_groups_first_and_leave_the_shared_generator_alone():
    m = dgp(iterations=[1, 1], stages=[1, 3], lr_g=[1e-2, 1e-3], lr_ratio=[1.0, 0.5], update_embed=True)
    groups = finetune_groups(m.G)
    z, e = torch.zeros(1, 16, requires_grad=True), torch.zeros(1, 16)
    opt_z = torch.optim.Adam([z])
    opt_g = torch.optim.Adam([{"params": g} for g in groups] + [{"params": [e]}])
    m._configure_stage(0, groups, opt_z, opt_g, e)
    assert [all(p.requires_grad for p in g) for g in groups] == [True, False, False, False]
    assert [pg["lr"] for pg in opt_g.param_groups] == [1e-2, 0.0, 0.0, 0.0, 1e-2]
    m._configure_stage(1, groups, opt_z, opt_g, e)
    assert [all(p.requires_grad for p in g) for g in groups] == [True, True, True, False]
    assert [pg["lr"] for pg in opt_g.param_groups] == [1e-3, 5e-4, 2.5e-4, 0.0, 1e-3]
    for p in m.G.parameters():
        p.requires_grad_(False)
    deg = task("sr4").build(32)
    y = deg.operator.A(hidden_target(m, 3, 1))
    before = [p.detach().clone() for p in m.G.parameters()]
    m.restore(y, deg, gens(0), labels=[3])
    # the shared generator is never modified (each image fine-tunes its own copy)
    assert all(torch.equal(a, b) for a, b in zip(before, m.G.parameters()))


def test_multiscale_loss_is_zero_only_at_equality():
    a = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert multiscale_loss(a, a) == 0
    assert multiscale_loss(a, a + 0.1 * torch.randn(a.shape, generator=torch.Generator().manual_seed(1))) > 0


@pytest.mark.parametrize("name", TASKS)
def test_every_linear_task_runs_and_is_deterministic(name):
    t = task(name)
    m = dgp()
    if not t.linear:
        assert m.unsupported_reason(t) is not None
        return
    assert m.unsupported_reason(t) is None
    deg = t.build(32)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = deg.degrade(x, gens(10, 11))
    a = m.restore(y, deg, gens(0, 1))
    assert m.last_nfe == 3 + 3
    b = m.restore(y, deg, gens(0, 1))
    assert a.shape == (2, 3, 32, 32) and torch.isfinite(a).all()
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b), "same generators must give the same restoration"
    if name == "sr4":  # an image's result does not depend on the rest of its batch
        alone = m.restore(y[1:], deg, gens(1))
        assert torch.allclose(alone, a[1:], atol=1e-6)
        assert not torch.equal(a[0], a[1])


def test_lowlight_is_unsupported():
    reason = dgp().unsupported_reason(task("lowlight"))
    assert reason is not None and "linear" in reason


# --------------------------------------------------------------------------------------------- labels
def test_labels_set_and_consumed_and_class_search():
    m = dgp(iterations=[1], stages=[1])
    deg = task("sr4").build(32)
    y = deg.degrade(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)), gens(0, 1))
    m.set_labels([417, None])
    m.restore(y, deg, gens(0, 1))
    assert m.labels is None  # consumed by restore
    assert m.last_losses[0]["class"] == 417
    searched = m.last_losses[1]["class"]
    m.restore(y, deg, gens(0, 1))  # no labels now: both searched, reproducibly
    assert m.last_losses[1]["class"] == searched
    with pytest.raises(ValueError, match="class index"):
        m.restore(y, deg, gens(0, 1), labels=[1000, 0])
    strict = dgp(class_search=False)
    with pytest.raises(ValueError, match="class_search"):
        strict.restore(y[:1], deg, gens(0))


def test_config_errors_name_the_fix():
    with pytest.raises(ValueError, match="did you mean source"):
        DGP({"sorce": "tiny"})
    with pytest.raises(ValueError, match="biggan-deep-256"):
        DGP({"source": "biggan-deep-265"})
    with pytest.raises(ValueError, match="one value per stage"):
        DGP({"source": "tiny"}, iterations=[1, 1], lr_z=[0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="feature"):
        DGP({"source": "tiny"}, feature="lpips")
    with pytest.raises(ValueError, match="fine-tuning groups"):
        DGP({"source": "tiny"}, iterations=[1], stages=[9]).setup(CPU)


# -------------------------------------------------------------------------------------------- loading
@pytest.fixture
def isolated_caches(tmp_path, monkeypatch):
    for var, sub in (("PYTORCH_PRETRAINED_BIGGAN_CACHE", "biggan"), ("BENCH_CACHE", "bench"),
                     ("HF_HOME", "hf"), ("TORCH_HOME", "torch")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def test_offline_missing_biggan_is_a_clear_asset_error(isolated_caches):
    m = DGP({"source": "biggan-deep-256"}, iterations=[1], stages=[1])
    with pytest.raises(AssetError) as err:
        m.setup(CPU)
    msg = str(err.value)
    assert "biggan-deep-256" in msg and "downloads are off" in msg
    assert urls("biggan-deep-256")["pytorch_model.bin"] in msg
    assert "method.generator.local_dir" in msg and str(isolated_caches / "biggan") in msg


def test_local_dir_in_package_format_roundtrips(tmp_path):
    from pytorch_pretrained_biggan import BigGAN

    ref = tiny_biggan(0)
    d = save_biggan(ref, tmp_path / "tiny")
    loaded, prov = load_biggan(None, str(d))
    assert prov["origin"].startswith("local:") and len(prov["sha256"]) == 64
    pkg = BigGAN.from_pretrained(str(d)).eval()  # the package itself reads what we write
    z = 0.4 * truncated_normal(torch.Generator().manual_seed(0), (2, 16))
    c = F.one_hot(torch.tensor([1, 2]), 1000).float()
    with torch.no_grad():
        assert torch.equal(loaded(z, c, 0.4), ref(z, c, 0.4))
        assert torch.equal(pkg(z, c, 0.4), ref(z, c, 0.4))
    m = DGP({"source": "biggan-deep-256", "local_dir": str(d)}, iterations=[1], stages=[1])  # local_dir wins
    m.setup(CPU)
    assert m.describe()["generator"]["origin"].startswith("local:")
    with pytest.raises(AssetError, match="missing"):
        load_biggan(None, str(tmp_path / "nowhere"))


def test_package_cache_entries_are_found_offline(isolated_caches):
    cache = isolated_caches / "biggan"
    src = save_biggan(tiny_biggan(1), isolated_caches / "src")
    cache.mkdir()
    for name, url in urls("biggan-deep-256").items():  # as cached_path names them: sha256(url).sha256(etag)
        stem = hashlib.sha256(url.encode()).hexdigest() + "." + hashlib.sha256(b'"etag"').hexdigest()
        (cache / stem).write_bytes((src / name).read_bytes())
        (cache / f"{stem}.json").write_text('{"url": "%s", "etag": "\\"etag\\""}' % url)
    model, prov = load_biggan("biggan-deep-256")
    assert prov["origin"].startswith("cache:")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), tiny_biggan(1).state_dict().values()))


def test_vgg16_feature_needs_weights_offline_and_its_loss_path_runs(isolated_caches):
    with pytest.raises(AssetError, match="feature=multiscale"):
        dgp(feature="vgg16")
    m = dgp(feature="none")
    m.feature = "vgg16"  # the loss path with a stand-in network (the real one needs the ImageNet weights)
    m.ftr_net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).requires_grad_(False)
    deg = task("sr4").build(32)
    m.restore(deg.operator.A(hidden_target(m, 0, 0)), deg, gens(0), labels=[0])
    assert m.last_losses[0]["feature"][0] > 0


# ------------------------------------------------------------------------------------------------ CLI
@pytest.mark.slow
def test_cli_run_writes_one_png(tmp_path):
    """The default generator is the embedded one; the manifest records its source, path and sha256."""
    cmd = [sys.executable, "-m", "bench", "method=dgp", "task=sr4", "dataset.limit=1",
           f"run.results_root={tmp_path}", "run.progress=false", "method.candidates=2",
           "method.iterations=[2,1,1]"]
    env = {**os.environ, "BENCH_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pngs = list(tmp_path.glob("*/sr4/dgp/*/images/*.png"))
    assert len(pngs) == 1
    manifest = json.loads(next(tmp_path.glob("*/sr4/dgp/*/manifest.json")).read_text())
    gen = manifest["method"]["generator"]
    assert manifest["method"]["candidates"] == 2 and gen["source"] == "embedded"
    assert gen["path"].endswith("bench/priors/biggan64_imagenet96.safetensors") and gen["verified"]
    assert gen["sha256"] == gen["asset"]["sha256"]


def test_top_level_gan_key_chooses_the_generator_and_only_counts_through_it():
    """`gan:` (the GDP preset sets biggan-deep-256) feeds method.generator.source; the run identity sees the
    source, not the top-level key, so methods without a generator are unaffected by it."""
    from omegaconf import OmegaConf

    from bench.results import semantic_config
    from tests.conftest import compose

    plain = lambda *o: OmegaConf.to_container(compose(*o), resolve=True)  # noqa: E731
    assert plain("method=dgp")["method"]["generator"]["source"] == "embedded"
    dgp = plain("method=dgp", "+gan=biggan-deep-256")
    assert dgp["method"]["generator"]["source"] == "biggan-deep-256" and "gan" not in semantic_config(dgp)
    ddrm = [semantic_config(plain("method=ddrm", *o)) for o in ((), ("+gan=biggan-deep-256",))]
    assert ddrm[0] == ddrm[1]
    preset = plain("+experiment=gdp_imagenet", "dataset.root=/nonexistent", "method=dgp")
    assert preset["method"]["generator"]["source"] == "biggan-deep-256"
