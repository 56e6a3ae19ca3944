"""Audits: whole-archive and per-subgroup alignment and retrieval, jackknife uncertainty,
suspected mismatches and drift over time, from one streaming pass over the moments.

- :mod:`fastsas.audit.run`: :func:`audit`, in process;
- :mod:`fastsas.audit.plan`: :class:`AuditPlan`, every option checked before the pass;
- :mod:`fastsas.audit.state`: :class:`AuditState`, the mergeable state of the pass;
- :mod:`fastsas.audit.intervals`: the delete-a-block jackknife;
- :mod:`fastsas.audit.results`: :class:`AuditResult` and how the merged state becomes it.

:func:`fastsas.dask.audit` runs the same plan, state and result on a cluster.

>>> import fastsas as fs, numpy as np
>>> x, y = fs.synthetic.paired_embeddings(2000, 16, image_only_factors=2)
>>> result = fs.audit(x, y, periods=np.arange(2000) % 3, retrieval=False)
>>> [p["group"] for p in result.drift]
[0, 1, 2]
"""
from fastsas.audit.intervals import JACKKNIFE_METRICS, interval, jackknife, leave_one_out
from fastsas.audit.plan import RETRIEVAL_SCOPES, AuditPlan
from fastsas.audit.results import CPU_ONLY, AuditResult
from fastsas.audit.run import audit
from fastsas.audit.state import AuditState

__all__ = ["AuditPlan", "AuditResult", "AuditState", "CPU_ONLY", "JACKKNIFE_METRICS", "RETRIEVAL_SCOPES", "audit",
           "interval", "jackknife", "leave_one_out"]
