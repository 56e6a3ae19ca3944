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
bit depth; PALETTE COLOR goes through its colour LUTs (their data read in the file's byte
order: big-endian files included).

A file that cannot be used raises :class:`DicomReadError` whose message is the reason the
skip log shows: true, and saying what can be done (the pip package that decodes a
compressed transfer syntax, by its pip name; that a file is truncated; that it is not an
image). A file without the DICOM Part 10 preamble is read as a bare data set. A decoder
that crashes with something that is not an ``Exception`` (a Rust panic is a
``BaseException``) is followed by each other installed decoder, pydicom's own first.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np

__all__ = ["DEFAULT_TAGS", "DicomFrames", "DicomReadError", "NoPixelDataError", "is_dicom", "read_dicom", "window"]

DEFAULT_TAGS = ("Modality", "BodyPartExamined", "StudyDate", "Manufacturer")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


class DicomReadError(ValueError):
    """A DICOM file that cannot be used; the message is the reason (what is wrong, what to do)."""


class NoPixelDataError(DicomReadError):
    """A DICOM object without an image (a structured report, a presentation state...)."""


_NOT_PART10 = "not a DICOM Part 10 file (no 'DICM' marker at byte 128)"
_REEXPORT = "if it is an image, export it again from its source as DICOM Part 10"
# Import names of decoders in pydicom's requirements that differ from their pip names.
_PIP_NAMES = {"gdcm": "python-gdcm"}
_INTERRUPTS = (KeyboardInterrupt, SystemExit, GeneratorExit)


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


def _little_endian(ds) -> bool:
    """Whether the data set's values were stored little-endian (the byte order of OW data)."""
    encoding = getattr(ds, "original_encoding", None)
    if encoding and encoding[1] is not None:
        return bool(encoding[1])
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return True if syntax is None else bool(syntax.is_little_endian)


def _lut_entries(ds, colour: str, entries: int) -> np.ndarray:
    """The entries of one palette colour LUT, read in the file's byte order (pydicom's
    apply_color_lut reads OW LUT data little-endian whatever the file: big-endian palettes
    came out black)."""
    value = ds[f"{colour}PaletteColorLookupTableData"].value
    if not isinstance(value, (bytes, bytearray)):  # read as US: already numbers
        return np.asarray(value, dtype=np.int64)
    little = _little_endian(ds)
    if len(value) == 2 * entries:
        return np.frombuffer(value, dtype="<u2" if little else ">u2").astype(np.int64)
    if len(value) == entries + (entries % 2):  # 8-bit entries packed two to a 16-bit word
        packed = np.frombuffer(value, dtype=np.uint8)
        if not little and len(packed) % 2 == 0:
            packed = packed.reshape(-1, 2)[:, ::-1].reshape(-1)
        return packed[:entries].astype(np.int64)
    raise DicomReadError(f"its {colour} Palette Color LUT Data has {len(value)} bytes for {entries} entries; "
                         "the palette is corrupt")


def _palette_to_rgb8(frame: np.ndarray, ds) -> np.ndarray:
    """PALETTE COLOR through its red/green/blue LUTs (PS3.3 C.7.6.3.1.5), scaled by the
    LUTs' bit depth (the descriptor's third value) to 8 bits. Segmented LUTs go through
    pydicom (which reads them in the file's byte order)."""
    if "RedPaletteColorLookupTableData" in ds:
        entries, first, bits = (int(v) for v in ds.RedPaletteColorLookupTableDescriptor[:3])
        entries = entries or 65536
        index = np.clip(frame.astype(np.int64) - first, 0, entries - 1)
        rgb = np.stack([_lut_entries(ds, c, entries)[index] for c in ("Red", "Green", "Blue")], axis=-1)
    else:
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(frame, ds)[..., :3]
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    if bits <= 8:
        return np.ascontiguousarray(np.clip(rgb, 0, 255).astype(np.uint8))
    return np.rint(np.clip(rgb, 0, 2 ** bits - 1).astype(np.float64) * (255.0 / (2 ** bits - 1))).astype(np.uint8)


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
        For an object without pixel data (the reason says whether it is not an image or
        truncated).
    DicomReadError
        For a file that cannot be used, with the reason: not DICOM, truncated, a
        compressed transfer syntax without an installed decoder (naming its pip package),
        corrupt pixel data (the pipeline logs and skips it).

    Examples
    --------
    >>> from fastsas.embedding import read_dicom                    # doctest: +SKIP
    >>> d = read_dicom("study/1.dcm", tags=("Modality",))           # doctest: +SKIP
    >>> d.frames[0].dtype, d.tags                                   # doctest: +SKIP
    (dtype('uint8'), {'Modality': 'CR'})
    """
    ds, complete, bare = _read_dataset(path)
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        raise NoPixelDataError(_no_pixels_reason(ds, complete, bare, path))
    try:
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError) as exc:
        raise DicomReadError(f"its header holds an invalid Number of Frames or Samples per Pixel ({_text(exc)}); "
                             "the file is damaged") from None
    if frames == "all" and n_frames > 1:
        stack = list(_decode(ds, None, complete, path))  # (frames, rows, cols[, samples])
    else:
        stack = [_decode(ds, 0 if n_frames > 1 else None, complete, path)]  # decodes one frame only
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


def _text(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _read_dataset(path):
    """(data set, read to its end, read as a bare data set): a Part 10 file, else the file read as a bare data set
    (pydicom's force=True, which fastsas does on its own: files without a preamble are
    common in old archives). Whether the parse reached the end of the file tells a
    truncated file from one that simply lacks an element."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    forced = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            forced = True
            try:
                ds = pydicom.dcmread(path, force=True)
            except Exception as exc:  # noqa: BLE001 - whatever the bare read trips on is the reason
                raise DicomReadError(f"{_NOT_PART10}, and not readable as a bare DICOM data set either "
                                     f"({_text(exc)}); {_REEXPORT}") from None
        except Exception as exc:  # noqa: BLE001 - a header pydicom cannot parse
            raise DicomReadError(f"its DICOM header cannot be read ({_text(exc)}); the file is damaged: copy it "
                                 "again from its source") from None
    ended_early = False
    for w in caught:
        if "end of file" in str(w.message).lower():
            ended_early = True
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if forced and not len(ds):
        raise DicomReadError(f"{_NOT_PART10}, and it holds no DICOM data set; {_REEXPORT}")
    if forced or "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        _guess_transfer_syntax(ds)
    return ds, not ended_early and _parsed_to_the_end(ds, path), forced


def _guess_transfer_syntax(ds) -> None:
    """A data set without file meta information: its transfer syntax is the encoding it was
    read in (uncompressed pixel data; compressed data would need the meta it lacks)."""
    from pydicom import uid
    from pydicom.dataset import FileMetaDataset

    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None:
        return
    if not hasattr(ds, "file_meta") or ds.file_meta is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = (uid.ImplicitVRLittleEndian if implicit
                                      else uid.ExplicitVRLittleEndian if little else uid.ExplicitVRBigEndian)


def _parsed_to_the_end(ds, path) -> bool:
    """Whether the last element read ends where the file ends (False: the file stops inside
    an element, or after bytes that are not a whole element: it is truncated)."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return True
    tags = list(ds.keys())
    if not tags:
        return False
    last = ds.get_item(tags[-1])
    start, length = getattr(last, "value_tell", None), getattr(last, "length", None)
    if start is None or length is None or length == 0xFFFFFFFF:
        return True  # undefined length: its end was found by its delimiter
    return start + length == size


def _sop_name(ds) -> tuple[str, str]:
    from pydicom.uid import UID

    uid = str(ds.get("SOPClassUID", "") or "").strip()
    if not uid and getattr(ds, "file_meta", None) is not None:  # a DICOMDIR names its class only there
        uid = str(ds.file_meta.get("MediaStorageSOPClassUID", "") or "").strip()
    name = UID(uid).name if uid else ""
    return uid, (name if name and name != uid else "")


def _no_pixels_reason(ds, complete: bool, bare: bool, path) -> str:
    if bare:
        stops = " (and it stops part way through an element)" if not complete else ""
        return f"{_NOT_PART10}, and read as a bare DICOM data set it has no pixel data{stops}; {_REEXPORT}"
    if not complete:
        return (f"the file is truncated ({os.path.getsize(path):,} bytes): it stops part way through an element, "
                "before any pixel data could be read; copy it again from its source")
    uid, name = _sop_name(ds)
    if not uid:
        return "no pixel data and no SOP Class: not a DICOM image (nothing to embed)"
    what = f"{name} ({uid})" if name else f"SOP Class {uid}"
    if "Image Storage" in name:
        return f"no pixel data: this {what} object has no Pixel Data element (nothing to embed)"
    return f"no pixel data: a {what} object is not an image (nothing to embed)"


def _install_hint(decoder) -> str:
    """"pip install A B (or: pip install C)" from pydicom's list of the decoder plugins
    whose dependencies are missing ("pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1")."""
    options = []
    for line in getattr(decoder, "missing_dependencies", []) or []:
        _, _, needs = line.partition(" - requires ")
        names = [part.strip().split(">")[0].split("=")[0].split("<")[0].strip() for part in needs.split(" and ")]
        names = [_PIP_NAMES.get(n, n) for n in names if n and n != "numpy"]
        if names:
            options.append("pip install " + " ".join(names))
    options.sort(key=lambda o: "python-gdcm" in o)  # the pure pip wheels first
    if not options:
        return ""
    return options[0] + (f" (or: {'; '.join(options[1:])})" if len(options) > 1 else "")


def _decode(ds, index, complete: bool, path) -> np.ndarray:
    """The stored values of frame `index` (None: the only frame, or every frame), through
    pydicom's decoders; a decoder that crashes (a BaseException such as a Rust panic) is
    followed by each other installed decoder, pydicom's own first."""
    from pydicom.pixels import pixel_array
    from pydicom.pixels.decoders.base import get_decoder

    syntax = ds.file_meta.get("TransferSyntaxUID") if getattr(ds, "file_meta", None) is not None else None
    if syntax is None:
        raise DicomReadError("its file meta information has no Transfer Syntax UID, so its pixel data cannot be "
                             f"decoded; {_REEXPORT}")
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise DicomReadError(f"its pixel data is stored as {syntax.name} ({syntax}), which no decoder for Python "
                             "reads; convert the file to an uncompressed transfer syntax first (e.g. gdcmconv --raw "
                             "or dcmtk's dcmdjpeg)") from None
    if not decoder.is_available:
        raise DicomReadError(f"its pixel data is compressed as {syntax.name} and no installed decoder reads it: "
                             f"{_install_hint(decoder) or 'install a pydicom pixel data plugin'}")
    kwargs = {} if index is None else {"index": index}
    try:
        return pixel_array(ds, **kwargs)
    except _INTERRUPTS:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom already tried every installed decoder
        failure, crashed = exc, False
    except BaseException as exc:  # noqa: BLE001 - a decoder's panic: try the others on their own
        failure, crashed = exc, True
    if crashed:
        for plugin in sorted(decoder.available_plugins, key=lambda p: p != "pydicom"):
            try:
                return pixel_array(ds, decoding_plugin=plugin, **kwargs)
            except _INTERRUPTS:
                raise
            except BaseException:  # noqa: BLE001 - this one failed too: the next
                continue
    raise DicomReadError(_decode_reason(ds, syntax, decoder, failure, crashed, complete, path)) from None


def _decode_reason(ds, syntax, decoder, failure: BaseException, crashed: bool, complete: bool, path) -> str:
    if not complete:
        return (f"the file is truncated ({os.path.getsize(path):,} bytes): it stops before the end of its pixel "
                "data; copy it again from its source")
    text = _text(failure)[:200]
    if crashed:
        tried = ", ".join(decoder.available_plugins) or "none"
        return (f"the {syntax.name} decoder crashed on its pixel data ({type(failure).__name__}: {text}) and no "
                f"other installed decoder read it (tried: {tried}); the pixel data is corrupt")
    hint = _install_hint(decoder) if syntax.is_compressed else ""
    more = f"; another decoder may read it: {hint}" if hint else ""
    return f"its pixel data ({syntax.name}) cannot be decoded ({type(failure).__name__}: {text}){more}"
