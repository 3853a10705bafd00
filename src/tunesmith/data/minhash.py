"""MinHash signatures for many texts at once, computed with numpy.

datasketch hashes every shingle with SHA-1 in a Python loop, which made near-duplicate
detection the slowest step of a data check (about 300 shingles per example). Here the
shingle hashes of a whole batch of texts come from one vectorised rolling hash over their
UTF-8 bytes, and the permutations and minimum are one array expression per batch.

The signatures are exactly datasketch's own for the same shingle hashes: a test builds
``datasketch.MinHash(hashfunc=shingle_hash)`` over the same shingles and compares.

:class:`BandIndex` is the banding of ``datasketch.MinHashLSH`` (same bands and rows for a
threshold, same candidates: a test compares them) over a whole array of signatures at once;
datasketch's per-item insert cost more than computing the signatures.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from datasketch import MinHash, MinHashLSH

#: Multiplier of the polynomial rolling hash over bytes (odd, so it is invertible mod 2**32).
_BASE = np.uint32(0x01000193)
#: Shingles hashed per numpy batch.
_BATCH_SHINGLES = 1_000_000
#: Shingles permuted per block: 128 permutations x 4096 x 4 bytes stays in the L2 cache.
_CACHE_SHINGLES = 4096


@functools.cache
def _template(num_perm: int) -> MinHash:
    return MinHash(num_perm=num_perm, seed=1)


def shingle_hash(shingle: bytes) -> int:
    """The 32-bit hash of one shingle, as the vectorised path computes it (for parity tests)."""
    h = 0
    for byte in shingle:
        h = (h * int(_BASE) + byte) & 0xFFFFFFFF
    return h


def _fmix32(hv: np.ndarray) -> np.ndarray:
    # MurmurHash3's finaliser, as datasketch applies it before the affine permutations.
    hv = hv ^ (hv >> np.uint32(16))
    hv = hv * np.uint32(0x85EBCA6B)
    hv = hv ^ (hv >> np.uint32(13))
    hv = hv * np.uint32(0xC2B2AE35)
    return hv ^ (hv >> np.uint32(16))


def shingles(text: str, n: int) -> list[bytes]:
    """The byte shingles a signature covers: every ``n``-byte window of the space-padded UTF-8 text."""
    data = _padded(text, n)
    return [data[i : i + n] for i in range(len(data) - n + 1)]


def _padded(text: str, n: int) -> bytes:
    data = f" {text} ".encode()
    return data.ljust(n, b" ")


def signatures(texts: Sequence[str], num_perm: int = 128, n: int = 5) -> np.ndarray:
    """MinHash signatures of the set of ``n``-byte shingles of each text.

    Args:
        texts: The texts.
        num_perm: Number of permutations (datasketch's, seed 1).
        n: Shingle length in bytes.

    Returns:
        A ``(len(texts), num_perm)`` uint32 array: one signature per row, in order.
    """
    template = _template(num_perm)
    if template.scheme != "affine32":  # the arithmetic below is datasketch's affine32 scheme
        raise RuntimeError(f"unsupported datasketch MinHash scheme {template.scheme!r}")
    a, b = template.permutations
    out: list[np.ndarray] = []
    start = 0
    while start < len(texts):
        chunk, size, stop = [], 0, start
        while stop < len(texts) and (size < _BATCH_SHINGLES or not chunk):
            data = _padded(texts[stop], n)
            chunk.append(data)
            size += len(data) - n + 1
            stop += 1
        out.append(_batch(chunk, a, b, n))
        start = stop
    return np.concatenate(out) if out else np.empty((0, num_perm), dtype=np.uint32)


def _batch(chunk: list[bytes], a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    joined = np.frombuffer(b"".join(chunk), dtype=np.uint8).astype(np.uint32)
    windows = len(joined) - n + 1
    h = np.zeros(windows, dtype=np.uint32)
    for k in range(n):
        h = h * _BASE + joined[k : k + windows]
    lengths = np.fromiter((len(d) for d in chunk), dtype=np.int64, count=len(chunk))
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    counts = lengths - n + 1
    firsts = np.cumsum(counts) - counts
    # Window starts that stay inside one text; the windows spanning two texts are skipped.
    valid = np.repeat(starts - firsts, counts) + np.arange(counts.sum())
    hv = _fmix32(h[valid])
    out = np.empty((len(chunk), len(a)), dtype=np.uint32)
    a_col, b_col = a[:, None], b[:, None]
    # Permutations x windows, a few texts at a time: the block stays in cache and the
    # per-text minimum runs along contiguous memory.
    i = 0
    while i < len(chunk):
        j = int(np.searchsorted(firsts, firsts[i] + _CACHE_SHINGLES, side="right"))
        j = max(j, i + 1)
        lo, hi = firsts[i], firsts[j - 1] + counts[j - 1]
        block = a_col * hv[None, lo:hi]
        block += b_col
        out[i:j] = np.minimum.reduceat(block, firsts[i:j] - lo, axis=1).T
        i = j
    return out


class BandIndex:
    """Locality-sensitive hashing of MinHash signatures by bands, as ``datasketch.MinHashLSH`` does.

    Two signatures are candidates when all rows of at least one band agree; the numbers of
    bands and rows are datasketch's optimum for the threshold. Each bucket keeps only the
    first item put in it: the gates ask only for the earliest earlier match, and that is
    the smallest item in any bucket the query hits.

    Args:
        threshold: Jaccard similarity the index is tuned for.
        num_perm: Signature length.
    """

    def __init__(self, threshold: float, num_perm: int):
        self.ranges = MinHashLSH(threshold=threshold, num_perm=num_perm).hashranges
        self.tables: list[dict[bytes, int]] = [{} for _ in self.ranges]

    def band_keys(self, sigs: np.ndarray) -> list[tuple[bytes, ...]]:
        """Each signature's band keys (one bytes object per band)."""
        if not len(sigs):
            return []
        per_band = []
        for start, end in self.ranges:
            block = np.ascontiguousarray(sigs[:, start:end])
            per_band.append(block.view(np.dtype((np.void, block.dtype.itemsize * (end - start)))).ravel().tolist())
        return list(zip(*per_band))

    def first_match(self, keys: Sequence[bytes]) -> int | None:
        """The earliest inserted item sharing at least one band with these keys, or None."""
        found = [hit for table, key in zip(self.tables, keys) if (hit := table.get(key)) is not None]
        return min(found) if found else None

    def insert(self, item: int, keys: Sequence[bytes]) -> None:
        """Add an item (items must be inserted in increasing order)."""
        for table, key in zip(self.tables, keys):
            table.setdefault(key, item)
