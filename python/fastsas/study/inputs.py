"""Reading one cell's embeddings (:func:`read_cell`) into a :class:`CellData`: the images,
the texts (several per image allowed), their ids, and the text paired with each image for
the alignment metrics; and the cell's fingerprint, the key of its cached result.

The SAS paper's feature files (:func:`read_paper_features`) are read with
``torch.load(weights_only=True)``: no code in them is run."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastsas.io.fingerprint import fingerprint_arrays
from fastsas.study.catalog import CellSpec
from fastsas.store import open_source

__all__ = ["CellData", "read_cell", "read_paper_features"]


@dataclass
class CellData:
    """One cell's embeddings.

    Attributes
    ----------
    images : ndarray, shape (n_images, d)
        The image embeddings.
    texts : ndarray, shape (n_texts, d)
        The text embeddings (several per image, as COCO's 5 captions, or one per image).
    image_ids, text_ids : ndarray or None
        Retrieval ground truth: an image and a text match when their ids are equal; None:
        row i of the images matches row i of the texts.
    pair_texts : ndarray of int or None
        For each image, the text row paired with it in the alignment metrics (the SAS paper
        uses each image's first caption); None: row i with row i.
    block_ids : ndarray or None
        The ids that keep rows together in the jackknife blocks (rows sharing an id share a
        block); None: block ``i mod B`` for pair i.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsas.study import CellData
    >>> x = np.eye(4)[:2]; y = np.eye(4)
    >>> cell = CellData(x, y, np.arange(2), np.array([0, 0, 1, 1]), np.array([0, 2]))
    >>> [a.shape for a in cell.pairs()]
    [(2, 4), (2, 4)]
    """

    images: np.ndarray
    texts: np.ndarray
    image_ids: np.ndarray | None = None
    text_ids: np.ndarray | None = None
    pair_texts: np.ndarray | None = None
    block_ids: np.ndarray | None = None

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(images, the text paired with each image): the input of the alignment metrics."""
        if self.pair_texts is None:
            return self.images, self.texts
        return self.images, np.asarray(self.texts[self.pair_texts])

    def fingerprint(self) -> str:
        """SHA-256 of the embeddings (:func:`fastsas.io.fingerprint_arrays`) and of
        :meth:`items`: ``"sha256:<hex>"``, the key of the cell's cached result."""
        h = hashlib.sha256(b"fastsas-study-cell-v1\n")
        h.update(fingerprint_arrays(self.images, self.texts).encode())
        h.update(self.items().encode())
        return "sha256:" + h.hexdigest()

    def items(self) -> str:
        """SHA-256 of what the rows are, not of their embeddings: the row counts, the ids, the
        pairing and the block ids. Two models' cells of one dataset hold the same items when
        these are equal (a paired comparison needs it)."""
        h = hashlib.sha256(f"fastsas-study-items-v1\n{len(self.images)} {len(self.texts)}".encode())
        for name, values in (("image_ids", self.image_ids), ("text_ids", self.text_ids),
                             ("pair_texts", self.pair_texts), ("block_ids", self.block_ids)):
            if values is None:
                h.update(f"\n{name}=none".encode())
                continue
            arr = np.asarray(values)
            if arr.dtype.hasobject:
                arr = arr.astype(str)
            # The one fingerprint rule for arrays (name, shape, dtype, bytes), on the ids as a column.
            h.update(f"\n{name}=".encode())
            h.update(fingerprint_arrays(arr.reshape(-1, 1), np.zeros((0, 1), np.int8)).encode())
        return "sha256:" + h.hexdigest()


def _tensor_rows(value: Any, torch: Any, where: str) -> np.ndarray:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{where} is a {type(value).__name__}, not a tensor")
    if value.ndim == 1:
        value = value.reshape(1, -1)
    if value.ndim != 2 or value.shape[0] < 1:
        raise ValueError(f"{where} has shape {tuple(value.shape)}; expected (1, d) for an image, (C, d) for its "
                         "C captions")
    if not value.is_floating_point():
        raise ValueError(f"{where} holds {value.dtype}, not floats")
    # As the paper's scripts do (.float()): half and bfloat16 features become float32.
    return value.detach().to("cpu").float().numpy()


def read_paper_features(path: str | Path) -> "CellData":
    """The SAS paper's feature file of one (model, dataset): ``data/<model>/<dataset>_<split>_features.pt``,
    a list with one record per image, each a dict holding ``"image"`` (a (1, d) tensor) and
    ``"text"`` (a (C, d) tensor of its C captions or reports), as the paper's extraction
    script saves it with ``torch.save``. Read with ``torch.load(weights_only=True)``.

    The alignment metrics pair each image with its first caption (as the paper's scripts
    do); retrieval uses every caption (caption j of image i matches image i). Records may
    hold different numbers of captions. Other keys (``label_ids``) are ignored.

    Parameters
    ----------
    path : str or Path
        The .pt file.

    Returns
    -------
    CellData
        float32 images (n, d), texts (sum of C, d), ids 0..n-1 and the first caption of each.

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ImportError
        Without torch (the ``embed`` extra).
    ValueError
        When the file is not such a list (a record without "image" or "text", tensors of
        the wrong shape or dimension), or holds objects ``weights_only`` refuses.

    Examples
    --------
    >>> import tempfile, torch
    >>> from fastsas.study import read_paper_features
    >>> path = tempfile.mkdtemp() + "/ROCO_test_features.pt"
    >>> torch.save([{"image": torch.ones(1, 4), "text": torch.eye(4)[:2], "label_ids": 0},
    ...             {"image": torch.zeros(1, 4) + 2, "text": torch.eye(4)[2:], "label_ids": 1}], path)
    >>> cell = read_paper_features(path)
    >>> cell.images.shape, cell.texts.shape, cell.text_ids.tolist(), cell.pair_texts.tolist()
    ((2, 4), (4, 4), [0, 0, 1, 1], [0, 2])
    """
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch comes with the embed extra
        raise ImportError(f"reading the paper's .pt feature files needs torch: pip install 'fastsas[embed]' ({exc})") \
            from None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such feature file")
    try:
        records = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds; say which file and why
        raise ValueError(f"{path} could not be read with torch.load(weights_only=True): {exc}") from None
    if not isinstance(records, (list, tuple)) or not records:
        raise ValueError(f"{path} holds {type(records).__name__}"
                         f"{' (empty)' if isinstance(records, (list, tuple)) else ''}; the paper's feature file is a "
                         "non-empty list of {'image': tensor, 'text': tensor} records")
    images, texts, counts = [], [], []
    for i, record in enumerate(records):
        if not isinstance(record, dict) or "image" not in record or "text" not in record:
            raise ValueError(f"{path}: record {i} is not a dict with 'image' and 'text' tensors")
        image = _tensor_rows(record["image"], torch, f"{path}: record {i} 'image'")
        if image.shape[0] != 1:
            raise ValueError(f"{path}: record {i} 'image' has {image.shape[0]} rows; one image per record")
        text = _tensor_rows(record["text"], torch, f"{path}: record {i} 'text'")
        if image.shape[1] != text.shape[1] or (images and image.shape[1] != images[0].shape[1]):
            raise ValueError(f"{path}: record {i} has image dim {image.shape[1]} and text dim {text.shape[1]}; "
                             f"every embedding of a file must have the dim of record 0 ({images[0].shape[1] if images else image.shape[1]})")
        images.append(image)
        texts.append(text)
        counts.append(text.shape[0])
    counts_arr = np.asarray(counts, dtype=np.int64)
    text_ids = np.repeat(np.arange(len(records), dtype=np.int64), counts_arr)
    first = np.concatenate([[0], np.cumsum(counts_arr)[:-1]]).astype(np.int64)
    return CellData(images=np.concatenate(images), texts=np.concatenate(texts),
                    image_ids=np.arange(len(records), dtype=np.int64), text_ids=text_ids, pair_texts=first)


def read_cell(spec: CellSpec) -> CellData:
    """The embeddings of one cell, from any input a :class:`CellSpec` names.

    A paired input (store, .npz, .parquet, two .npy) has one text per image, row by row; with
    ``spec.id_column`` its rows sharing an id match in retrieval and share a jackknife
    block. The paper's .pt file: :func:`read_paper_features`.

    Parameters
    ----------
    spec : CellSpec
        The cell.

    Returns
    -------
    CellData

    Raises
    ------
    FileNotFoundError, ValueError, StoreError
        When the input is missing or unreadable (the message names the file), or the id
        column does not exist.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from fastsas.study import CellSpec, read_cell
    >>> path = tempfile.mkdtemp() + "/ROCO.npz"
    >>> np.savez(path, images=np.eye(3, dtype=np.float32), texts=np.eye(3, dtype=np.float32))
    >>> read_cell(CellSpec("clip", "ROCO", "npz", (path,))).texts.shape
    (3, 3)
    """
    if spec.kind == "paper":
        return read_paper_features(spec.paths[0])
    kwargs = {"vector_columns": spec.vector_columns} if spec.vector_columns else {}
    source = open_source(*spec.paths, **kwargs)
    images, texts = source.arrays()
    ids = None
    if spec.id_column is not None:
        meta = source.metadata()
        if spec.id_column not in meta:
            raise ValueError(f"cell ({spec.model}, {spec.dataset}): {spec.paths[0]} has no metadata column "
                             f"{spec.id_column!r} (columns: {', '.join(sorted(meta)) or 'none'})")
        ids = np.asarray(meta[spec.id_column])
    return CellData(images=np.asarray(images), texts=np.asarray(texts), image_ids=ids, text_ids=ids,
                    block_ids=ids)
