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
    """(images, texts), each (n, dim) in `dtype`, row i of each describing item i.

    shared_factors: latent factors seen by both, with standard deviations from 3 down to 1.
    image_only_factors / text_only_factors: factors seen by one modality only, with
        standard deviation `extra_scale`, in directions orthogonal to the shared ones.
    noise: std of isotropic noise; cone: norm of the common offset (larger -> higher mean
        pairwise cosine); gap: norm of the opposite per-modality offsets.
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
