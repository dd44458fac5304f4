"""Block-causal flow-matching DiT prior (the official `ColaDiTModel`, spec §3).

Input latents `[B, L, C]` plus a timestep per row on the 0..1000 scale -> predicted velocity
`[B, L, C]` (float32). Blocks are adaLN-modulated (`LN(h)*(1+scale)+shift`, un-offset gates),
attention has per-head q/k LayerNorm and GPT-J interleaved partial RoPE, the MLP is GELU-tanh.

Mixed precision (`config.dtype == 'bfloat16'`) follows the official autocast numerics (spec §5):
bf16 residual stream, bf16 matmul outputs, float32 LayerNorm/softmax/RoPE, `1 + scale` rounded to
bf16 before the float32 modulation, elementwise bf16 ops computed in float32 and rounded once.
Timesteps are rounded to bf16 first, as the official callers do. Parameters are float32.

Training fast path (same numbers): `mask_B1LL` may be a `train_attention.CleanNoisyLayout`
(attended without a dense mask) and `t_BL` a `GroupedTimesteps` (AdaLN linears once per
timestep group; pinned rows read group 0); LayerNorm + modulation, q/k norm + RoPE and GELU
keep only their inputs for the backward pass.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from colajax.models import attention, lean, train_attention
from colajax.models.config import DiTConfig
from colajax.models.layers import Dense, LayerNorm, dtype_of, layer_norm, matmul, round_to
from colajax.models.timestep import (  # noqa: F401  (re-exported: the DiT's public API)
    SINUSOID_DIM,
    GroupedTimesteps,
    rows_of,
    timestep_freqs,
    timestep_sinusoid,
)

ROPE_THETA = 10000.0


def check_config(cfg: DiTConfig) -> None:
    """Reject configurations the official model cannot run (or that this port does not)."""
    if cfg.patch_size != 1:
        raise ValueError(
            f"DiT patch_size={cfg.patch_size} is not supported (the official patch_size > 1 path "
            "is broken, spec §11.4); use patch_size=1."
        )
    if cfg.emb_dim != cfg.txt_dim:
        raise ValueError(
            f"DiT emb_dim ({cfg.emb_dim}) must equal txt_dim ({cfg.txt_dim}): the AdaLN layers "
            "read the timestep embedding with txt_dim inputs. Set emb_dim = txt_dim."
        )
    if cfg.rope_dim % 2 or not 0 <= cfg.rope_dim <= cfg.head_dim:
        raise ValueError(
            f"DiT rope_dim ({cfg.rope_dim}) must be even and at most head_dim ({cfg.head_dim})."
        )
    dtype_of(cfg.dtype)


def xavier_uniform(contract: int, n_out: int) -> nn.initializers.Initializer:
    """Xavier-uniform over a multi-axis kernel (fans = products of the in / out axes)."""
    return nn.initializers.variance_scaling(
        1.0,
        "fan_avg",
        "uniform",
        in_axis=tuple(range(contract)),
        out_axis=tuple(range(-n_out, 0)),
    )


def _dense(features, axes, cfg: DiTConfig, *, contract=1, use_bias=True, name=None) -> Dense:
    features = tuple(features)
    return Dense(
        features=features,
        axes=axes,
        contract=contract,
        use_bias=use_bias,
        dtype=cfg.dtype,
        kernel_init=xavier_uniform(contract, len(features)),
        name=name,
    )


def silu(x):
    """SiLU computed in float32 and rounded once to the input dtype."""
    return round_to(jax.nn.silu(x.astype(jnp.float32)), x.dtype)


def modulate(x_f32, shift, scale, dtype):
    """`x * (1 + scale) + shift` with `1 + scale` rounded to the compute dtype; float32 result."""
    one_plus = round_to(1.0 + scale.astype(jnp.float32), dtype).astype(jnp.float32)
    return x_f32.astype(jnp.float32) * one_plus + shift.astype(jnp.float32)


def gated_residual(h, y, gate, dtype):
    """`y * gate + h` as two compute-dtype ops (each computed in float32, rounded once)."""
    yg = round_to(y.astype(jnp.float32) * gate.astype(jnp.float32), dtype)
    return round_to(yg.astype(jnp.float32) + h.astype(jnp.float32), dtype)


class TimestepEmbedding(nn.Module):
    """Sinusoid(256) -> Linear -> SiLU -> Linear -> SiLU -> Linear (no final activation)."""

    config: DiTConfig

    @nn.compact
    def __call__(self, t_BL):
        cfg = self.config
        dt = dtype_of(cfg.dtype)
        e = timestep_sinusoid(t_BL).astype(dt)
        e = silu(_dense((cfg.txt_dim,), (None, "embed"), cfg, name="proj_in")(e))
        e = silu(_dense((cfg.txt_dim,), ("embed", "mlp"), cfg, name="proj_hid")(e))
        return _dense((cfg.emb_dim,), ("mlp", "embed"), cfg, name="proj_out")(e)


class BlockModulation(nn.Module):
    """The four AdaLN linears of a block (input: SiLU(timestep embedding))."""

    config: DiTConfig

    @nn.compact
    def __call__(self, e_silu):
        cfg = self.config
        d = cfg.txt_dim
        ss = lambda name: _dense((2, d), ("embed", None, "mlp"), cfg, name=name)(e_silu)
        gate = lambda name: _dense((d,), ("embed", "mlp"), cfg, name=name)(e_silu)
        msa_in, msa_gate = ss("msa_in"), gate("msa_out")
        mlp_in, mlp_gate = ss("mlp_in"), gate("mlp_out")
        return (
            msa_in[..., 0, :],
            msa_in[..., 1, :],
            msa_gate,
            mlp_in[..., 0, :],
            mlp_in[..., 1, :],
            mlp_gate,
        )


class QKVProjection(nn.Module):
    """The fused qkv projection (kernel `[D, 3, H, Dh]`, as released) applied as three matmuls.

    Same parameters and numbers as one `Dense` over the fused kernel, without slicing q, k and v
    out of a fused `[B, L, 3, H, Dh]` result (and re-assembling its gradient).
    """

    config: DiTConfig

    @nn.compact
    def __call__(self, x_BLD):
        cfg = self.config
        dt = dtype_of(cfg.dtype)
        axes = ("embed", None, "heads", "kv")
        shape = (x_BLD.shape[-1], 3, cfg.heads, cfg.head_dim)
        init = nn.with_logical_partitioning(xavier_uniform(1, 3), axes)
        kernel = self.param("kernel", init, shape, jnp.float32)
        bias = None
        if cfg.qk_bias:
            init_b = nn.with_logical_partitioning(nn.initializers.zeros_init(), axes[1:])
            bias = self.param("bias", init_b, shape[1:], jnp.float32)
        outs = []
        for i in range(3):
            y = matmul(x_BLD, kernel[:, i], 1, dt)
            if bias is not None:
                y = round_to(y.astype(jnp.float32) + bias[i], y.dtype)
            outs.append(y)
        return outs


class HeadNormParams(nn.Module):
    """The affine parameters of a q/k LayerNorm (named and initialised as `LayerNorm`'s)."""

    size: int

    @nn.compact
    def __call__(self):
        init = lambda f: nn.with_logical_partitioning(f, ("kv",))
        scale = self.param("scale", init(nn.initializers.ones), (self.size,))
        return scale, self.param("bias", init(nn.initializers.zeros), (self.size,))


def _qk_norm_rope(q, k, norm_q, norm_k, pos_BQ, *, eps, rope_dim, dt):
    """Per-head LayerNorm (affine) then interleaved RoPE on q and k, rounded to `dt`."""

    def one(x, params):
        x = layer_norm(x, eps, 1, *params)
        return round_to(attention.rope_interleaved(x, pos_BQ, ROPE_THETA, rope_dim), dt)

    return one(q, norm_q), one(k, norm_k)


def _ln_modulate(h, shift, scale, groups, *, eps, dt):
    """`modulate(LayerNorm(h), shift, scale)` (no affine); shift/scale per row or per group."""
    x = layer_norm(h, eps)
    rows = lambda m: rows_of(m, groups, h.shape[1])
    return modulate(x, rows(shift), rows(scale), dt)


class DiTAttention(nn.Module):
    """Fused qkv, per-head q/k LayerNorm, interleaved partial RoPE, optional past K/V."""

    config: DiTConfig

    @nn.compact
    def __call__(self, a_BQD, q_pos_BQ, mask_B1QK, past_k=None, past_v=None):
        """Returns (out_BQD, k_BQHD, v_BQHD); k/v are post-norm, post-RoPE, compute dtype.

        `mask_B1QK` is a boolean mask or an `train_attention.CleanNoisyLayout` (training layout).
        """
        cfg = self.config
        dt = dtype_of(cfg.dtype)
        q, k, v = QKVProjection(cfg, name="proj_qkv")(a_BQD)
        norms = (HeadNormParams(cfg.head_dim, name=n)() for n in ("norm_q", "norm_k"))
        prep = functools.partial(_qk_norm_rope, eps=cfg.norm_eps, rope_dim=cfg.rope_dim, dt=dt)
        q, k = lean.recompute_in_backward(prep)(q, k, *norms, q_pos_BQ)
        v = v.astype(dt)
        k_all, v_all = k, v
        if past_k is not None:
            k_all = jnp.concatenate([past_k.astype(dt), k], axis=1)
            v_all = jnp.concatenate([past_v.astype(dt), v], axis=1)
        if isinstance(mask_B1QK, train_attention.CleanNoisyLayout):
            o = train_attention.attend_clean_noisy(q, k_all, v_all, mask_B1QK, cfg.block_size, dt)
        else:
            o = attention.attend(q, k_all, v_all, mask_B1QK, dt)
        out = _dense(
            (cfg.txt_dim,),
            ("heads", "kv", "embed"),
            cfg,
            contract=2,
            use_bias=cfg.qk_bias,
            name="proj_out",
        )(o)
        return out, k, v


class DiTMLP(nn.Module):
    config: DiTConfig

    @nn.compact
    def __call__(self, m):
        cfg = self.config
        hidden = cfg.expand_ratio * cfg.txt_dim
        y = _dense((hidden,), ("embed", "mlp"), cfg, name="proj_in")(m)
        y = round_to(lean.gelu_tanh(y.astype(jnp.float32)), y.dtype)
        return _dense((cfg.txt_dim,), ("mlp", "embed"), cfg, name="proj_out")(y)


class DiTBlock(nn.Module):
    """adaLN block: attention and MLP sub-layers, each `LN -> modulate -> f -> gate -> +h`."""

    config: DiTConfig

    @nn.compact
    def __call__(self, h, e_silu, q_pos_BQ, mask_B1QK, past_k=None, past_v=None, groups=None):
        """`e_silu` is per row, or per group with `groups` (`GroupedTimesteps`) mapping rows."""
        cfg = self.config
        dt = dtype_of(cfg.dtype)
        shift1, scale1, gate1, shift2, scale2, gate2 = BlockModulation(cfg, name="ada")(e_silu)
        rows = lambda m: rows_of(m, groups, h.shape[1])
        ln_mod = functools.partial(_ln_modulate, eps=cfg.norm_eps, dt=dt)
        ln_mod = lean.recompute_in_backward(ln_mod)
        a = ln_mod(h, shift1, scale1, groups)
        y, k, v = DiTAttention(cfg, name="msa")(a, q_pos_BQ, mask_B1QK, past_k, past_v)
        h = gated_residual(h, y, rows(gate1), dt)
        m = ln_mod(h, shift2, scale2, groups)
        h = gated_residual(h, DiTMLP(cfg, name="mlp")(m), rows(gate2), dt)
        return h, k, v


class DiT(nn.Module):
    """The DiT prior. `__call__` = full (padded) sequences; `cached` = rows after a KV cache."""

    config: DiTConfig

    def setup(self):
        cfg = self.config
        check_config(cfg)
        self.txt_in = _dense((cfg.txt_dim,), ("latent", "embed"), cfg)
        self.emb_in = TimestepEmbedding(cfg)
        block = nn.remat(DiTBlock) if cfg.remat else DiTBlock
        self.blocks = [block(cfg) for _ in range(cfg.num_layers)]
        self.txt_out_norm = LayerNorm(cfg.norm_eps, axes=("embed",))
        self.txt_out_ada = _dense((2, cfg.txt_dim), ("embed", None, "mlp"), cfg)
        self.txt_out = _dense((cfg.txt_out_channels,), ("embed", "latent"), cfg)

    def _embed(self, x_BLC, t):
        """Input projection and SiLU(timestep embedding).

        t: per row [B, L], per sample [B], or `GroupedTimesteps`. Returns (h, e_silu, groups):
        with groups (a `GroupedTimesteps`), e_silu is per group `[B, G, D]`; otherwise per row
        and groups is None.
        """
        cfg = self.config
        if x_BLC.shape[-1] != cfg.txt_in_channels:
            raise ValueError(
                f"DiT input has {x_BLC.shape[-1]} channels, config txt_in_channels is "
                f"{cfg.txt_in_channels}."
            )
        dt = dtype_of(cfg.dtype)
        groups = None
        if isinstance(t, GroupedTimesteps):
            groups, t = t.checked(x_BLC.shape[1]), jnp.asarray(t.t_BG)
        else:
            t = jnp.asarray(t)
            if t.ndim == 1:  # one timestep per sample: a single group (the sampler's calls)
                t = t[:, None]
                groups = GroupedTimesteps(t, jnp.zeros((t.shape[0], 1), jnp.int32))
            else:
                t = jnp.broadcast_to(t, x_BLC.shape[:2])
        # The official callers hand the DiT bf16 timesteps; idempotent if already rounded.
        t = round_to(t.astype(jnp.float32), dt).astype(jnp.float32)
        h = self.txt_in(x_BLC)
        e_silu = silu(self.emb_in(t))
        if groups is not None:  # the blocks only map rows to groups
            groups = groups._replace(t_BG=None)
        return h, e_silu, groups

    def _head(self, h, e_silu, groups=None):
        dt = dtype_of(self.config.dtype)
        ss = rows_of(self.txt_out_ada(e_silu), groups, h.shape[1])
        y = modulate(self.txt_out_norm(h), ss[..., 0, :], ss[..., 1, :], dt)
        return self.txt_out(y).astype(jnp.float32)

    def __call__(self, x_BLC, t_BL, positions_BL=None, segment_ids_BL=None, mask_B1LL=None):
        """Velocity for padded sequences.

        `t_BL`: per row, per sample or `GroupedTimesteps`. `mask_B1LL`: a boolean mask that
        overrides the block-causal one, or a `train_attention.CleanNoisyLayout` (the training
        layout, attended without a dense mask; positions and segments then come from it).
        """
        b, length = x_BLC.shape[:2]
        if isinstance(mask_B1LL, train_attention.CleanNoisyLayout):
            if positions_BL is not None or segment_ids_BL is not None:
                raise ValueError(
                    "with a CleanNoisyLayout the positions and segment ids come from the layout; "
                    "pass positions_BL=None and segment_ids_BL=None."
                )
            positions_BL, _, segment_ids_BL = mask_B1LL.rows(self.config.block_size)
            if positions_BL.shape != (b, length):
                raise ValueError(
                    f"DiT input has {length} rows; the training layout has {positions_BL.shape[1]}."
                )
        if positions_BL is None:
            positions_BL = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (b, length))
        if segment_ids_BL is None:
            segment_ids_BL = jnp.ones((b, length), jnp.int32)
        if mask_B1LL is None:
            mask_B1LL = attention.block_causal_mask(
                positions_BL, positions_BL, self.config.block_size, segment_ids_BL, segment_ids_BL
            )
        h, e_silu, groups = self._embed(x_BLC, t_BL)
        for blk in self.blocks:
            h, _, _ = blk(h, e_silu, positions_BL, mask_B1LL, None, None, groups)
        return self._head(h, e_silu, groups)

    def cached(self, x_BQC, t_BQ, cache, new_lengths_B=None, update=False):
        """Rows at positions `end .. end+Q-1` attending to the valid cache slots and themselves.

        With `update=True` their K/V are written to the cache and `end` advances by
        `new_lengths_B` (default Q). Returns (v_BQC float32, cache).
        """
        cfg = self.config
        if len(cache["layers"]) != cfg.num_layers:
            raise ValueError(
                f"cache has {len(cache['layers'])} layers, the DiT has {cfg.num_layers}; build it "
                "with init_dit_cache(config, ...)."
            )
        b, q_len = x_BQC.shape[:2]
        if new_lengths_B is None:
            new_lengths_B = jnp.full((b,), q_len, jnp.int32)
        q_pos, q_seg, k_pos, k_seg = attention.cached_layout(cache, q_len, new_lengths_B)
        mask = attention.block_causal_mask(q_pos, k_pos, cfg.block_size, q_seg, k_seg)
        h, e_silu, groups = self._embed(x_BQC, t_BQ)
        end = cache["end"]
        layers = []
        for blk, kv in zip(self.blocks, cache["layers"], strict=True):
            h, k, v = blk(h, e_silu, q_pos, mask, kv["k"], kv["v"], groups)
            if update:
                kv = {
                    "k": attention.write_rows(kv["k"], end, k),
                    "v": attention.write_rows(kv["v"], end, v),
                }
            layers.append(kv)
        out = self._head(h, e_silu, groups)
        if not update:
            return out, cache
        new_end = end + jnp.asarray(new_lengths_B, jnp.int32)
        return out, {"end": new_end, "layers": layers}


def init_dit_cache(config: DiTConfig, batch: int, max_len: int):
    """An empty DiT KV cache (post-norm, post-RoPE keys) in the compute dtype."""
    return attention.init_cache(
        batch, max_len, config.num_layers, config.heads, config.head_dim, dtype_of(config.dtype)
    )
