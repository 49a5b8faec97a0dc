"""The inpainting mask kinds (bench/operators/masks.py) and the inpaint_* tasks built on them.

The SVD semantics of every kind (A = U S V^T, adjointness, pinv keeps the kept pixels) run in
tests/operators/test_linear.py (cases ``inpaint_<kind>``); here: the pictures, fractions, seeds and tasks.
"""

from __future__ import annotations

import pytest
import torch

from bench.operators import Inpainting
from bench.operators.masks import MASKS, NARROW, WIDE, make_mask
from tests.methods.test_ddrm import task

#: documented missing fraction of the fixed kinds (sizes divisible by 4)
FRACTIONS = {"box": 0.25, "half": 0.5, "expand": 0.75, "lines": 0.5, "sr2": 0.75}
RANDOM_KINDS = ("random", "wide", "narrow")


def missing(mask) -> float:
    return float((~mask).float().mean())


@pytest.mark.parametrize("size", [16, 64])
@pytest.mark.parametrize("kind", sorted(FRACTIONS))
def test_fixed_kinds_missing_fraction(kind, size):
    assert missing(make_mask(kind, size)) == FRACTIONS[kind]


def test_fixed_kinds_geometry():
    n = 64
    rows, cols = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    box = (rows >= 16) & (rows < 48) & (cols >= 16) & (cols < 48)  # the 32x32 centre
    assert torch.equal(make_mask("box", n), ~box)
    assert torch.equal(make_mask("expand", n), box)
    assert torch.equal(make_mask("half", n), cols < 32)  # the right half missing
    assert torch.equal(make_mask("half", n, half="top"), rows >= 32)
    assert torch.equal(make_mask("lines", n), rows % 2 == 0)
    assert torch.equal(make_mask("sr2", n), (rows % 2 == 0) & (cols % 2 == 0))


def test_random_kind_is_the_original_inpaint_mask():
    """task=inpaint keeps its exact mask: the first round(0.25 n^2) entries of randperm on a seeded CPU generator."""
    for seed, n in ((0, 8), (7, 16)):
        dropped = torch.randperm(n * n, generator=torch.Generator().manual_seed(seed))[: round(0.25 * n * n)]
        keep = torch.ones(n * n, dtype=torch.bool)
        keep[dropped] = False
        assert torch.equal(Inpainting(3, n, seed=seed).mask, keep.reshape(n, n))
    assert set(Inpainting(3, 8).describe()) == {"operator", "channels", "size", "missing", "n_missing", "seed"}


@pytest.mark.parametrize("kind", sorted(MASKS))
def test_mask_is_a_function_of_size_seed_and_params(kind):
    torch.manual_seed(123)  # the global RNG plays no part
    a = make_mask(kind, 32, seed=4)
    torch.manual_seed(999)
    assert torch.equal(make_mask(kind, 32, seed=4), a) and a.dtype == torch.bool and a.shape == (32, 32)
    assert torch.equal(make_mask(kind, 32, seed=5), a) == (kind not in RANDOM_KINDS)
    op = Inpainting(3, 32, seed=4, mask_kind=kind)
    assert torch.equal(op.mask, a) and op.n_missing == int((~a).sum())
    assert op.M == 3 * int(a.sum())


@pytest.mark.parametrize("kind", sorted(MASKS))
def test_measurement_is_identical_across_batch_sizes_and_pinv_keeps_the_kept_pixels(kind):
    op = Inpainting(3, 16, seed=2, mask_kind=kind)
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = op.A(x)
    for i in range(3):
        assert torch.equal(op.A(x[i:i + 1]), y[i:i + 1])
    assert torch.equal(op.measurement_image(y), x * op.mask)  # pinv(A x): kept pixels exact, missing ones 0
    assert torch.equal(op.image(op.pinv(y))[:, :, op.mask], x[:, :, op.mask])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.cuda is not available on this machine")
@pytest.mark.parametrize("kind", sorted(MASKS))
def test_mask_built_on_cuda_equals_cpu(kind):
    assert torch.equal(Inpainting(3, 32, "cuda", seed=1, mask_kind=kind).mask.cpu(),
                       Inpainting(3, 32, seed=1, mask_kind=kind).mask)


def test_stroke_fractions_lie_in_their_documented_ranges():
    wide = [missing(make_mask("wide", 32, seed=s)) for s in range(12)]
    narrow = [missing(make_mask("narrow", 32, seed=s)) for s in range(12)]
    assert all(WIDE["missing"][0] <= f <= WIDE["missing"][1] for f in wide), wide
    assert all(NARROW["missing"][0] <= f <= NARROW["missing"][1] for f in narrow), narrow
    assert min(wide) > sum(narrow) / len(narrow) and sum(wide) > 2 * sum(narrow)
    assert len(set(wide)) > 6  # the target fraction is drawn per seed, not pinned to one end
    # the narrow strokes are thin: most missing pixels have a kept pixel within 2 px, unlike the wide ones
    def near_edge(mask):
        holes = (~mask).float()[None, None]
        eroded = -torch.nn.functional.max_pool2d(-holes, 5, stride=1, padding=2)  # holes 2 px from any edge
        return 1 - float(eroded.sum() / holes.sum())
    assert near_edge(make_mask("narrow", 64, 1)) > 0.9 > near_edge(make_mask("wide", 64, 1))


@pytest.mark.parametrize("kwargs, words", [
    ({"mask_kind": "circle"}, ["mask='circle'", "box", "narrow"]),
    ({"mask_kind": "box", "missing": 0.3}, ["mask='box'", "['box']", "['missing']"]),
    ({"mask_kind": "box", "box": 1.0}, ["box=1.0", "(0.0, 1.0)"]),
    ({"mask_kind": "half", "half": "middle"}, ["half='middle'", "right"]),
    ({"mask_kind": "wide", "width": [0.3, 0.1]}, ["width=", "lo <= hi"]),
    ({"mask_kind": "wide", "missing": [0.2, 1.0]}, ["at least one pixel"]),
    ({"mask_kind": "narrow", "vertices": [1.5, 3]}, ["vertices=", "integers"]),
])
def test_bad_mask_parameters_raise(kwargs, words):
    with pytest.raises(ValueError) as err:
        Inpainting(3, 16, **kwargs)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


@pytest.mark.parametrize("name, kind, fraction", [
    ("inpaint_box", "box", 0.25), ("inpaint_half", "half", 0.5), ("inpaint_expand", "expand", 0.75),
    ("inpaint_lines", "lines", 0.5), ("inpaint_sr2", "sr2", 0.75), ("inpaint_wide", "wide", None),
    ("inpaint_narrow", "narrow", None),
])
def test_tasks_build_their_mask(name, kind, fraction):
    t = task(name)
    assert t.name == name and t.version == 1 and t.sigma == 0 and t.linear
    op = t.build(64, seed=3).operator
    assert op.mask_kind == kind and torch.equal(op.mask, make_mask(kind, 64, 3))
    lo, hi = (fraction, fraction) if fraction is not None else MASKS[kind][1]["missing"]
    assert lo <= op.describe()["missing"] <= hi and op.describe()["mask_kind"] == kind
