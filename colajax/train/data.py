"""Training/validation batches for the trainer: the grain pipeline, or synthetic tokens.

`config.data.kind == 'synthetic'` needs no files: each row is an arithmetic token sequence
(random start and stride, mod the vocabulary), a pure function of (seed, batch index, row), so
it is learnable, deterministic and resumable. Every other kind goes through
`colajax.data.pipeline` (source -> tokenize -> pack -> shuffle -> batch).
All iterators yield dicts of `[B, L]` global arrays, `{'tokens': int32}` plus `loss_weights`
(float32) with `data.packing='docstart'`, and have get_state / set_state.
"""

from typing import Any

import jax
import numpy as np

FIRST_ID = 4  # synthetic tokens avoid the special ids pad/unk/bos/eos = 0..3
VALID_SALT = 7919


class SyntheticTokens:
    """Endless deterministic batches; state = {'kind': 'synthetic', 'index': n, ...}."""

    def __init__(self, global_batch, seq_len, vocab_size, sharding=None, *, seed=0, start=0):
        if vocab_size <= FIRST_ID + 1:
            raise ValueError(f"synthetic data needs vocab_size > {FIRST_ID + 1}.")
        self.global_batch, self.seq_len, self.vocab_size = global_batch, seq_len, vocab_size
        self.sharding, self.seed, self.index = sharding, int(seed), int(start)
        pc = jax.process_count()
        if global_batch % pc:
            raise ValueError(f"global batch {global_batch} not divisible by {pc} processes.")
        self.local_batch, self.offset = (
            global_batch // pc,
            jax.process_index() * (global_batch // pc),
        )

    def rows(self, index: int) -> np.ndarray:
        """This process's rows of batch `index`, int32 [local_batch, L]."""
        rng = np.random.default_rng([self.seed, index])
        n = self.vocab_size - FIRST_ID
        start = rng.integers(0, n, size=self.global_batch)
        stride = rng.integers(1, 9, size=self.global_batch)
        sl = slice(self.offset, self.offset + self.local_batch)
        pos = np.arange(self.seq_len)
        rows = FIRST_ID + (start[sl, None] + stride[sl, None] * pos[None, :]) % n
        return rows.astype(np.int32)

    def _globalize(self, rows):
        if self.sharding is None:
            return {"tokens": rows}
        shape = (self.global_batch, self.seq_len)
        return {"tokens": jax.make_array_from_process_local_data(self.sharding, rows, shape)}

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, Any]:
        batch = self._globalize(self.rows(self.index))
        self.index += 1
        return batch

    def get_state(self) -> dict[str, Any]:
        return {
            "kind": "synthetic",
            "index": self.index,
            "seed": self.seed,
            "global_batch": self.global_batch,
            "seq_len": self.seq_len,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        mine = self.get_state()
        for key in ("kind", "seed", "global_batch", "seq_len"):
            if state.get(key) != mine[key]:
                raise ValueError(
                    f"data iterator state has {key}={state.get(key)!r} but this run uses "
                    f"{mine[key]!r}; resume with the same data settings or a fresh workdir."
                )
        self.index = int(state["index"])


def _source_cfg(data_cfg, split: str) -> dict[str, Any] | None:
    kind = data_cfg.kind
    out: dict[str, Any] = {"kind": kind, "text_key": data_cfg.text_key}
    if kind == "tfds":
        name_split = data_cfg.split if split == "train" else data_cfg.valid_split
        if not name_split:
            return None
        out.update(name=data_cfg.name, split=name_split, data_dir=data_cfg.data_dir or None)
    else:
        path = data_cfg.path if split == "train" else data_cfg.valid_path
        if not path:
            return None
        out["path"] = path
        if kind == "array_record":
            out["record_format"] = data_cfg.record_format
        else:
            out["text_split"] = data_cfg.text_split
    return out


def _model_shape(config) -> tuple[int, int]:
    """(vocabulary size, row multiple) of the config's family: the tokenizer must fit the
    vocabulary, seq_len must be a multiple of the block size (1 for token-level models)."""
    from colajax import families

    family = families.of_config(config)
    models = family.models(config)
    return family.vocab_size(models), family.row_multiple(models)


def _tokenizer(config):
    from colajax.data import tokenizer as tokenizer_lib

    if not config.data.tokenizer:
        raise ValueError(
            f"config.data.kind={config.data.kind!r} needs config.data.tokenizer (a SentencePiece "
            ".model or a tokenizer.json); or use config.data.kind='synthetic'."
        )
    tok = tokenizer_lib.load_tokenizer(config.data.tokenizer)
    tokenizer_lib.check_vocab(tok, _model_shape(config)[0])
    return tok


def _packing(data_cfg) -> dict[str, Any]:
    return {
        "packing": data_cfg.packing,
        "docstart_fill": data_cfg.docstart_fill,
        "docstart_buffer": data_cfg.docstart_buffer,
    }


def make_train_iter(config, sharding, *, stage_salt: int = 0):
    """The training iterator of `config` (global batches on `sharding`)."""
    tr = config.train
    if config.data.kind == "synthetic":
        seed = config.data.seed + stage_salt
        return SyntheticTokens(
            tr.batch_size, tr.seq_len, _model_shape(config)[0], sharding, seed=seed
        )
    from colajax.data import pipeline

    cfg = _source_cfg(config.data, "train")
    if cfg is None:
        raise ValueError(f"config.data.kind={config.data.kind!r} needs config.data.path / split.")
    return pipeline.make_train_iter(
        cfg,
        _tokenizer(config),
        tr.batch_size,
        tr.seq_len,
        sharding,
        block_size=_model_shape(config)[1],
        seed=config.data.seed + stage_salt,
        **_packing(config.data),
    )


def make_eval_batches(config, sharding) -> list | Any | None:
    """A re-iterable of validation batches, or None when the config names no validation data."""
    tr = config.train
    if tr.eval_every <= 0 or tr.eval_batches <= 0:
        return None
    if config.data.kind == "synthetic":
        it = SyntheticTokens(
            tr.batch_size,
            tr.seq_len,
            _model_shape(config)[0],
            sharding,
            seed=config.data.seed + VALID_SALT,
        )
        return [next(it) for _ in range(tr.eval_batches)]
    cfg = _source_cfg(config.data, "valid")
    if cfg is None:
        return None
    from colajax.data import pipeline

    return pipeline.make_eval_batches(
        cfg,
        _tokenizer(config),
        tr.batch_size,
        tr.seq_len,
        sharding,
        block_size=_model_shape(config)[1],
        max_batches=tr.eval_batches,
        **_packing(config.data),
    )
