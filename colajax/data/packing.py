"""Row layouts of a tokenized corpus: `stream` (cut a token stream) and `docstart` (the released
loader's: every row starts at a document start, best-fit packing).

`docstart` follows `cola_dlm/dataloader.py` (official-implementation.md §7.7, nanochat's best-fit
loader): documents enter a buffer of `buffer` documents in corpus order; each row takes the
largest buffered document that fits the space left, until none fits. Then
- `fill='pad'`: the rest of the row is padding (`pad_id`, loss weight 0, still a model input);
- `fill='crop'` (the release): the shortest buffered document is cropped to fill the row.
A row that no buffered document fits even when empty (all are longer than a row) crops the
shortest one in both modes; the tail of a cropped document is dropped, as the release does (so
corpora of documents much longer than a row lose data: use `stream` or a longer `seq_len`).
The packing is a pure function of the corpus order, so it is computed once and resumes exactly.
"""

import bisect

import numpy as np

FILLS = ("pad", "crop")


def split_documents(stream: np.ndarray, starts: np.ndarray) -> list[np.ndarray]:
    """The documents of a token stream, given each document's first index."""
    ends = np.append(starts[1:], len(stream))
    return [stream[a:b] for a, b in zip(starts, ends, strict=True)]


def pack_docstart(
    docs: list[np.ndarray], seq_len: int, *, pad_id: int, buffer: int = 1000, fill: str = "pad"
) -> tuple[np.ndarray, np.ndarray]:
    """Best-fit rows `[N, seq_len]` (int32) and each row's valid length `[N]` (int32).

    Every row starts with a document's first token. In 'pad' mode the last, partly filled row
    is kept (padded); in 'crop' mode a last row that cannot be filled is dropped.
    """
    if fill not in FILLS:
        raise ValueError(f"data.docstart_fill={fill!r}; use one of {FILLS}.")
    if buffer < 1:
        raise ValueError(f"data.docstart_buffer={buffer} must be >= 1.")
    keys: list[tuple[int, int]] = []  # (length, -corpus index): sorted, so best fit = bisect
    nxt = 0
    rows, lengths = [], []

    def refill():
        nonlocal nxt
        while len(keys) < buffer and nxt < len(docs):
            bisect.insort(keys, (len(docs[nxt]), -nxt))
            nxt += 1

    while True:
        refill()
        if not keys:
            break
        row = np.full(seq_len, pad_id, np.int32)
        used = 0
        while used < seq_len:
            refill()
            if not keys:
                break
            i = bisect.bisect_right(keys, (seq_len - used, 1)) - 1  # largest that fits
            if i < 0 and fill == "pad" and used:
                break  # pad the rest
            _, neg = keys.pop(max(i, 0))  # (or crop the shortest)
            piece = docs[-neg][: seq_len - used]
            row[used : used + len(piece)] = piece
            used += len(piece)
        if used < seq_len and fill == "crop":
            break  # the corpus ran out: drop the partial row
        rows.append(row)
        lengths.append(used)
    if not rows:
        return np.zeros((0, seq_len), np.int32), np.zeros((0,), np.int32)
    return np.stack(rows), np.asarray(lengths, np.int32)


def loss_weights(lengths_B: np.ndarray, seq_len: int) -> np.ndarray:
    """float32 `[B, seq_len]`: 1 on each row's first `length` tokens, 0 on its padding."""
    return (np.arange(seq_len)[None, :] < np.asarray(lengths_B)[:, None]).astype(np.float32)
