"""``python -m bench.train``: train the small embedded priors that ship in ``bench/priors/``.

Four trainers, one Hydra app (configs in ``bench/train/conf/``, apart from the main app's ``conf/`` so that
``python -m bench --help`` does not list them; the config's ``_target_`` names the typed config class,
whose ``.train()`` runs it)::

    python -m bench.train                                   # adm64: pixel-space ADM prior (bench/train/adm.py)
    python -m bench.train steps=20 name=speedtest           # any field can be overridden
    python -m bench.train --config-name ldm_sr              # latent SR model (bench/train/ldm.py)
    python -m bench.train --config-name gan64               # DGP's BigGAN-deep generator (bench/train/gan.py)
    python -m bench.train --config-name sr3_64              # a small SR3 for sr4 (bench/train/sr3.py)

This package is tooling: it imports the runtime (``bench.models``, ``bench.diffusion`` ...), never the reverse.
"""

from __future__ import annotations

import json
import shlex

import torch

from bench.train.common import CONF_DIR


def run_config(cfg: dict) -> dict:
    """Build the typed config named by ``_target_`` from a plain mapping and train it."""
    from hydra.utils import instantiate

    return instantiate(cfg, _convert_="all").train()


def main() -> None:
    """The Hydra app behind ``python -m bench.train``."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig, OmegaConf

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="adm64")
    def app(cfg: DictConfig) -> None:
        plain = OmegaConf.to_container(cfg, resolve=True)
        hc = HydraConfig.get()
        args = ([f"--config-name {hc.job.config_name}"] if hc.job.config_name != "adm64" else [])
        plain["command"] = " ".join(["python -m bench.train", *args, *map(shlex.quote, hc.overrides.task)])
        if plain.get("num_threads"):
            torch.set_num_threads(int(plain["num_threads"]))
        info = run_config(plain)
        print(json.dumps(info, indent=2, default=str))

    app()
