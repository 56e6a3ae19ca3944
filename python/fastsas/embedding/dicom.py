"""DICOM files to display images, in the order the standard's grayscale pipeline applies
(PS3.3 C.11, PS3.4 N.2):

1. stored values of the chosen frames (``pixel_array``; compressed transfer syntaxes
   through pydicom's decoders);
2. modality LUT: Rescale Slope/Intercept or the Modality LUT Sequence, so CT is in HU;
3. VOI: the VOI LUT Sequence, else Window Center/Width with its VOI LUT Function
   (LINEAR, LINEAR_EXACT, SIGMOID), else the frame's own min..max; always to [0, 1];
4. MONOCHROME1 inverted (``1 - y``), so bright is dense in every image;
5. rounded to 8 bits and replicated to RGB, the form the models were trained on
   (radiographs published as 8-bit PNG/JPEG).

Enhanced multi-frame objects keep rescale and window per frame in their functional groups
(shared, then per frame); those are used when the top level has none. Colour images
(RGB, YBR: converted to RGB by pydicom) skip steps 2-4 and are scaled to 8 bits by their
bit depth; PALETTE COLOR goes through its colour LUTs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

__all__ = ["DEFAULT_TAGS", "DicomFrames", "NoPixelDataError", "is_dicom", "read_dicom", "window"]

DEFAULT_TAGS = ("Modality", "BodyPartExamined", "StudyDate", "Manufacturer")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


class NoPixelDataError(ValueError):
    """A DICOM object without an image (a structured report, a presentation state...)."""


@dataclass
class DicomFrames:
    frames: list[np.ndarray]  # uint8 (rows, cols, 3) each
    tags: dict[str, str]  # the requested header values, "" where absent
    header_id: dict[str, str]  # every string-like header value, looked up for image_id='dicom:...'


def is_dicom(path: str | os.PathLike) -> bool:
    """True for a file with the DICOM Part 10 preamble ("DICM" at byte 128)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _tag_text(ds, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _first(value) -> float:
    """The first of a possibly multi-valued DS (Window Center 40\\400 -> 40)."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def window(x: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Window values to [0, 1] by PS3.3 C.11.2.1.2 (LINEAR, LINEAR_EXACT) and C.11.2.1.3.1
    (SIGMOID), with the output range taken as [0, 1]."""
    x = np.asarray(x, dtype=np.float64)
    function = (function or "LINEAR").strip().upper()
    if function == "SIGMOID":
        if width <= 0:  # 0 divides by zero (NaN pixels, written as black)
            raise ValueError(f"Window Width must be > 0 for SIGMOID, got {width}")
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"Window Width must be > 0 for LINEAR_EXACT, got {width}")
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    if function != "LINEAR":
        raise ValueError(f"VOI LUT Function {function!r} is not one of LINEAR, LINEAR_EXACT, SIGMOID")
    if width < 1:
        raise ValueError(f"Window Width must be >= 1 for LINEAR, got {width}")
    if width == 1:  # the formula's denominator vanishes: a threshold at center - 0.5
        return (x > center - 0.5).astype(np.float64)
    return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _min_max(x: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(x)), float(np.max(x))
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.float64)
    return (np.asarray(x, dtype=np.float64) - lo) / (hi - lo)


def _frame_groups(ds, index: int) -> list:
    """The datasets that may hold a frame's transformations: the top level first, then
    the per-frame and shared functional groups of enhanced multi-frame objects."""
    out = [ds]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and index < len(per_frame):
        out.append(per_frame[index])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        out.append(shared[0])
    return out


def _present(item, keyword: str) -> bool:
    """The element is there with a value (an empty Window Center or Rescale Slope, which
    writers leave behind, counts as absent rather than failing the file)."""
    value = item.get(keyword)
    return value is not None and value != "" and not (hasattr(value, "__len__") and len(value) == 0)


def _find(ds, index: int, sequence: str, keywords: tuple[str, ...]):
    """The first dataset (top level, else a functional group's `sequence` item) that has
    every keyword with a value."""
    for group in _frame_groups(ds, index):
        item = group if group is ds else (group.get(sequence) or [None])[0]
        if item is not None and all(_present(item, k) for k in keywords):
            return item
    return None


def _modality(frame: np.ndarray, ds, index: int) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    if ds.get("ModalityLUTSequence"):
        return apply_modality_lut(frame, ds).astype(np.float64)
    item = _find(ds, index, "PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept"))
    if item is None:
        return frame.astype(np.float64)
    return frame.astype(np.float64) * float(item.RescaleSlope) + float(item.RescaleIntercept)


def _voi(values: np.ndarray, stored: np.ndarray, ds, index: int) -> np.ndarray:
    from pydicom.pixels import apply_voi

    if ds.get("VOILUTSequence"):
        # The LUT is indexed by the modality output; integer input as the LUT expects.
        lut_in = np.rint(values).astype(np.int64) if not np.issubdtype(stored.dtype, np.floating) else values
        out = apply_voi(lut_in, ds, index=0).astype(np.float64)
        # The LUT's entries as pydicom reads them (LUT Data may be US or OW bytes): the
        # LUT applied to every input it maps, first mapped value onwards.
        entries, first = (int(v) for v in ds.VOILUTSequence[0].LUTDescriptor[:2])
        lut = apply_voi(np.arange(first, first + (entries or 65536), dtype=np.int64), ds, index=0)
        lut = np.asarray(lut, dtype=np.float64)
        # Scaled by the LUT's own entries: descriptors often claim 16 bits for a 12-bit LUT.
        lo, hi = float(lut.min()), float(lut.max())
        return np.zeros_like(out) if hi <= lo else (out - lo) / (hi - lo)
    item = _find(ds, index, "FrameVOILUTSequence", ("WindowCenter", "WindowWidth"))
    if item is not None:
        return window(values, _first(item.WindowCenter), _first(item.WindowWidth),
                      str(item.get("VOILUTFunction", "LINEAR") or "LINEAR"))
    return _min_max(values)


def _to_rgb8(y: np.ndarray) -> np.ndarray:
    gray = np.rint(np.clip(y, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def _palette_to_rgb8(frame: np.ndarray, ds) -> np.ndarray:
    """PALETTE COLOR through its red/green/blue LUTs (PS3.3 C.7.6.3.1.5), scaled by the
    LUTs' bit depth (the descriptor's third value) to 8 bits."""
    from pydicom.pixels import apply_color_lut

    rgb = apply_color_lut(frame, ds)
    bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    if bits <= 8:
        return np.ascontiguousarray(rgb.astype(np.uint8))
    return np.rint(rgb.astype(np.float64) * (255.0 / (2 ** bits - 1))).astype(np.uint8)


def _colour_to_rgb8(frame: np.ndarray, ds) -> np.ndarray:
    bits = int(ds.get("BitsStored", 8) or 8)
    if frame.dtype == np.uint8 and bits <= 8:
        return np.ascontiguousarray(frame)
    scale = 255.0 / (2 ** bits - 1)
    return np.rint(np.clip(frame.astype(np.float64) * scale, 0, 255)).astype(np.uint8)


def read_dicom(path: str | os.PathLike, frames: str = "first",
               tags: tuple[str, ...] = DEFAULT_TAGS, header_keys: tuple[str, ...] = ()) -> DicomFrames:
    """Decode a DICOM file into 8-bit RGB display frames through the standard's grayscale
    pipeline (see the module docstring).

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    frames : {"first", "all"}, default "first"
        The first frame, or every frame of a multi-frame object.
    tags : tuple of str
        Header keywords returned as strings ("" where absent).
    header_keys : tuple of str
        Further keywords returned in ``header_id`` (for ids taken from the header).

    Returns
    -------
    DicomFrames
        ``frames`` (uint8 (rows, cols, 3) arrays), ``tags``, ``header_id``.

    Raises
    ------
    NoPixelDataError
        For an object without pixel data; pydicom's or NumPy's errors for a file that cannot
        be decoded (the pipeline logs and skips it).

    Examples
    --------
    >>> from fastsas.embedding import read_dicom                    # doctest: +SKIP
    >>> d = read_dicom("study/1.dcm", tags=("Modality",))           # doctest: +SKIP
    >>> d.frames[0].dtype, d.tags                                   # doctest: +SKIP
    (dtype('uint8'), {'Modality': 'CR'})
    """
    import pydicom

    ds = pydicom.dcmread(path)
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        raise NoPixelDataError("DICOM object has no pixel data "
                               f"(SOP Class {_tag_text(ds, 'SOPClassUID') or 'unknown'})")
    from pydicom.pixels import pixel_array

    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames == "all" and n_frames > 1:
        stack = list(pixel_array(ds))  # (frames, rows, cols[, samples])
    else:
        stack = [pixel_array(ds, index=0) if n_frames > 1 else pixel_array(ds)]  # decodes one frame only
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    out = []
    for i, stored in enumerate(stack):
        if samples > 1:
            out.append(_colour_to_rgb8(stored, ds))
            continue
        if photometric == "PALETTE COLOR":
            out.append(_palette_to_rgb8(stored, ds))
            continue
        y = _voi(_modality(stored, ds, i), stored, ds, i)
        if photometric == "MONOCHROME1":
            y = 1.0 - y
        out.append(_to_rgb8(y))
    return DicomFrames(out, {k: _tag_text(ds, k) for k in tags}, {k: _tag_text(ds, k) for k in header_keys})
