"""Vectorised MinHash signatures and banding: parity with datasketch, and estimates that track the true Jaccard."""

import random

import numpy as np
from datasketch import MinHash, MinHashLSH

from tunesmith.data.minhash import BandIndex, shingle_hash, shingles, signatures

WORDS = "account card transfer payment balance refund limit app phone pin exchange rate fee statement".split()


def test_signatures_equal_datasketch_over_the_same_shingle_hashes():
    rng = random.Random(0)
    texts = ["", "a", "hello world", "héllo wörld – ünïcode ✓", "x" * 20_000,
             *(" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 80))) for _ in range(200))]
    for num_perm, n in ((128, 5), (64, 3)):
        for text, sig in zip(texts, signatures(texts, num_perm, n)):
            reference = MinHash(num_perm=num_perm, seed=1, hashfunc=shingle_hash)
            reference.update_batch(shingles(text, n))
            assert np.array_equal(reference.hashvalues, sig), text[:40]


def test_estimates_track_the_true_jaccard_and_work_in_datasketch_lsh():
    rng = random.Random(1)
    pairs = []
    for _ in range(300):
        words = [rng.choice(WORDS) for _ in range(rng.randint(5, 30))]
        edited = list(words)
        for _ in range(rng.randint(0, 4)):
            edited[rng.randrange(len(edited))] = rng.choice(WORDS)
        pairs.append((" ".join(words), " ".join(edited)))
    left, right = signatures([a for a, _ in pairs]), signatures([b for _, b in pairs])
    errors = []
    for (a, b), x, y in zip(pairs, left, right):
        sa, sb = set(shingles(a, 5)), set(shingles(b, 5))
        errors.append(np.mean(x == y) - len(sa & sb) / len(sa | sb))
    # 128 permutations: the standard error of one estimate is at most 0.044
    assert abs(np.mean(errors)) < 0.01 and np.mean(np.abs(errors)) < 0.035


def test_band_index_finds_the_same_earliest_match_as_datasketch_lsh():
    rng = random.Random(2)
    base = [" ".join(rng.choice(WORDS) for _ in range(20)) for _ in range(60)]
    texts = base + [t.replace(t.split()[3], rng.choice(WORDS), 1) for t in base]  # near copies
    sigs = signatures(texts)
    for threshold in (0.5, 0.85):
        ours, reference = BandIndex(threshold, 128), MinHashLSH(threshold=threshold, num_perm=128)
        keys = ours.band_keys(sigs)
        for i in range(60):
            ours.insert(i, keys[i])
            reference.insert(i, MinHash(num_perm=128, seed=1, hashvalues=sigs[i], scheme="affine32"))
        found = 0
        for i in range(60, 120):
            expected = reference.query(MinHash(num_perm=128, seed=1, hashvalues=sigs[i], scheme="affine32"))
            assert ours.first_match(keys[i]) == (min(expected) if expected else None)
            found += bool(expected)
        assert found >= 30
