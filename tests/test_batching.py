"""bench.batching: the memory model behind ``run.batch_size=auto``, its CPU rule, and micro-batches."""

from __future__ import annotations

import pytest
import torch

from bench.batching import (AUTO_MAX_BATCH, CPU_BATCH, SAFETY, choose_batch, mem_available_bytes, micro_batched,
                            parse_batch_size, resolve_batch_size)

GiB = 2**30


@pytest.mark.parametrize("free, per_image, fixed, n, expected", [
    (80 * GiB, 0.5 * GiB, 2 * GiB, 1000, 100),  # floor(78 / 0.75) = 104 fit -> 10 batches of 100
    (80 * GiB, 0.5 * GiB, 2 * GiB, 50, 50),     # the dataset is smaller than what fits
    (80 * GiB, 0.5 * GiB, 2 * GiB, 105, 53),    # 104 fit, 105 images: two balanced batches, not 104 + 1
    (1e15, 1.0, 0.0, 1000, 125),                # memory is no limit: the cap (128) -> 8 batches of 125
    (1 * GiB, 4 * GiB, 0.0, 10, 1),             # not even one image fits: still 1 (the run will say OOM)
    (10 * GiB, 1 * GiB, 12 * GiB, 10, 1),       # the fixed part exceeds the free memory
])
def test_choose_batch_from_fake_free_memory(free, per_image, fixed, n, expected):
    assert choose_batch(free, per_image, n, fixed_bytes=fixed) == expected


def test_choose_batch_uses_the_safety_factor_and_cap():
    # 30 GiB free, 1 GiB per image: 20 fit with safety 1.5, 30 with safety 1
    assert SAFETY == 1.5 and AUTO_MAX_BATCH == 128
    assert choose_batch(30 * GiB, GiB, 10**6) == 20
    assert choose_batch(30 * GiB, GiB, 10**6, safety=1.0) == 30
    assert choose_batch(30 * GiB, GiB, 10**6, safety=1.0, cap=16) == 16
    with pytest.raises(ValueError, match="per_image_bytes"):
        choose_batch(GiB, 0, 10)


@pytest.mark.parametrize("value, expected", [("auto", "auto"), (" AUTO ", "auto"), (4, 4), ("8", 8)])
def test_parse_batch_size(value, expected):
    assert parse_batch_size(value) == expected


@pytest.mark.parametrize("value", [0, -2, "zero", 2.5, True, None, "0"])
def test_bad_batch_sizes_name_the_value_and_the_fix(value):
    with pytest.raises(ValueError, match=r"run\.batch_size=.*positive integer or auto.*Fix"):
        parse_batch_size(value)


def test_cpu_auto_rule_is_the_documented_default_capped_and_balanced():
    cpu = torch.device("cpu")
    assert resolve_batch_size(6, object(), 100, cpu, 32) == (6, {"requested": 6, "chosen": 6,
                                                               "rule": "fixed (run.batch_size)"})
    b, rule = resolve_batch_size("auto", object(), 100, cpu, 32)
    assert b == CPU_BATCH == 4 and rule["chosen"] == 4 and rule["requested"] == "auto"
    assert "CPU" in rule["rule"] and rule["mem_available_bytes"] == mem_available_bytes()
    assert resolve_batch_size("auto", object(), 3, cpu, 32)[0] == 3   # capped by the pending images
    assert resolve_batch_size("auto", object(), 5, cpu, 32)[0] == 3   # 5 = 3 + 2, not 4 + 1


def test_mem_available_reads_proc_meminfo():
    value = mem_available_bytes()
    assert value is None or value > 0


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(8, 3, 1))


def test_micro_batches_have_one_shape_and_drop_the_padding():
    net, shapes = _net(), []

    def fn(x, t):
        shapes.append((tuple(x.shape), tuple(t.shape)))
        return net(x) + t[:, None, None, None]

    x, t = torch.randn(5, 3, 8, 8), torch.arange(5.0)
    out = micro_batched(fn, 2, x, t)
    assert shapes == [((2, 3, 8, 8), (2,))] * 3  # 2 + 2 + (1 padded to 2)
    with torch.no_grad():
        ref = torch.cat([fn(x[i:i + 1], t[i:i + 1]) for i in range(5)])
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    assert micro_batched(fn, 5, x, t).shape == (5, 3, 8, 8)


def test_micro_batches_pass_gradients_and_sample_outputs():
    net = _net()

    class Out:
        def __init__(self, sample):
            self.sample = sample

    x = torch.randn(3, 3, 8, 8, requires_grad=True)
    micro_batched(lambda z: net(z), 2, x).square().sum().backward()
    g = x.grad.clone()
    x.grad = None
    net(x).square().sum().backward()
    torch.testing.assert_close(g, x.grad, rtol=1e-5, atol=1e-6)  # padding rows contribute nothing
    out = micro_batched(lambda z: Out(net(z)), 2, x.detach())
    assert out.sample.shape == (3, 3, 8, 8)
    with pytest.raises(ValueError, match="micro_batch"):
        micro_batched(net, 0, x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.cuda is not available on this machine")
def test_cuda_auto_batch_probes_the_prior(isolated_prior_cache):
    from omegaconf import OmegaConf

    from bench.methods.ddrm import DDRM
    from tests.conftest import CONF_DIR

    method = DDRM(OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / "adm_tiny.yaml")), steps=2)
    method.setup(torch.device("cuda"))
    b, rule = resolve_batch_size("auto", method, 1000, torch.device("cuda"), 32)
    assert 1 <= b <= AUTO_MAX_BATCH and rule["per_image_bytes"] > 0 and rule["free_bytes"] > 0
    assert rule["probe_input_shape"] == [3, 32, 32] and "probe" in rule["rule"]
    assert b == choose_batch(rule["free_bytes"], rule["per_image_bytes"], 1000, fixed_bytes=rule["fixed_bytes"])
