"""fastsas: the Spectral Alignment Score and the metrics around it, at million-pair scale.

The one-call metrics (:func:`sas`, :func:`alignment`, :func:`retrieval`, :func:`mmd`, ...),
the streaming :class:`Moments` and :func:`audit` are loaded with the package. The other
packages are loaded on first use, as attributes: ``fs.gap`` (modality-gap control),
``fs.io`` (readers, atomic writes), ``fs.store`` (the embedding store), ``fs.report``
(HTML/JSON/Markdown reports), ``fs.dask`` (the cluster path; the ``dist`` extra),
``fs.gpu`` (the CUDA backend; the ``gpu`` extra), ``fs.embed`` (embedding with local models;
the ``embed`` extra). Definitions of every number: docs/definitions.md, version
:data:`DEFINITIONS_VERSION`.

>>> import fastsas as fs
>>> images, texts = fs.synthetic.paired_embeddings(5000, 64, image_only_factors=4)
>>> result = fs.alignment(images, texts)
>>> sorted(result)[:4]
['centroid_cosine', 'centroid_euclidean', 'cka', 'cka_unbiased']
>>> fs.store.EmbeddingStore.__name__
'EmbeddingStore'
"""
import importlib

from fastsas import synthetic
from fastsas._validate import set_num_threads
from fastsas._version import __version__
from fastsas.audit import AuditResult, audit
from fastsas.definitions import DEFINITIONS_VERSION, IMBALANCE_SIGN
from fastsas.kernel_cka import cka_rbf
from fastsas.metrics import alignment, cka, cka_unbiased, coral, delta_cos, procrustes, rmg, sas, svcca
from fastsas.mmd import mmd
from fastsas.moments import Moments, SpectralProfile
from fastsas.neighbourhood import NeighbourhoodResult, Neighbours, knn, neighbourhood, neighbourhood_scores
from fastsas.results import Metric, Metrics
from fastsas.retrieval import retrieval

__all__ = [
    "AuditResult", "DEFINITIONS_VERSION", "IMBALANCE_SIGN", "Metric", "Metrics", "Moments", "SpectralProfile",
    "alignment", "audit", "cka", "coral", "dask", "delta_cos", "embed", "gap", "gpu", "io", "mmd", "report",
    "retrieval", "rmg", "sas", "set_num_threads", "store", "svcca", "synthetic", "__version__",
    "NeighbourhoodResult", "Neighbours", "cka_rbf", "cka_unbiased", "knn", "neighbourhood", "neighbourhood_scores",
    "procrustes",
]

# Loaded on first use: importing them would load pyarrow, matplotlib, Dask, CuPy or torch
# paths that most uses of fastsas never touch.
_LAZY_PACKAGES = ("dask", "gap", "gpu", "io", "report", "store")


def __getattr__(name: str):
    if name in _LAZY_PACKAGES:
        return importlib.import_module(f"fastsas.{name}")  # the import also sets it as an attribute
    if name == "embed":
        # fs.embed needs torch and transformers (the embed extra). The package is
        # fastsas.embedding, so importing it never shadows this function with a module.
        return importlib.import_module("fastsas.embedding").embed
    raise AttributeError(f"module 'fastsas' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
