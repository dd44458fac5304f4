"""Every experiment field in one place, each commented once. Experiments copy and edit this.

Defaults are the paper's recipe where it gives one (paper.md §2.4: AdamW (0.9, 0.95), wd 0.01,
clip 1.0, warmup 1e-6 -> 1.5e-4 over 5k steps, cosine to 1e-5 at 1M steps, batch 1408 x 512,
seed 66, data seed 6198) and the released model sizes (cola_2b). Values the paper does not give
are marked "paper: not given" with the reasoning for the default.

Not runnable on its own (too big for one host); see experiments/tiny.py, small.py, cola_2b.py,
ar_2b.py, llada_2b.py. `config.model` picks the family; each family reads its own sections
(cola: vae, dit, objective, stage2, block_size; ar: lm; llada: lm, llada) and shares the rest.
"""

import ml_collections
from ml_collections import config_dict


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    c = ml_collections.ConfigDict()
    c.seed = 66  # one seed: params init, noise, masks; folded with the step (paper: seed 66)
    c.model = "cola"  # model family: cola (Text VAE + block-causal DiT) | ar (LLaMA) | llada
    c.stage = "all"  # 'all' stages of the family in order, or one (cola: vae | prior; ar/llada: lm)
    c.block_size = 16  # cola: latents per block: VAE masks, DiT masks and sampler (one source)

    # Text VAE hyper-parameters (colajax/models/config.py VAEConfig; released 500M sizes).
    c.vae = v = ml_collections.ConfigDict()
    v.vocab_size = 100278  # decoder rows; the embedding has one more row, the BERT mask token
    v.dim = 1536  # model width
    v.ffn_dim = 6144  # FFN projection width (SwiGLU halves it)
    v.num_heads = 12  # attention heads (head_dim = dim / num_heads)
    v.encoder_num_blocks = 4  # encoder depth
    v.decoder_num_blocks = 4  # decoder depth
    v.latent_dim = 16  # latent channels per token (must equal the DiT's txt_in/out_channels)
    v.patch_size = 1  # tokens per latent; only 1 is implemented (the released model)
    v.shared_heads_kv = 1  # GQA sharing; only 1 is implemented
    v.layer_norm_eps = 1e-6  # LayerNorm epsilon
    v.layer_norm_affine = True  # affine parameters of the attention-input LayerNorm
    v.post_norm = True  # released residual quirk x1 = LN(x) + Attn(x)
    v.qk_norm = True  # LayerNorm on q and k over the full width
    v.qk_norm_affine = True  # affine parameters of the q/k LayerNorms
    v.qk_bias = False  # bias on the qkv projection
    v.clip_qkv = None  # clamp q/k/v to +-clip_qkv (None: off)
    v.rope_theta = 500000.0  # RoPE base (half-split over all head channels)
    v.bias = True  # biases on the other projections
    v.act = "swiglu"  # FFN activation: swiglu | silu | gelu
    v.encoder_last_ln = True  # LayerNorm on the encoder output before the mean/logvar head
    v.use_variation = True  # Gaussian posterior (False: deterministic latents)
    v.block_causal = True  # block-causal (True) or bidirectional attention in the VAE
    v.scaling_factor = 1.0  # DiT-space latent = (z - shifting_factor) * scaling_factor
    v.shifting_factor = 0.0  # see scaling_factor
    v.dtype = "float32"  # compute dtype: float32 | bfloat16 (params are always float32)
    v.remat = False  # rematerialise each VAE block in the backward pass (saves memory)

    # Block-causal DiT prior (DiTConfig; released 1.8B sizes).
    c.dit = d = ml_collections.ConfigDict()
    d.txt_in_channels = 16  # input latent channels (= vae.latent_dim)
    d.txt_out_channels = 16  # predicted velocity channels (= vae.latent_dim)
    d.txt_dim = 2048  # model width
    d.emb_dim = 2048  # timestep-embedding width (must equal txt_dim)
    d.heads = 16  # attention heads
    d.head_dim = 128  # channels per head
    d.expand_ratio = 4  # MLP hidden = expand_ratio * txt_dim
    d.num_layers = 24  # depth
    d.norm_eps = 1e-5  # LayerNorm epsilon
    d.qk_bias = False  # bias on the qkv projection
    d.patch_size = 1  # latents per DiT token; only 1 is supported
    d.rope_dim = 96  # leading head channels that get interleaved RoPE
    d.dtype = "float32"  # compute dtype: float32 | bfloat16
    d.remat = False  # rematerialise each DiT layer in the backward pass

    # AR / LLaDA backbone (colajax/models/config.py LMConfig; paper Table 9: LLaMA, 27 x 2048,
    # FFN 8192 SwiGLU, 16 x 128 heads, RoPE, RMSNorm, no biases, untied embeddings).
    c.lm = m = ml_collections.ConfigDict()
    m.vocab_size = 100278  # embedding and output rows (OLMo-2 vocabulary)
    m.dim = 2048  # model width
    m.ffn_dim = 8192  # SwiGLU hidden width
    m.num_heads = 16  # query heads
    m.num_kv_heads = config_dict.placeholder(int)  # key/value heads (None: = num_heads, no GQA)
    m.head_dim = 128  # channels per head
    m.num_layers = 27  # depth (27 x 2048 gives the paper's 1.8B non-embedding parameters)
    m.rope_theta = 10000.0  # RoPE base (paper: not given; the HF LLaMA default)
    m.norm_eps = 1e-6  # RMSNorm epsilon
    m.tie_embeddings = False  # share input and output embeddings (paper: untied)
    m.init_std = 0.02  # normal init std of every matrix
    m.dtype = "float32"  # compute dtype: float32 | bfloat16 (params are always float32)
    m.remat = False  # rematerialise each layer in the backward pass

    # LLaDA masked-diffusion baseline (Nie et al. 2025).
    c.llada = ll = ml_collections.ConfigDict()
    ll.mask_id = -1  # input id of a masked position (-1: the last vocabulary row; OLMo-2: <|pad|>)
    ll.t_eps = 1e-3  # mask probability p = (1 - t_eps) t + t_eps, t ~ U(0, 1) (LLaDA's eps)

    # Loss weights and the diffusion path (paper Eq. 3.16 / 3.18).
    c.objective = o = ml_collections.ConfigDict()
    o.beta = (
        1e-3  # Stage-1 KL(q || N(0, I)) weight (paper: not given; small, as usual for text VAEs)
    )
    o.stage2_beta = 1e-3  # Stage-2 weight of E_q log q (paper: not given; = beta)
    o.mask_ratio = 0.15  # BERT-style masking ratio (paper: not given; BERT's 15%)
    o.lambda_mask = 1.0  # BERT-style loss weight (paper: not given)
    o.lambda_vae = 1.0  # Stage-2 weight of the VAE terms (paper: not given)
    o.lambda_fm = 1.0  # flow-matching loss weight (paper: not given)
    o.lambda_ref = 1.0  # KL(q_phi || q_phi_ref) weight, frozen Stage-1 encoder (paper: not given)
    o.t_loc = 1.0  # logit-normal timestep location (paper: 1.0 for latent dim 16)
    o.t_scale = 1.0  # logit-normal scale (paper's "scale=0" read as log-sigma; repo default 1.0)
    o.timestep_sampling = "sequence"  # one t per 'sequence' (released script) | per 'block'
    o.prompt_block_prob = 0.05  # P(a noisy block pins a clean prefix at t=0, weight 0) (released)
    o.bf16_inputs = "auto"  # round DiT inputs (latents, t) to bf16: auto (bf16 DiT) | on | off
    o.vae_sample = True  # z0 = posterior sample (True) or posterior mean (False)
    o.fm_grad_to_vae = True  # FM gradient reaches the encoder through z_t (paper: open)

    # Stage 2: how the VAE takes part (paper RQ2).
    c.stage2 = s = ml_collections.ConfigDict()
    s.vae_mode = "joint"  # joint | frozen | scratch (VAE from random init) | interval
    s.vae_lr_ratio = 1.0  # VAE learning rate / DiT learning rate (paper: 1, "Joint DiT x1")
    s.interval_joint_steps = 2000  # interval mode: steps with the VAE trained ...
    s.interval_frozen_steps = 3000  # ... then steps with it frozen, repeated
    s.init_from = ""  # Stage-1 checkpoint root ('' with stage=all: <workdir>/vae)

    # Optimizer (paper §2.4).
    c.optim = p = ml_collections.ConfigDict()
    p.lr = 1.5e-4  # peak learning rate after warmup
    p.init_lr = 1e-6  # learning rate at step 0 (linear warmup from here)
    p.warmup_steps = 5000  # linear warmup length
    p.decay_steps = 1_000_000  # step at which the cosine reaches final_lr (counted from step 0)
    p.final_lr = 1e-5  # cosine floor (held after decay_steps)
    p.b1 = 0.9  # Adam beta1
    p.b2 = 0.95  # Adam beta2
    p.eps = 1e-8  # Adam epsilon
    p.stage1_warmup_steps = -1  # Stage-1 warmup (-1: min(warmup_steps, train.vae_steps))
    p.stage1_decay_steps = -1  # Stage-1 step where the cosine reaches final_lr (-1: vae_steps)
    p.weight_decay = 0.01  # decoupled weight decay (AdamW)
    p.wd_exclude = ("bias$", "scale$", "embedding$")  # regexes on 'a/b/leaf' paths: no decay
    # (wd_exclude=() is the released script's "decay every parameter"; paper: not given)
    p.clip_norm = 1.0  # global gradient-norm clip (0: off)
    p.clip_scope = "all"  # clip the norm of: all trained grads | dit (Stage 2 DiT only, released)
    p.grad_accum = 1  # micro-batches per step (scanned inside the step; memory stays flat)

    # Training loop.
    c.train = t = ml_collections.ConfigDict()
    t.batch_size = 1408  # global batch (sequences per optimizer step)
    t.seq_len = 512  # tokens per sequence (multiple of the block sizes)
    t.vae_steps = 100_000  # Stage-1 steps (paper: not given)
    t.steps = 1_000_000  # steps of the main stage (cola: Stage 2; ar / llada: the only stage)
    t.log_every = 50  # log line / metrics every N steps
    t.eval_every = 1000  # held-out loss every N steps (0: off; needs a validation source)
    t.eval_batches = 8  # validation batches per eval
    t.ckpt_every = 1000  # checkpoint every N steps (and always at the end / on SIGTERM)
    t.keep = 3  # keep the newest N checkpoints ...
    t.keep_period = 0  # ... plus every step that is a multiple of this (0: none)
    t.async_ckpt = True  # write checkpoints in the background
    t.budgets = ()  # budget points, EFLOPs on the paper axis 6 N D: checkpoints never deleted
    t.budget_steps = ()  # ... or as main-stage steps (give budgets or budget_steps, not both)
    t.budget_step_multiple = 1  # budgets land on multiples of this step (paper: 1000 -> 10k, 20k)

    # Device mesh and logical-axis rules (colajax/sharding.py).
    c.mesh = ml_collections.ConfigDict()
    c.mesh.shape = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})  # -1 fills
    c.mesh.num_slices = 1  # TPU slices (multi-slice over DCN) or process groups; >1: hybrid mesh
    # dcn_shape: the part of each mesh axis that spans slices (product = num_slices, -1 fills);
    # data (default): only the gradient all-reduce crosses the data-centre network
    c.mesh.dcn_shape = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    c.mesh.rules = r = ml_collections.ConfigDict()  # logical axis -> mesh axes (() = replicate)
    r.batch = ("data", "fsdp")  # activation batch
    r.length = ()  # activation sequence length
    r.vocab = ("tensor",)  # vocabulary rows/columns
    r.embed = ("fsdp",)  # model width: FSDP shards parameters along it
    r.mlp = ("tensor",)  # FFN hidden
    r.heads = ("tensor",)  # attention heads
    r.kv = ()  # head channels
    r.latent = ()  # latent channels (16: too small to split)

    # FLOP accounting (colajax/flops.py).
    c.flops = ml_collections.ConfigDict()
    c.flops.paper_n = config_dict.placeholder(float)  # N of the paper axis 6 N D (None: the
    # family's own: Cola's DiT, AR/LLaDA non-embedding params; the 2B experiments set 1.8e9)

    # Throughput accounting.
    c.metrics = ml_collections.ConfigDict()
    c.metrics.peak_flops = config_dict.placeholder(float)  # per-device peak FLOP/s; None: measure
    c.metrics.min_sharded_size = 2**20  # params this large must be sharded when fsdp > 1

    # Data (colajax/data/pipeline.py); 'synthetic' needs no files.
    c.data = a = ml_collections.ConfigDict()
    a.kind = "synthetic"  # synthetic | text | jsonl | array_record | tfds
    a.path = ""  # training file(s)/glob(s) (text, jsonl, array_record); bundled:<file> allowed
    a.valid_path = ""  # validation file(s); '' and no valid_split: no eval
    a.name = ""  # tfds dataset name
    a.split = "train"  # tfds training split
    a.valid_split = ""  # tfds validation split ('' = none)
    a.data_dir = ""  # tfds data_dir ('' = default)
    a.text_key = "text"  # record field holding the text (jsonl, array_record, tfds)
    a.text_split = "paragraph"  # text files: paragraph | line | file per document
    a.record_format = "auto"  # array_record payload: auto | text | json
    a.tokenizer = ""  # SentencePiece .model or HF tokenizer.json (not used by synthetic)
    a.packing = "stream"  # rows: stream (cut the token stream) | docstart (released loader)
    a.docstart_fill = "pad"  # docstart: pad the rest of a row (weight 0) | crop (released)
    a.docstart_buffer = 1000  # docstart: documents in the best-fit buffer (released: 1000)
    a.seed = 6198  # shuffle seed (paper: data seed 6198)
    return c
