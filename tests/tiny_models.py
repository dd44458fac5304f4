"""The tiny model configs that several test modules share (fast on 2 CPU cores)."""

import dataclasses

from colajax.models.config import DiTConfig, VAEConfig

# vocab 4096: the bundled kjv_sp4096 tokenizer
TINY_VAE = VAEConfig(
    vocab_size=4096,
    dim=32,
    ffn_dim=64,
    num_heads=2,
    encoder_num_blocks=1,
    decoder_num_blocks=1,
    latent_dim=4,
    block_size=4,
)
TINY_DIT = DiTConfig(
    txt_in_channels=4,
    txt_out_channels=4,
    txt_dim=32,
    emb_dim=32,
    heads=2,
    head_dim=16,
    expand_ratio=2,
    num_layers=1,
    rope_dim=8,
    block_size=4,
)


def tiny_dit(**changes) -> DiTConfig:
    """`TINY_DIT` with some fields changed."""
    return dataclasses.replace(TINY_DIT, **changes)
