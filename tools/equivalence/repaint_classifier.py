"""Check RePaint's class-conditional + classifier-guided variant against the official code (andreas128/RePaint).

    python tools/equivalence/repaint_classifier.py /path/to/RePaint   # a checkout of github.com/andreas128/RePaint

It imports the official ``guided_diffusion`` package from that checkout (nothing of it is copied here) and compares:

1. the 256x256 classifier: official ``script_util.create_classifier`` at ``classifier_defaults()`` (the flags of
   ``confs/test_inet256_*.yml``) vs :func:`bench.models.adm_classifier.create_classifier`: the same state_dict keys
   and shapes (so ``256x256_classifier.pt`` loads strictly), the official one's weights loaded into ours strictly;
2. a small random ``EncoderUNetModel`` (attention pooling, scale-shift norm, resblock up/down; every parameter
   perturbed so no zero-initialised layer hides anything), its weights copied into ours: the forward logits;
3. one classifier-guided ``p_sample`` (known-region injection, ``p_mean_variance``, then ``condition_mean`` with a
   ``cond_fn`` written as ``test.py`` defines it: scale * grad_x log_softmax(classifier(x, t))[y]) on a
   class-conditional toy net that receives ``y``, vs :func:`~bench.methods.repaint.inject_known` +
   :func:`~bench.methods.repaint.reverse_step` with :func:`~bench.methods.repaint.classifier_gradient`, at several
   respaced steps (j = 0 included: the official shifts the mean there too), identical inputs and noise;
4. the whole guided loop (t_T = 50, jumps 5 x 3) of ``p_sample_loop_progressive(cond_fn=..., model_kwargs={"y":
   ...})`` vs ``RePaint.restore`` with ``method.class_label=<that class>`` and a classifier config, on an Inpainting
   task, both drawing their noise from identically seeded generators in the same order.

Prints the max abs differences; exit code 1 if any exceeds 1e-5.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tools.equivalence.repaint import (  # noqa: E402
    Conf, NoiseFrom, TinyEps, official_diffusion, patched_randn_like, verdict)

NUM_CLASSES = 10
SMALL = dict(image_size=16, classifier_width=32, classifier_depth=1, classifier_attention_resolutions="8",
             classifier_use_scale_shift_norm=True, classifier_resblock_updown=True, classifier_pool="attention",
             channel_mult="1,2", num_head_channels=32, num_classes=NUM_CLASSES)


class TinyEpsCond(TinyEps):
    """TinyEps plus a per-class bias on its output: a class-conditional toy net (``num_classes`` as the ADM's)."""

    num_classes = NUM_CLASSES

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        g = torch.Generator().manual_seed(seed + 1)
        self.label_bias = torch.nn.Parameter(0.3 * torch.randn(NUM_CLASSES, 6, generator=g))

    def forward(self, x, t, y=None, **_):
        out = super().forward(x, t)
        return out if y is None else out + self.label_bias[y][:, :, None, None]


def official_small(unet):
    """The official EncoderUNetModel with SMALL's flags."""
    return unet.EncoderUNetModel(image_size=16, in_channels=3, model_channels=32, out_channels=NUM_CLASSES,
                                 num_res_blocks=1, attention_resolutions=(2,), channel_mult=(1, 2),
                                 num_head_channels=32, use_scale_shift_norm=True, resblock_updown=True,
                                 pool="attention")


def perturb_(net: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def official_cond_fn(classifier, scale: float):
    """``cond_fn`` as official ``test.py`` defines it (the gradient of the chosen class's log-probability)."""
    def cond_fn(x, t, y=None, **_):
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            log_probs = F.log_softmax(classifier(x_in, t), dim=-1)
            return torch.autograd.grad(log_probs[range(len(log_probs)), y.view(-1)].sum(), x_in)[0] * scale
    return cond_fn


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("official", type=Path, help="a checkout of github.com/andreas128/RePaint")
    args = parser.parse_args(argv)
    root = args.official.resolve()
    if not (root / "guided_diffusion" / "unet.py").is_file():
        print(f"{root} is not a RePaint checkout (no guided_diffusion/unet.py); "
              "git clone https://github.com/andreas128/RePaint and pass its path", file=sys.stderr)
        return 2
    sys.path.insert(0, str(root))
    from guided_diffusion import gaussian_diffusion as gd, respace, script_util, unet

    from bench.diffusion import linear_betas
    from bench.methods import repaint as ours
    from bench.models.adm_classifier import create_classifier, load_classifier
    from bench.models.prior import DiffusionPrior
    from bench.operators import Inpainting
    from bench.tasks import Task

    torch.set_grad_enabled(False)
    failures: list[str] = []
    diffs: dict[str, float] = {}

    # --- 1. the released 256x256 layout ----------------------------------------------------------------------
    off256 = script_util.create_classifier(**{**script_util.classifier_defaults(), "image_size": 256})
    ours256 = create_classifier(256)
    k_off = {k: tuple(v.shape) for k, v in off256.state_dict().items()}
    k_ours = {k: tuple(v.shape) for k, v in ours256.state_dict().items()}
    if k_off != k_ours:
        failures.append(f"256x256 state_dict layouts differ: only official {sorted(set(k_off) - set(k_ours))[:5]}, "
                        f"only ours {sorted(set(k_ours) - set(k_off))[:5]}, shapes differ "
                        f"{[k for k in k_off.keys() & k_ours.keys() if k_off[k] != k_ours[k]][:5]}")
    ours256.load_state_dict(off256.state_dict(), strict=True)
    print(f"256x256 classifier: {len(k_off)} tensors, {sum(p.numel() for p in off256.parameters()):,} parameters, "
          f"keys and shapes {'identical' if k_off == k_ours else 'DIFFERENT'}; official weights load strictly")
    del off256, ours256

    # --- 2. a small classifier, weights copied: forward logits -------------------------------------------------
    off = official_small(unet)
    perturb_(off, 0)
    small = create_classifier(**SMALL)
    small.load_state_dict(off.state_dict(), strict=True)
    off.eval(), small.eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 16, 16, generator=g)
    t = torch.tensor([0, 17, 503, 999])
    diffs["classifier logits (16 px, 10 classes)"] = float((off(x, t) - small(x, t)).abs().max())

    # --- 3. one classifier-guided p_sample, class-conditional net ----------------------------------------------
    scale = 3.0  # not 1, so a missing or doubled scale shows
    conf = Conf(inpa_inj_sched_prev=True, inpa_inj_sched_prev_cumnoise=False, respace_interpolate=False,
                use_value_logger=False, schedule_jump_params=dict(t_T=50, n_sample=1, jump_length=5,
                                                                  jump_n_sample=3))
    diffusion = official_diffusion(gd, respace, conf, 50)
    net = TinyEpsCond()
    prior = DiffusionPrior(net=net, image_size=16, betas=linear_betas(1000), learn_sigma=True,
                           info={"model": "tiny-eps-cond"}, variance="learned_range")
    clf_cfg = {"name": "small", "arch": SMALL, "asset": None, "init_seed": 0}
    method = ours.RePaint({"name": "tiny-eps-cond", "kind": "adm", "diffusion": {"steps": 1000}}, steps=50,
                          jump_length=5, jump_n_sample=3, classifier=clf_cfg, classifier_scale=scale, class_label=7)
    method.use_prior(prior, "cpu")
    clf = load_classifier(clf_cfg, "cpu")
    perturb_(clf, 2)  # the loaded (cached) classifier is the one the method uses
    off.load_state_dict(clf.state_dict(), strict=True)
    cond_fn = official_cond_fn(off, scale)
    B, shape = 2, (2, 3, 16, 16)
    labels = torch.tensor([3, 8])
    gt = torch.rand(shape, generator=g) * 2 - 1
    mask = (torch.rand(B, 1, 16, 16, generator=g) > 0.4).float().expand(shape).contiguous()
    for j in (49, 30, 7, 1, 0):
        x = torch.randn(shape, generator=g)
        z, z_inj = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        queue = [z, z_inj]
        original = patched_randn_like(lambda x_, **_: queue.pop(0))
        try:
            out = diffusion.p_sample(net, x, torch.full((B,), j), clip_denoised=True, cond_fn=cond_fn,
                                     model_kwargs={"gt": gt, "gt_keep_mask": mask, "y": labels}, conf=conf,
                                     pred_xstart=torch.zeros(shape))
        finally:
            torch.randn_like = original
        injected = ours.inject_known(x, gt, mask, method.abar[j], z_inj)
        sample, x0 = ours.reverse_step(lambda x_, t_: prior.model_output(x_, t_, labels), method.sched,
                                       "learned_range", j, injected, z,
                                       lambda x_, t_: ours.classifier_gradient(clf, x_, t_, labels, scale))
        diffs[f"guided p_sample sample j={j}"] = float((out["sample"] - sample).abs().max())
        diffs[f"guided p_sample pred_xstart j={j}"] = float((out["pred_xstart"] - x0).abs().max())
        if j == 7:  # the guidance must matter at this scale, else the comparison proves little
            unguided, _ = ours.reverse_step(lambda x_, t_: prior.model_output(x_, t_, labels), method.sched,
                                            "learned_range", j, injected, z)
            shift = float((unguided - sample).abs().max())
            print(f"guidance shift of the mean at j=7: max {shift:.3e}")
            if shift < 1e-3:
                failures.append(f"the guidance barely moves the mean ({shift:.1e}): the check is too weak")

    # --- 4. the whole guided loop: official p_sample_loop_progressive vs RePaint.restore -----------------------
    task = Task(name="inpaint", version=1, operator=functools.partial(Inpainting, missing=0.25))
    deg = task.build(16, seed=3)
    x01 = torch.rand(1, 3, 16, 16, generator=g)
    y = deg.operator.A(x01)
    gen_ours, gen_official = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    restored = method.restore(y, deg, [gen_ours])
    x_T = torch.randn((1, 3, 16, 16), generator=gen_official)
    keep = deg.operator.mask.float()[None, None].expand(1, 3, 16, 16)
    original = patched_randn_like(NoiseFrom(gen_official))
    try:
        final = None
        for final in diffusion.p_sample_loop_progressive(
                net, (1, 3, 16, 16), noise=x_T, cond_fn=cond_fn, device=torch.device("cpu"), conf=conf,
                model_kwargs={"gt": x01 * 2 - 1, "gt_keep_mask": keep, "y": torch.tensor([7])}):
            pass
    finally:
        torch.randn_like = original
    diffs["full guided loop t_T=50 (restore vs official, [0, 1])"] = float(
        ((final["sample"].clamp(-1, 1) + 1) / 2 - restored).abs().max())
    print(f"full guided loop: {method.last_nfe} network calls, {method.last_classifier_calls} classifier "
          f"forward+backward passes")
    if method.last_classifier_calls != method.last_nfe:
        failures.append("the classifier was not called once per network call")

    return verdict(diffs, failures)


if __name__ == "__main__":
    sys.exit(main())
