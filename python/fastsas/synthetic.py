"""Built-in synthetic paired embeddings with known structure, for the demo, the tests and
the benchmarks.

Model: each pair i has latent factors; both modalities are linear images of them in one
shared d-dim space (as in a dual encoder), plus isotropic noise, a common offset that makes
a cone (high mean pairwise cosine) and a per-modality offset that makes a modality gap.
Shared factors appear in both modalities; `image_only_factors` appear only in the images
(the texts do not see them) and `text_only_factors` only in the texts.

SAS(A -> B) asks how much of A's principal variance B mirrors. Structure present in the
images only lowers SAS(I->T) and leaves SAS(T->I) high, so sas_imbalance < 0 when the
images carry the extra factors, and > 0 when the texts do.
"""
from __future__ import annotations

import numpy as np

__all__ = ["demo_archive", "paired_embeddings"]


def paired_embeddings(
    n: int,
    dim: int = 64,
    *,
    shared_factors: int = 8,
    image_only_factors: int = 0,
    text_only_factors: int = 0,
    extra_scale: float = 3.0,
    noise: float = 0.3,
    cone: float = 4.0,
    gap: float = 1.0,
    seed: int = 0,
    dtype: type = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic paired embeddings with known structure: (images, texts), row i of each
    describing item i (see the module docstring for the model).

    Parameters
    ----------
    n : int
        Pairs.
    dim : int, default 64
        The embedding dimension; at least the number of factors plus 2.
    shared_factors : int, default 8
        Latent factors both modalities see, with standard deviations from 3 down to 1.
    image_only_factors, text_only_factors : int, default 0
        Factors only one modality sees, with standard deviation `extra_scale`, in directions
        orthogonal to the shared ones: they make the imbalance negative (images) or positive
        (texts).
    extra_scale : float, default 3.0
        Their standard deviation.
    noise : float, default 0.3
        Standard deviation of isotropic noise.
    cone : float, default 4.0
        Norm of the common offset (larger: a higher mean pairwise cosine).
    gap : float, default 1.0
        Norm of the opposite per-modality offsets (the modality gap).
    seed : int, default 0
        The random seed.
    dtype : type, default numpy.float32
        The dtype of the arrays.

    Returns
    -------
    tuple of ndarray
        (images, texts), each (n, dim) of `dtype`.

    Raises
    ------
    ValueError
        When `dim` is too small for the factors and offsets.

    Examples
    --------
    >>> import fastsas as fs
    >>> x, y = fs.synthetic.paired_embeddings(2000, 32, image_only_factors=3)
    >>> x.shape, x.dtype, fs.sas(x, y) < fs.sas(y, x)
    ((2000, 32), dtype('float32'), True)
    """
    if n < 1 or dim < 1:
        raise ValueError(f"n and dim must be positive, got n={n}, dim={dim}")
    factors = shared_factors + image_only_factors + text_only_factors
    if factors + 2 > dim:
        raise ValueError(
            f"dim={dim} is too small for {factors} factors plus the cone and gap offsets; "
            f"use dim >= {factors + 2}"
        )
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, factors + 2)))
    shared_std = np.linspace(3.0, 1.0, shared_factors) if shared_factors else np.zeros(0)
    z = rng.standard_normal((n, shared_factors)) * shared_std
    images = z @ basis[:, :shared_factors].T
    texts = images.copy()
    k = shared_factors
    if image_only_factors:
        images += extra_scale * rng.standard_normal((n, image_only_factors)) @ basis[:, k:k + image_only_factors].T
        k += image_only_factors
    if text_only_factors:
        texts += extra_scale * rng.standard_normal((n, text_only_factors)) @ basis[:, k:k + text_only_factors].T
        k += text_only_factors
    images += noise * rng.standard_normal((n, dim))
    texts += noise * rng.standard_normal((n, dim))
    cone_dir, gap_dir = basis[:, factors], basis[:, factors + 1]
    images += cone * cone_dir + gap * gap_dir
    texts += cone * cone_dir - gap * gap_dir
    return images.astype(dtype), texts.astype(dtype)


DEMO_MODALITIES = ("CT", "MR", "CR", "US")
DEMO_BODY_PARTS = ("CHEST", "HEAD", "ABDOMEN", "KNEE")
DEMO_SITES = ("north", "south", "east")


def demo_archive(n: int = 20_000, dim: int = 128, *, mismatch_fraction: float = 0.005,
                 seed: int = 0) -> dict:
    """A hospital-like synthetic archive: one image and one report embedding per study, with
    metadata columns, a known imbalance (the images carry factors the reports do not
    describe), subgroups that differ in alignment (ultrasound reports describe their images
    less well), and a few planted mismatches (reports filed against the wrong study).

    Parameters
    ----------
    n : int, default 20000
        Studies.
    dim : int, default 128
        The embedding dimension, at least 22.
    mismatch_fraction : float, default 0.005
        The share of studies whose reports are swapped among themselves.
    seed : int, default 0
        The random seed.

    Returns
    -------
    dict
        ``images``, ``texts``: (n, dim) float32; ``metadata``: a dict of 1-D arrays
        ``study_id``, ``modality``, ``body_part``, ``site``, ``year``; ``planted``: the sorted
        rows whose report was swapped with another planted row's.

    Examples
    --------
    >>> import fastsas as fs
    >>> demo = fs.synthetic.demo_archive(1000, 32)
    >>> sorted(demo["metadata"]), demo["images"].shape, len(demo["planted"])
    (['body_part', 'modality', 'site', 'study_id', 'year'], (1000, 32), 5)
    """
    rng = np.random.default_rng(seed)
    images, texts = paired_embeddings(n, dim, shared_factors=16, image_only_factors=4, extra_scale=2.0,
                                      noise=0.15, seed=seed)
    modality = np.array(DEMO_MODALITIES)[rng.choice(len(DEMO_MODALITIES), n, p=[0.35, 0.25, 0.3, 0.1])]
    # Ultrasound reports describe their images less well: extra noise on those texts.
    us = modality == "US"
    texts[us] += (0.35 * rng.standard_normal((int(us.sum()), dim))).astype(np.float32)
    planted = np.sort(rng.choice(n, max(2, int(round(mismatch_fraction * n))), replace=False))
    texts[planted] = texts[np.roll(planted, 1)]
    return {
        "images": images,
        "texts": texts,
        "metadata": {
            "study_id": np.array([f"ST{i:07d}" for i in range(n)]),
            "modality": modality,
            "body_part": np.array(DEMO_BODY_PARTS)[rng.integers(0, len(DEMO_BODY_PARTS), n)],
            "site": np.array(DEMO_SITES)[rng.integers(0, len(DEMO_SITES), n)],
            "year": 2019 + rng.integers(0, 5, n),
        },
        "planted": planted,
    }
