"""An independent reference of the Stage-2 training-layout attention pattern, written from the
official rule (official-implementation.md §4.2) with plain Python loops, for the mask tests."""

import numpy as np


def allowed_rows(seg_L, block_size: int, drop_last_clean: bool = True) -> np.ndarray:
    """bool `[S, S]` (query, key) for one sample: rows `[clean | noisy]`, both at positions
    0..L-1; clean q sees clean k of blocks <= its own; noisy q sees clean k of strictly earlier
    blocks and noisy k of its own block; nothing across segments, no padding key (segment 0).
    `drop_last_clean`: colajax's layout omits the last clean block (no query can see it)."""
    seg_L = np.asarray(seg_L)
    length = len(seg_L)
    n_clean = length - block_size if drop_last_clean else length
    rows = [(0, r) for r in range(n_clean)] + [(1, r) for r in range(length)]
    out = np.zeros((len(rows), len(rows)), bool)
    for i, (q_copy, q) in enumerate(rows):
        for j, (k_copy, k) in enumerate(rows):
            bq, bk = q // block_size, k // block_size
            if q_copy == 0 and k_copy == 0:
                ok = bq >= bk
            elif q_copy == 1 and k_copy == 0:
                ok = bq > bk
            elif q_copy == 1 and k_copy == 1:
                ok = bq == bk
            else:
                ok = False
            out[i, j] = ok and seg_L[q] == seg_L[k] and seg_L[k] > 0
    return out


def allowed_batch(seg_BL, block_size: int) -> np.ndarray:
    """`allowed_rows` for every sample: bool `[B, 1, S, S]` (the dense mask's shape)."""
    return np.stack([allowed_rows(s, block_size) for s in np.asarray(seg_BL)])[:, None]
