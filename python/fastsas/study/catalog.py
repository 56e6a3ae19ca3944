"""What a study is made of (:class:`Catalog`): the models, the datasets with their domains,
the reference models kept apart from pooled statistics, and where each (model, dataset)
cell's embeddings are; read from a TOML file (:func:`load_catalog`) or found in a directory
laid out as ``ROOT/<model>/<dataset>.*`` (:func:`discover_cells`).

A cell's embeddings may be an embedding store directory, a ``.npz`` with ``images`` and
``texts``, a ``.parquet`` file with two vector columns, two ``.npy`` files
(``<dataset>.images.npy`` and ``<dataset>.texts.npy``), or the SAS paper's own feature
files, ``<dataset>_<split>_features.pt`` (see :func:`fastsas.study.inputs.read_paper_features`).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["CELL_KINDS", "Catalog", "CellSpec", "PAPER_DOMAINS", "STUDY_OPTIONS", "discover_cells", "load_catalog"]

# The kinds of input a cell may be.
CELL_KINDS = ("store", "npz", "parquet", "npy", "paper")

# The SAS paper's datasets and their domains: the default for these names when a catalog
# (or a bare directory) gives none.
PAPER_DOMAINS = {"MSCOCO2014": "natural", "Flickr30k": "natural", "ROCO": "medical", "MIMIC-CXR": "medical"}

# The keys of the [study] table (checked, so a typo is an error rather than a silent default).
STUDY_OPTIONS = ("title", "root", "split", "cache", "topq", "jackknife_blocks", "ks", "metrics", "skip_slow",
                 "mmd_sigma", "direction", "compare", "seed", "bootstrap", "permutations", "correction",
                 "id_column")
_CELL_OPTIONS = ("path", "images", "texts", "id_column", "vector_columns")
_TOP_LEVEL = ("study", "models", "datasets", "cells")


@dataclass(frozen=True)
class CellSpec:
    """Where one (model, dataset) cell's embeddings are.

    Attributes
    ----------
    model, dataset : str
        The cell's row and column of the study.
    kind : str
        One of CELL_KINDS.
    paths : tuple of str
        One path (store directory, .npz, .parquet, the paper's .pt), or the images and texts
        .npy files.
    id_column : str or None
        A metadata column of ids (stores, Parquet): rows sharing an id match in retrieval and
        share a jackknife block.
    vector_columns : tuple of str or None
        The image and text embedding columns of a Parquet file (None: the default names).

    Examples
    --------
    >>> from fastsas.study import CellSpec
    >>> CellSpec("clip", "ROCO", "npz", ("features/clip/ROCO.npz",)).paths[0]
    'features/clip/ROCO.npz'
    """

    model: str
    dataset: str
    kind: str
    paths: tuple[str, ...]
    id_column: str | None = None
    vector_columns: tuple[str, str] | None = None

    def __post_init__(self):
        if self.kind not in CELL_KINDS:
            raise ValueError(f"cell ({self.model}, {self.dataset}): kind must be one of {CELL_KINDS}, got {self.kind!r}")
        expected = 2 if self.kind == "npy" else 1
        if len(self.paths) != expected:
            raise ValueError(f"cell ({self.model}, {self.dataset}): a {self.kind} cell has {expected} path(s), "
                             f"got {len(self.paths)}")


@dataclass(frozen=True)
class Catalog:
    """The models, datasets, domains and cells of a study.

    Attributes
    ----------
    models : tuple of str
        Every model, in study order (reference models included).
    datasets : tuple of str
        Every dataset, in study order.
    domains : dict
        dataset -> its domain label ("natural", "medical", any label); a dataset without one
        takes part in no domain comparison.
    references : tuple of str
        The reference models: shown beside the others, left out of every pooled statistic
        and test (as the SAS paper does for PLIP and PubMed-CLIP).
    cells : dict
        (model, dataset) -> :class:`CellSpec`, for the cells that exist.
    options : dict
        The [study] table of the TOML file (checked keys of STUDY_OPTIONS).
    source : str or None
        The catalog file or root directory it was read from.
    title : str
        The study's title.

    Examples
    --------
    >>> from fastsas.study import Catalog, CellSpec
    >>> cat = Catalog(models=("a", "b"), datasets=("COCO", "ROCO"), domains={"COCO": "natural", "ROCO": "medical"},
    ...               cells={("a", "COCO"): CellSpec("a", "COCO", "npz", ("a/COCO.npz",))})
    >>> cat.missing()
    [('a', 'ROCO'), ('b', 'COCO'), ('b', 'ROCO')]
    >>> cat.pooled_models()
    ['a', 'b']
    """

    models: tuple[str, ...]
    datasets: tuple[str, ...]
    domains: dict = field(default_factory=dict)
    references: tuple[str, ...] = ()
    cells: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    source: str | None = None
    title: str = "fastsas study"

    def __post_init__(self):
        for name, values in (("models", self.models), ("datasets", self.datasets)):
            if len(set(values)) != len(values):
                raise ValueError(f"the catalog's {name} repeat a name: {list(values)}")
        unknown = [m for m in self.references if m not in self.models]
        if unknown:
            raise ValueError(f"reference model(s) {unknown} are not models of the study ({list(self.models)})")
        extra = [d for d in self.domains if d not in self.datasets]
        if extra:
            raise ValueError(f"domains name dataset(s) {extra} that are not in the study ({list(self.datasets)})")
        for (m, d), spec in self.cells.items():
            if m not in self.models or d not in self.datasets:
                raise ValueError(f"cell ({m}, {d}) names a model or dataset that is not in the study")
            if (spec.model, spec.dataset) != (m, d):
                raise ValueError(f"cell ({m}, {d}) holds the spec of ({spec.model}, {spec.dataset})")

    def pooled_models(self) -> list[str]:
        """The models that enter pooled statistics (every model but the references)."""
        return [m for m in self.models if m not in self.references]

    def missing(self) -> list[tuple[str, str]]:
        """The (model, dataset) cells without embeddings, in study order."""
        return [(m, d) for m in self.models for d in self.datasets if (m, d) not in self.cells]

    def domain_labels(self) -> list[str]:
        """The distinct domain labels, in the order of the datasets."""
        return list(dict.fromkeys(self.domains[d] for d in self.datasets if d in self.domains))

    def to_dict(self) -> dict:
        """Plain data: models, references, datasets, domains, cells (kind and paths), missing cells."""
        return {
            "title": self.title, "source": self.source, "models": list(self.models),
            "references": list(self.references), "datasets": list(self.datasets),
            "domains": {d: self.domains.get(d) for d in self.datasets},
            "cells": [{"model": s.model, "dataset": s.dataset, "kind": s.kind, "paths": list(s.paths),
                       "id_column": s.id_column} for s in self.cells.values()],
            "missing": [list(c) for c in self.missing()],
        }


def _toml_load(path: Path) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such catalog file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from None


def _check_keys(table: Any, allowed: Sequence[str], where: str) -> dict:
    if not isinstance(table, Mapping):
        raise ValueError(f"{where} must be a table, got {type(table).__name__}")
    bad = [k for k in table if k not in allowed]
    if bad:
        raise ValueError(f"{where}: unknown key(s) {bad}; allowed: {', '.join(allowed)}")
    return dict(table)


def _files_of(model_dir: Path, split: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """dataset -> (kind, paths) for the cell files of one model directory."""
    found: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    suffix_pt = f"_{split}_features.pt"
    for entry in sorted(model_dir.iterdir()):
        name = entry.name
        if entry.is_dir():
            if (entry / "manifest.json").is_file():
                found.setdefault(name, []).append(("store", (str(entry),)))
            continue
        if name.endswith(suffix_pt):
            found.setdefault(name[: -len(suffix_pt)], []).append(("paper", (str(entry),)))
        elif name.endswith(".images.npy"):
            dataset = name[: -len(".images.npy")]
            texts = model_dir / f"{dataset}.texts.npy"
            if not texts.is_file():
                raise FileNotFoundError(f"{entry} has no partner {texts.name}: a cell in two .npy files needs "
                                        "<dataset>.images.npy and <dataset>.texts.npy")
            found.setdefault(dataset, []).append(("npy", (str(entry), str(texts))))
        elif name.endswith(".npz"):
            found.setdefault(name[:-4], []).append(("npz", (str(entry),)))
        elif name.endswith((".parquet", ".pq")):
            found.setdefault(entry.stem, []).append(("parquet", (str(entry),)))
    out = {}
    for dataset, items in found.items():
        if len(items) > 1:
            raise ValueError(f"{model_dir}: dataset {dataset!r} has several inputs ("
                             f"{', '.join(Path(p[1][0]).name for p in items)}); keep one per (model, dataset)")
        out[dataset] = items[0]
    return out


def discover_cells(root: str | Path, *, split: str = "test", models: Sequence[str] | None = None,
                   datasets: Sequence[str] | None = None, id_column: str | None = None) -> dict:
    """The cells of a directory laid out as ``ROOT/<model>/<dataset>.*``: one folder per
    model, one input per dataset in it (the SAS paper's ``data/<model>/<dataset>_<split>_features.pt``
    is such a layout).

    Parameters
    ----------
    root : str or Path
        The directory.
    split : str, default "test"
        The split of the paper's feature files (``<dataset>_<split>_features.pt``).
    models, datasets : sequence of str or None
        Only these (None: every model folder, every dataset found).
    id_column : str or None
        The id column of store and Parquet cells.

    Returns
    -------
    dict
        (model, dataset) -> :class:`CellSpec`, sorted by model then dataset.

    Raises
    ------
    FileNotFoundError
        When `root` is not a directory.
    ValueError
        When a model folder holds two inputs for one dataset.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from fastsas.study import discover_cells
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "clip").mkdir()
    >>> np.savez(root / "clip" / "ROCO.npz", images=np.eye(3), texts=np.eye(3))
    >>> [(s.model, s.dataset, s.kind) for s in discover_cells(root).values()]
    [('clip', 'ROCO', 'npz')]
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory (a study root holds one folder per model)")
    model_dirs = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    if models is not None:
        wanted = set(models)
        model_dirs = [p for p in model_dirs if p.name in wanted]
    cells = {}
    for model_dir in model_dirs:
        if (model_dir / "manifest.json").is_file():
            continue  # a store at the top level is not a model folder
        for dataset, (kind, paths) in _files_of(model_dir, split).items():
            if datasets is not None and dataset not in datasets:
                continue
            cells[(model_dir.name, dataset)] = CellSpec(model_dir.name, dataset, kind, paths,
                                                        id_column=id_column if kind in ("store", "parquet") else None)
    return cells


def _from_tables(data: Mapping, base: Path, source: str | None, *, domains: Mapping | None,
                 references: Sequence[str] | None) -> Catalog:
    data = _check_keys(data, _TOP_LEVEL, "the catalog")
    options = _check_keys(data.get("study", {}), STUDY_OPTIONS, "[study]")
    split = str(options.get("split", "test"))
    id_column = options.get("id_column")
    model_tables = _check_keys(data.get("models", {}), list(data.get("models", {})), "[models]")
    dataset_tables = _check_keys(data.get("datasets", {}), list(data.get("datasets", {})), "[datasets]")
    for name, table in model_tables.items():
        _check_keys(table, ("reference", "label"), f"[models.{name}]")
    for name, table in dataset_tables.items():
        _check_keys(table, ("domain", "label"), f"[datasets.{name}]")
    root = options.get("root")
    found = {}
    if root is not None:
        root_path = Path(root) if Path(root).is_absolute() else base / root
        found = discover_cells(root_path, split=split, models=list(model_tables) or None,
                               datasets=list(dataset_tables) or None, id_column=id_column)
    cells = dict(found)
    for model, per_dataset in _check_keys(data.get("cells", {}), list(data.get("cells", {})), "[cells]").items():
        for dataset, table in _check_keys(per_dataset, list(per_dataset), f"[cells.{model}]").items():
            cells[(model, dataset)] = _cell_from_table(model, dataset, table, base, id_column)
    models = list(model_tables) or sorted({m for m, _ in cells})
    datasets = list(dataset_tables) or sorted({d for _, d in cells})
    for m, d in cells:
        if m not in models:
            models.append(m)
        if d not in datasets:
            datasets.append(d)
    refs = [m for m, t in model_tables.items() if t.get("reference")]
    if references is not None:
        refs = list(dict.fromkeys(list(refs) + list(references)))
    dom = {d: str(t["domain"]) for d, t in dataset_tables.items() if t.get("domain") is not None}
    for d in datasets:
        if d not in dom and d in PAPER_DOMAINS:
            dom[d] = PAPER_DOMAINS[d]
    if domains:
        dom.update({str(k): str(v) for k, v in domains.items()})
    return Catalog(models=tuple(models), datasets=tuple(datasets), domains=dom, references=tuple(refs),
                   cells=cells, options=options, source=source,
                   title=str(options.get("title", "fastsas study")))


def _cell_from_table(model: str, dataset: str, table: Any, base: Path, id_column: Any) -> CellSpec:
    table = _check_keys(table, _CELL_OPTIONS, f"[cells.{model}.{dataset}]")

    def resolved(p: Any) -> str:
        path = Path(str(p))
        return str(path if path.is_absolute() else base / path)

    if "path" in table:
        if "images" in table or "texts" in table:
            raise ValueError(f"[cells.{model}.{dataset}]: give path, or images and texts (.npy), not both")
        path = Path(resolved(table["path"]))
        if path.is_dir():
            kind = "store"
        elif path.name.endswith("_features.pt") or path.suffix == ".pt":
            kind = "paper"
        elif path.suffix.lower() in (".parquet", ".pq"):
            kind = "parquet"
        elif path.suffix.lower() == ".npz":
            kind = "npz"
        else:
            raise ValueError(f"[cells.{model}.{dataset}]: {path} is not a store directory, .npz, .parquet or the "
                             "paper's .pt feature file (two .npy files: images = ..., texts = ...)")
        paths: tuple[str, ...] = (str(path),)
    elif "images" in table and "texts" in table:
        kind, paths = "npy", (resolved(table["images"]), resolved(table["texts"]))
    else:
        raise ValueError(f"[cells.{model}.{dataset}] needs path = ..., or images = ... and texts = ... (.npy)")
    vector_columns = table.get("vector_columns")
    if vector_columns is not None:
        vector_columns = tuple(str(c) for c in vector_columns)
    ids = table.get("id_column", id_column)
    return CellSpec(model, dataset, kind, paths, id_column=ids if kind in ("store", "parquet") else None,
                    vector_columns=vector_columns)


def load_catalog(catalog: Any, *, domains: Mapping[str, str] | None = None,
                 references: Sequence[str] | None = None, split: str | None = None) -> Catalog:
    """The :class:`Catalog` of a TOML file, a directory laid out as ``ROOT/<model>/<dataset>.*``,
    a dict of the TOML's tables, or a Catalog (returned with `domains` / `references` added).

    The TOML file::

        [study]
        title = "SAS benchmark"
        root = "features"              # cells found as ROOT/<model>/<dataset>.* (relative to this file)
        split = "test"                 # the paper's ROOT/<model>/<dataset>_test_features.pt
        # optional: topq, jackknife_blocks, ks, metrics, skip_slow, mmd_sigma, direction,
        # compare = [["biomedclip", "clip"]], seed, bootstrap, permutations, correction, cache, id_column

        [models]
        clip-large = {}
        plip = { reference = true }    # shown apart, left out of pooled statistics

        [datasets]
        MSCOCO2014 = { domain = "natural" }
        ROCO = { domain = "medical" }

        [cells.plip.ROCO]              # a cell kept elsewhere (else found under root)
        path = "elsewhere/roco.npz"    # or: images = "x.npy", texts = "y.npy"

    Without ``[models]`` / ``[datasets]`` they are those found; the SAS paper's dataset names
    (MSCOCO2014, Flickr30k: natural; ROCO, MIMIC-CXR: medical) have their domain by default.

    Parameters
    ----------
    catalog : str, Path, dict or Catalog
        A .toml file, a study root directory, the TOML's tables, or a Catalog.
    domains : dict or None
        dataset -> domain label, added to (and overriding) the catalog's.
    references : sequence of str or None
        Reference models, added to the catalog's.
    split : str or None
        For a directory: the split of the paper's feature files (default "test").

    Returns
    -------
    Catalog

    Raises
    ------
    FileNotFoundError
        When the file or directory does not exist.
    ValueError
        For invalid TOML, an unknown key, a cell that names no input, or names that repeat.
    TypeError
        When `catalog` is none of the above.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from fastsas.study import load_catalog
    >>> root = Path(tempfile.mkdtemp())
    >>> for model in ("clip", "plip"):
    ...     (root / model).mkdir()
    ...     np.savez(root / model / "ROCO.npz", images=np.eye(3), texts=np.eye(3))
    >>> cat = load_catalog(root, references=["plip"])
    >>> cat.models, cat.domains, cat.pooled_models()
    (('clip', 'plip'), {'ROCO': 'medical'}, ['clip'])
    """
    if isinstance(catalog, Catalog):
        dom = dict(catalog.domains)
        dom.update({str(k): str(v) for k, v in (domains or {}).items()})
        refs = tuple(dict.fromkeys(list(catalog.references) + list(references or ())))
        return Catalog(models=catalog.models, datasets=catalog.datasets, domains=dom, references=refs,
                       cells=dict(catalog.cells), options=dict(catalog.options), source=catalog.source,
                       title=catalog.title)
    if isinstance(catalog, Mapping):
        return _from_tables(catalog, Path.cwd(), None, domains=domains, references=references)
    if not isinstance(catalog, (str, Path)):
        raise TypeError(f"catalog must be a .toml path, a study root directory, a dict or a Catalog, "
                        f"got {type(catalog).__name__}")
    path = Path(catalog)
    if path.is_dir():
        tables = {"study": {"root": str(path.resolve()), "split": split or "test"}}
        cat = _from_tables(tables, path, str(path), domains=domains, references=references)
        if not cat.cells:
            raise ValueError(f"{path} holds no cells: expected ROOT/<model>/<dataset>.npz (or .parquet, a store "
                             "directory, <dataset>.images.npy + <dataset>.texts.npy, <dataset>_test_features.pt)")
        return cat
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such catalog file or study directory")
    return _from_tables(_toml_load(path), path.parent, str(path), domains=domains, references=references)
