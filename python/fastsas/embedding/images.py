"""Image files (PNG, JPEG, TIFF; DICOM through fastsas.embedding.dicom) to 8-bit RGB
frames, the one form every model family's preprocessing starts from.

8-bit and palette images are converted by Pillow (EXIF orientation applied, alpha
dropped). High-bit-depth grayscale (16-bit PNG/TIFF, 32-bit integer or float TIFF) has
no window to apply, so each frame's own min..max is scaled to 0..255, as DICOM without a
window is.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "DICOM_SUFFIXES", "image_kind", "read_image"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
_HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def image_kind(path: str | os.PathLike) -> str | None:
    """"image", "dicom" or None (not an image fastsas reads): by suffix, and for files
    without a known suffix by the DICOM preamble."""
    from fastsas.embedding.dicom import is_dicom

    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in DICOM_SUFFIXES:
        return "dicom"
    if suffix in ("", ".ima") or suffix[1:].isdigit():  # DICOM is often stored without a suffix
        return "dicom" if is_dicom(path) else None
    return None


def _frame_to_rgb8(frame) -> np.ndarray:
    if frame.mode in _HIGH_DEPTH_MODES:
        values = np.asarray(frame, dtype=np.float64)
        lo, hi = float(values.min()), float(values.max())
        scaled = np.zeros_like(values) if hi <= lo else (values - lo) / (hi - lo)
        gray = np.rint(scaled * 255.0).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(frame.convert("RGB"))


def read_image(path: str | os.PathLike, frames: str = "first") -> list[np.ndarray]:
    """Decode an image file into uint8 (rows, cols, 3) frames: the first, or every page of
    a multi-page TIFF with frames="all". Pillow's errors propagate (the caller logs and
    skips the file)."""
    from PIL import Image, ImageOps, ImageSequence

    with Image.open(path) as img:
        if frames == "all" and getattr(img, "n_frames", 1) > 1:
            return [_frame_to_rgb8(page.copy()) for page in ImageSequence.Iterator(img)]
        img.load()  # decode now: a truncated file fails here, inside this try of the caller
        return [_frame_to_rgb8(ImageOps.exif_transpose(img))]
