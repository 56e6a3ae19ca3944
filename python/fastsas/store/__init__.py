"""The embedding store for large archives: paired image and text embeddings as chunked
Zarr v3 arrays plus a Parquet table of per-row metadata, written atomically chunk by chunk
and resumable after a crash; and :func:`open_source`, the one reader of every input.

- :mod:`fastsas.store.embedding_store`: :class:`EmbeddingStore` and :func:`open_source`;
- :mod:`fastsas.store.layout`: the on-disk layout (names, paths, manifest checks);
- :mod:`fastsas.store.arrays`: streamed, mapped and gathered access to a store's arrays.

The other paired sources (arrays, ``.npy``, ``.npz``, Parquet) live in :mod:`fastsas.io`
and are re-exported here. This package knows nothing of metrics.

>>> import tempfile, numpy as np, fastsas as fs
>>> from fastsas.store import EmbeddingStore, open_source
>>> demo = fs.synthetic.demo_archive(2000, 32)
>>> path = tempfile.mkdtemp() + "/archive"
>>> with EmbeddingStore.create(path, 32, chunk_rows=512) as store:
...     for s in range(0, 2000, 700):
...         store.append(demo["images"][s:s + 700], demo["texts"][s:s + 700],
...                      {k: v[s:s + 700] for k, v in demo["metadata"].items()})
>>> source = open_source(path)
>>> source.n, source.dim, source.columns[:2]
(2000, 32, ['study_id', 'modality'])
>>> bool(np.array_equal(source.arrays()[0], demo["images"]))
True
"""
from fastsas.io.errors import ColumnNotFoundError, StoreError
from fastsas.io.npy import NpyPairSource
from fastsas.io.sources import DEFAULT_VECTOR_COLUMNS, ArrayPairSource, NpyPair, NpzPairSource, ParquetPairSource
from fastsas.store import layout
from fastsas.store.arrays import StoreArray
from fastsas.store.embedding_store import EmbeddingStore, open_source
from fastsas.store.layout import ARRAY_NAMES, FORMAT, FORMAT_VERSION, MANIFEST, METADATA_FILE, METADATA_PARTS

__all__ = ["ARRAY_NAMES", "ArrayPairSource", "ColumnNotFoundError", "DEFAULT_VECTOR_COLUMNS", "EmbeddingStore", "FORMAT",
           "FORMAT_VERSION", "MANIFEST", "METADATA_FILE", "METADATA_PARTS", "NpyPair", "NpyPairSource",
           "NpzPairSource", "ParquetPairSource", "StoreArray", "StoreError", "layout", "open_source"]
