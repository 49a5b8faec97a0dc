"""The ``tune: space:`` blocks of conf/method/*.yaml (the search spaces of ``python -m bench.tune``).

Every method with hyper-parameters has a space that parses against its composed node, holds its defaults and the
official values its comments name, keeps out budget and identity knobs, and yields overrides the ordinary run
path composes and the method accepts; the parser's refusals say what is wrong and how to fix it; the table in
docs/tuning-spaces.md matches the YAMLs.
"""

from __future__ import annotations

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from bench.api import compose
from bench.methods import dcdp, diffpir, dps, gdp, latent_dps, ldg, red_diff
from bench.tune.space import Param, SpaceError, overrides, parse_space, suggest
from tests.conftest import CONF_DIR, REPO

METHODS = sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))
#: methods without hyper-parameters: the only ones allowed to have no space
WITHOUT_SPACE = {"bicubic", "zero_dce", "repaint", "sr3", "palette"}  # repaint: only budget knobs (its jump schedule sets the NFE); sr3/palette: only steps and clip_denoised
SPACED = [m for m in METHODS if m not in WITHOUT_SPACE]
#: knobs that set the budget (NFE, iterations, candidates) or the cell (prior, variant): never searched
BUDGET_OR_IDENTITY = {"_target_", "name", "model", "steps", "iterations", "candidates", "candidate_batch", "stages",
                      "travel_length", "travel_repeat", "generator", "ldm", "variant", "plus", "strategy",
                      "particles"}

# the official values the YAML comments name (docs/tuning-spaces.md), per (method, key)
_DGP_OFFICIAL_LR_Z = [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 2e-3, 1e-3, 2e-5, 1e-5, 1e-5, 2e-3, 1e-3, 5e-4, 5e-5, 2e-5]
_DGP_OFFICIAL_LR_G = [2e-4, 2e-4, 1e-4, 1e-4, 1e-5, 5e-5, 5e-5, 2e-5, 1e-5, 1e-5, 5e-5, 5e-5, 5e-5, 5e-5, 2e-5]
OFFICIAL = {
    ("ddrm", "eta"): [0.85], ("ddrm", "eta_b"): [1.0],
    ("ddrm_srldm", "eta"): [0.85], ("ddrm_srldm", "eta_b"): [1.0],
    ("ddnm", "eta"): [0.85], ("ddnm_plus", "eta"): [0.85],
    ("dps", "scale"): [*dps.SCALES.values(), 1.0, 0.1, 4.0],  # configs; paper App. D.1; NVIDIA 2w = 0.1 .. 4
    ("pigdm", "eta"): [0.0, 1.0], ("pigdm", "grad_term_weight"): [1.0],
    ("diffpir", "lambda_"): [v[0] for v in diffpir.OFFICIAL.values()] + [float(x) for x in range(1, 13)],
    ("diffpir", "zeta"): [v[1] for v in diffpir.OFFICIAL.values()] + [0.1],
    ("red_diff", "grad_term_weight"): [v[0] for v in red_diff.DEFAULTS.values()] + [0.5],
    ("red_diff", "lr"): [v[1] for v in red_diff.DEFAULTS.values()] + [0.1],
    ("gdp_x0", "scale"): [*gdp.OFFICIAL_SCALES.values(), 3e4, 3e5],
    ("gdp_xt", "scale"): [*gdp.OFFICIAL_SCALES.values(), 3e4, 3e5],
    ("dgp", "lr_z"): _DGP_OFFICIAL_LR_Z, ("dgp", "lr_g"): _DGP_OFFICIAL_LR_G,
    ("dgp", "mse_weight"): [1.0, 10.0, 50.0, 100.0], ("dgp", "nll_weight"): [0.02],
    ("srldm", "eta"): [0.0, 1.0],
    ("sd_inpaint", "guidance_scale"): [7.5], ("sd_inpaint", "eta"): [0.0, 1.0],  # diffusers' defaults; RePaint ~ DDPM
    ("latent_dps", "scale"): [*latent_dps.DEFAULT_SCALES.values(), 0.1, 0.9],  # ReSample 0.5 abar_t; PSLD omega 1, 0.1, 0.9
    ("ldg", "scale"): [d["scale"] for d in ldg.DEFAULTS.values()],  # no official code: our defaults
    ("ldg", "lr"): [d["lr"] for d in ldg.DEFAULTS.values()],
    ("daps", "lr"): [1e-4, 5e-5, 1.04e-4, 4.04e-5, 1e-5], ("daps", "tau"): [0.01],  # DAPS configs/task/*.yaml
    ("pnp_dm", "rho"): [10.0, 0.1], ("pnp_dm", "rho_min"): [0.3, 0.1], ("pnp_dm", "rho_decay"): [0.9, 1.0],
    ("dcdp", "lr"): [v[2] for v in dcdp.OFFICIAL.values()] + [300.0, 500.0],  # + nonlinear deblur, phase retrieval
    ("dcdp", "t0"): [v[3] for v in dcdp.OFFICIAL.values()] + [1000],
    ("mcg_diff", "kappa"): [1e-4], ("mcg_diff", "eta"): [1.0],  # mcg_diff/default.yaml gaussian_var, ddim_100.yaml
    ("mgps", "lr"): [0.03, 0.1], ("mgps", "sigma_y_min"): [0.05], ("mgps", "alpha"): [0.5, 1.0],  # mgps.yaml (gmm, ldm)
    ("fps_smc", "c_rate"): [0.95],  # FPS-SMC sample_condition.py --c_rate
    ("psld", "omega"): [0.1, 0.9, 1.0], ("psld", "gamma"): [0.1, 0.01],  # PSLD run/*.sh and CLI defaults
    ("resample", "scale"): [0.5], ("resample", "gamma"): [40.0],  # ReSample's hard-coded a_t * 0.5 and 40
}

_COMPOSED: dict = {}


def optuna():
    """optuna, which bench.tune needs (pyproject.toml must declare it with the tool); only the suggest tests use it."""
    return pytest.importorskip("optuna", reason="optuna is not installed (bench.tune's dependency)")


#: methods that need a model other than the default pixel prior, and the tiny one they are composed with
MODEL_OF = {"latent_dps": "latent_tiny", "psld": "latent_tiny", "resample": "latent_tiny"}


def composed(name: str, *ovs: str) -> dict:
    """The resolved config of ``method=name`` (+ overrides) as plain containers, composed once per test session."""
    if (name, ovs) not in _COMPOSED:
        model = [f"model={MODEL_OF[name]}"] if name in MODEL_OF else []
        _COMPOSED[name, ovs] = OmegaConf.to_container(compose(method=name, overrides=[*model, *ovs]), resolve=True)
    return _COMPOSED[name, ovs]


def params_of(name: str) -> list[Param]:
    c = composed(name)
    return parse_space(name, c["tune"].get("space"), c["method"])


def build(node: dict):
    """The method object the CLI would build from a composed method node."""
    return instantiate({k: v for k, v in node.items() if k != "name"})


# ------------------------------------------------------------------------------------------ the shipped spaces

def test_exactly_the_methods_without_hyper_parameters_have_no_space():
    """A new method with hyper-parameters but no ``tune: space:`` fails here (add its space, docs/tuning-spaces.md)."""
    missing = {m for m in METHODS if not composed(m)["tune"].get("space")}
    assert missing == WITHOUT_SPACE
    for m in sorted(WITHOUT_SPACE):
        with pytest.raises(SpaceError, match=rf"^method={m} has no tune\.space: it has no hyper-parameter to tune"):
            parse_space(m, composed(m)["tune"].get("space"), composed(m)["method"])


@pytest.mark.parametrize("name", SPACED)
def test_space_parses_and_holds_the_defaults(name):
    params = params_of(name)
    node = composed(name)["method"]
    assert params and [p.name for p in params] == sorted(composed(name)["tune"]["space"])
    for p in params:
        assert p.name.split(".")[0] not in BUDGET_OR_IDENTITY, f"{name}: {p.name} sets the budget or the cell"
        default = node[p.name]
        values = default if isinstance(default, list) else [default]  # DGP's per-stage lists: every stage's value
        for v in values:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                assert p.contains(v), f"{name}: default {p.name}={v} outside {p.describe()}"
            else:
                assert v is None, f"{name}: {p.name}={v!r} is neither a number nor null (per-task official value)"


@pytest.mark.parametrize("method, key", sorted(OFFICIAL))
def test_the_official_values_lie_inside_the_ranges(method, key):
    (p,) = [p for p in params_of(method) if p.name == key]
    outside = [v for v in OFFICIAL[method, key] if not p.contains(v)]
    assert not outside, f"{method}.{key}: official {outside} outside {p.describe()}"


def test_every_searched_key_has_its_official_values_listed():
    assert {(m, p.name) for m in SPACED for p in params_of(m)} == set(OFFICIAL)


def test_method_files_write_only_tune_space():
    """``tune:`` merges with the tool's settings in conf/config.yaml: a method file sets ``tune.space`` only,
    and config.yaml sets no space of its own."""
    for m in METHODS:
        raw = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "method" / f"{m}.yaml"))
        assert set(raw.get("tune", {})) <= {"space"}, m
    assert "space" not in OmegaConf.load(CONF_DIR / "config.yaml").tune
    assert {"trials", "objective", "seed"} <= set(composed("ddrm")["tune"])  # the tool's settings survive the merge


@pytest.mark.parametrize("name", SPACED)
def test_the_ends_of_every_range_build_the_method(name):
    """Every range lies inside the values the method accepts: all low ends, then all high ends, composed as
    overrides and built as the CLI builds the method."""
    params = params_of(name)
    for end in ("low", "high"):
        values = {p.name: (p.choices[0] if p.categorical else getattr(p, end)) for p in params}
        node = composed(name, *overrides(values))["method"]
        assert {k: node[k] for k in values} == values
        build(node)


# ------------------------------------------------------------------------------------------ suggest / overrides

@pytest.mark.parametrize("name", SPACED)
def test_suggest_draws_inside_the_ranges_and_the_overrides_land_in_the_method(name):
    params = params_of(name)
    study = optuna().create_study(sampler=optuna().samplers.RandomSampler(seed=0))
    for _ in range(3):
        trial = study.ask()
        values = suggest(trial, params)
        assert set(values) == {p.name for p in params}
        for p in params:
            v = values[p.name]
            assert p.contains(v), (p.name, v, p.describe())
            assert type(v) is (int if p.integer else float) or p.categorical, (p.name, type(v))
        ovs = overrides(values)
        assert ovs == [f"method.{k}={values[k]!r}" for k in sorted(values)]
        node = composed(name, *ovs)["method"]
        assert {k: node[k] for k in values} == values  # exact: repr round-trips a float
        build(node)
        study.tell(trial, 0.0)


def test_suggest_types_int_choices_and_dotted_keys_compose():
    """int: true draws ints, choices their own values, dotted keys reach nested nodes; each override composes
    (the shipped spaces are all float ranges, so these use other real keys of the method nodes)."""
    cases = [("ddnm", {"travel_length": {"low": 1, "high": 9, "int": True}}, int),
             ("red_diff", {"denoise_term_weight": {"choices": ["linear", "sqrt", "power2over3"]}}, str),
             ("srldm", {"ldm.seed": {"low": 1, "high": 1000, "int": True, "log": True}}, int),
             ("pigdm", {"awd": {"choices": [True, False]}}, bool)]
    study = optuna().create_study(sampler=optuna().samplers.RandomSampler(seed=0))
    for name, space, typ in cases:
        (p,) = parse_space(name, space, composed(name)["method"])
        for _ in range(3):
            trial = study.ask()
            (value,) = suggest(trial, [p]).values()
            assert type(value) is typ and p.contains(value), (name, value)
            (ov,) = overrides({p.name: value})
            node = composed(name, ov)["method"]
            for part in p.name.split("."):
                node = node[part]
            assert node == value and type(node) is typ, (ov, node)
            study.tell(trial, 0.0)


# ------------------------------------------------------------------------------------------ the parser's refusals

REFUSALS = [
    ({"etaa": {"low": 0.0, "high": 1.0}},
     r"tune\.space\.etaa: method=ddrm has no parameter method\.etaa \(did you mean eta\?\); its parameters: "
     r"eta, eta_b\. Fix: name one of them in conf/method/ddrm\.yaml or in the tune\.space override"),
    ({"eta": {"low": 1.0, "high": 1.0}},
     r"tune\.space\.eta of method=ddrm: low=1\.0 is not below high=1\.0\. Fix: conf/method/ddrm\.yaml"),
    ({"eta": {"low": 0.9, "high": 0.1}}, r"low=0\.9 is not below high=0\.1"),
    ({"eta": {"low": 0.0, "high": 1.0, "log": True}},
     r"tune\.space\.eta of method=ddrm: log: true needs low > 0 \(low=0\.0\)\. Fix: a positive low, or drop log"),
    ({"eta": {"low": 0.5, "high": 3, "int": True}},
     r"tune\.space\.eta of method=ddrm: int: true needs integer bounds \(low=0\.5, high=3\)"),
    ({"eta": {"low": 0.0, "high": 1.0, "step": 0.1}},
     r"tune\.space\.eta of method=ddrm has unknown field\(s\) \['step'\]; allowed: "
     r"\['choices', 'high', 'int', 'log', 'low'\]"),
    ({"eta": {"choices": [0.85]}},
     r"tune\.space\.eta\.choices=\[0\.85\] of method=ddrm must be a list of at least two distinct values"),
    ({"eta": {"choices": [0.85, 0.85]}}, r"must be a list of at least two distinct values"),
    ({"eta": {"choices": [0.0, 1.0], "low": 0.0}}, r"tune\.space\.eta of method=ddrm mixes choices with a range"),
    ({"eta": {"low": 0.0}}, r"tune\.space\.eta of method=ddrm needs both low and high \(has \['low'\]\)"),
    ({"eta": 0.85}, r"tune\.space\.eta=0\.85 of method=ddrm is not a range\. Fix: write \{low: L, high: H\}"),
    ({"eta": {"low": float("nan"), "high": 1.0}}, r"tune\.space\.eta\.low=nan of method=ddrm is not a finite number"),
    ({"eta": {"low": True, "high": 1.0}}, r"tune\.space\.eta\.low=True of method=ddrm is not a finite number"),
    ({"steps": {"low": 10, "high": 100, "int": True}},
     r"tune\.space\.steps: method\.steps identifies the cell and is not a hyper-parameter \(not tunable: "
     r"_target_, name, model, steps\)\. Fix: remove it; the step budget is set with steps=N"),
    ({"model": {"choices": ["adm64_imagenet96", "adm_imagenet256"]}},
     r"tune\.space\.model: method\.model identifies the cell and is not a hyper-parameter"),
    ({"model.name": {"choices": ["adm64_imagenet96", "adm_imagenet256"]}},
     r"tune\.space\.model\.name: method\.model\.name identifies the cell"),
]


@pytest.mark.parametrize("space, message", REFUSALS, ids=[next(iter(s)) + f"-{i}" for i, (s, _) in enumerate(REFUSALS)])
def test_the_parser_refuses_bad_entries_with_the_fix(space, message):
    with pytest.raises(SpaceError, match=message):
        parse_space("ddrm", space, composed("ddrm")["method"])


def test_an_unknown_nested_key_is_refused_with_a_hint():
    with pytest.raises(SpaceError, match=r"tune\.space\.generator\.sed: method=dgp has no parameter "
                                         r"method\.generator\.sed \(did you mean generator\.seed\?\)"):
        parse_space("dgp", {"generator.sed": {"low": 0, "high": 9, "int": True}}, composed("dgp")["method"])


# ------------------------------------------------------------------------------------------ the docs' table

def _num(v: float) -> str:
    """1e-05 -> 1e-5, 1000000.0 -> 1e6, 0.01 -> 0.01, 1.0 -> 1 (as docs/tuning-spaces.md writes them)."""
    if v and (abs(v) < 1e-3 or abs(v) >= 1e5):
        mantissa, exp = f"{v:.6e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"
    return f"{v:g}"


def _render(p: Param) -> str:
    if p.categorical:
        return ", ".join(map(str, p.choices))
    return f"{_num(p.low)} .. {_num(p.high)}" + (", log" if p.log else "") + (", int" if p.integer else "")


def test_the_docs_table_matches_the_yamls():
    text, rows = (REPO / "docs" / "tuning-spaces.md").read_text(), set()
    for line in text.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] in METHODS:
            rows.add(tuple(cells[:3]))
    assert rows == {(m, p.name, _render(p)) for m in SPACED for p in params_of(m)}
    assert "`bicubic` and `zero_dce` have no hyper-parameter" in text
