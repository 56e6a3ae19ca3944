"""Embedding an archive with a local vision-language model: images (PNG, JPEG, TIFF,
DICOM) and texts (CSV/Parquet, or a folder of .txt reports) into an EmbeddingStore.

Needs the ``embed`` extra (torch, transformers, pydicom, Pillow) or, for open_clip
checkpoints, the ``openclip`` extra. ``import fastsas`` does not import this package;
``fastsas.embed`` is :func:`fastsas.embedding.embed`.

>>> import fastsas as fs                                                      # doctest: +SKIP
>>> result = fs.embed("models/siglip", "archive/dicom", "archive/reports.csv", "store/",
...                   image_id="parent", frames="first")                       # doctest: +SKIP
>>> fs.audit(fs.store.open_source("store/"))                                  # doctest: +SKIP
"""
from fastsas.embedding.dicom import DEFAULT_TAGS, read_dicom
from fastsas.embedding.images import read_image
from fastsas.embedding.models import FAMILIES, Encoder, Family, describe_families, load_model
from fastsas.embedding.pipeline import EmbedResult, Skipped, embed, list_images
from fastsas.embedding.texts import read_texts

__all__ = ["DEFAULT_TAGS", "EmbedResult", "Encoder", "FAMILIES", "Family", "Skipped", "describe_families", "embed",
           "list_images", "load_model", "read_dicom", "read_image", "read_texts"]
