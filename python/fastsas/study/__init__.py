"""Studies: many models x many datasets, the SAS paper's four experiments, with statistics
that hold up (docs/definitions.md, "Studies").

``fs.study(catalog)`` (this package is callable: ``fs.study(...)`` is :func:`study`) reads a
catalog (:func:`load_catalog`: a TOML file, or a directory ``ROOT/<model>/<dataset>.*``),
computes every (model, dataset) cell (:func:`evaluate_cell`: every alignment metric with its
jackknife interval, retrieval with every caption, the SAS sweep, optionally MMD; cached by
the input's fingerprint, in parallel in process or on Dask), runs the four experiments
(:mod:`fastsas.study.experiments`) and paired comparisons of models, and returns a
:class:`StudyResult`, whose :meth:`~StudyResult.write` writes the study report.

- :mod:`fastsas.study.catalog`: :class:`Catalog`, :class:`CellSpec`, :func:`load_catalog`;
- :mod:`fastsas.study.inputs`: :class:`CellData`, :func:`read_cell`, :func:`read_paper_features`;
- :mod:`fastsas.study.cells`: the declared metrics, :func:`compute_cell`, the cache;
- :mod:`fastsas.study.stats`: the tests, corrections, bootstrap and permutations;
- :mod:`fastsas.study.experiments`: the four experiments and :func:`compare_models`;
- :mod:`fastsas.study.run`: :func:`study`, :class:`StudyResult`;
- :mod:`fastsas.study.report`: :func:`write_study_report`;
- :mod:`fastsas.study.synthetic`: :func:`write_synthetic_study` (planted effects).

>>> import tempfile, fastsas as fs
>>> root = fs.study.write_synthetic_study(tempfile.mkdtemp(), models=3, pairs=120, dim=16)
>>> result = fs.study(root / "study.toml", bootstrap=100, permutations=100, skip_slow=True)
>>> result.provenance["computed"], result.catalog["references"]
(16, ['reference'])
"""
import sys
import types

from fastsas.study.catalog import CELL_KINDS, PAPER_DOMAINS, Catalog, CellSpec, discover_cells, load_catalog
from fastsas.study.cells import (CELL_FORMAT, METRICS, PAPER_METRICS, RETRIEVAL_TARGETS, SLOW_METRICS, CellCache,
                                 CellSettings, MetricSpec, cell_key, compute_cell, evaluate_cell, resolve_metrics)
from fastsas.study.experiments import (CellTable, DomainPair, alignment_profile, compare_models,
                                       eigenspectrum_concentration, imbalance_signature, parse_direction,
                                       retrieval_predictivity)
from fastsas.study.inputs import CellData, read_cell, read_paper_features
from fastsas.study.report import write_study_report
from fastsas.study.run import StudyResult, study
from fastsas.study.synthetic import SYNTHETIC_DATASETS, synthetic_cell, synthetic_models, write_synthetic_study

__all__ = ["CELL_FORMAT", "CELL_KINDS", "Catalog", "CellCache", "CellData", "CellSettings", "CellSpec", "CellTable",
           "DomainPair", "METRICS", "MetricSpec", "PAPER_DOMAINS", "PAPER_METRICS", "RETRIEVAL_TARGETS",
           "SLOW_METRICS", "SYNTHETIC_DATASETS", "StudyResult", "alignment_profile", "cell_key", "compare_models",
           "compute_cell", "discover_cells", "eigenspectrum_concentration", "evaluate_cell", "imbalance_signature",
           "load_catalog", "parse_direction", "read_cell", "read_paper_features", "resolve_metrics",
           "retrieval_predictivity", "study", "synthetic_cell", "synthetic_models", "write_study_report",
           "write_synthetic_study"]


class _CallableStudyPackage(types.ModuleType):
    """``fs.study`` is this package (``import fastsas.study`` makes it the attribute), and
    calling it runs :func:`study`: ``fs.study(catalog)``."""

    def __call__(self, catalog, **options):
        return study(catalog, **options)


sys.modules[__name__].__class__ = _CallableStudyPackage
