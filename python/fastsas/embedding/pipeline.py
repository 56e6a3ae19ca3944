"""An archive of images and texts into an EmbeddingStore: list the images, decode and
preprocess them in DataLoader workers, embed in batches, pair each image row with its
study's text embedding, append chunk by chunk, resume what an interrupted run left.

Rows and ids. Every image (or every frame, with frames="all") is one row of the store:
its image embedding, the embedding of the text with the same id, and metadata columns
<id column>, ``image`` (the file's path under the images root), ``frame`` and, when the
archive has DICOM files, the requested DICOM tags. Several images of a study share its
text. The id of an image comes from ``image_id``: "stem" (file name without suffix),
"parent" (its folder: one folder per study), "dicom:<Keyword>" (a header value such as
AccessionNumber), or the id column of an images listing (CSV/Parquet with a ``path``
column).

Resumption. The store's manifest is the commit point: the rows of finished chunks are
kept and named by their (image, frame) metadata; a re-run with the same model and options
embeds only the files (frames) that are not among them. Files that could not be used are
retried on every run (they may have been fixed) and listed again if they still fail.

Skip log. An unreadable or unusable file never stops the job: it is listed with the
reason in ``skipped.csv`` (file, id, reason) in the store directory, rewritten at the end
of every run (also an interrupted one). That holds for decoders that raise something that
is not an ``Exception`` (a Rust panic) and for decoders that kill the worker process
decoding the file (a segfault, an abort): each worker says which file it is decoding, so
when one dies the files it and the others had in hand are decoded again one by one, each
in a process of its own; the file that kills its process is skipped with that reason, and
the run goes on from the first file not yet embedded, in the same order. (With workers=0
the files are decoded in this process, which a crashing decoder takes down: the default
uses worker processes.)

Workers die with their parent: each asks the kernel to kill it when the process that
started it dies (Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``), and exits at once if that
process is already gone, so a killed ``fastsas embed`` leaves no decoding workers behind.
"""
from __future__ import annotations

import contextlib
import csv
import ctypes
import functools
import io
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from fastsas._validate import check_int
from fastsas.embedding.dicom import DEFAULT_TAGS, DicomReadError, read_dicom
from fastsas.embedding.images import DICOM_SUFFIXES, IMAGE_SUFFIXES, image_kind, read_image
from fastsas.embedding.models import Encoder, load_model
from fastsas.embedding.overlay import Overlay, parse_overlays, render_overlays
from fastsas.embedding.texts import ID_COLUMNS, pick_column, read_table, read_texts
from fastsas.io.atomic import write_atomic
from fastsas.store import MANIFEST, EmbeddingStore

__all__ = ["EmbedResult", "Skipped", "embed", "list_images"]

JOB_KEY = "fastsas.embed"  # the job's options, kept as JSON in the store manifest's notes
SKIP_LOG = "skipped.csv"
IMAGE_COLUMN, FRAME_COLUMN = "image", "frame"
_ID_SUFFIXES = frozenset(IMAGE_SUFFIXES + DICOM_SUFFIXES + (".ima",))  # removed by image_id="stem"
_TEXT_CACHE = 65536  # text embeddings kept for ids that may come again (several images per study)


@dataclass(frozen=True)
class Skipped:
    """A file an embed run could not use, as listed in ``skipped.csv``.

    Attributes
    ----------
    file : str
        Its path under the images root.
    id : str
        Its id ("" where it could not be known).
    reason : str
        Why it was skipped.

    Examples
    --------
    >>> from fastsas.embedding import Skipped
    >>> Skipped("s1/a.dcm", "S1", "no pixel data").reason
    'no pixel data'
    """
    file: str  # path under the images root
    id: str  # "" where it could not be known
    reason: str


@dataclass(frozen=True)
class EmbedResult:
    """What an embed run did.

    Attributes
    ----------
    store : Path
        The store directory.
    model, family, device : str
        The model directory, its family (clip, siglip, ...) and the device it ran on.
    dim : int
        The embedding dimension.
    rows : int
        The store's rows now.
    rows_embedded, texts_embedded : int
        This run's model work (0 for a finished store run again).
    files_total, files_done_before : int
        Image files in the archive, and those already embedded before this run.
    files_not_images : int
        Files in the images folder that are neither images nor DICOM (ignored; hidden
        files are not counted).
    skipped : tuple of Skipped
        Files that could not be used.
    skip_log : Path
        Where they are listed (``skipped.csv`` in the store).
    texts_without_images : int
        Texts whose id no image has.
    seconds : float
        The run's wall time.
    resumed : bool
        Whether an existing store was continued.

    Examples
    --------
    >>> from fastsas.embedding import EmbedResult       # doctest: +SKIP
    >>> result = fastsas.embed("models/clip", "archive/images", "archive/reports.csv", "store/")  # doctest: +SKIP
    >>> sorted(result.to_dict())[:3]                    # doctest: +SKIP
    ['device', 'dim', 'family']
    """

    store: Path
    model: str
    family: str
    dim: int
    rows: int
    rows_embedded: int
    texts_embedded: int
    files_total: int
    files_done_before: int
    files_not_images: int
    skipped: tuple[Skipped, ...]
    skip_log: Path
    texts_without_images: int
    seconds: float
    resumed: bool
    device: str

    def to_dict(self) -> dict:
        """Every field as plain data (paths as strings, skipped files as dicts)."""
        d = asdict(self)
        d["store"], d["skip_log"] = str(self.store), str(self.skip_log)
        d["skipped"] = [asdict(s) for s in self.skipped]
        return d


# -- the images of an archive -------------------------------------------------------------------
@dataclass(frozen=True)
class ImageItem:
    path: str  # absolute
    key: str  # path under the images root, POSIX separators: the row's `image` column
    id: str | None  # None: read from the DICOM header (image_id="dicom:...")
    kind: str  # "image" or "dicom"


def _id_of(key: str, image_id: str) -> str | None:
    parts = key.split("/")
    if image_id == "stem":
        # Only the image suffix goes: DICOM files are often named by their UID
        # (1.2.840....dcm) or numbered (IM.0001), and every dot before it is part of the id.
        name = parts[-1]
        stem, dot, suffix = name.rpartition(".")
        return stem if dot and stem and "." + suffix.lower() in _ID_SUFFIXES else name
    if image_id == "parent":
        return parts[-2] if len(parts) > 1 else ""
    return None  # dicom:<Keyword>


def _check_image_id(image_id: str) -> None:
    if image_id in ("stem", "parent"):
        return
    if image_id.startswith("dicom:") and image_id[6:].isidentifier():
        return
    raise ValueError(f"image_id must be 'stem', 'parent' or 'dicom:<Keyword>' (e.g. 'dicom:AccessionNumber'), "
                     f"got {image_id!r}")


def _listing(path: Path, id_column: str | None) -> list[ImageItem]:
    """An images listing: a CSV/Parquet table with a `path` column (relative to the
    listing's folder, or absolute) and an id column."""
    table = read_table(path)
    columns = list(table.column_names)
    if "path" not in columns:
        raise ValueError(f"images: the listing {path} has no 'path' column (columns: {', '.join(columns)})")
    id_name = pick_column(columns, id_column, ID_COLUMNS, "id_column", path)
    items = []
    for p, i in zip(table.column("path").to_pylist(), table.column(id_name).to_pylist()):
        full = Path(p) if Path(p).is_absolute() else path.parent / p
        kind = image_kind(full) or ("dicom" if full.suffix == "" else "image")
        items.append(ImageItem(str(full), str(p).replace(os.sep, "/"), str(i), kind))
    return items


def list_images(images: str | os.PathLike, image_id: str = "stem",
                id_column: str | None = None) -> tuple[list[ImageItem], int]:
    """The archive's images in a fixed order (sorted paths), and the number of files that are not
    images fastsas reads (ignored).

    Parameters
    ----------
    images : str or os.PathLike
        A folder (searched recursively), one file, or a CSV/Parquet listing with a ``path``
        column (relative to the listing's folder, or absolute) and an id column.
    image_id : str, default "stem"
        How an image gets its id: "stem" (the file name without its image suffix), "parent"
        (its folder: one folder per study) or "dicom:<Keyword>" (a header value, read later).
    id_column : str or None
        The id column of a listing (default: id or study_id).

    Returns
    -------
    tuple
        (items, ignored): one item per image with ``path``, ``key`` (the path under the root),
        ``id`` (None for ids from the DICOM header) and ``kind`` ("image" or "dicom").

    Raises
    ------
    FileNotFoundError
        When `images` does not exist.
    ValueError
        For a bad `image_id`, or a folder without images.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from fastsas.embedding import list_images
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("S1/a.png", "S1/b.png", "S2/c.dcm", "notes.txt"):
    ...     (root / name).parent.mkdir(exist_ok=True); _ = (root / name).write_bytes(b"")
    >>> items, ignored = list_images(root, image_id="parent")
    >>> [(i.key, i.id, i.kind) for i in items], ignored
    ([('S1/a.png', 'S1', 'image'), ('S1/b.png', 'S1', 'image'), ('S2/c.dcm', 'S2', 'dicom')], 1)
    """
    _check_image_id(image_id)
    path = Path(images).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"images: {path}: no such file or folder")
    if path.is_file() and path.suffix.lower() in (".csv", ".parquet", ".pq"):
        return _listing(path, id_column), 0
    if path.is_file():
        kind = image_kind(path)
        if kind is None:
            raise ValueError(f"images: {path} is not a PNG, JPEG, TIFF or DICOM file, nor a CSV/Parquet listing")
        return [ImageItem(str(path), path.name, _id_of(path.name, image_id), kind)], 0
    items, ignored = [], 0
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        if p.name.startswith("."):
            continue
        kind = image_kind(p)
        if kind is None:
            ignored += 1
            continue
        key = p.relative_to(path).as_posix()
        items.append(ImageItem(str(p), key, _id_of(key, image_id), kind))
    if not items:
        raise ValueError(f"images: {path} holds no PNG, JPEG, TIFF or DICOM files")
    return items, ignored


# -- decoding in DataLoader workers ------------------------------------------------------------------
def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, DicomReadError):  # already the reason, in words
        return text[:400]
    return f"{type(exc).__name__}: {text}"[:300]


_INTERRUPTS = (KeyboardInterrupt, SystemExit, GeneratorExit)
_PR_SET_PDEATHSIG = 1
_ALONE_TIMEOUT = 300  # seconds a file suspected of killing its worker may take to decode on its own


def _die_with_parent(parent_pid: int, worker_id: int | None = None) -> None:
    """worker_init_fn of the decoding workers: killed by the kernel when their parent dies
    (Linux), and gone at once if it died before this ran."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
            pass
    if os.getppid() != parent_pid:
        os._exit(0)


def _worker_slot() -> int | None:
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    return None if info is None else info.id


class ImageDataset:
    """One file per item: decoded, preprocessed for the model, and described; a file that
    fails is returned as its error (the main process logs it) rather than raised. With
    `in_flight` (a shared array, one slot per worker), each worker records the item it is
    decoding, so the main process knows the file a dead worker had in hand."""

    def __init__(self, items: Sequence[ImageItem], preprocess: Callable, frames: str, tags: Sequence[str],
                 image_id: str, overlays: Sequence[Overlay] = (), in_flight: Any = None):
        self.items, self.preprocess, self.frames = list(items), preprocess, frames
        self.overlays = tuple(overlays)
        self.tags = tuple(tags)
        self.header_key = image_id[6:] if image_id.startswith("dicom:") else None
        self.in_flight = in_flight

    def __len__(self) -> int:
        return len(self.items)

    def decode(self, item: ImageItem) -> tuple[list[np.ndarray], dict[str, str], str | None]:
        if item.kind == "dicom":
            d = read_dicom(item.path, self.frames, self.tags, (self.header_key,) if self.header_key else ())
            ident = item.id
            if self.header_key:
                ident = d.header_id[self.header_key]
                if not ident:
                    raise ValueError(f"the DICOM header has no {self.header_key} (image_id='dicom:{self.header_key}')")
            return d.frames, d.tags, ident
        if self.header_key:
            raise ValueError(f"image_id='dicom:{self.header_key}' needs DICOM files; this is a {item.kind} file")
        return read_image(item.path, self.frames), {t: "" for t in self.tags}, item.id

    def __getitem__(self, i: int) -> dict:
        slot = _worker_slot() if self.in_flight is not None else None
        if slot is not None:
            self.in_flight[slot] = i
        try:
            return self.record(i)
        finally:
            if slot is not None:
                self.in_flight[slot] = -1

    def record(self, i: int) -> dict:
        item = self.items[i]
        try:
            frames, tags, ident = self.decode(item)
            frames = [render_overlays(f, self.overlays) for f in frames]
            inputs = self.preprocess(frames)
        except _INTERRUPTS:
            raise
        except BaseException as exc:  # noqa: BLE001 - any failure of one file (a decoder's panic too) is logged
            return {"index": i, "error": _reason(exc), "id": item.id or ""}
        return {"index": i, "inputs": inputs, "frames": len(frames), "tags": tags, "id": ident}


def _collate(batch: list) -> list:
    return batch


def _loader(dataset: ImageDataset, files_per_batch: int, workers: int):
    from torch.utils.data import DataLoader

    # Two batches ahead per worker keep the model fed; a batch holds every frame of its files,
    # so a deeper prefetch multiplies the memory of large multi-frame DICOMs.
    return DataLoader(dataset, batch_size=files_per_batch, shuffle=False, num_workers=workers,
                      collate_fn=_collate, prefetch_factor=2 if workers else None,
                      persistent_workers=False,
                      worker_init_fn=functools.partial(_die_with_parent, os.getpid()) if workers else None)


@contextlib.contextmanager
def _worker_deaths_reported_by_the_loader():
    """While the loader is read: torch's SIGCHLD handler raises a dead worker's error
    wherever this process happens to be (inside the model, inside a store append, leaving
    half a batch buffered); without it the loader raises that error from its own next(),
    within a few seconds, where the run can recover. The handler is put back afterwards."""
    previous = None
    if hasattr(signal, "SIGCHLD") and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGCHLD, previous)


def _worker_died(exc: BaseException) -> bool:
    """Whether a DataLoader error says one of its worker processes died (torch's wording)."""
    return isinstance(exc, RuntimeError) and "DataLoader worker" in str(exc)


def _decode_alone(dataset: ImageDataset, i: int) -> str | None:
    """Decode item i in a process of its own: None when that process survives, else the
    reason it died (the file is then skipped)."""
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    child = context.Process(target=_decode_in_child, args=(dataset, i, os.getpid()), daemon=True)
    child.start()
    child.join(_ALONE_TIMEOUT)
    if child.exitcode is None:  # hung: as good as dead for an archive
        child.kill()
        child.join()
        return (f"decoding it did not finish within {_ALONE_TIMEOUT} s in a process of its own (after a decoding "
                "worker died with it in hand); fix or remove the file (it is skipped)")
    if child.exitcode == 0:
        return None
    if child.exitcode is not None and child.exitcode < 0:
        try:
            how = f"signal {signal.Signals(-child.exitcode).name}"
        except ValueError:
            how = f"signal {-child.exitcode}"
    else:
        how = f"exit code {child.exitcode}"
    return (f"decoding it killed the decoding process ({how}): the file is corrupt, or a decoder has a bug it "
            "trips; fix or remove the file (it is skipped)")


def _decode_in_child(dataset: ImageDataset, i: int, parent_pid: int) -> None:
    import torch

    _die_with_parent(parent_pid)
    torch.set_num_threads(1)  # as in a DataLoader worker: one thread after the fork
    dataset.record(i)


class _StuckLoaderError(RuntimeError):
    """The loader stopped receiving after a worker died (raised in the main thread)."""


def _kill_workers(iterator: Any) -> None:
    """Ends the worker processes a failed loader iterator still has (private to torch's
    iterator, hence the getattr): their results are not wanted any more."""
    for worker in getattr(iterator, "_workers", None) or []:
        try:
            if worker.is_alive():
                worker.kill()
        except (OSError, ValueError, AssertionError):
            pass


class _StuckLoaderWatch:
    """Ends a loader read that can never return. A worker killed while its queue thread was
    sending a batch leaves half a message in the result pipe that every worker (and this
    process) shares, so the read of the rest waits forever: torch's own check of dead
    workers runs only between reads. A watcher thread sees a worker that died abnormally and
    no batch for `STUCK_AFTER` seconds while the main thread is inside the loader's next(),
    and interrupts that read with SIGUSR1, whose handler raises a DataLoader-worker error:
    the supervisor then recovers as for any worker death (the batches delivered are kept)."""

    STUCK_AFTER = 20.0  # seconds: torch itself reports a dead worker within about 5 s

    def __init__(self, iterator: Any):
        self.iterator = iterator
        self.in_next = False
        self.last_progress = time.monotonic()
        self.stop = threading.Event()
        self.active = (hasattr(signal, "SIGUSR1") and hasattr(signal, "pthread_kill")
                       and threading.current_thread() is threading.main_thread()
                       and bool(getattr(iterator, "_workers", None)))
        self.previous = None
        self.thread = None

    def _handler(self, signum, frame):
        if self.in_next:
            raise _StuckLoaderError("DataLoader worker died while sending a batch and the loader stopped "
                                    "receiving; the loader is restarted")

    def __enter__(self) -> "_StuckLoaderWatch":
        if self.active:
            self.previous = signal.signal(signal.SIGUSR1, self._handler)
            self.thread = threading.Thread(target=self._watch, args=(threading.main_thread().ident,),
                                           name="fastsas-loader-watch", daemon=True)
            self.thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
        if self.previous is not None:
            signal.signal(signal.SIGUSR1, self.previous)
        if exc_type is _StuckLoaderError:
            # Still under the default SIGCHLD (the enclosing context), so reaping them raises
            # nothing; then torch forgets their pids (its shutdown, private, hence guarded).
            _kill_workers(self.iterator)
            try:
                self.iterator._shutdown_workers()
            except Exception:  # noqa: BLE001 - a broken loader's own cleanup may fail; it is discarded
                pass

    def next_batch(self):
        """The loader's next batch, None at its end."""
        self.in_next = True
        try:
            return next(self.iterator)
        except StopIteration:
            return None
        finally:
            self.in_next = False
            self.last_progress = time.monotonic()

    def _watch(self, main_ident: int) -> None:
        while not self.stop.wait(1.0):
            workers = getattr(self.iterator, "_workers", None) or []
            dead = any(w.exitcode not in (None, 0) for w in workers)
            if dead and self.in_next and time.monotonic() - self.last_progress > self.STUCK_AFTER:
                signal.pthread_kill(main_ident, signal.SIGUSR1)
                self.last_progress = time.monotonic()  # once per STUCK_AFTER at most


class _DecodeSupervisor:
    """Runs the DataLoader over the files still to do, and outlives its workers: when a worker
    dies, the files the workers had in hand are decoded again one by one in processes of
    their own; one that kills its process is skipped with that reason, and a new loader goes
    on from the first file not yet delivered, in the same order (so the rows are those of a
    run that never crashed)."""

    _MAX_UNEXPLAINED = 3  # deaths with no file to blame before the error is raised

    def __init__(self, items: list[ImageItem], make_dataset: Callable, files_per_batch: int, workers: int,
                 skip: Callable[[ImageItem, str], None]):
        self.items, self.make_dataset, self.files_per_batch, self.workers = items, make_dataset, files_per_batch, workers
        self.skip = skip
        self.deaths = 0

    def __iter__(self):
        remaining = list(self.items)
        suspects: set[str] = set()
        unexplained = 0
        while remaining:
            in_flight = multiprocessing.Array("q", [-1] * self.workers, lock=False) if self.workers else None
            dataset = self.make_dataset(remaining, in_flight)
            delivered = 0
            try:
                iterator = iter(_loader(dataset, self.files_per_batch, self.workers))
                with _worker_deaths_reported_by_the_loader(), _StuckLoaderWatch(iterator) as watch:
                    while True:
                        records = watch.next_batch()
                        if records is None:
                            break
                        delivered += len(records)
                        yield [{**r, "item": remaining[r["index"]]} for r in records]
                return
            except RuntimeError as exc:
                if not self.workers or not _worker_died(exc):
                    raise
                self.deaths += 1
                held = sorted({int(i) for i in in_flight if int(i) >= delivered})
                crashed = []
                for i in held:
                    item = remaining[i]
                    reason = _decode_alone(dataset, i)
                    if reason is None and item.key in suspects:
                        reason = ("a decoding worker died twice while it had this file in hand (its decoding "
                                  "survives on its own, so the cause may be memory); it is skipped")
                    if reason is not None:
                        crashed.append(i)
                        self.skip(item, reason)
                    suspects.add(item.key)
                if not held:
                    unexplained += 1
                    if unexplained >= self._MAX_UNEXPLAINED:
                        raise
                remaining = [it for k, it in enumerate(remaining) if k >= delivered and k not in crashed]


# -- the store: options, resumption -------------------------------------------------------------------
def _job_options(encoder, id_column: str, image_id: str, frames: str, tags: Sequence[str],
                 overlays: Sequence[Overlay] = ()) -> dict:
    options = {"model": encoder.describe(), "model_fingerprint": encoder.fingerprint, "dim": encoder.dim,
               "id_column": id_column, "image_id": image_id, "frames": frames, "dicom_tags": list(tags)}
    if overlays:
        # The overlaid strings and their embedding by the model's text tower (what
        # fs.overlay_bias measures the pull toward).
        options["overlay"] = [o.to_dict() for o in overlays]
        joined = " ".join(o.text for o in overlays if o.text)
        options["overlay_text_embedding"] = (encoder.encode_texts([joined])[0].astype(float).tolist()
                                             if joined else None)
    return options


def _notes(options: dict) -> str:
    return json.dumps({JOB_KEY: options}, sort_keys=True)


def _stored_options(store) -> dict | None:
    try:
        return json.loads(store.notes or "{}").get(JOB_KEY)
    except ValueError:
        return None


def overlay_record(store) -> tuple[list[dict], np.ndarray | None]:
    """(the overlays a store's images were embedded with, the text embedding of their joined
    strings or None): what ``embed(..., overlay=...)`` kept in the store's job options;
    ([], None) for a store embedded without overlays or not written by :func:`embed`."""
    options = _stored_options(store) or {}
    vector = options.get("overlay_text_embedding")
    return list(options.get("overlay", [])), None if vector is None else np.asarray(vector, dtype=np.float64)


def _check_same_job(store, options: dict) -> None:
    stored = _stored_options(store)
    if stored is None:
        raise ValueError(f"out: {store.path} is an embedding store that fastsas embed did not write; choose "
                         "another out directory")
    differ = [k for k in ("model_fingerprint", "dim", "id_column", "image_id", "frames", "dicom_tags", "overlay")
              if stored.get(k) != options.get(k)]
    if differ:
        detail = ", ".join(f"{k}: {stored.get(k)!r} there, {options.get(k)!r} now" for k in differ)
        raise ValueError(f"out: {store.path} was embedded with other options ({detail}); resume with the same "
                         "model and options, or pass overwrite=True to start again")


def _open_store(out: Path, options: dict, tags: Sequence[str], chunk_rows: int, overwrite: bool, resume: bool):
    import pyarrow as pa

    if out.exists() and (out / MANIFEST).exists() and not overwrite:
        if not resume:
            raise FileExistsError(f"out: {out} already holds an embedding store; resume it (the default), pass "
                                  "overwrite=True to start again, or choose another out directory")
        store = EmbeddingStore.open(out, mode="a")
        try:
            _check_same_job(store, options)
        except ValueError:
            store.abandon()
            raise
        return store, True
    columns = pa.schema([pa.field(options["id_column"], pa.string()), pa.field(IMAGE_COLUMN, pa.string()),
                         pa.field(FRAME_COLUMN, pa.int32())] + [pa.field(t, pa.string()) for t in tags])
    store = EmbeddingStore.create(out, options["dim"], chunk_rows=chunk_rows, columns=columns,
                                  model=options["model"], notes=_notes(options), overwrite=overwrite,
                                  id_column=options["id_column"])
    return store, False


def _done_rows(store) -> tuple[set[tuple[str, int]], str | None]:
    """(image, frame) of every committed row, and the image of the last one (the only file
    whose frames a crash can have split between committed and lost rows)."""
    if store.n_done == 0:
        return set(), None
    table = store.metadata_table().select([IMAGE_COLUMN, FRAME_COLUMN])
    images = table.column(IMAGE_COLUMN).to_pylist()
    frames = table.column(FRAME_COLUMN).to_pylist()
    return set(zip(images, frames)), images[-1]


def _write_skip_log(path: Path, skipped: Iterable[Skipped]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["file", "id", "reason"])
    for s in sorted(skipped, key=lambda s: s.file):  # in file order, however the run found them
        writer.writerow([s.file, s.id, s.reason])
    write_atomic(path, buf.getvalue())


# -- texts -------------------------------------------------------------------------------------------
class TextEmbeddings:
    """Text embeddings by id, computed on first use in batches and kept in a bounded cache."""

    def __init__(self, encoder, texts: dict[str, str], batch_size: int):
        self.encoder, self.texts, self.batch_size = encoder, texts, batch_size
        self.cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.embedded = 0

    def problem(self, ident: str) -> str | None:
        text = self.texts.get(ident)
        if text is None:
            return f"no text with id {ident!r}"
        if not text.strip():
            return f"the text of id {ident!r} is empty"
        return None

    def get(self, ids: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(i for i in ids if i not in self.cache))
        for s in range(0, len(missing), self.batch_size):
            part = missing[s:s + self.batch_size]
            for i, row in zip(part, self.encoder.encode_texts([self.texts[i] for i in part])):
                self.cache[i] = row
            self.embedded += len(part)
        out = np.stack([self.cache[i] for i in ids])
        for i in ids:
            self.cache.move_to_end(i)
        while len(self.cache) > _TEXT_CACHE:
            self.cache.popitem(last=False)
        return out


# -- the run ---------------------------------------------------------------------------------------------
def _concat_inputs(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _encode_images(encoder, inputs: dict[str, np.ndarray], batch_size: int) -> np.ndarray:
    n = len(next(iter(inputs.values())))
    return np.concatenate([encoder.encode_images({k: v[s:s + batch_size] for k, v in inputs.items()})
                           for s in range(0, n, batch_size)])


class _Run:
    """One pass over the files still to do: decode results in, rows to the store out."""

    def __init__(self, store, encoder, texts: TextEmbeddings, items: list[ImageItem], done: set,
                 id_column: str, tags: Sequence[str], batch_size: int):
        self.store, self.encoder, self.texts, self.items, self.done = store, encoder, texts, items, done
        self.id_column, self.tags, self.batch_size = id_column, tuple(tags), batch_size
        self.skipped: list[Skipped] = []
        self.rows_embedded = 0
        self.used_ids: set[str] = set()

    def skip(self, item: ImageItem, reason: str) -> None:
        """Log a file that could not be decoded at all (its decoding process died)."""
        self.skipped.append(Skipped(item.key, item.id or "", reason))

    def _rows_of(self, rec: dict) -> tuple[dict[str, np.ndarray], list[int]] | None:
        """The record's inputs and frame numbers still to embed, or None (skipped or done)."""
        item = rec["item"]
        if "error" in rec:
            self.skipped.append(Skipped(item.key, rec["id"], rec["error"]))
            return None
        problem = self.texts.problem(rec["id"])
        if problem:
            self.skipped.append(Skipped(item.key, rec["id"], problem))
            return None
        frames = [f for f in range(rec["frames"]) if (item.key, f) not in self.done]
        if not frames:
            return None
        inputs = rec["inputs"]
        if len(frames) < rec["frames"]:
            inputs = {k: v[frames] for k, v in inputs.items()}
        return inputs, frames

    def batch(self, records: list[dict]) -> None:
        parts, meta = [], {self.id_column: [], IMAGE_COLUMN: [], FRAME_COLUMN: [], **{t: [] for t in self.tags}}
        for rec in records:
            got = self._rows_of(rec)
            if got is None:
                continue
            inputs, frames = got
            parts.append(inputs)
            item = rec["item"]
            meta[self.id_column] += [rec["id"]] * len(frames)
            meta[IMAGE_COLUMN] += [item.key] * len(frames)
            meta[FRAME_COLUMN] += frames
            for t in self.tags:
                meta[t] += [rec["tags"].get(t, "")] * len(frames)
        if not parts:
            return
        images = _encode_images(self.encoder, _concat_inputs(parts), self.batch_size)
        texts = self.texts.get(meta[self.id_column])
        self.used_ids.update(meta[self.id_column])
        self.store.append(images, texts, {k: np.asarray(v, dtype=np.int32 if k == FRAME_COLUMN else object)
                                          for k, v in meta.items()})
        self.rows_embedded += len(images)


def _todo(items: list[ImageItem], done: set, last_done: str | None, frames: str) -> list[ImageItem]:
    """Files with rows still to embed: those without a committed row, and with frames="all"
    also the last committed file (a crash may have kept only some of its frames)."""
    done_files = {key for key, _ in done}
    return [it for it in items if it.key not in done_files or (frames == "all" and it.key == last_done)]


def _load_encoder(model: Any, device: str, precision: str):
    if isinstance(model, Encoder):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a local model directory (str or Path) or a loaded encoder from "
                        f"fastsas.embedding.load_model, got {type(model).__name__}")
    return load_model(model, device=device, precision=precision)


def _default_workers() -> int:
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def embed(model: Any, images: str | os.PathLike, texts: str | os.PathLike, out: str | os.PathLike, *,
          id_column: str | None = None, text_column: str | None = None, image_id: str = "stem",
          frames: str = "first", dicom_tags: Sequence[str] = DEFAULT_TAGS, device: str = "auto",
          precision: str = "auto", batch_size: int = 32, workers: int | None = None, chunk_rows: int = 4096,
          resume: bool = True, overwrite: bool = False, progress: Callable | None = None,
          overlay: Any = None) -> EmbedResult:
    """Embed an archive of images and texts with a local model into an
    :class:`~fastsas.store.EmbeddingStore`, resumably (see the module docstring).

    Parameters
    ----------
    model : str, os.PathLike or Encoder
        A local model directory (transformers or open_clip; see fastsas.embedding.models),
        or an encoder from :func:`load_model`.
    images : str or os.PathLike
        A folder of PNG/JPEG/TIFF/DICOM files (recursive), one file, or a CSV/Parquet
        listing with a ``path`` and an id column.
    texts : str or os.PathLike
        A CSV/Parquet table with an id column and a text column, or a folder of
        ``<id>.txt`` files.
    out : str or os.PathLike
        The store directory (an existing one written by this function is resumed).
    id_column, text_column : str or None
        Column names (default: id or study_id / text, report or caption); the store's id
        column takes the texts' id column name.
    image_id : str, default "stem"
        How an image gets its id: "stem", "parent" or "dicom:<Keyword>".
    frames : {"first", "all"}, default "first"
        The frames of multi-frame DICOM and TIFF files embedded (one row each).
    dicom_tags : sequence of str
        DICOM keywords kept as string columns (when the archive has DICOM files).
    device : str, default "auto"
        "auto" (CUDA when present), "cpu", "cuda" or "cuda:N".
    precision : str, default "auto"
        "auto" (bf16, else fp16, on a GPU; float32 on the CPU), "float32", "bf16", "fp16";
        the embeddings are float32 and L2-normalised either way.
    batch_size : int, default 32
        Images (and texts) per forward pass.
    workers : int or None
        DataLoader worker processes decoding and preprocessing (default min(4, cores - 1);
        0 decodes in this process).
    chunk_rows : int, default 4096
        Rows per store chunk, the unit of commit.
    resume : bool, default True
        Continue a store this function wrote (only the missing rows are embedded).
    overwrite : bool, default False
        Start an existing store again.
    progress : callable or None
        A ``progress(iterable, description, total)`` hook (the CLI's bars).
    overlay : str, Overlay, dict or sequence of them, optional
        Text rendered onto every image (Pillow) before the model sees it
        (:func:`fastsas.embedding.overlay.parse_overlays`; ``"TEXT@x,y,size"`` gives a
        position and size as fractions of the image). The strings and their text
        embedding are kept in the store's job options for :func:`fastsas.overlay_bias`.

    Returns
    -------
    EmbedResult
        What the run did.

    Raises
    ------
    FileNotFoundError, FileExistsError, TypeError, ValueError, ImportError
        For bad arguments (named by their parameter: ``model_dir``, ``image_id``, ...;
        ``fastsas embed`` names its flags instead), models that cannot be loaded safely, or
        a store written with other options. Files that cannot be used are skipped and
        logged, never raised.

    Examples
    --------
    >>> import fastsas                                                        # doctest: +SKIP
    >>> result = fastsas.embed("models/clip", "archive/images", "archive/reports.csv", "store/",
    ...                        image_id="parent")                             # doctest: +SKIP
    >>> result.rows, result.skip_log                                          # doctest: +SKIP
    """
    start = time.perf_counter()
    if frames not in ("first", "all"):
        raise ValueError(f"frames must be 'first' or 'all', got {frames!r}")
    batch_size = check_int(batch_size, "batch_size", meaning="images per forward pass")
    chunk_rows = check_int(chunk_rows, "chunk_rows", meaning="rows per store chunk")
    workers = _default_workers() if workers is None else check_int(workers, "workers", low=0, allow_none=True,
                                                                   meaning="decoding worker processes")
    text_map, id_name = read_texts(texts, id_column, text_column)
    items, not_images = list_images(images, image_id, id_column)
    tags = tuple(dicom_tags) if any(it.kind == "dicom" for it in items) else ()
    for t in tags:
        if not str(t).isidentifier():
            raise ValueError(f"dicom_tags: {t!r} is not a DICOM keyword such as Modality")
    encoder = _load_encoder(model, device, precision)
    overlays = parse_overlays(overlay)
    options = _job_options(encoder, id_name, image_id, frames, tags, overlays)
    out = Path(out).expanduser()
    store, resumed = _open_store(out, options, tags, chunk_rows, overwrite, resume)
    done, last_done = _done_rows(store)
    todo = _todo(items, done, last_done, frames)
    text_embeddings = TextEmbeddings(encoder, text_map, batch_size)
    run = _Run(store, encoder, text_embeddings, todo, done, id_name, tags, batch_size)
    batches = _DecodeSupervisor(
        todo, lambda files, in_flight: ImageDataset(files, encoder.preprocess, frames, tags, image_id,
                                                      overlays, in_flight),
        batch_size, workers, run.skip) if todo else []
    if progress is not None and todo:
        batches = progress(batches, f"embedding {len(todo):,} files", -(-len(todo) // batch_size))
    try:
        for records in batches:
            run.batch(records)
    finally:
        # Interrupted or not, the rows embedded so far are committed (close writes the
        # buffered, short last chunk) and the files skipped so far are logged.
        _write_skip_log(out / SKIP_LOG, run.skipped)
        try:
            store.close()
        except Exception:  # noqa: BLE001 - keep the original error; finished chunks are on disk anyway
            store.abandon()
    done_files = {key for key, _ in done}
    return EmbedResult(
        store=out, model=str(getattr(encoder, "model_dir", "")), family=encoder.family.name, dim=encoder.dim,
        rows=store.n, rows_embedded=run.rows_embedded, texts_embedded=text_embeddings.embedded,
        files_total=len(items), files_done_before=len(done_files), files_not_images=not_images,
        skipped=tuple(sorted(run.skipped, key=lambda s: s.file)),
        skip_log=out / SKIP_LOG,
        texts_without_images=_texts_without_images(text_map, store, id_name),
        seconds=time.perf_counter() - start, resumed=resumed, device=encoder.device)


def _texts_without_images(text_map: dict[str, str], store, id_name: str) -> int:
    if store.n == 0:
        return len(text_map)
    stored = set(store.metadata_table().column(id_name).to_pylist())
    return sum(1 for i in text_map if i not in stored)
