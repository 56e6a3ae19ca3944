"""The layering contract of docs/architecture.md, read from the sources (ast), so a new import
that breaks it fails here: what each package may import, no import cycle, imports inside
functions only where the contract allows them, and what `import fastsas` loads."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "python" / "fastsas"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The fastsas module an imported name refers to (a module, or the package it is in)."""
    while name:
        if name in MODULES or name == "fastsas._core":
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> list[tuple[str, bool]]:
    """(imported fastsas module, imported inside a function) for every import in `module`."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1] + [base]).strip(".")
                names = [f"{base}.{a.name}" for a in child.names]
            else:
                visit(child, inner)
                continue
            for name in names:
                target = _resolve(name) if name.startswith("fastsas") else None
                if target is not None and target != module:
                    out.append((target, in_function))
                elif not name.startswith("fastsas"):
                    out.append((name, in_function))

    visit(tree, False)
    return out


GRAPH = {m: _imports(m) for m in MODULES}


def _third_party(module: str, *, in_function: bool | None = None) -> set[str]:
    return {name.split(".")[0] for name, lazy in GRAPH[module]
            if not name.startswith("fastsas") and (in_function is None or lazy == in_function)}


def _fastsas(module: str, *, in_function: bool | None = None) -> set[str]:
    return {name for name, lazy in GRAPH[module] if name.startswith("fastsas") and (in_function is None or lazy == in_function)}


def _in(package: str) -> list[str]:
    return [m for m in MODULES if m == package or m.startswith(package + ".")]


def _within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_every_module_is_seen():
    assert {"fastsas.metrics", "fastsas._dispatch", "fastsas.store.layout", "fastsas.report.page",
            "fastsas.audit.plan", "fastsas.gap.run", "fastsas.dask.inputs", "fastsas.gpu.moments"} <= set(MODULES)


def test_no_import_cycle_at_module_level():
    edges = {m: sorted(_fastsas(m, in_function=False) - {"fastsas._core"}) for m in MODULES}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in edges.get(m, []):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_imports_inside_functions_only_where_the_contract_allows_them():
    allowed = {"fastsas": {"fastsas.dask", "fastsas.gap", "fastsas.gpu", "fastsas.io", "fastsas.report",
                           "fastsas.store", "fastsas.embedding"},
               "fastsas._dispatch": {"fastsas.gpu"},
               "fastsas.cli": {"fastsas.dask", "fastsas.embedding"}}
    for m in MODULES:
        lazy = _fastsas(m, in_function=True)
        assert lazy <= allowed.get(m, set()), f"{m} imports {sorted(lazy - allowed.get(m, set()))} inside a function"


def test_io_and_store_know_nothing_of_metrics():
    for m in _in("fastsas.io"):
        assert all(_within(n, "fastsas.io", "fastsas._validate", "fastsas.results") for n in _fastsas(m)), (m, _fastsas(m))
    for m in _in("fastsas.store"):
        assert all(_within(n, "fastsas.io", "fastsas.store", "fastsas._validate", "fastsas._version",
                           "fastsas._badrows") for n in _fastsas(m)), (m, _fastsas(m))


METRIC_MODULES = (["fastsas.metrics", "fastsas.moments", "fastsas.retrieval", "fastsas.mmd", "fastsas.neighbourhood",
                   "fastsas.kernel_cka", "fastsas._dispatch",
                   "fastsas._badrows", "fastsas._labels", "fastsas._validate", "fastsas.results"]
                  + _in("fastsas.audit") + _in("fastsas.gap"))


def test_metrics_never_import_torch_the_report_or_the_cli():
    for m in METRIC_MODULES:
        assert not _third_party(m) & {"torch", "transformers", "open_clip", "matplotlib", "typer", "rich"}, m
        assert not any(_within(n, "fastsas.report", "fastsas.cli", "fastsas.embedding", "fastsas.dask")
                       for n in _fastsas(m)), (m, _fastsas(m))


def test_only_the_dispatch_module_knows_the_gpu_engine():
    for m in MODULES:
        if not _within(m, "fastsas.gpu") and m not in ("fastsas", "fastsas._dispatch"):
            assert not any(_within(n, "fastsas.gpu") for n in _fastsas(m)), (m, _fastsas(m))
    for m in _in("fastsas.gpu"):
        assert not any(_within(n, "fastsas._dispatch", "fastsas.metrics", "fastsas.retrieval", "fastsas.mmd",
                               "fastsas.audit", "fastsas.gap") for n in _fastsas(m)), (m, _fastsas(m))
        assert "cupy" not in _third_party(m, in_function=False), f"{m} imports CuPy at import time"


def test_embedding_writes_stores_never_reports():
    for m in _in("fastsas.embedding"):
        assert not any(_within(n, "fastsas.report", "fastsas.audit", "fastsas.cli") for n in _fastsas(m)), m


def test_the_report_reads_results_and_computes_none():
    for m in _in("fastsas.report"):
        assert all(_within(n, "fastsas.report", "fastsas.io", "fastsas.definitions", "fastsas._version")
                   for n in _fastsas(m)), (m, _fastsas(m))


def test_core_knows_nothing_of_python_and_only_bindings_know_pybind11():
    for path in list((ROOT / "cpp" / "include").rglob("*.hpp")) + list((ROOT / "cpp" / "src").rglob("*.cpp")):
        text = path.read_text()
        assert not re.search(r"#include\s*[<\"](pybind11|Python\.h)", text), path
    for path in (ROOT / "cpp" / "bindings").iterdir():
        includes = re.findall(r"#include\s*[<\"]([^>\"]+)", path.read_text())
        assert all(i.startswith(("pybind11/", "fastsas/", "views.hpp")) or "/" not in i for i in includes), path


def test_import_fastsas_stays_light():
    code = ("import sys, fastsas as fs; "
            "heavy = ['scipy', 'sklearn', 'matplotlib', 'pyarrow', 'zarr', 'rich', 'typer', 'torch', 'cupy', 'dask']; "
            "lazy = ['fastsas.gap', 'fastsas.io', 'fastsas.store', 'fastsas.report', 'fastsas.dask', 'fastsas.gpu', "
            "'fastsas.embedding', 'fastsas.cli']; "
            "print([m for m in heavy + lazy if m in sys.modules]); "
            "fs.io, fs.store, fs.report, fs.gpu; "
            "print(sorted(m for m in lazy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT.parent)
    assert out.returncode == 0, out.stderr
    loaded, after = out.stdout.strip().splitlines()
    assert loaded == "[]", f"import fastsas loaded {loaded}"
    assert after == str(["fastsas.gpu", "fastsas.io", "fastsas.report", "fastsas.store"])


@pytest.mark.parametrize("name", ["dask", "gap", "gpu", "io", "report", "store", "study"], ids=lambda n: f"fs.{n}")
def test_lazy_attributes_are_the_packages(name):
    import importlib

    import fastsas as fs

    assert getattr(fs, name) is importlib.import_module(f"fastsas.{name}")
    assert name in dir(fs)
