"""Tiny random Stable Diffusion parts in diffusers format (as diffusers' own tests build them), shared by the
tests of sd_inpaint and of the latent prior kind ``sd``. Needs transformers (callers importorskip it first)."""

from __future__ import annotations

import json

import torch
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

#: SD 1.5's scheduler config (PNDM, scaled_linear 0.00085 .. 0.012, steps_offset 1; from the hub repos' json)
SD_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                    set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, clip_sample=False)


def tiny_sd(root, in_channels: int):
    """Tiny random SD parts in diffusers format under ``root``: UNet (in_channels 9 or 4, sample_size 16, 2 levels),
    VAE (f = 2), CLIP text model, a tokenizer from a 3-token vocabulary (as diffusers' test_pipeline_utils writes
    one) and SD 1.5's PNDM config. Model resolution 16 x 2 = 32 px, sides multiples of 4."""
    torch.manual_seed(0)
    UNet2DConditionModel(
        sample_size=16, in_channels=in_channels, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, norm_num_groups=4, attention_head_dim=4).save_pretrained(root / "unet")
    AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 16), latent_channels=4, layers_per_block=1,
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  norm_num_groups=4).save_pretrained(root / "vae")
    CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, vocab_size=3, hidden_size=16,
                                 intermediate_size=20, num_attention_heads=2, num_hidden_layers=1,
                                 max_position_embeddings=8)).save_pretrained(root / "text_encoder")
    vocab = root / "vocab"
    vocab.mkdir()
    (vocab / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}))
    (vocab / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(vocab_file=str(vocab / "vocab.json"), merges_file=str(vocab / "merges.txt"),
                  model_max_length=8).save_pretrained(root / "tokenizer")
    PNDMScheduler.from_config(SD_SCHEDULER).save_pretrained(root / "scheduler")
    return root
