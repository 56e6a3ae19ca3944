"""A synthetic study with planted effects (:func:`write_synthetic_study`): several fake models
x four datasets in two domains, written in every input format a study reads, with a TOML
catalog; the tests hold every experiment to the effects planted here and to the absence of
the others.

The generative model. Each dataset is a fixed set of items: latent factors ``z`` (8, with
standard deviations 3 down to 1) shared by all models, plus factors only one modality
carries: the natural datasets' texts carry 2 (scale 1.5: captions describe more than the
image's principal structure), the medical datasets' images carry 4 (scale 2.5: anatomy the
reports do not describe). Every random part has sample mean 0. Model m embeds them with its own random orthonormal encoder, adds
isotropic noise of standard deviation ``noise_m`` (twice as large on medical data), a
cone offset and a modality gap, and multiplies everything by a scale ``c_m``.

Planted, and so to be found:

- a domain shift in SAS: SAS(sym) is lower on the medical datasets (more noise, and
  structure only the images carry);
- the imbalance's sign per domain: positive on natural data (the texts carry structure
  the images do not), negative on medical data (the images do);
- a metric that tracks retrieval: ``noise_m`` sets both retrieval and Δcos (and SAS), so
  they fall together across models on every dataset;
- a metric that does not: CORAL and the centroid distance scale with ``c_m`` (as c^2 and
  c), which retrieval and the scale-free metrics ignore, and the ``c_m`` are assigned to the
  models in an order whose rank correlation with ``noise_m`` is (as near as possible) 0.

Absent, and so not to be found: a domain difference in the centroid distance (it depends on
the model only), and the directional retrieval claim (both retrieval directions are driven
by the same noise, so SAS(I->T) does not track I->T retrieval better than T->I).
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from fastsas.store import EmbeddingStore

__all__ = ["SYNTHETIC_DATASETS", "synthetic_cell", "synthetic_models", "write_synthetic_study"]

# name -> (domain, input format)
SYNTHETIC_DATASETS = {"nat-coco": ("natural", "paper"), "nat-flickr": ("natural", "npz"),
                      "med-roco": ("medical", "store"), "med-cxr": ("medical", "npy")}
_SHARED = 8


def _uncorrelated_order(m: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of range(m) whose Spearman correlation with range(m) is as near 0 as
    possible (exhaustive for m <= 8, else the best of many random draws)."""
    base = np.arange(m)
    candidates = itertools.permutations(range(m)) if m <= 8 else (rng.permutation(m) for _ in range(20000))
    best, best_score = base, np.inf
    for perm in candidates:
        p = np.asarray(perm)
        score = abs(float(np.sum((p - base) ** 2)) - m * (m * m - 1) / 6.0)  # |sum d^2 - its value at rho = 0|
        if score < best_score:
            best, best_score = p, score
    return best


def _centred(a: np.ndarray) -> np.ndarray:
    return a - a.mean(axis=0)


def synthetic_models(models: int, seed: int = 0) -> list[dict]:
    """The fake models: name, noise, scale (see the module docstring).

    Parameters
    ----------
    models : int
        How many (at least 3).
    seed : int, default 0
        The random seed of the scale assignment.

    Returns
    -------
    list of dict
        ``name``, ``noise``, ``scale`` per model; model 0 is the least noisy.

    Examples
    --------
    >>> from fastsas.study import synthetic_models
    >>> [m["name"] for m in synthetic_models(3)]
    ['model-00', 'model-01', 'model-02']
    """
    if models < 3:
        raise ValueError(f"models must be at least 3 (rank correlations over models), got {models}")
    rng = np.random.default_rng(seed)
    noise = np.linspace(0.35, 1.4, models)
    scales = 2.0 ** np.linspace(-1.0, 1.0, models)
    order = _uncorrelated_order(models, rng)
    return [{"name": f"model-{i:02d}", "noise": float(noise[i]), "scale": float(scales[order[i]])}
            for i in range(models)]


def synthetic_cell(model: dict, dataset: str, pairs: int, dim: int, *, captions: int = 5, seed: int = 0,
                   model_index: int = 0) -> dict:
    """The embeddings of one synthetic cell.

    Parameters
    ----------
    model : dict
        From :func:`synthetic_models` (``noise``, ``scale``).
    dataset : str
        A key of SYNTHETIC_DATASETS.
    pairs : int
        Images.
    dim : int
        The embedding dimension (at least 16).
    captions : int, default 5
        Captions per image on the natural datasets (the medical ones have one report).
    seed : int, default 0
        The study's seed (the items of a dataset depend on it and the dataset only).
    model_index : int, default 0
        Seeds the model's encoder and noise.

    Returns
    -------
    dict
        ``images`` (pairs, dim) float32, ``texts`` (pairs * C, dim) float32 (caption c of
        image i at row i * C + c), ``captions`` C.

    Examples
    --------
    >>> from fastsas.study import synthetic_cell, synthetic_models
    >>> cell = synthetic_cell(synthetic_models(3)[0], "nat-coco", 50, 16)
    >>> cell["images"].shape, cell["texts"].shape
    ((50, 16), (250, 16))
    """
    domain = SYNTHETIC_DATASETS[dataset][0]
    natural = domain == "natural"
    extra = 2 if natural else 4
    factors = _SHARED + extra
    if dim < factors + 2:
        raise ValueError(f"dim must be at least {factors + 2}, got {dim}")
    items = np.random.default_rng([seed, sorted(SYNTHETIC_DATASETS).index(dataset)])
    # Every random part has sample mean 0, so that the centroids are exactly the offsets: the
    # centroid distance then depends on the model only (no domain effect in it, by design).
    z = _centred(items.standard_normal((pairs, _SHARED))) * np.linspace(3.0, 1.0, _SHARED)
    e = _centred(items.standard_normal((pairs, extra))) * 3.5
    own = np.random.default_rng([seed, sorted(SYNTHETIC_DATASETS).index(dataset), 1000 + model_index])
    basis, _ = np.linalg.qr(own.standard_normal((dim, factors + 2)))
    shared = z @ basis[:, :_SHARED].T
    only = e @ basis[:, _SHARED:factors].T
    noise = model["noise"] * (1.0 if natural else 2.0)
    images = shared + (0.0 if natural else only) + noise * _centred(own.standard_normal((pairs, dim)))
    c = captions if natural else 1
    base_text = shared + (only if natural else 0.0)
    texts = np.repeat(base_text, c, axis=0) + noise * _centred(own.standard_normal((pairs * c, dim)))
    offset_cone, offset_gap = 4.0 * basis[:, factors], 1.0 * basis[:, factors + 1]
    images = model["scale"] * (images + offset_cone + offset_gap)
    texts = model["scale"] * (texts + offset_cone - offset_gap)
    return {"images": images.astype(np.float32), "texts": texts.astype(np.float32), "captions": c}


def _write(kind: str, folder: Path, dataset: str, cell: dict) -> None:
    images, texts, c = cell["images"], cell["texts"], cell["captions"]
    if kind == "paper":
        import torch

        records = [{"image": torch.from_numpy(images[i:i + 1].copy()),
                    "text": torch.from_numpy(texts[i * c:(i + 1) * c].copy()), "label_ids": i}
                   for i in range(len(images))]
        torch.save(records, folder / f"{dataset}_test_features.pt")
    elif kind == "npz":
        np.savez(folder / f"{dataset}.npz", images=images, texts=texts[::c])
    elif kind == "npy":
        np.save(folder / f"{dataset}.images.npy", images)
        np.save(folder / f"{dataset}.texts.npy", texts[::c])
    else:
        with EmbeddingStore.create(folder / dataset, images.shape[1], chunk_rows=max(64, len(images) // 3)) as store:
            store.append(images, texts[::c], {"item": np.arange(len(images))})


def write_synthetic_study(root: str | Path, *, models: int = 6, pairs: int = 300, dim: int = 24,
                          captions: int = 5, reference: bool = True, seed: int = 0,
                          model_names: list[str] | None = None) -> Path:
    """Write a synthetic study with planted effects (module docstring) under `root`:
    ``root/features/<model>/<dataset>.*`` in every input format (the paper's .pt with
    `captions` per image, .npz, an embedding store, two .npy) and ``root/study.toml``.

    Parameters
    ----------
    root : str or Path
        The folder (created).
    models : int, default 6
        Fake models (at least 3).
    pairs : int, default 300
        Images per dataset.
    dim : int, default 24
        The embedding dimension (at least 16).
    captions : int, default 5
        Captions per image on the natural datasets.
    reference : bool, default True
        Also a reference model ("reference", the least noisy), kept apart in the catalog.
    seed : int, default 0
        The random seed.
    model_names : list of str or None
        Only write these of the models (to add a model to a study later).

    Returns
    -------
    Path
        `root`; the catalog is ``root / "study.toml"``.

    Examples
    --------
    >>> import tempfile
    >>> from fastsas.study import load_catalog, write_synthetic_study
    >>> cat = load_catalog(write_synthetic_study(tempfile.mkdtemp(), models=3, pairs=40, dim=16) / "study.toml")
    >>> len(cat.models), cat.references, sorted(set(cat.domains.values()))
    (4, ('reference',), ['medical', 'natural'])
    """
    root = Path(root)
    specs = synthetic_models(models, seed)
    if reference:
        specs.append({"name": "reference", "noise": 0.25, "scale": 1.0})
    for index, spec in enumerate(specs):
        if model_names is not None and spec["name"] not in model_names:
            continue
        folder = root / "features" / spec["name"]
        folder.mkdir(parents=True, exist_ok=True)
        for dataset, (_, kind) in SYNTHETIC_DATASETS.items():
            cell = synthetic_cell(spec, dataset, pairs, dim, captions=captions, seed=seed, model_index=index)
            _write(kind, folder, dataset, cell)
    lines = ["# A synthetic study with planted effects (fastsas.study.synthetic)", "[study]",
             'title = "synthetic study"', 'root = "features"', "", "[models]"]
    lines += [f'"{s["name"]}" = {{ reference = {json.dumps(s["name"] == "reference")} }}' for s in specs]
    lines += ["", "[datasets]"]
    lines += [f'"{d}" = {{ domain = "{dom}" }}' for d, (dom, _) in SYNTHETIC_DATASETS.items()]
    (root / "study.toml").write_text("\n".join(lines) + "\n")
    return root
