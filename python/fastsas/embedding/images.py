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

from fastsas.embedding.dicom import is_dicom

__all__ = ["IMAGE_SUFFIXES", "DICOM_SUFFIXES", "image_kind", "read_image"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
_HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def image_kind(path: str | os.PathLike) -> str | None:
    """"image", "dicom" or None (not an image fastsas reads): by suffix, and for files
    without a known suffix by the DICOM preamble."""
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
    """Decode an image file into uint8 RGB frames: the first, or every page of a multi-page TIFF.

    Parameters
    ----------
    path : str or os.PathLike
        A PNG, JPEG or TIFF file.
    frames : {"first", "all"}, default "first"
        The first frame, or every page.

    Returns
    -------
    list of ndarray
        (rows, cols, 3) uint8 frames (high-bit-depth grayscale is scaled from its own
        min..max).

    Raises
    ------
    OSError
        Pillow's errors for a file that cannot be decoded (the pipeline logs and skips it).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from PIL import Image
    >>> from fastsas.embedding import read_image
    >>> path = tempfile.mkdtemp() + "/a.png"
    >>> Image.fromarray(np.zeros((4, 5), np.uint8)).save(path)
    >>> [f.shape for f in read_image(path)]
    [(4, 5, 3)]
    """
    from PIL import Image, ImageOps, ImageSequence

    with Image.open(path) as img:
        if frames == "all" and getattr(img, "n_frames", 1) > 1:
            return [_frame_to_rgb8(page.copy()) for page in ImageSequence.Iterator(img)]
        img.load()  # decode now: a truncated file fails here, inside this try of the caller
        return [_frame_to_rgb8(ImageOps.exif_transpose(img))]
