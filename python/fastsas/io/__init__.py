"""Reading embeddings from files and arrays, and writing files safely.

- :mod:`fastsas.io.npy`: ``.npy`` headers and streamed row chunks (:func:`iter_npy_chunks`,
  :func:`iter_npy_pairs`, :class:`NpyPairSource`);
- :mod:`fastsas.io.sources`: the paired sources of arrays, ``.npy`` pairs, ``.npz`` and
  Parquet files, and :func:`open_pair_source` (:func:`fastsas.store.open_source` adds the
  embedding store);
- :mod:`fastsas.io.rows`: the one reader of row ranges from files, with read-ahead;
- :mod:`fastsas.io.metadata`: per-row metadata between Arrow, NumPy and pandas;
- :mod:`fastsas.io.atomic`: atomic writes (temporary file, fsync, rename);
- :mod:`fastsas.io.strict_json`: the one JSON encoder (NaN and infinities as null);
- :mod:`fastsas.io.fingerprint`: the SHA-256 of an input;
- :mod:`fastsas.io.errors`: :class:`StoreError`, :class:`ColumnNotFoundError`.

This package knows nothing of metrics: it reads and writes data.

>>> import numpy as np, fastsas as fs
>>> source = fs.io.open_pair_source(np.zeros((6, 4)), np.ones((6, 4)))
>>> [len(x) for x, _ in source.iter_chunks(4)]
[4, 2]
"""
from fastsas.io.atomic import PARTIAL_SUFFIX, fsync_dir, printable, write_atomic, write_json
from fastsas.io.errors import ColumnNotFoundError, StoreError
from fastsas.io.fingerprint import fingerprint_arrays
from fastsas.io.npy import NpyPairSource, iter_npy_chunks, iter_npy_pairs, npy_header, read_npy_header
from fastsas.io.sources import (DEFAULT_VECTOR_COLUMNS, ArrayPairSource, NpyPair, NpzPairSource, ParquetPairSource,
                                is_source, open_pair_source)

__all__ = ["ArrayPairSource", "ColumnNotFoundError", "DEFAULT_VECTOR_COLUMNS", "NpyPair", "NpyPairSource",
           "NpzPairSource", "PARTIAL_SUFFIX", "ParquetPairSource", "StoreError", "fingerprint_arrays", "fsync_dir",
           "is_source", "iter_npy_chunks", "iter_npy_pairs", "npy_header", "open_pair_source", "printable",
           "read_npy_header", "write_atomic", "write_json"]
