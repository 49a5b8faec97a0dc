"""RePaint's class-conditional + classifier-guided variant (official ImageNet confs): the noisy-image classifier
(bench/models/adm_classifier.py), the guidance term, the class labels and their errors. Official-code comparison:
tests/equivalence/test_official_repaint.py (needs a checkout)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from bench.methods.repaint import RANDOM_PER_BATCH, RePaint, classifier_gradient, draw_labels, reverse_step
from bench.models.adm_classifier import create_classifier
from bench.models.adm_unet import create_model, random_init_
from bench.models.prior import DiffusionPrior
from tests.conftest import CONF_DIR
from tests.methods.solvers_common import BETAS, GAUSS_MODEL, gaussian_prior, gens, task

SMALL = dict(image_size=16, classifier_width=32, classifier_depth=1, classifier_attention_resolutions="8",
             channel_mult="1,2", num_head_channels=32, num_classes=10)
CLF = {"name": "small", "arch": SMALL, "asset": None, "init_seed": 0}


def official_layout(emb=128) -> dict[str, tuple]:
    """Key -> shape of guided-diffusion's EncoderUNetModel state_dict for SMALL (written from its module tree:
    ResBlock in_layers.{0,2} / emb_layers.1 / out_layers.{0,3} / skip_connection, AttentionBlock norm / qkv /
    proj_out, head out.0 norm + out.2 AttentionPool2d)."""
    d: dict[str, tuple] = {"time_embed.0.weight": (emb, 32), "time_embed.0.bias": (emb,),
                           "time_embed.2.weight": (emb, emb), "time_embed.2.bias": (emb,),
                           "input_blocks.0.0.weight": (32, 3, 3, 3), "input_blocks.0.0.bias": (32,)}

    def res(p, cin, cout):
        d.update({f"{p}.in_layers.0.weight": (cin,), f"{p}.in_layers.0.bias": (cin,),
                  f"{p}.in_layers.2.weight": (cout, cin, 3, 3), f"{p}.in_layers.2.bias": (cout,),
                  f"{p}.emb_layers.1.weight": (2 * cout, emb), f"{p}.emb_layers.1.bias": (2 * cout,),
                  f"{p}.out_layers.0.weight": (cout,), f"{p}.out_layers.0.bias": (cout,),
                  f"{p}.out_layers.3.weight": (cout, cout, 3, 3), f"{p}.out_layers.3.bias": (cout,)})
        if cin != cout:
            d.update({f"{p}.skip_connection.weight": (cout, cin, 1, 1), f"{p}.skip_connection.bias": (cout,)})

    def attn(p, c):
        d.update({f"{p}.norm.weight": (c,), f"{p}.norm.bias": (c,), f"{p}.qkv.weight": (3 * c, c, 1),
                  f"{p}.qkv.bias": (3 * c,), f"{p}.proj_out.weight": (c, c, 1), f"{p}.proj_out.bias": (c,)})

    res("input_blocks.1.0", 32, 32)
    res("input_blocks.2.0", 32, 32)  # resblock_updown: the downsampling ResBlock
    res("input_blocks.3.0", 32, 64)
    attn("input_blocks.3.1", 64)     # 8 px = downsample rate 2
    res("middle_block.0", 64, 64)
    attn("middle_block.1", 64)
    res("middle_block.2", 64, 64)
    d.update({"out.0.weight": (64,), "out.0.bias": (64,), "out.2.positional_embedding": (64, 8 * 8 + 1),
              "out.2.qkv_proj.weight": (192, 64, 1), "out.2.qkv_proj.bias": (192,),
              "out.2.c_proj.weight": (10, 64, 1), "out.2.c_proj.bias": (10,)})
    return d


def test_classifier_layout_strict_load_and_logits():
    """A synthetic state dict in the official key layout loads strictly; logits (B, classes) depend on x and t; the
    256 px flags of create_classifier build the released checkpoint's 54,096,360 parameters."""
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(s, generator=g) * 0.1 for k, s in official_layout().items()}
    net = create_classifier(**SMALL).eval()
    net.load_state_dict(sd, strict=True)
    assert torch.equal(net.out[2].positional_embedding, sd["out.2.positional_embedding"])
    x = torch.randn(3, 3, 16, 16, generator=g)
    with torch.no_grad():
        a, b = net(x, torch.tensor([5, 5, 5])), net(x, torch.tensor([900, 900, 900]))
    assert a.shape == (3, 10) and not torch.allclose(a, b) and not torch.allclose(a[0], a[1])
    assert sum(p.numel() for p in create_classifier(256).parameters()) == 54_096_360
    with pytest.raises(ValueError, match="pool='spatial' is not implemented"):
        create_classifier(**SMALL, classifier_pool="spatial")


class Linear(torch.nn.Module):
    """logits = W flat(x) + b: grad_x log softmax_y = W_y - sum_k p_k W_k in closed form."""

    def __init__(self, n=3 * 4 * 4, k=5):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.W, self.b = torch.randn(k, n, generator=g) * 0.3, torch.randn(k, generator=g)

    def forward(self, x, t):
        return x.flatten(1) @ self.W.T + self.b


def test_guidance_is_variance_times_scale_times_grad_log_p():
    clf, g = Linear(), torch.Generator().manual_seed(2)
    x, labels = torch.randn(2, 3, 4, 4, generator=g), torch.tensor([4, 1])
    p = torch.softmax(clf(x, None), -1)
    exact = (clf.W[labels] - p @ clf.W).reshape(x.shape)
    t = torch.zeros(2, dtype=torch.long)
    torch.testing.assert_close(classifier_gradient(clf, x, t, labels, 2.5), 2.5 * exact)
    m = RePaint(GAUSS_MODEL, steps=10, jump_n_sample=1)
    m.use_prior(gaussian_prior(0.1, 0.1, size=4), "cpu")
    z = torch.randn(x.shape, generator=g)
    guide = lambda x_, t_: classifier_gradient(clf, x_, t_, labels, 2.5)  # noqa: E731
    for j in (7, 0):  # the official shifts the mean at the last step too
        plain, _ = reverse_step(m.prior.model_output, m.sched, "fixed_small", j, x, z)
        guided, _ = reverse_step(m.prior.model_output, m.sched, "fixed_small", j, x, z, guide)
        torch.testing.assert_close(guided - plain, m.sched.log_var_min[j].exp() * 2.5 * exact, atol=1e-6, rtol=1e-5)


class Spy(torch.nn.Module):
    """A tiny class-conditional ADM recording the labels it is called with."""

    def __init__(self):
        super().__init__()
        self.net = random_init_(create_model(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2",
                                             attention_resolutions="8", num_head_channels=32, learn_sigma=True,
                                             class_cond=True)).eval().requires_grad_(False)
        self.num_classes, self.seen = self.net.num_classes, []

    def forward(self, x, t, y=None):
        self.seen.append(None if y is None else y.clone())
        return self.net(x, t, y)


def cond_repaint(net=None, classifier=None, **kw):
    m = RePaint(GAUSS_MODEL, steps=4, jump_length=2, jump_n_sample=2, classifier=classifier, **kw)
    m.use_prior(DiffusionPrior(net=net or Spy(), image_size=16, betas=BETAS, learn_sigma=True,
                               info={"model": "tiny-cond"}), "cpu")
    return m


def run(m, ids):
    deg = task("inpaint").build(16)
    return m.restore(deg.operator.A(torch.full((len(ids), 3, 16, 16), 0.4)), deg, gens(ids))


def test_labels_reach_a_class_conditional_net():
    """Every network call gets the batch's labels: the fixed class, or the per-image draws of random_per_batch
    (the first draw of each image's generator); the label changes the result."""
    net = Spy()
    fixed = cond_repaint(net, class_label=3)
    out3 = run(fixed, (0, 1))
    assert len(net.seen) == fixed.last_nfe and all(torch.equal(y, torch.tensor([3, 3])) for y in net.seen)
    assert not torch.equal(out3, run(cond_repaint(class_label=5), (0, 1)))
    net.seen.clear()
    run(cond_repaint(net), ids := tuple(range(6)))
    expected = torch.stack([torch.randint(1000, (), generator=g) for g in gens(ids)])
    assert all(torch.equal(y, expected) for y in net.seen) and len(set(expected.tolist())) > 1
    with pytest.raises(ValueError, match="not class-conditional"):
        gaussian_prior(size=4).model_output(torch.zeros(1, 3, 4, 4), torch.zeros(1, dtype=torch.long),
                                            torch.zeros(1, dtype=torch.long))


def test_random_per_batch_and_guided_result_do_not_depend_on_the_batch():
    """An image's label and its guided restoration are the same alone and inside a batch; the guidance changes
    the result and costs one classifier forward + backward per network call."""
    labels = draw_labels(gens((0, 1, 2)), RANDOM_PER_BATCH, 10, "cpu")
    assert torch.equal(draw_labels(gens((1,)), RANDOM_PER_BATCH, 10, "cpu"), labels[1:2])
    clf = {**CLF, "arch": {**SMALL, "num_classes": 1000}}
    guided = cond_repaint(classifier=clf, classifier_scale=50.0)
    batch, alone = run(guided, (0, 1)), run(guided, (1,))
    torch.testing.assert_close(alone, batch[1:], rtol=0, atol=1e-5)
    assert guided.last_classifier_calls == guided.last_nfe == guided.nfe
    info = guided.describe()["classifier"]
    assert info["forward_calls"] == info["backward_calls"] == guided.nfe and info["scale"] == 50.0
    assert guided.backprop_through_prior is False
    assert not torch.allclose(batch, run(cond_repaint(), (0, 1)), atol=1e-4)
    assert cond_repaint(classifier=clf, classifier_scale=0.0).describe()["classifier"] is None  # scale 0 = off


def test_clear_errors():
    for bad in ("random", -1, True, 2.5):
        with pytest.raises(ValueError, match="class_label=.*random_per_batch"):
            RePaint(GAUSS_MODEL, class_label=bad)
    with pytest.raises(ValueError, match="out of range for 1000 classes"):
        cond_repaint(class_label=1000)
    with pytest.raises(ValueError, match="must be a classifier config or null"):
        RePaint(GAUSS_MODEL, classifier="adm_imagenet256")
    with pytest.raises(ValueError, match="classifier_scale=-1"):
        RePaint(GAUSS_MODEL, classifier_scale=-1)
    with pytest.raises(ValueError, match="is for 16-px images but the prior"):
        RePaint(GAUSS_MODEL, classifier=CLF).use_prior(gaussian_prior(size=8), "cpu")
    with pytest.raises(ValueError, match="the prior has 1000 classes but the classifier 10"):
        cond_repaint(classifier=CLF)
    guided, deg = cond_repaint(classifier={**CLF, "arch": {**SMALL, "num_classes": 1000}}), task("inpaint").build(8)
    with pytest.raises(ValueError, match="takes 16-px images .* but these are 8 px. Fix: dataset.image_size=16"):
        guided.restore(deg.operator.A(torch.zeros(1, 3, 8, 8)), deg, gens((0,)))


def test_configs():
    """Off by default; the classifier group fills method.classifier; the model YAML is class-conditional."""
    node = OmegaConf.load(CONF_DIR / "method" / "repaint.yaml").method
    assert node.classifier is None and node.classifier_scale == 1.0 and node.class_label == RANDOM_PER_BATCH
    clf = OmegaConf.load(CONF_DIR / "classifier" / "adm_imagenet256.yaml")
    assert clf.asset.url.endswith("jul-2021/256x256_classifier.pt") and clf.arch.classifier_pool == "attention"
    model = OmegaConf.load(CONF_DIR / "model" / "adm_imagenet256_cond.yaml")
    assert model.arch.class_cond is True and model.asset.url.endswith("jul-2021/256x256_diffusion.pt")
