"""DGP: Deep Generative Prior (Pan et al., ECCV 2020), a GAN-inversion baseline for linear tasks.

Notation (paper §3 / official ``models/dgp.py``): G(z, e) the BigGAN generator with latent z and class
embedding e = W_emb onehot(c); phi the degradation (here the task's linear operator A); y the measurement.

1. Latent search (``DGP.select_z``): draw ``candidates`` pairs (z_j, c_j) from the image's own generator,
   z_j = truncation * TruncNormal(-2, 2) (pytorch-pretrained-biggan's ``truncated_noise_sample``); c_j is
   the known label, else (``class_search``) uniform over the classes. Keep argmin_j ||A(G(z_j, c_j)) - y||^2.
2. Progressive reconstruction (``DGP.run``): for stage s = 1..S, ``iterations[s]`` Adam steps
   (betas (0, 0.999), eps 1e-8, as DGP) on z (lr ``lr_z[s]``) and on the generator parameter groups
   0 .. ``stages[s]``-1 (DGP ``--ft_num``; lr ``lr_g[s] * lr_ratio[s]**i`` for group i; groups from
   :func:`bench.models.biggan.finetune_groups`: gen_z, then one group per output resolution, shallow to
   deep), and on e when ``update_embed`` (DGP ``--update_embed``), minimising

       L = mse_weight[s] * mean((2 (A(x) - y))^2)              DGP's MSE, in [-1, 1] units
         + feature_weight[s] * F(P(A(x)), P(y))                 feature term (below)
         + nll_weight * mean(z^2 / 2)                           DGP's ``nll``,  x = (G(z, e) + 1) / 2

   P(.) = the operator's measurement picture in [-1, 1] resized (bilinear) to the image size, as DGP
   compares degraded images at full resolution (its SR branch upsamples the LR image bilinearly).
   The output is the image of the last iteration (DGP saves that ``x``).

Feature term F: DGP uses L1 distances of the BigGAN *discriminator*'s features (``DiscriminatorLoss``);
those weights are not released with pytorch-pretrained-biggan (generator only) and nothing comparable is
available offline (``lpips`` bundles only its linear heads, the VGG/AlexNet backbones are downloads). So:

* ``feature=multiscale`` (default): L1 over a 4-level average-pooling pyramid of P(.) and of its horizontal
  and vertical finite differences (a fixed, weight-free multi-scale pixel/gradient loss). A DEVIATION:
  it constrains edges and coarse structure but carries no learned perceptual prior.
* ``feature=vgg16``: DGP's own alternative (``--ftr_type VGG``): MSE of torchvision VGG16 ``features[:21]``
  (to relu4_2), fed [-1, 1] pictures as DGP does; needs the torchvision ImageNet weights (download or torch
  hub cache; offline and missing -> AssetError).
* ``feature=none``.

Other differences from the official code, all forced by the BigGAN-deep port: no instance-norm option
(DGP ``--use_in``); candidates are ranked by the measurement MSE, not by discriminator features;
frozen groups get no gradient (DGP keeps them in Adam with lr 0). G's resolution differing from the image
size is bridged by bilinear (antialiased) resizing of G's output (tiny model: 32 -> 64).

Cost: every image fine-tunes its own deep copy of the generator (images of a batch run one after the
other; BigGAN-deep-256 holds ~56M parameters + Adam state per copy). ``last_nfe`` = candidates +
sum(iterations) generator forward passes per image (each iteration also runs one backward pass).
Paper-like settings are listed in ``conf/method/dgp.yaml``.

Labels: the ImageNet class helps (DGP uses the dataset's label; ``class_search`` is its ``category < 0``
branch). Set them per batch with :meth:`DGP.set_labels` (or ``method.labels = [...]`` or
``restore(..., labels=...)``); they are consumed by the next ``restore`` call. An unconditional generator
(``num_classes == 1``, the embedded ``source=embedded`` one) has a single class: labels are ignored and
the class search draws only class 0, so ``class_search`` true or false gives the same result.

Generators (``method.generator``, :mod:`bench.models.biggan`): ``source=embedded`` (default) is the small
64-px BigGAN-deep this project trained (card ``bench/priors/biggan64_imagenet96.md``; an "embedded demo
prior", recorded in :meth:`DGP.describe` with its path and sha256); ``tiny`` is random (tests only);
``biggan-deep-*`` / ``local_dir`` are the real BigGAN-deep checkpoints.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.methods.base import Method
from bench.models.assets import AssetError, _is_offline, load_state_dict
from bench.models.biggan import build_generator, check_generator_config, describe_config, finetune_groups
from bench.tasks import Degradation

FEATURES = ("multiscale", "vgg16", "none")
BETAS, ADAM_EPS = (0.0, 0.999), 1e-8  # DGP: --G_B1 0.0 --G_B2 0.999, eps=1e-8 for z and G optimisers


def truncated_normal(generator: torch.Generator, shape: tuple[int, ...], bound: float = 2.0) -> Tensor:
    """N(0, 1) truncated to [-bound, bound] by resampling, drawn only from ``generator``."""
    dev = generator.device
    out = torch.randn(shape, generator=generator, device=dev)
    bad = out.abs() > bound
    while bad.any():
        out[bad] = torch.randn(int(bad.sum()), generator=generator, device=dev)
        bad = out.abs() > bound
    return out


def multiscale_loss(a: Tensor, b: Tensor, levels: int = 4) -> Tensor:
    """Sum over an average-pooling pyramid of L1(a, b) + L1 of their x/y finite differences."""
    total = a.new_zeros(())
    for s in range(levels):
        if s:
            if min(a.shape[-2:]) < 4:
                break
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        total = total + F.l1_loss(a, b)
        total = total + F.l1_loss(a.diff(dim=-1), b.diff(dim=-1)) + F.l1_loss(a.diff(dim=-2), b.diff(dim=-2))
    return total


def vgg16_features(offline: bool | None = None) -> torch.nn.Module:
    """Frozen torchvision VGG16 ``features[:21]`` (conv1_1 .. relu4_2; DGP ``subsequence(vgg.features, '20')``)
    with the ImageNet weights from the torch hub cache, downloaded there when online."""
    from torchvision.models import VGG16_Weights, vgg16

    weights = VGG16_Weights.IMAGENET1K_V1
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if path.is_file():
        state = load_state_dict(path)
    elif _is_offline(offline):
        raise AssetError(f"dgp feature=vgg16 needs the torchvision VGG16 ImageNet weights, missing file: {path} "
                         f"(downloads are off).\nFix: download {weights.url} to {path}, or use "
                         f"method.feature=multiscale")
    else:
        try:
            state = weights.get_state_dict(progress=False)
        except (OSError, RuntimeError) as e:
            raise AssetError(f"dgp feature=vgg16: download of {weights.url} failed ({e}). Fix: place it at "
                             f"{path}, or use method.feature=multiscale") from e
    with torch.random.fork_rng(devices=[]):  # the constructor's random init must not move the global RNG
        net = vgg16()
    net.load_state_dict(state)
    feats = net.features[:21].eval()
    for p in feats.parameters():
        p.requires_grad_(False)
    return feats


def _per_stage(name: str, value, n: int, cast) -> list:
    if isinstance(value, Sequence) and not isinstance(value, str):
        vals = list(value)
        if len(vals) != n:
            raise ValueError(f"dgp: {name} has {len(vals)} entries but iterations has {n} stages. Fix: give "
                             f"one value per stage or a single number")
    else:
        vals = [value] * n
    try:
        out = [cast(v) for v in vals]
    except (TypeError, ValueError) as e:
        raise ValueError(f"dgp: {name}={vals!r} must be {cast.__name__}(s): {e}") from e
    if any(v < 0 for v in out):
        raise ValueError(f"dgp: {name}={out} must be >= 0")
    return out


def _int(v) -> int:
    if isinstance(v, bool) or int(v) != v:
        raise ValueError(f"{v!r} is not an integer")
    return int(v)


class DGP(Method):
    name = "dgp"
    requires_linear = True

    def __init__(self, generator: dict, candidates: int = 8, iterations: Sequence[int] = (10, 10),
                 stages: Sequence[int] | int = (2, 4), lr_z: Sequence[float] | float = 0.05,
                 lr_g: Sequence[float] | float = 2e-4, lr_ratio: Sequence[float] | float = 1.0,
                 mse_weight: Sequence[float] | float = 10.0, feature_weight: Sequence[float] | float = 1.0,
                 nll_weight: float = 0.02, feature: str = "multiscale", truncation: float = 0.4,
                 class_search: bool = True, default_class: int | None = None, update_embed: bool = False,
                 candidate_batch: int = 16):
        super().__init__()
        self.generator_cfg = check_generator_config(generator if isinstance(generator, Mapping) else {})
        if not isinstance(iterations, Sequence) or isinstance(iterations, str) or len(iterations) == 0:
            raise ValueError(f"dgp: iterations={iterations!r} must be a non-empty list of per-stage step counts "
                             f"(DGP: [200, 200, 200, 200, 200])")
        self.iterations = _per_stage("iterations", iterations, len(iterations), _int)
        n = len(self.iterations)
        self.stages = _per_stage("stages", stages, n, _int)
        self.lr_z = _per_stage("lr_z", lr_z, n, float)
        self.lr_g = _per_stage("lr_g", lr_g, n, float)
        self.lr_ratio = _per_stage("lr_ratio", lr_ratio, n, float)
        self.mse_weight = _per_stage("mse_weight", mse_weight, n, float)
        self.feature_weight = _per_stage("feature_weight", feature_weight, n, float)
        self.nll_weight = _per_stage("nll_weight", nll_weight, 1, float)[0]
        self.candidates = _per_stage("candidates", candidates, 1, _int)[0]
        self.candidate_batch = _per_stage("candidate_batch", candidate_batch, 1, _int)[0]
        if self.candidates < 1 or self.candidate_batch < 1:
            raise ValueError(f"dgp: candidates={candidates} and candidate_batch={candidate_batch} must be >= 1 "
                             f"(DGP samples 500 candidates)")
        if feature not in FEATURES:
            raise ValueError(f"dgp: feature={feature!r} not in {FEATURES}. Fix: method.feature=multiscale")
        if isinstance(truncation, bool) or not isinstance(truncation, (int, float)) or not 0 < truncation <= 1:
            raise ValueError(f"dgp: truncation={truncation!r} must be in (0, 1] (BigGAN-deep batch-norm "
                             f"statistics exist for truncation in [0, 1]). Fix: e.g. method.truncation=0.4")
        self.feature, self.truncation = feature, float(truncation)
        self.class_search, self.update_embed = bool(class_search), bool(update_embed)
        self.default_class = None if default_class is None else _int(default_class)
        #: per-image ImageNet labels for the next restore call (None entries = unknown); see set_labels
        self.labels: list[int | None] | None = None
        #: per image of the last restore call: {"loss", "mse", "feature"} per iteration, "selected" (z search)
        self.last_losses: list[dict] = []
        self.G = None
        self.ftr_net = None
        self.provenance: dict = {}

    # ------------------------------------------------------------------ setup
    def setup(self, device: torch.device) -> None:
        super().setup(device)
        if self.G is None:
            self.G, self.provenance = build_generator(self.generator_cfg)
            n_groups = len(finetune_groups(self.G))
            bad = [k for k in self.stages if k > n_groups]
            if bad:
                raise ValueError(f"dgp: stages={self.stages} asks for more than the {n_groups} fine-tuning groups "
                                 f"of this generator (gen_z + one per resolution). Fix: values in 0..{n_groups}")
            if self.default_class is not None and not 0 <= self.default_class < self.G.config.num_classes:
                raise ValueError(f"dgp: default_class={self.default_class} not in [0, {self.G.config.num_classes})")
        self.G.to(device)
        if self.feature == "vgg16" and self.ftr_net is None:
            self.ftr_net = vgg16_features()
        if self.ftr_net is not None:
            self.ftr_net.to(device)

    def set_labels(self, labels: Sequence[int | None] | None) -> None:
        """Per-image ImageNet class indices (None = unknown) for the next :meth:`restore` call."""
        self.labels = None if labels is None else list(labels)

    # ---------------------------------------------------------------- restore
    def restore(self, y: Tensor, degradation: Degradation, generators: list[torch.Generator],
                labels: Sequence[int | None] | None = None) -> Tensor:
        if self.G is None or next(self.G.parameters()).device != y.device:
            self.setup(y.device)
        labels = list(labels) if labels is not None else (self.labels or [None] * len(generators))
        self.labels = None  # consumed: a stale list must not leak into the next batch
        if len(labels) != len(generators) or y.shape[0] != len(generators):
            raise ValueError(f"dgp: {y.shape[0]} measurements, {len(generators)} generators, {len(labels)} labels")
        op = degradation.operator
        size = tuple(op.x_shape[-2:])
        outs, self.last_losses = [], []
        for b, gen in enumerate(generators):
            x, record = self.restore_one(y[b:b + 1], op, size, gen, self._class_of(labels[b]))
            outs.append(x)
            self.last_losses.append(record)
        self.last_nfe = self.candidates + sum(self.iterations)
        return torch.cat(outs).clamp(0, 1)

    def _class_of(self, label) -> int | None:
        if self.G.config.num_classes == 1:  # unconditional generator (the embedded one): its single class
            return 0
        if label is None:
            if self.class_search:
                return None
            if self.default_class is None:
                raise ValueError("dgp: an image has no class label and class_search=false; set "
                                 "method.class_search=true or method.default_class=<ImageNet index>")
            return self.default_class
        n = self.G.config.num_classes
        if isinstance(label, bool) or int(label) != label or not 0 <= int(label) < n:
            raise ValueError(f"dgp: label {label!r} is not a class index in [0, {n})")
        return int(label)

    def generate(self, G, z: Tensor, e: Tensor, size: tuple[int, int]) -> Tensor:
        """x = (G(z, e) + 1) / 2 in [0, 1] (unclamped), resized to ``size`` when G's resolution differs."""
        x = G.generator(torch.cat([z, e], dim=1), self.truncation)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return (x + 1) / 2

    def picture(self, op, v: Tensor, size: tuple[int, int]) -> Tensor:
        """P(v): the measurement picture in [-1, 1], at the image size (bilinear)."""
        p = op.measurement_image(v) * 2 - 1
        if tuple(p.shape[-2:]) != size:
            p = F.interpolate(p, size=size, mode="bilinear", align_corners=False)
        return p

    def feature_loss(self, a: Tensor, b: Tensor) -> Tensor:
        if self.feature == "multiscale":
            return multiscale_loss(a, b)
        if self.feature == "vgg16":
            with torch.no_grad():
                fb = self.ftr_net(b)
            return F.mse_loss(self.ftr_net(a), fb)
        return a.new_zeros(())

    # ------------------------------------------------------------- algorithm
    @torch.no_grad()
    def select_latent(self, op, y: Tensor, size, gen: torch.Generator, c: int | None):
        """Step 1: the best of ``candidates`` (z, class) pairs by ||A(x) - y||^2. Returns z, c, x, mse."""
        cfg = self.G.config
        z_all = self.truncation * truncated_normal(gen, (self.candidates, cfg.z_dim))
        if c is None:
            c_all = torch.randint(0, cfg.num_classes, (self.candidates,), generator=gen, device=gen.device)
        else:
            c_all = torch.full((self.candidates,), c, dtype=torch.long, device=gen.device)
        z_all, c_all = z_all.to(y.device), c_all.to(y.device)
        best = (float("inf"), 0, None)  # (mse, index, image): only the running best image is kept
        for i in range(0, self.candidates, self.candidate_batch):
            zc, cc = z_all[i:i + self.candidate_batch], c_all[i:i + self.candidate_batch]
            x = self.generate(self.G, zc, self.G.embeddings(F.one_hot(cc, cfg.num_classes).float()), size)
            err = (op.A(x) - y).pow(2).mean(dim=1)
            k = int(torch.argmin(err))
            if best[2] is None or float(err[k]) < best[0]:
                best = (float(err[k]), i + k, x[k:k + 1])
        mse, j, x = best
        return z_all[j:j + 1], int(c_all[j]), x, mse

    def restore_one(self, y: Tensor, op, size, gen: torch.Generator, c: int | None):
        """Steps 1-2 for one image (1, M); returns (x in [0, 1] (1, 3, H, W), loss record)."""
        z0, c, x, mse0 = self.select_latent(op, y, size, gen, c)
        record = {"class": c, "selected_mse": mse0, "loss": [], "mse": [], "feature": []}
        if sum(self.iterations) == 0:
            return x, record
        G = copy.deepcopy(self.G)  # a fresh generator per image: fine-tuning is per image
        groups = finetune_groups(G)
        num_classes = G.config.num_classes
        z = z0.clone().requires_grad_(True)
        e = G.embeddings(F.one_hot(torch.tensor([c], device=y.device), num_classes).float()).detach()
        e.requires_grad_(self.update_embed)
        opt_z = torch.optim.Adam([z], lr=self.lr_z[0], betas=BETAS, eps=ADAM_EPS)
        g_groups = [{"params": p} for p in groups] + ([{"params": [e]}] if self.update_embed else [])
        opt_g = torch.optim.Adam(g_groups, lr=0.0, betas=BETAS, eps=ADAM_EPS)
        target = self.picture(op, y, size) if any(self.feature_weight) else None
        for s, n_iter in enumerate(self.iterations):
            self._configure_stage(s, groups, opt_z, opt_g, e)
            for _ in range(n_iter):
                opt_z.zero_grad()
                opt_g.zero_grad()
                x = self.generate(G, z, e, size)
                ax = op.A(x)
                mse = (ax - y).pow(2).mean()
                ftr = (self.feature_loss(self.picture(op, ax, size), target)
                       if self.feature_weight[s] > 0 else x.new_zeros(()))
                loss = (self.mse_weight[s] * 4 * mse + self.feature_weight[s] * ftr
                        + self.nll_weight * z.pow(2).div(2).mean())
                loss.backward()
                opt_z.step()
                opt_g.step()
                record["loss"].append(loss.item())
                record["mse"].append(mse.item())
                record["feature"].append(ftr.item())
        del G, opt_g, opt_z
        return x.detach(), record

    def _configure_stage(self, s: int, groups, opt_z, opt_g, e: Tensor) -> None:
        """Stage s: z at lr_z[s]; groups i < stages[s] trainable at lr_g[s] * lr_ratio[s]**i, the rest frozen."""
        for pg in opt_z.param_groups:
            pg["lr"] = self.lr_z[s]
        k = self.stages[s]
        for i, params in enumerate(groups):
            on = i < k
            for p in params:
                p.requires_grad_(on)
            opt_g.param_groups[i]["lr"] = self.lr_g[s] * self.lr_ratio[s] ** i if on else 0.0
        if self.update_embed:  # DGP puts the embedding in group 0
            on = k > 0
            e.requires_grad_(on)
            opt_g.param_groups[-1]["lr"] = self.lr_g[s] if on else 0.0

    # ------------------------------------------------------------- provenance
    def describe(self) -> dict:
        d = {
            "name": self.name, "steps": None, "generator": {**self.generator_cfg, **self.provenance},
            "candidates": self.candidates, "iterations": self.iterations, "stages": self.stages,
            "lr_z": self.lr_z, "lr_g": self.lr_g, "lr_ratio": self.lr_ratio, "mse_weight": self.mse_weight,
            "feature_weight": self.feature_weight, "nll_weight": self.nll_weight, "feature": self.feature,
            "truncation": self.truncation, "class_search": self.class_search,
            "default_class": self.default_class, "update_embed": self.update_embed,
            "optimizer": f"Adam betas={BETAS} eps={ADAM_EPS}",
            "nfe_per_image": self.candidates + sum(self.iterations),
            "deviations": "feature term substitutes DGP's BigGAN-discriminator features (see bench/methods/dgp.py); "
                          "candidates ranked by measurement MSE; no instance-norm option",
        }
        if self.G is not None:
            d["generator"]["architecture"] = describe_config(self.G)
        return d
