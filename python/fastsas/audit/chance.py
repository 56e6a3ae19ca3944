"""The chance level of an audit (docs/definitions.md, "Chance level"): every alignment metric
of the archive with its pairing destroyed by a seeded random permutation, a few times,
streamed like any pass (chunk a's images with a random chunk's texts, permuted within, so
a store is still read chunk by chunk); and the expected recall of retrieval by chance, in
closed form from the ground truth."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fastsas import _core
from fastsas.moments import Moments

__all__ = ["CHANCE_CHUNK_ROWS", "IDEAL", "chance_alignment", "chance_recall", "pairing_permutation"]

# Rows per chunk of the re-pairing: fixed, so the permutation (and the chance level) does not
# depend on how a run chunks its other passes or on the engine.
CHANCE_CHUNK_ROWS = 65536

# The value of each metric when the texts mirror the images perfectly (texts = images).
IDEAL = {"sas_i2t": 1.0, "sas_t2i": 1.0, "sas_sym": 1.0, "sas_imbalance": 0.0, "cka": 1.0, "svcca": 1.0,
         "coral": 0.0, "rmg": 0.0, "rmg_paper": 0.0, "centroid_euclidean": 0.0, "centroid_cosine": 0.0,
         "matched_cosine": 1.0}


def pairing_permutation(n: int, chunk_rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(text chunk of every image chunk, permutation of the text rows): the full chunks are
    paired by a random permutation of themselves, the last (shorter) chunk with itself, and
    the rows of each text chunk are permuted; text row ``perm[i]`` is paired with image row
    i. Reading image chunk a and text chunk ``chunk_of[a]`` keeps every read sequential
    within a chunk.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsas.audit.chance import pairing_permutation
    >>> chunk_of, perm = pairing_permutation(10, 4, np.random.default_rng(0))
    >>> len(chunk_of), sorted(perm.tolist()) == list(range(10)), set(perm[8:].tolist()) == {8, 9}
    (3, True, True)
    """
    full = n // chunk_rows
    chunks = -(-n // chunk_rows)
    chunk_of = np.arange(chunks)
    chunk_of[:full] = rng.permutation(full)
    perm = np.empty(n, dtype=np.int64)
    for a in range(chunks):
        b = int(chunk_of[a])
        start, stop = a * chunk_rows, min(n, (a + 1) * chunk_rows)
        perm[start:stop] = b * chunk_rows + rng.permutation(stop - start)
    return chunk_of, perm


def chance_alignment(rows: Any, d: int, topq: float, repeats: int, seed: int, threads: int,
                     progress: Any = None, chunk_rows: int = CHANCE_CHUNK_ROWS) -> dict:
    """The alignment metrics of `repeats` random re-pairings of the archive.

    Parameters
    ----------
    rows : ArchiveRows
        The archive.
    d : int
        Its dimension.
    topq : float
        SAS's top fraction of modes.
    repeats : int
        Random re-pairings (>= 1).
    seed : int
        Seed of the permutations.
    threads : int
        Threads of the core.
    progress : callable or None
        The audit's progress hook.
    chunk_rows : int, default CHANCE_CHUNK_ROWS
        Rows per chunk of the re-pairing.

    Returns
    -------
    dict
        ``repeats``, ``seed``, ``method``; per metric (the keys of :func:`fastsas.alignment`):
        ``mean``, ``min``, ``max`` over the re-pairings; ``ideal``: the value when the texts
        mirror the images perfectly (IDEAL).
    """
    rng = np.random.default_rng(seed)
    n = rows.n
    chunks = -(-n // chunk_rows)
    values: dict[str, list[float]] = {}
    steps = [(r, a) for r in range(repeats) for a in range(chunks)]
    plans = [pairing_permutation(n, chunk_rows, rng) for _ in range(repeats)]
    states = [_core.Moments(d, track_unit_rows=True) for _ in range(repeats)]
    walk = progress(steps, f"chance level ({repeats} random re-pairings)", len(steps)) if progress else steps
    for r, a in walk:
        chunk_of, perm = plans[r]
        start, stop = a * chunk_rows, min(n, (a + 1) * chunk_rows)
        b = int(chunk_of[a])
        images = rows.image_rows(start, stop)
        texts = rows.text_rows(b * chunk_rows, min(n, (b + 1) * chunk_rows))
        texts = texts[perm[start:stop] - b * chunk_rows]
        states[r].update(np.ascontiguousarray(images), np.ascontiguousarray(texts), threads=threads)
    for state in states:
        for key, value in Moments._from_core(state).alignment(topq).items():
            if key in ("n", "topq"):
                continue
            values.setdefault(key, []).append(float(value))
    out: dict[str, Any] = {"repeats": repeats, "seed": seed, "chunk_rows": chunk_rows,
                           "method": "images paired with a seeded random permutation of the texts (chunks "
                                     "permuted, rows permuted within them)"}
    out["metrics"] = {k: {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}
                      for k, v in values.items()}
    out["ideal"] = dict(IDEAL)
    return out


def _at_least_one_match(gallery: int, matches: np.ndarray, k: int) -> np.ndarray:
    """P(a random ordering of `gallery` candidates puts one of `matches` among its first k)
    = 1 - C(gallery - m, k) / C(gallery, k), in logs."""
    from scipy.special import gammaln

    m = matches.astype(np.float64)
    g = float(gallery)
    k = float(min(k, gallery))
    miss = np.where(g - m >= k, np.exp(gammaln(g - m + 1) - gammaln(g - m - k + 1) - gammaln(g + 1) + gammaln(g - k + 1)),
                    0.0)
    return 1.0 - miss


def chance_recall(image_codes: np.ndarray | None, text_codes: np.ndarray | None, n: int,
                  ks: Sequence[int]) -> dict[str, float]:
    """The expected R@k of retrieval that ranks candidates at random (every ordering equally
    likely), over the ranked queries: ``i2t_r{k}``, ``t2i_r{k}`` and ``rsum``.

    Examples
    --------
    >>> from fastsas.audit.chance import chance_recall
    >>> round(chance_recall(None, None, 1000, (1, 10))["i2t_r10"], 12)
    0.01
    """
    if image_codes is None:
        i_matches = t_matches = np.ones(n)
    else:
        size = int(max(image_codes.max(), text_codes.max())) + 1
        per_text_code = np.bincount(text_codes, minlength=size)
        per_image_code = np.bincount(image_codes, minlength=size)
        i_matches = per_text_code[image_codes]
        t_matches = per_image_code[text_codes]
        i_matches, t_matches = i_matches[i_matches > 0], t_matches[t_matches > 0]
    out: dict[str, float] = {}
    for k in ks:
        # rank <= k exactly when one of the query's matches is among the first k candidates
        out[f"i2t_r{k}"] = float(np.mean(_at_least_one_match(n, i_matches, k)))
        out[f"t2i_r{k}"] = float(np.mean(_at_least_one_match(n, t_matches, k)))
    out["rsum"] = 100.0 * sum(out[f"i2t_r{k}"] + out[f"t2i_r{k}"] for k in ks)
    return out

