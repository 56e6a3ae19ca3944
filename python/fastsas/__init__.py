"""fastsas: the Spectral Alignment Score and the metrics around it, at million-pair scale.

>>> import fastsas as fs
>>> images, texts = fs.synthetic.paired_embeddings(5000, 64, image_only_factors=4)
>>> result = fs.alignment(images, texts)
>>> sorted(result)[:4]
['centroid_cosine', 'centroid_euclidean', 'cka', 'cone_images']
"""
from fastsas import gap, synthetic
from fastsas._core import DEFINITIONS_VERSION
from fastsas._validate import set_num_threads
from fastsas.audit import AuditResult, audit
from fastsas.kernel_cka import cka_rbf
from fastsas.metrics import alignment, cka, cka_unbiased, coral, delta_cos, procrustes, rmg, sas, svcca
from fastsas.mmd import mmd
from fastsas.moments import Moments, SpectralProfile
from fastsas.neighbourhood import NeighbourhoodResult, Neighbours, knn, neighbourhood, neighbourhood_scores
from fastsas.retrieval import retrieval

__version__ = "0.1.0"

__all__ = [
    "AuditResult", "DEFINITIONS_VERSION", "Moments", "audit", "SpectralProfile", "alignment", "cka", "coral",
    "delta_cos", "gap", "mmd", "retrieval", "rmg", "sas", "set_num_threads", "svcca", "synthetic", "__version__",
    "NeighbourhoodResult", "Neighbours", "cka_rbf", "cka_unbiased", "knn", "neighbourhood", "neighbourhood_scores",
    "procrustes",
]


def __getattr__(name: str):
    # fs.embed needs torch and transformers (the embed extra), so it is imported on first
    # use: `import fastsas` stays fast and works without them. The package is
    # fastsas.embedding, so importing it never shadows this function with a module.
    if name == "embed":
        from fastsas.embedding import embed

        return embed
    raise AttributeError(f"module 'fastsas' has no attribute {name!r}")
