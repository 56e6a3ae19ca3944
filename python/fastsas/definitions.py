"""The metric definitions of fastsas live in the repository, in ``docs/definitions.md``;
their version, recorded in every report, is :data:`DEFINITIONS_VERSION` (set by the C++
core, which computes the numbers). :data:`IMBALANCE_SIGN` is the one sentence that says
what the sign of the SAS imbalance means; the README, the docstrings and the reports use
it word for word.

>>> from fastsas.definitions import DEFINITIONS_VERSION
>>> DEFINITIONS_VERSION.startswith("fastsas-metrics/")
True
"""
from fastsas._core import DEFINITIONS_VERSION

__all__ = ["DEFINITIONS_DOCUMENT", "DEFINITIONS_VERSION", "IMBALANCE_SIGN"]

# The document, relative to the repository root.
DEFINITIONS_DOCUMENT = "docs/definitions.md"

IMBALANCE_SIGN = ("The imbalance SAS(I→T) − SAS(T→I) is negative when the images' own principal variance is less "
                  "mirrored by the texts than the texts' is by the images (for example, structure that only the "
                  "images carry), and positive the other way round.")
