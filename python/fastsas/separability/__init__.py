"""Class separability of embeddings (docs/definitions.md, "Class separability"): the
streaming per-class state, Fisher ratio, pairwise separations, held-out-block LDA, cosine and
Euclidean silhouettes, leave-one-out k-NN, the linear probe, 2-D views, and the bias of
overlaid text. ``fs.separability(x, labels)`` calls :func:`separability` (the module is
callable), and ``fs.separability.ClassMoments`` etc. are its parts.
"""
import sys
import types

from fastsas.separability.measures import DEFAULT_SHRINKAGE, fisher_ratio, pairwise_separations
from fastsas.separability.overlay import overlay_bias
from fastsas.separability.run import SeparabilityResult, euclidean_silhouette, separability, separability_table
from fastsas.separability.state import ClassMoments

__all__ = ["DEFAULT_SHRINKAGE", "ClassMoments", "SeparabilityResult", "euclidean_silhouette", "fisher_ratio", "overlay_bias",
           "pairwise_separations", "separability", "separability_table"]


class _CallableModule(types.ModuleType):
    """``fs.separability(...)`` is :func:`separability` although the name is this package."""

    def __call__(self, *args, **kwargs):
        return separability(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
