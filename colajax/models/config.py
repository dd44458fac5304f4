"""Model hyper-parameters: frozen dataclasses, named as in the released HF `config.json` files.

`VAEConfig.from_hf(d)` / `DiTConfig.from_hf(d)` read a released config (extra keys such as
`architectures`, `dtype`/`torch_dtype`, `transformers_version`, `sft_*` are ignored);
`from_dict` reads the `config.vae` / `config.dit` sections of an experiment config.
"""

import dataclasses
from typing import Any

# HF config keys that collide with colajax-only fields: the stored `dtype` is the storage dtype
# of the weights, not our compute dtype, so it is never taken from a released config.
_HF_IGNORED = ("dtype", "torch_dtype", "remat")


def _build(cls, d: dict[str, Any], *, strict: bool):
    names = {f.name for f in dataclasses.fields(cls)}
    required = sorted(
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    absent = [k for k in required if k not in d]
    if absent:
        raise ValueError(f"{cls.__name__}: missing required field(s) {absent}.")
    if not strict:
        d = {k: v for k, v in d.items() if k not in _HF_IGNORED}
    unknown = sorted(set(d) - names)
    if strict and unknown:
        raise ValueError(
            f"{cls.__name__}: unknown field(s) {unknown}; valid fields are {sorted(names)}."
        )
    return cls(**{k: v for k, v in d.items() if k in names})


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Text VAE (encoder q_phi + decoder p_theta); defaults are the released 500M model."""

    vocab_size: int = 100278  # decoder head rows; the embedding has vocab_size + 1 (mask token)
    dim: int = 1536
    ffn_dim: int = 6144  # ffn_proj output width; SwiGLU halves it
    num_heads: int = 12
    encoder_num_blocks: int = 4
    decoder_num_blocks: int = 4
    latent_dim: int = 16
    block_size: int = dataclasses.field(kw_only=True)  # block-causal granularity (no default:
    # an experiment's one `config.block_size`, or the released config.json)
    patch_size: int = 1  # only 1 is supported (the released model)
    shared_heads_kv: int = 1  # only 1 is supported (official GQA path is broken)
    layer_norm_eps: float = 1e-6
    layer_norm_affine: bool = True  # affine flag of norm_attn
    post_norm: bool = True  # released residual quirk: x1 = LN(x) + Attn(x)
    qk_norm: bool = True
    qk_norm_affine: bool = True
    qk_bias: bool = False
    clip_qkv: float | None = None
    rope_theta: float = 500000.0
    bias: bool = True
    act: str = "swiglu"
    encoder_last_ln: bool = True
    use_variation: bool = True
    block_causal: bool = True
    scaling_factor: float = 1.0  # DiT-space latent = (z - shift) * scale
    shifting_factor: float = 0.0
    dtype: str = "float32"  # compute dtype: float32 or bfloat16 (params stay float32)
    remat: bool = False  # rematerialise each block in the backward pass

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @classmethod
    def from_hf(cls, d: dict[str, Any]) -> "VAEConfig":
        return _build(cls, d, strict=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VAEConfig":
        return _build(cls, dict(d), strict=True)


@dataclasses.dataclass(frozen=True)
class DiTConfig:
    """Block-causal flow-matching DiT prior; defaults are the released 1.8B model."""

    txt_in_channels: int = 16  # must equal VAE latent_dim
    txt_out_channels: int = 16
    txt_dim: int = 2048
    emb_dim: int = 2048  # must equal txt_dim
    heads: int = 16
    head_dim: int = 128
    expand_ratio: int = 4
    num_layers: int = 24
    norm_eps: float = 1e-5
    qk_bias: bool = False
    patch_size: int = 1  # only 1 is supported
    rope_dim: int = 96
    block_size: int = dataclasses.field(kw_only=True)  # = the VAE's (no default, see VAEConfig)
    dtype: str = "float32"
    remat: bool = False

    @classmethod
    def from_hf(cls, d: dict[str, Any]) -> "DiTConfig":
        return _build(cls, d, strict=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DiTConfig":
        return _build(cls, dict(d), strict=True)


def check_compatible(vae: VAEConfig, dit: DiTConfig) -> None:
    """Raise if a VAE and a DiT cannot work together (latent width, block size)."""
    if dit.txt_in_channels != vae.latent_dim or dit.txt_out_channels != vae.latent_dim:
        raise ValueError(
            f"DiT txt_in/out_channels ({dit.txt_in_channels}/{dit.txt_out_channels}) must equal "
            f"the VAE latent_dim ({vae.latent_dim}); fix the configs so they agree."
        )
    if dit.block_size != vae.block_size:
        raise ValueError(
            f"DiT block_size ({dit.block_size}) differs from VAE block_size ({vae.block_size}); "
            "the generation loop and both masks must use one block size."
        )


def cola_configs(config) -> tuple[VAEConfig, DiTConfig]:
    """The Text VAE and DiT configs of an experiment: `config.vae`, `config.dit` and the one
    `config.block_size` both models (and the sampler) use. Strict: unknown fields fail."""
    sections = {"vae": config.vae, "dit": config.dit}
    out = []
    for name, cls in (("vae", VAEConfig), ("dit", DiTConfig)):
        d = sections[name].to_dict() if hasattr(sections[name], "to_dict") else dict(sections[name])
        if "block_size" in d:
            raise ValueError(
                f"config.{name}.block_size is not a field: Cola has one block size, "
                "config.block_size (set that instead)."
            )
        try:
            out.append(cls.from_dict({**d, "block_size": int(config.block_size)}))
        except (TypeError, ValueError) as e:
            raise ValueError(f"config.{name}: {e}") from None
    vae, dit = out
    check_compatible(vae, dit)
    return vae, dit
