"""Analytic model FLOPs for the Text VAE, the block-causal DiT, training steps and generation;
the AR / LLaDA (LLaMA) baselines have their own section at the end, with the same conventions.

Conventions:
- forward FLOPs = 2 x matmul multiply-accumulates (weights and attention scores/values); norms,
  activations, softmax, RoPE and embedding gathers are not counted;
- a trained component costs 3 x forward (forward + backward), a frozen one 1 x forward;
- the timestep MLP and the AdaLN linears depend on t only and are counted once per distinct
  timestep (per block of the training layout, per sample in a generation pass), as the trainer
  and the sampler compute them; the official code runs them per row (`t_groups=None`);
- attention is counted over the key positions a query can see under the block-causal masks
  ("masked", the model FLOPs used for MFU) and, for reference, over every key ("dense", what a
  dense masked-softmax kernel actually computes);
- rows are assumed full (no padding): a `[B, L]` batch is B sequences of L tokens.

Visible (query, key) pairs with n = L / bs blocks:
- VAE encoder/decoder (block-causal over L): bs^2 n (n + 1) / 2 = L (L + bs) / 2;
- DiT training layout `[clean L - bs | noisy L]`: clean block i sees (i+1) bs clean keys, noisy
  block j sees j bs clean keys + its own bs -> bs^2 ((n-1) n / 2 + n (n+1) / 2) = L^2
  (dense: (2L - bs)^2).

The paper gives no FLOP formula; its budgets fit 6 x N x D with N = 1.8e9 (the DiT backbone) and D
= training tokens (paper digest §5.2): `six_nd` reproduces that axis.
"""

from colajax.models.config import DiTConfig, LMConfig, VAEConfig
from colajax.train.vae_modes import vae_mode

SINUSOID_DIM = 256
PAPER_N_PARAMS = 1.8e9  # the DiT backbone size the paper's EFLOPs axis is consistent with


# --------------------------------------------------------------------------------------------
# Attention visibility
# --------------------------------------------------------------------------------------------


def _check_blocks(seq_len: int, block_size: int) -> int:
    if seq_len <= 0 or block_size <= 0 or seq_len % block_size:
        raise ValueError(
            f"seq_len ({seq_len}) must be a positive multiple of block_size ({block_size})."
        )
    return seq_len // block_size


def block_causal_pairs(seq_len: int, block_size: int) -> int:
    """Visible (query, key) pairs of a block-causal self-attention over `seq_len` rows."""
    n = _check_blocks(seq_len, block_size)
    return block_size * block_size * n * (n + 1) // 2


def train_layout_rows(seq_len: int, block_size: int) -> int:
    """DiT rows of the training layout `[clean without last block | noisy]` = 2L - bs."""
    _check_blocks(seq_len, block_size)
    return 2 * seq_len - block_size


def train_layout_t_groups(seq_len: int, block_size: int) -> int:
    """Distinct timesteps of one training-layout sample: the clean rows (t = 0) + one per block."""
    return 1 + _check_blocks(seq_len, block_size)


def train_layout_pairs(seq_len: int, block_size: int) -> int:
    """Visible (query, key) pairs of the clean/noisy training mask (= L^2)."""
    n = _check_blocks(seq_len, block_size)
    clean = n * (n - 1) // 2
    noisy = n * (n + 1) // 2
    return block_size * block_size * (clean + noisy)


# --------------------------------------------------------------------------------------------
# Per-model forward FLOPs
# --------------------------------------------------------------------------------------------


def _vae_block_macs_per_row(cfg: VAEConfig) -> int:
    d = cfg.dim
    kv = d // cfg.shared_heads_kv
    ffn_in = cfg.ffn_dim // 2 if cfg.act == "swiglu" else cfg.ffn_dim
    return d * (d + 2 * kv) + d * d + d * cfg.ffn_dim + ffn_in * d


def vae_encoder_flops(cfg: VAEConfig, rows: int, pairs: int) -> float:
    """Encoder forward over `rows` tokens with `pairs` visible attention pairs.

    patch_embedder (dim x dim) + blocks + final_layer (dim x 2d, or d without variation).
    """
    out = 2 * cfg.latent_dim if cfg.use_variation else cfg.latent_dim
    per_row = cfg.dim * cfg.dim + cfg.encoder_num_blocks * _vae_block_macs_per_row(cfg)
    per_row += cfg.dim * out
    attn = cfg.encoder_num_blocks * 2 * pairs * cfg.dim  # QK^T and PV, all heads
    return 2.0 * (rows * per_row + attn)


def vae_decoder_flops(cfg: VAEConfig, rows: int, pairs: int) -> float:
    """Decoder forward: in_layer (d x dim) + blocks + unpatch (dim x dim) + head (dim x V)."""
    per_row = cfg.latent_dim * cfg.dim + cfg.decoder_num_blocks * _vae_block_macs_per_row(cfg)
    per_row += cfg.dim * cfg.dim + cfg.dim * cfg.vocab_size
    attn = cfg.decoder_num_blocks * 2 * pairs * cfg.dim
    return 2.0 * (rows * per_row + attn)


def dit_macs_per_row(cfg: DiTConfig) -> int:
    """Weight MACs per DiT row: input projection, blocks (qkv, out, MLP), output projection."""
    d, inner, c = cfg.txt_dim, cfg.heads * cfg.head_dim, cfg.txt_in_channels
    block = d * 3 * inner + inner * d + 2 * d * cfg.expand_ratio * d
    return c * d + cfg.num_layers * block + d * cfg.txt_out_channels


def dit_macs_per_timestep(cfg: DiTConfig) -> int:
    """Weight MACs that depend on the timestep only: the timestep MLP and every AdaLN linear."""
    d = cfg.txt_dim
    emb = SINUSOID_DIM * d + d * d + d * cfg.emb_dim
    ada = 6 * d * d  # msa_in (2d) + msa_out (d) + mlp_in (2d) + mlp_out (d)
    return emb + cfg.num_layers * ada + 2 * d * d  # + the head's AdaLN


def dit_flops(cfg: DiTConfig, rows: int, pairs: int, t_groups: int | None = None) -> float:
    """DiT forward over `rows` query rows with `pairs` visible (query, key) pairs in total.

    `t_groups`: how many distinct timesteps the rows carry (the conditioning runs once per
    timestep); None counts it per row, as a per-row `t` input computes it.
    """
    groups = rows if t_groups is None else t_groups
    attn = cfg.num_layers * 2 * pairs * cfg.heads * cfg.head_dim
    return 2.0 * (rows * dit_macs_per_row(cfg) + groups * dit_macs_per_timestep(cfg) + attn)


# --------------------------------------------------------------------------------------------
# Training steps
# --------------------------------------------------------------------------------------------


def _component(fwd: float, fwd_dense: float, trained: bool, count: int = 1) -> dict:
    mult = 3 if trained else 1
    return {
        "fwd": count * fwd,
        "fwd_dense": count * fwd_dense,
        "trained": trained,
        "step": count * mult * fwd,
        "step_dense": count * mult * fwd_dense,
    }


def _total(parts: dict) -> dict:
    return {
        "components": parts,
        "total": sum(p["step"] for p in parts.values()),
        "total_dense": sum(p["step_dense"] for p in parts.values()),
    }


def _vae_parts(cfg: VAEConfig, batch: int, seq_len: int, trained: bool, bert: bool) -> dict:
    dense = seq_len * seq_len
    pairs = block_causal_pairs(seq_len, cfg.block_size)
    rows = batch * seq_len
    copies = 2 if bert else 1  # the BERT branch is a second encoder + decoder pass
    enc = (vae_encoder_flops(cfg, rows, batch * pairs), vae_encoder_flops(cfg, rows, batch * dense))
    dec = (vae_decoder_flops(cfg, rows, batch * pairs), vae_decoder_flops(cfg, rows, batch * dense))
    return {
        "vae_encoder": _component(*enc, trained, copies),
        "vae_decoder": _component(*dec, trained, copies),
    }


def stage1_flops(vae: VAEConfig, batch: int, seq_len: int, *, bert: bool = True) -> dict:
    """Stage-1 step: encoder + decoder on the clean and (BERT) masked copies, all trained."""
    return _total(_vae_parts(vae, batch, seq_len, True, bert))


def stage2_flops(
    vae: VAEConfig,
    dit: DiTConfig,
    batch: int,
    seq_len: int,
    *,
    mode: str = "joint",
    bert: bool = True,
    ref: bool | None = None,
) -> dict:
    """Stage-2 step FLOPs for a VAE mode ('joint' | 'frozen' | 'scratch' | 'interval').

    joint/interval: trained VAE (clean + BERT copies), frozen reference-encoder forward (`ref`,
    default on), trained DiT. scratch: no reference encoder. frozen: one encoder forward + DiT.
    Interval steps compute the same graph in both phases (the trainer masks the VAE update).
    The DiT conditioning is counted per timestep group, as the trainer's batches (default
    positions) compute it; packed rows with explicit positions would run it per row.
    """
    m = vae_mode(mode)
    if ref is None:
        ref = m.reference
    rows_dit = train_layout_rows(seq_len, dit.block_size)
    groups = batch * train_layout_t_groups(seq_len, dit.block_size)
    pairs = batch * train_layout_pairs(seq_len, dit.block_size)
    dit_fwd = dit_flops(dit, batch * rows_dit, pairs, groups)
    dit_dense = dit_flops(dit, batch * rows_dit, batch * rows_dit * rows_dit)
    if not m.trains_vae:
        parts = {"vae_encoder": _vae_parts(vae, batch, seq_len, False, False)["vae_encoder"]}
    else:
        parts = _vae_parts(vae, batch, seq_len, True, bert)
        if ref:
            parts["vae_ref_encoder"] = _vae_parts(vae, batch, seq_len, False, False)["vae_encoder"]
    parts["dit"] = _component(dit_fwd, dit_dense, trained=True)
    return _total(parts)


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def generation_block_flops(
    vae: VAEConfig, dit: DiTConfig, context_len: int, *, steps: int = 16, cfg: bool = True
) -> dict:
    """Forward FLOPs to generate one block after `context_len` committed latents.

    Per denoising step: a conditional pass (bs rows over context + own block) and, with CFG, an
    unconditional pass (the block alone); then one commit pass (t = 0, writes the KV cache) and
    one decoder pass over the block (attending to the decoder cache). Attention is counted over
    the keys each pass reads (all visible under the block-causal mask).
    """
    bs = dit.block_size
    keys = context_len + bs
    cond = dit_flops(dit, bs, bs * keys, 1)  # one timestep per pass
    uncond = dit_flops(dit, bs, bs * bs, 1) if cfg else 0.0
    commit = dit_flops(dit, bs, bs * keys, 1)
    decoder = vae_decoder_flops(vae, bs, bs * keys)
    out = {
        "cond": steps * cond,
        "uncond": steps * uncond,
        "commit": commit,
        "decoder": decoder,
    }
    out["total"] = sum(out.values())
    return out


def generation_flops(
    vae: VAEConfig,
    dit: DiTConfig,
    prompt_len: int,
    new_blocks: int,
    *,
    steps: int = 16,
    cfg: bool = True,
) -> dict:
    """One sample: encode + prefill (DiT and decoder) the prompt, then `new_blocks` blocks.

    `prompt_len` is taken as block aligned (the committed prefix length).
    """
    pairs = block_causal_pairs(prompt_len, dit.block_size) if prompt_len else 0
    prefill = 0.0
    if prompt_len:
        prefill = (
            vae_encoder_flops(vae, prompt_len, pairs)
            + dit_flops(dit, prompt_len, pairs, 1)
            + vae_decoder_flops(vae, prompt_len, pairs)
        )
    blocks = [
        generation_block_flops(vae, dit, prompt_len + i * dit.block_size, steps=steps, cfg=cfg)
        for i in range(new_blocks)
    ]
    gen = sum(b["total"] for b in blocks)
    return {"prefill": prefill, "blocks": gen, "total": prefill + gen}


# --------------------------------------------------------------------------------------------
# Parameter counts and the paper's 6ND axis
# --------------------------------------------------------------------------------------------


def dit_param_count(cfg: DiTConfig) -> int:
    """Exact DiT parameter count (matches the official 1,829,875,728 at the default config)."""
    d, inner, c = cfg.txt_dim, cfg.heads * cfg.head_dim, cfg.txt_in_channels
    hid = cfg.expand_ratio * d
    bias = inner if cfg.qk_bias else 0
    block = (
        (d * 3 * inner + 3 * bias)  # proj_qkv
        + (inner * d + (d if cfg.qk_bias else 0))  # proj_out
        + 4 * cfg.head_dim  # norm_q, norm_k (scale, bias)
        + (d * hid + hid)
        + (hid * d + d)  # mlp
        + 2 * (d * 2 * d + 2 * d)
        + 2 * (d * d + d)  # ada msa_in/mlp_in, msa_out/mlp_out
    )
    outside = (
        (c * d + d)  # txt_in
        + (SINUSOID_DIM * d + d)
        + (d * d + d)
        + (d * cfg.emb_dim + cfg.emb_dim)  # emb_in
        + 2 * d  # txt_out_norm
        + (d * 2 * d + 2 * d)  # txt_out_ada
        + (d * cfg.txt_out_channels + cfg.txt_out_channels)  # txt_out
    )
    return cfg.num_layers * block + outside


def six_nd(tokens: float, n_params: float = PAPER_N_PARAMS) -> float:
    """The paper-consistent budget 6 * N * D (N = 1.8e9 DiT backbone by default)."""
    return 6.0 * n_params * tokens


# ============================================================================================
# LM baselines: AR (causal LLaMA) and LLaDA (bidirectional LLaMA)
#
# Same conventions as above: forward = 2 x MACs of the weight matmuls (q, k, v, o, SwiGLU gate /
# up / down, the LM head) and of attention scores and values over the visible (query, key)
# pairs; embedding gathers, norms, RoPE and softmax are not counted; trained = 3 x forward.
# Causal attention over L rows sees L (L + 1) / 2 pairs, bidirectional L^2 ("dense" = L^2 for
# both: what the masked dense kernel computes).
# ============================================================================================


def causal_pairs(seq_len: int) -> int:
    """Visible (query, key) pairs of causal attention over `seq_len` rows."""
    return seq_len * (seq_len + 1) // 2


def bidirectional_pairs(seq_len: int) -> int:
    """Visible (query, key) pairs of full attention over `seq_len` rows."""
    return seq_len * seq_len


def lm_block_macs_per_row(cfg: LMConfig) -> int:
    """Weight MACs of one layer per row: q, k, v (GQA width), o, SwiGLU gate / up / down."""
    d, inner, kv = cfg.dim, cfg.num_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    return d * inner + 2 * d * kv + inner * d + 3 * d * cfg.ffn_dim


def lm_forward_flops(cfg: LMConfig, rows: int, pairs: int, head_rows: int | None = None) -> float:
    """Forward over `rows` query rows with `pairs` visible pairs in total; the LM head runs on
    `head_rows` rows (default: every row)."""
    head_rows = rows if head_rows is None else head_rows
    attn = cfg.num_layers * 2 * pairs * cfg.num_heads * cfg.head_dim
    body = rows * cfg.num_layers * lm_block_macs_per_row(cfg)
    return 2.0 * (body + head_rows * cfg.dim * cfg.vocab_size + attn)


def _lm_train(cfg: LMConfig, batch: int, seq_len: int, pairs: int) -> dict:
    if batch <= 0 or seq_len <= 0:
        raise ValueError(f"batch ({batch}) and seq_len ({seq_len}) must be positive.")
    rows = batch * seq_len
    fwd = lm_forward_flops(cfg, rows, batch * pairs)
    dense = lm_forward_flops(cfg, rows, batch * bidirectional_pairs(seq_len))
    return _total({"lm": _component(fwd, dense, trained=True)})


def ar_train_flops(cfg: LMConfig, batch: int, seq_len: int) -> dict:
    """AR training step (causal attention, logits on every row), like `stage1_flops`."""
    return _lm_train(cfg, batch, seq_len, causal_pairs(seq_len))


def llada_train_flops(cfg: LMConfig, batch: int, seq_len: int) -> dict:
    """LLaDA training step (bidirectional attention over the masked copy)."""
    return _lm_train(cfg, batch, seq_len, bidirectional_pairs(seq_len))


def ar_generation_flops(cfg: LMConfig, prompt_len: int, new_tokens: int) -> dict:
    """One sample of the KV-cached AR sampler: a causal prefill of the prompt (LM head on its
    last row only, which gives the first token), then `new_tokens - 1` one-row passes; the
    j-th (j = 1..) attends to prompt_len + j keys."""
    if prompt_len < 1 or new_tokens < 1:
        raise ValueError(f"prompt_len ({prompt_len}) and new_tokens ({new_tokens}) must be >= 1.")
    prefill = lm_forward_flops(cfg, prompt_len, causal_pairs(prompt_len), head_rows=1)
    n = new_tokens - 1
    decode = lm_forward_flops(cfg, n, n * prompt_len + n * (n + 1) // 2)
    return {"prefill": prefill, "decode": decode, "total": prefill + decode}


def llada_generation_flops(cfg: LMConfig, prompt_len: int, gen_len: int, steps: int) -> dict:
    """One sample of the LLaDA sampler: `steps` bidirectional passes over prompt + answer, the
    LM head on the answer rows only (the sampler never reads the prompt rows' logits)."""
    rows = prompt_len + gen_len
    per_step = lm_forward_flops(cfg, rows, bidirectional_pairs(rows), head_rows=gen_len)
    return {"per_step": per_step, "total": steps * per_step}


def lm_param_counts(cfg: LMConfig) -> dict:
    """Exact parameter counts of `Llama(cfg)` (the paper's 2B baseline: embedding 410,738,688,
    blocks 1,811,939,328, norms 112,640)."""
    embedding = cfg.vocab_size * cfg.dim * (1 if cfg.tie_embeddings else 2)
    blocks = cfg.num_layers * lm_block_macs_per_row(cfg)
    norms = (2 * cfg.num_layers + 1) * cfg.dim
    return {
        "embedding": embedding,
        "blocks": blocks,
        "norms": norms,
        "non_embedding": blocks + norms,
        "total": embedding + blocks + norms,
    }
