"""grain input pipeline: source -> tokenize -> pack rows -> shuffle(seed) -> batch -> global arrays.

Each document becomes `[bos] + ids + [eos]` (just `[bos] + ids` when bos == eos, as with the
OLMo-2 `<|endoftext|>` separator). Packing (`packing.py`):
- `stream` (default): documents are concatenated in source order and cut into rows of `seq_len`
  tokens, so a document may continue on the next row; the tail shorter than a row is dropped.
  Batches are `{'tokens'}`.
- `docstart` (the released loader): every row starts at a document start, documents are packed
  best-fit and the rest of a row is padded (or the shortest document cropped to fill it).
  Batches are `{'tokens', 'loss_weights'}` (float32, 0 on padding, which stays a model input).
Tokens are computed once per (source, tokenizer) and kept in memory as numpy.

Rows are a grain `MapDataset`: `shuffle(seed)` (a new permutation every epoch) -> `repeat()` ->
`batch(global_batch // process_count)` -> `to_iter_dataset()`. The iterator's state is the grain
state (`{'next_index': n}`) plus the settings it was built with: a small JSON dict, the same on
every process, and restoring it replays exactly the same batches. Save it with orbax as
`grain.checkpoint.CheckpointSave(it)` (one JSON file per process) or `ocp.args.JsonSave(
it.get_state())`.
"""

import collections
from typing import Any

import grain
import jax
import numpy as np

from colajax.data import packing, sources
from colajax.data import tokenizer as tokenizer_lib

_CACHE_SIZE = 4
_token_cache: collections.OrderedDict[str, tuple] = collections.OrderedDict()
PACKINGS = ("stream", "docstart")


def tokenize_documents(source, tokenizer, chunk_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(stream, starts): all documents of `source` as one int32 stream with BOS/EOS and the
    index of each document's first token (memoised)."""
    key = f"{source!r}|{tokenizer!r}"
    if key in _token_cache:
        _token_cache.move_to_end(key)
        return _token_cache[key]
    bos, eos = tokenizer.bos_id, tokenizer.eos_id
    tail = [] if eos == bos else [eos]
    pieces = []
    for start in range(0, len(source), chunk_size):
        texts = [source[i] for i in range(start, min(start + chunk_size, len(source)))]
        for ids in tokenizer.encode_batch(texts):
            pieces.append(np.asarray([bos, *ids, *tail], dtype=np.int32))
    stream = np.concatenate(pieces)
    starts = np.cumsum([0] + [len(p) for p in pieces[:-1]]).astype(np.int64)
    stream.setflags(write=False)
    _token_cache[key] = (stream, starts)
    if len(_token_cache) > _CACHE_SIZE:
        _token_cache.popitem(last=False)
    return stream, starts


def tokenize_source(source, tokenizer, chunk_size: int = 1024) -> np.ndarray:
    """All documents of `source` as one int32 stream with BOS/EOS (memoised)."""
    return tokenize_documents(source, tokenizer, chunk_size)[0]


def pack_rows(stream: np.ndarray, seq_len: int) -> np.ndarray:
    """Cuts a token stream into [n_rows, seq_len] (a view; the short tail is dropped)."""
    n_rows = len(stream) // seq_len
    if n_rows == 0:
        raise ValueError(
            f"the corpus part of this process has {len(stream)} tokens, fewer than one row of "
            f"seq_len={seq_len}: use more data or a shorter seq_len."
        )
    return stream[: n_rows * seq_len].reshape(n_rows, seq_len)


def _check_shapes(global_batch, seq_len, block_size, process_count, sharding) -> int:
    if seq_len <= 0 or seq_len % block_size:
        lo = max(block_size, seq_len // block_size * block_size)
        raise ValueError(
            f"seq_len={seq_len} is not a positive multiple of the model block_size={block_size}: "
            f"use e.g. {lo} or {lo + block_size}."
        )
    if global_batch <= 0 or global_batch % process_count:
        raise ValueError(
            f"global batch {global_batch} is not divisible by the {process_count} processes: "
            "use a multiple of the process count."
        )
    if sharding is not None and process_count != jax.process_count():
        raise ValueError(
            f"process_count={process_count} but JAX runs {jax.process_count()} processes: a "
            "global array needs the real count (pass sharding=None to get numpy batches)."
        )
    return global_batch // process_count


def _process(process_index, process_count) -> tuple[int, int]:
    if process_index is None or process_count is None:
        return jax.process_index(), jax.process_count()
    return process_index, process_count


class DocRows:
    """`docstart` rows as a grain source: item i = {'tokens': [L], 'length': valid tokens}."""

    def __init__(self, rows_NL: np.ndarray, lengths_N: np.ndarray):
        self.rows_NL, self.lengths_N = rows_NL, lengths_N

    def __len__(self) -> int:
        return len(self.rows_NL)

    def __getitem__(self, i):  # an index or a slice
        return {"tokens": self.rows_NL[i], "length": self.lengths_N[i]}


def _load_rows(cfg, tokenizer, seq_len, process_index, process_count, layout=None):
    """`stream`: rows [N, L]; `docstart`: `DocRows`. `layout`: dict(packing, fill, buffer)."""
    if isinstance(tokenizer, str):
        tokenizer = tokenizer_lib.load_tokenizer(tokenizer)
    source = sources.make_source(cfg, process_index, process_count)
    layout = layout or {"packing": "stream"}
    if layout["packing"] not in PACKINGS:
        raise ValueError(f"data.packing={layout['packing']!r}; use one of {PACKINGS}.")
    if layout["packing"] == "stream":
        return pack_rows(tokenize_source(source, tokenizer), seq_len)
    docs = packing.split_documents(*tokenize_documents(source, tokenizer))
    rows, lengths = packing.pack_docstart(
        docs, seq_len, pad_id=tokenizer.pad_id, buffer=layout["buffer"], fill=layout["fill"]
    )
    if len(rows) == 0:
        raise ValueError(f"the corpus part of this process fills no row of seq_len={seq_len}.")
    return DocRows(rows, lengths)


class _Globalize:
    """Turns a local numpy batch (`[b, L]` tokens, or a `DocRows` batch) into the batch dict of
    global jax.Arrays `[B, L]` (or keeps numpy)."""

    def __init__(self, sharding, global_batch: int, seq_len: int):
        self.sharding, self.shape = sharding, (global_batch, seq_len)

    def __call__(self, local) -> dict[str, Any]:
        if isinstance(local, dict):
            batch = {
                "tokens": local["tokens"],
                "loss_weights": packing.loss_weights(local["length"], self.shape[1]),
            }
        else:
            batch = {"tokens": local}
        batch = {k: np.ascontiguousarray(v) for k, v in batch.items()}
        if self.sharding is None:
            return batch
        make = jax.make_array_from_process_local_data
        return {k: make(self.sharding, v, self.shape) for k, v in batch.items()}


class TrainIterator(grain.DatasetIterator):
    """Endless shuffled batches `{'tokens': int32 [B, L]}` (+ `loss_weights` with docstart
    packing); checkpointable via get/set_state."""

    def __init__(self, rows_NL, local_batch: int, globalize: _Globalize, meta: dict):
        ds = (
            grain.MapDataset.source(rows_NL)
            .shuffle(seed=meta["seed"])
            .repeat(None)
            .batch(local_batch, drop_remainder=True)
        )
        options = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)  # rows are in memory
        super().__init__(ds.to_iter_dataset(options).__iter__())
        self.num_rows, self._globalize, self._meta = len(rows_NL), globalize, dict(meta)

    def __next__(self) -> dict[str, Any]:
        return self._globalize(next(self._parent))

    def get_state(self) -> dict[str, Any]:
        return {"grain": self._parent.get_state(), **self._meta}

    def set_state(self, state: dict[str, Any]) -> None:
        """Resume at the saved position. A different process count (resuming a pod job on
        another slice size) keeps the number of global batches consumed; each process then
        reads its new shard from that point, so the order differs from an uninterrupted run."""
        saved = {k: state.get(k) for k in self._meta}
        same = {k: v for k, v in self._meta.items() if k != "process_count"}
        packings = (state.get("packing", "stream"), self._meta.get("packing", "stream"))
        if {k: saved[k] for k in same} != same or packings[0] != packings[1]:
            raise ValueError(
                f"data iterator state was saved with {saved} but this pipeline has {self._meta}; "
                "restore with the same seed, seq_len, global batch and packing."
            )
        if saved["process_count"] != self._meta["process_count"] and jax.process_index() == 0:
            print(
                f"WARNING: data state saved by {saved['process_count']} processes, resumed by "
                f"{self._meta['process_count']}: each process continues its new shard after "
                f"the same number of global batches ({state['grain']}).",
                flush=True,
            )
        self._parent.set_state(state["grain"])


def make_train_iter(
    cfg,
    tokenizer,
    global_batch: int,
    seq_len: int,
    sharding: jax.sharding.Sharding | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    *,
    block_size: int = 1,
    seed: int = 0,
    packing: str = "stream",
    docstart_fill: str = "pad",
    docstart_buffer: int = 1000,
) -> TrainIterator:
    """Training iterator over the source config `cfg` (see `sources.make_source`).

    `tokenizer` is a tokenizer object or a path for `load_tokenizer`. Each process yields its
    `global_batch // process_count` rows; with a `sharding` (e.g. NamedSharding(mesh,
    P('data', None))) batches are global jax.Arrays, otherwise numpy. `packing`: 'stream' |
    'docstart' (with `docstart_fill` 'pad' | 'crop' and a best-fit buffer of `docstart_buffer`
    documents); see the module docstring.
    """
    process_index, process_count = _process(process_index, process_count)
    local_batch = _check_shapes(global_batch, seq_len, block_size, process_count, sharding)
    layout = {"packing": packing, "fill": docstart_fill, "buffer": int(docstart_buffer)}
    rows_NL = _load_rows(cfg, tokenizer, seq_len, process_index, process_count, layout)
    meta = {
        "seed": int(seed),
        "seq_len": seq_len,
        "global_batch": global_batch,
        "process_count": process_count,
    }
    if packing != "stream":  # (stream states keep their old keys: old checkpoints resume)
        meta.update({f"docstart_{k}": v for k, v in layout.items() if k != "packing"})
        meta["packing"] = packing
    return TrainIterator(rows_NL, local_batch, _Globalize(sharding, global_batch, seq_len), meta)


class EvalBatches:
    """A finite, unshuffled, re-iterable sequence of batches (rows in source order)."""

    def __init__(self, rows_NL, local_batch: int, num_batches: int, globalize):
        self.rows_NL, self.local_batch, self.num_batches = rows_NL, local_batch, num_batches
        self._globalize = globalize

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        b = self.local_batch
        for i in range(self.num_batches):
            yield self._globalize(self.rows_NL[i * b : (i + 1) * b])


def make_eval_batches(
    cfg,
    tokenizer,
    global_batch: int,
    seq_len: int,
    sharding: jax.sharding.Sharding | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    *,
    block_size: int = 1,
    max_batches: int | None = None,
    packing: str = "stream",
    docstart_fill: str = "pad",
    docstart_buffer: int = 1000,
) -> EvalBatches:
    """Validation batches: every full batch of rows once, the same count on every process."""
    process_index, process_count = _process(process_index, process_count)
    local_batch = _check_shapes(global_batch, seq_len, block_size, process_count, sharding)
    layout = {"packing": packing, "fill": docstart_fill, "buffer": int(docstart_buffer)}
    rows_NL = _load_rows(cfg, tokenizer, seq_len, process_index, process_count, layout)
    num_batches = len(rows_NL) // local_batch
    if jax.process_count() > 1:  # processes hold different row counts: agree on the minimum
        from jax.experimental import multihost_utils

        num_batches = int(np.min(multihost_utils.process_allgather(np.int64(num_batches))))
    if max_batches is not None:
        num_batches = min(num_batches, max_batches)
    if num_batches == 0:
        raise ValueError(
            f"the validation data gives {len(rows_NL)} rows of seq_len={seq_len} on this process, "
            f"fewer than its batch of {local_batch}: lower the eval batch or seq_len."
        )
    globalize = _Globalize(sharding, global_batch, seq_len)
    return EvalBatches(rows_NL, local_batch, num_batches, globalize)
