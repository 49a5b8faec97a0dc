"""Check method=repaint against the official RePaint code (andreas128/RePaint) on identical inputs and noise.

    python tools/equivalence/repaint.py /path/to/RePaint      # a checkout of github.com/andreas128/RePaint

It imports the official ``guided_diffusion`` package from that checkout (nothing of it is copied here) and compares:

1. the time list: official ``scheduler.get_schedule_jump`` vs :func:`bench.methods.repaint_schedule.jump_schedule`
   on a grid of arguments (nested jump levels, n_sample, start_resampling included) and the default's 2,410 calls;
2. one ``p_sample`` with a ``gt_keep_mask`` (the known-region injection + the learned-range ancestral step) at
   several respaced steps, and one ``undo``, vs :func:`~bench.methods.repaint.inject_known` +
   :func:`~bench.methods.repaint.reverse_step` and :func:`~bench.methods.repaint.undo`, with the same noise;
3. the whole official ``p_sample_loop_progressive`` (t_T = 250, jumps 10 x 10) vs ``RePaint.restore`` on a
   ``bench.operators.Inpainting`` task (y -> [-1, 1] -> pinv: the harness's known-region path), both drawing
   their noise from identically seeded generators in the same order.

Both sides use one deterministic network: a small random convolution with 2C output channels (eps and the
learned-range variance values) that depends on the timestep, so the respaced timestep map is checked too.
The official sampler's ``conf`` is a stand-in dict with its keys as in ``confs/*.yml``. Prints the max abs
differences; exit code 1 if any exceeds 1e-5 (schedules must match exactly).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tools.equivalence.tiny_eps import TinyEps  # noqa: E402

TOL = 1e-5



class Conf(dict):
    """What the official sampler reads from its conf (``conf_mgt.Default_Conf``: missing keys are None)."""

    def __getattr__(self, key):
        return self.get(key)

    def pget(self, name, default=None):
        return default


class NoiseFrom:
    """``torch.randn_like`` drawing from a seeded generator (the official code draws from the global RNG)."""

    def __init__(self, gen: torch.Generator):
        self.gen = gen

    def __call__(self, x, **_):
        return torch.randn(x.shape, generator=self.gen, dtype=x.dtype, device=x.device)


def patched_randn_like(fn):
    original = torch.randn_like
    torch.randn_like = fn
    return original


def official_diffusion(gd, respace, conf, t_T: int):
    betas = gd.get_named_beta_schedule("linear", 1000, use_scale=True)
    return respace.SpacedDiffusion(use_timesteps=respace.space_timesteps(1000, str(t_T)), betas=betas,
                                   model_mean_type=gd.ModelMeanType.EPSILON,
                                   model_var_type=gd.ModelVarType.LEARNED_RANGE, loss_type=gd.LossType.MSE,
                                   rescale_timesteps=False, conf=conf)


def check_schedules(scheduler, jump_schedule, count_network_calls) -> list[str]:
    bad = []
    grid = itertools.product([1, 2, 7, 30], [1, 3, 10], [1, 2, 10], [1, 2], [1, 4], [1, 3], [1, 2], [1, 2],
                             [100000000, 20])
    n = 0
    for tT, jl, jn, ns, j2l, j2n, j3l, j3n, sr in grid:
        kw = dict(t_T=tT, n_sample=ns, jump_length=jl, jump_n_sample=jn, jump2_length=j2l, jump2_n_sample=j2n,
                  jump3_length=j3l, jump3_n_sample=j3n, start_resampling=sr)
        if scheduler.get_schedule_jump(**kw) != jump_schedule(**kw):
            bad.append(f"schedule differs for {kw}")
        n += 1
    official = scheduler.get_schedule_jump(t_T=250, n_sample=1, jump_length=10, jump_n_sample=10)
    calls = count_network_calls(official)
    print(f"schedules: {n} argument sets compared, {len(bad)} differ; official default: {len(official)} entries, "
          f"{calls} network calls (ours {count_network_calls(jump_schedule())})")
    if calls != 2410 or count_network_calls(jump_schedule()) != 2410:
        bad.append("the default schedule does not have 2,410 network calls")
    return bad


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("official", type=Path, help="a checkout of github.com/andreas128/RePaint")
    args = parser.parse_args(argv)
    root = args.official.resolve()
    if not (root / "guided_diffusion" / "scheduler.py").is_file():
        print(f"{root} is not a RePaint checkout (no guided_diffusion/scheduler.py); "
              "git clone https://github.com/andreas128/RePaint and pass its path", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(root))
    from guided_diffusion import gaussian_diffusion as gd, respace, scheduler

    from bench.diffusion import linear_betas
    from bench.methods import repaint as ours
    from bench.methods.repaint_schedule import count_network_calls, jump_schedule
    from bench.models.prior import DiffusionPrior
    from bench.operators import Inpainting
    from bench.tasks import Task

    torch.set_grad_enabled(False)
    failures = check_schedules(scheduler, jump_schedule, count_network_calls)
    diffs: dict[str, float] = {}

    conf = Conf(inpa_inj_sched_prev=True, inpa_inj_sched_prev_cumnoise=False, respace_interpolate=False,
                use_value_logger=False, schedule_jump_params=dict(t_T=250, n_sample=1, jump_length=10,
                                                                  jump_n_sample=10))
    diffusion = official_diffusion(gd, respace, conf, 250)
    net = TinyEps()
    betas = linear_betas(1000)
    diffs["betas (1000)"] = float((torch.from_numpy(gd.get_named_beta_schedule("linear", 1000, True)) - betas)
                                  .abs().max())
    prior = DiffusionPrior(net=net, image_size=8, betas=betas, learn_sigma=True, info={"model": "tiny-eps"},
                           variance="learned_range")
    model_cfg = {"name": "tiny-eps", "kind": "adm", "diffusion": {"steps": 1000}}
    method = ours.RePaint(model_cfg, steps=250)
    method.use_prior(prior, "cpu")
    diffs["respaced betas"] = float((torch.from_numpy(diffusion.betas).float() - method.betas).abs().max())

    # --- 2. one p_sample with gt_keep_mask, one undo, identical noise ------------------------------------------
    g = torch.Generator().manual_seed(1)
    B, shape = 2, (2, 3, 8, 8)
    gt = torch.rand(shape, generator=g) * 2 - 1
    mask = (torch.rand(B, 1, 8, 8, generator=g) > 0.4).float().expand(shape).contiguous()
    for j in (249, 137, 10, 1, 0):
        x = torch.randn(shape, generator=g)
        z, z_inj = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        queue = [z, z_inj]  # official p_sample: the step's noise first, then the injection noise
        original = patched_randn_like(lambda x_, **_: queue.pop(0))
        try:
            out = diffusion.p_sample(net, x, torch.full((B,), j), clip_denoised=True,
                                     model_kwargs={"gt": gt, "gt_keep_mask": mask}, conf=conf,
                                     pred_xstart=torch.zeros(shape))
        finally:
            torch.randn_like = original
        injected = ours.inject_known(x, gt, mask, method.abar[j], z_inj)
        sample, x0 = ours.reverse_step(prior.model_output, method.sched, "learned_range", j, injected, z)
        diffs[f"p_sample sample j={j}"] = float((out["sample"] - sample).abs().max())
        diffs[f"p_sample pred_xstart j={j}"] = float((out["pred_xstart"] - x0).abs().max())
    for j in (0, 9, 120, 248):
        x, z = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        original = patched_randn_like(lambda x_, **_: z)
        try:
            up = diffusion.undo(None, x, est_x_0=None, t=torch.full((B,), j) + 1)
        finally:
            torch.randn_like = original
        diffs[f"undo j={j}->{j + 1}"] = float((up - ours.undo(x, method.betas[j + 1], z)).abs().max())

    # --- 3. the whole loop: official p_sample_loop_progressive vs RePaint.restore on an Inpainting task -------
    task = Task(name="inpaint", version=1, operator=functools.partial(Inpainting, missing=0.25))
    deg = task.build(8, seed=3)
    x01 = torch.rand(1, 3, 8, 8, generator=g)
    y = deg.operator.A(x01)
    gen_ours, gen_official = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    restored = method.restore(y, deg, [gen_ours])
    x_T = torch.randn((1, 3, 8, 8), generator=gen_official)
    keep = deg.operator.mask.float()[None, None].expand(1, 3, 8, 8)
    original = patched_randn_like(NoiseFrom(gen_official))
    try:
        final = None
        for final in diffusion.p_sample_loop_progressive(net, (1, 3, 8, 8), noise=x_T,
                                                          model_kwargs={"gt": x01 * 2 - 1, "gt_keep_mask": keep},
                                                          device=torch.device("cpu"), conf=conf):
            pass
    finally:
        torch.randn_like = original
    official01 = ((final["sample"].clamp(-1, 1) + 1) / 2)
    diffs["full loop t_T=250 (restore vs official, [0, 1])"] = float((official01 - restored).abs().max())
    print(f"full loop: {method.last_nfe} network calls (official schedule: "
          f"{count_network_calls(scheduler.get_schedule_jump(**conf.schedule_jump_params))})")
    if method.last_nfe != 2410:
        failures.append(f"restore made {method.last_nfe} network calls, not 2,410")

    return verdict(diffs, failures)


def verdict(diffs: dict[str, float], failures: list[str]) -> int:
    """Print each max difference and the verdict; 0 when every difference is <= TOL and nothing else failed."""
    width = max(map(len, diffs), default=0)
    for key, value in diffs.items():
        flag = "" if value <= TOL else "   <-- above 1e-5"
        print(f"max |official - ours| {key:<{width}s} {value:.3e}{flag}")
        if value > TOL:
            failures.append(f"{key}: {value:.3e}")
    if failures:
        print("FAIL:\n  " + "\n  ".join(failures))
        return 1
    print(f"OK: every difference <= {TOL:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
