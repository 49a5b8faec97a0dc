"""Do results depend on the batch size? Where they do (CPU kernels blocked per batch shape), by how much;
and ``model.speed.micro_batch`` making them bit-identical.

Measured with the embedded prior (docs/performance.md): DDRM ``deblur_gauss``, 16 ImageNet-sample images at
64 px, batch 1 vs 2 vs 4: 2 of 196,608 8-bit values differ, by one level, without micro-batches; none with
``model.speed.micro_batch=1``. The cause is the network (oneDNN convolutions and MKL GEMMs pick their
blocking per batch shape: ~1e-6 differences), not the operators or the per-image noise (exact, below).
"""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from bench import seeding
from bench.cli import build_task, run_from_config
from bench.imageio import to_uint8
from bench.models.prior import load_prior
from tests.conftest import CONF_DIR, compose, run_dirs

pytestmark = pytest.mark.usefixtures("isolated_prior_cache")
TASKS = sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml"))
#: the stated tolerance without micro-batches (float outputs in [0, 1]; measured ~1e-6 on the network)
FLOAT_TOL = 1e-4


def model(**speed) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / "adm_tiny.yaml"))
    cfg["speed"] = {**cfg["speed"], **speed}
    return cfg


def per_row(fn, *xs):
    return torch.cat([fn(*(x[i:i + 1] for x in xs)) for i in range(xs[0].shape[0])])


@pytest.mark.parametrize("name", TASKS)
def test_operators_are_exactly_batch_independent(name):
    tcfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "task" / f"{name}.yaml"))
    op = build_task(tcfg).build(16, "cpu", 0).operator
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 3, 16, 16, generator=g)
    parts = {"A": x} if not getattr(op, "linear", False) else {"A": x, "V": x.flatten(1), "Vt": x.flatten(1)}
    if getattr(op, "linear", False):
        y = op.A(x)
        parts.update(U=y, Ut=y, At=y, pinv=y)
    for fn_name, arg in parts.items():
        fn = getattr(op, fn_name)
        assert torch.equal(fn(arg), per_row(fn, arg)), f"{name}.{fn_name} depends on the batch"


def test_per_image_noise_is_batch_independent():
    ids = ["a", "b", "c"]
    whole = seeding.randn(seeding.make_generators(0, ids, "restore"), (3, 8, 8), "cpu")
    alone = torch.cat([seeding.randn(seeding.make_generators(0, [i], "restore"), (3, 8, 8), "cpu") for i in ids])
    assert torch.equal(whole, alone)


def _eps(prior, x, t):
    with torch.no_grad():
        return prior.eps(x, t)


def test_network_micro_batches_are_bit_identical_across_batch_sizes():
    g = torch.Generator().manual_seed(5)
    x, t = torch.randn(4, 3, 32, 32, generator=g), torch.tensor([900, 500, 500, 10])
    for mb in (1, 2):
        p = load_prior(model(micro_batch=mb), "cpu")
        assert p.info["speed"]["micro_batch"] == mb
        full = _eps(p, x, t)
        for b in (1, 3):
            parts = torch.cat([_eps(p, x[i:i + b], t[i:i + b]) for i in range(0, 4, b)])
            assert torch.equal(parts, full), (mb, b)
    plain = load_prior(model(), "cpu")  # without micro-batches: equal within float rounding only
    diff = (per_row(lambda a, b: _eps(plain, a, b), x, t) - _eps(plain, x, t)).abs().max()
    assert diff < 1e-5, diff


def _ddrm_outputs(speed: dict, batch: int, x: torch.Tensor, ids: list[str]):
    from bench.methods.ddrm import DDRM

    deg = build_task(OmegaConf.to_container(OmegaConf.load(CONF_DIR / "task" / "deblur_gauss.yaml"))).build(32)
    method = DDRM(model(**speed), steps=2)
    method.setup(torch.device("cpu"))
    outs = []
    for i in range(0, len(ids), batch):
        chunk = ids[i:i + batch]
        y = deg.degrade(x[i:i + batch], seeding.make_generators(0, chunk, "degrade"))
        outs.append(method.restore(y, deg, seeding.make_generators(0, chunk, "restore")))
    return torch.cat(outs)


def test_ddrm_batch_size_tolerance_and_exact_micro_batches():
    ids = [f"im{i}" for i in range(3)]
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    plain = {b: _ddrm_outputs({}, b, x, ids) for b in (1, 3)}
    diff = (plain[1] - plain[3]).abs()
    assert diff.max() < FLOAT_TOL, diff.max()  # the stated tolerance: far below one 8-bit level
    levels = (to_uint8(plain[1]).int() - to_uint8(plain[3]).int()).abs()
    assert levels.max() <= 1 and (levels > 0).float().mean() <= 1e-3
    exact = {b: _ddrm_outputs({"micro_batch": 1}, b, x, ids) for b in (1, 2, 3)}
    assert torch.equal(exact[1], exact[2]) and torch.equal(exact[1], exact[3])


def test_gdp_micro_batches_are_bit_identical():
    from bench.methods.gdp import GDP

    deg = build_task(OmegaConf.to_container(OmegaConf.load(CONF_DIR / "task" / "sr4.yaml"))).build(32)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    ids = ["p", "q", "r"]
    method = GDP(model(micro_batch=1), steps=2, variant="x0")
    method.setup(torch.device("cpu"))

    def run(sl):
        y = deg.degrade(x[sl], seeding.make_generators(0, ids[sl], "degrade"))
        return method.restore(y, deg, seeding.make_generators(0, ids[sl], "restore"))
    assert torch.equal(run(slice(0, 3)), torch.cat([run(slice(i, i + 1)) for i in range(3)]))


@pytest.mark.slow
def test_cli_pngs_identical_for_batch_1_and_auto(tmp_path):
    """The real CLI: run.batch_size=1 and auto (= 3 on CPU) with model.speed.micro_batch=1 -> byte-identical
    PNGs; the timing record says which batch was chosen and by which rule."""
    common = ["method=ddrm", "model=adm_tiny", "steps=2", "task=sr4", "dataset.limit=3", "dataset.image_size=32",
              "+model.speed.micro_batch=1", "run.progress=false"]
    pngs = {}
    for bs in ("1", "auto"):
        root = tmp_path / bs
        run_from_config(compose(*common, f"run.batch_size={bs}", f"run.results_root={root}"))
        (run,) = run_dirs(root)
        pngs[bs] = {p.name: p.read_bytes() for p in sorted((run / "images").glob("*.png"))}
        (timing,) = [json.loads(p.read_text()) for p in (run / "timing").glob("*.json")]
        rule = timing["batch_rule"]
        assert rule["requested"] == (bs if bs == "auto" else int(bs))
        assert timing["batch_size"] == rule["chosen"] == (3 if bs == "auto" else int(bs))
    assert len(pngs["1"]) == 3 and pngs["1"] == pngs["auto"]


def test_cli_rejects_a_bad_batch_size(tmp_path):
    with pytest.raises(ValueError, match=r"run\.batch_size='many'.*auto"):
        run_from_config(compose("method=bicubic", "dataset.limit=1", "run.batch_size=many",
                                f"run.results_root={tmp_path}", "run.progress=false"))
