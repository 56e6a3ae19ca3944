"""Scale-out on Dask: alignment, moments, retrieval and audits of archives that outgrow one
machine, with the same results as the in-process functions (extra ``dist``:
``pip install "fastsas[dist]"``).

Inputs: Dask arrays (paired by row), NumPy arrays, or the path of an embedding store (its
Zarr arrays are opened with Dask after every chunk file is checked to exist: Zarr reads a
missing chunk as zeros). Work runs on ``client`` (a ``distributed.Client``), on a new
client connected to ``scheduler`` (an address, closed afterwards), on the default client
if one exists, and otherwise on Dask's local threaded scheduler.

- Moments: each row block becomes a ``fastsas.Moments`` on a worker, shipped back in its
  byte form (``Moments.to_bytes``: 8 (3 * 2d + 2d (2d + 1) / 2) bytes, a 34-byte header, a CRC-32)
  and tree-merged (``split_every`` states per merge) into the same object ``fs.Moments``
  gives; another merge order changes the numbers only by rounding.
- Retrieval: the image (query) side is sharded by row blocks, and each query block streams
  the whole text gallery block by block through the C++ engine (``_core.retrieval_counts``),
  one task per (query block, gallery block) step. Every step returns only counts: the
  query block's running count and the gallery block's counts for the reverse direction
  (one GEMM serves both, as in process), which are tree-summed per gallery block. Query
  thresholds come from each block's matched rows, gathered by id. Counts are pure
  functions of row pairs, so ranks are bit-identical to ``fs.retrieval``.
- Separability: ``fastsas.separability.ClassMoments`` per row block (each block's offset
  keeps its rows in their held-out blocks), tree-merged; then a second task per block
  computes the held-out LDA predictions, cosine silhouettes and PCA coordinates from the
  merged state (``separability_moments``). The k-NN part stays in process.
- Audit: ``fastsas.audit.AuditState`` is accumulated per row block (the block's routing
  codes travel with it) and tree-merged; ``AuditPlan.finalize`` then runs on the client
  with the retrieval above.

Options mean what they mean in process: ``threads`` is the core's worker threads, here per
task (None: 1, since Dask runs one task per worker thread); ``progress`` shows Dask's own
progress bar when it is true (True, or the progress hook :func:`fastsas.audit` takes);
``block_rows`` is the rows per task for NumPy inputs (a store's default: its chunk_rows).

Modules: :mod:`~fastsas.dask.cluster` (clients, computing, tree reductions),
:mod:`~fastsas.dask.inputs` (Dask arrays of every input), :mod:`~fastsas.dask.moments_graph`,
:mod:`~fastsas.dask.retrieval_graph`, :mod:`~fastsas.dask.audit_graph`,
:mod:`~fastsas.dask.separability_graph` (the task graphs).

>>> import numpy as np, fastsas as fs, fastsas.dask as fsd
>>> x, y = fs.synthetic.paired_embeddings(3000, 16, dtype=np.float64)
>>> a = fsd.alignment(x, y, block_rows=1000)
>>> abs(a["sas_i2t"] - fs.alignment(x, y)["sas_i2t"]) < 1e-12
True
"""
from fastsas.dask.audit_graph import AUDIT_MERGE_BYTES, audit, audit_source
from fastsas.dask.cluster import DEFAULT_SPLIT_EVERY
from fastsas.dask.inputs import DEFAULT_BLOCK_ROWS, open_store
from fastsas.dask.moments_graph import alignment, moments
from fastsas.dask.retrieval_graph import retrieval
from fastsas.dask.separability_graph import class_moments, separability_moments

__all__ = ["AUDIT_MERGE_BYTES", "DEFAULT_BLOCK_ROWS", "DEFAULT_SPLIT_EVERY", "alignment", "audit", "audit_source",
           "class_moments", "moments", "open_store", "retrieval", "separability_moments"]
