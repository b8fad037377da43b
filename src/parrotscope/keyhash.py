"""The seeded keyed hash of sample keys: one function behind every seeded draw and split.

SipHash-2-4 (``pandas.util.hash_array``) with a 16-character key derived from the seed: a key's
hash depends on the key and the seed alone, not on its part, its row or the other keys, so a
uniform draw (the lowest hashes) and the held-out split (hashes in the lowest fraction of the
range) are the same whatever the order the files are read in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pandas.util import hash_array


def hash_key(seed: int) -> str:
    """pandas' SipHash takes a 16-character key: the seed written with 16 digits."""
    if not 0 <= int(seed) < 10 ** 16:
        raise ValueError(f"a sampling seed (curate.seed, filters.seed, figures.seed, heldout.seed) must be in "
                         f"[0, 10^16), got {seed}")
    return f"{int(seed):016d}"


def keyed_hashes(keys: Sequence[str] | np.ndarray, seed: int) -> np.ndarray:
    """The uint64 keyed hash of each key."""
    return hash_array(np.asarray(keys, dtype=object), hash_key=hash_key(seed), categorize=False)


def heldout_flags(keys: Sequence[str] | np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Whether each key is held out: its keyed hash is in the lowest ``fraction`` of the 64-bit
    range (about ``fraction`` of any large set of keys)."""
    if not 0.0 <= float(fraction) < 1.0:
        raise ValueError(f"heldout.fraction must be in [0, 1), got {fraction}")
    if not len(keys) or float(fraction) == 0.0:
        return np.zeros(len(keys), dtype=bool)
    return keyed_hashes(keys, seed) < np.uint64(int(float(fraction) * 2.0**64))
