"""Post-hoc modality-gap control for frozen dual encoders (docs/definitions.md,
"Modality-gap control").

With unit rows ``x̂ = x / ||x||`` and the gap vector ``gap = mean(X̂) - mean(Ŷ)``, the
shift with strength ``lam`` in [0, 1] is::

    x' = normalize(x̂ - (lam / 2) gap)        y' = normalize(ŷ + (lam / 2) gap)

``lam = 0`` gives the unit-normalised embeddings unchanged; ``lam = 1`` makes the two
centroids coincide before re-normalisation. The outputs are unit rows.

- :func:`gap_vector`: the gap of a pair of arrays, (d,) float64;
- :func:`shift`: shift whole arrays; :func:`shift_chunks`: shift a stream of chunks with a
  precomputed gap, one chunk at a time (both in :mod:`fastsas.gap.transform`);
- :func:`sweep`: every alignment metric, retrieval and (with labels) a cross-validated
  linear probe (:mod:`fastsas.gap.probe`) as a function of ``lam`` (:mod:`fastsas.gap.run`),
  returned as a :class:`GapSweep` (:mod:`fastsas.gap.results`).

>>> import numpy as np, fastsas as fs
>>> x, y = fs.synthetic.paired_embeddings(2000, 32, seed=0)
>>> xs, ys = fs.gap.shift(x, y, lam=1.0)
>>> xs.shape, xs.dtype
((2000, 32), dtype('float32'))
>>> before = np.linalg.norm(fs.gap.gap_vector(x, y))
>>> bool(np.linalg.norm(xs.mean(0) - ys.mean(0)) < 0.1 * before)
True
"""
from fastsas.gap.results import GapPoint, GapSweep
from fastsas.gap.run import DEFAULT_LAMS, sweep
from fastsas.gap.transform import gap_vector, shift, shift_chunks

__all__ = ["DEFAULT_LAMS", "GapPoint", "GapSweep", "gap_vector", "shift", "shift_chunks", "sweep"]
