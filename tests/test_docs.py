"""The documentation holds: every example in a docstring runs (doctest), every public
function and class has a numpydoc docstring (Parameters, Returns, Examples), the one
sentence for the sign of the imbalance is the same everywhere, and nothing in the
repository points to a file outside it."""
from __future__ import annotations

import dataclasses
import doctest
import html
import importlib
import inspect
import re
import subprocess
from pathlib import Path

import pytest

import fastsas as fs
from fastsas.definitions import DEFINITIONS_DOCUMENT, IMBALANCE_SIGN

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "python" / "fastsas"


def _modules() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__main__":
            continue
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed"


# The public API: what the packages and the public modules export.
PUBLIC = ["fastsas", "fastsas.io", "fastsas.store", "fastsas.store.layout", "fastsas.report", "fastsas.audit",
          "fastsas.gap", "fastsas.dask", "fastsas.gpu", "fastsas.embedding", "fastsas.results", "fastsas.definitions",
          "fastsas.metrics", "fastsas.moments", "fastsas.retrieval", "fastsas.mmd", "fastsas.synthetic", "fastsas.study",
          "fastsas.study.stats"]


def _public_objects():
    seen = set()
    for name in PUBLIC:
        module = importlib.import_module(name)
        for attr in module.__all__:
            obj = getattr(module, attr)
            if inspect.ismodule(obj) or not (inspect.isfunction(obj) or inspect.isclass(obj)) or id(obj) in seen:
                continue
            seen.add(id(obj))
            yield f"{name}.{attr}", obj


def _sections(doc: str) -> set[str]:
    return set(re.findall(r"^\s*(\w[\w ]*)\n\s*-{3,}\s*$", doc, flags=re.M))


def _takes_arguments(function) -> bool:
    params = [p for p in inspect.signature(function).parameters.values() if p.name not in ("self", "cls")]
    return bool(params)


@pytest.mark.parametrize("qualname, obj", list(_public_objects()), ids=lambda v: v if isinstance(v, str) else "")
def test_public_api_has_numpydoc_docstrings(qualname, obj):
    doc = inspect.getdoc(obj) or ""
    assert doc, f"{qualname} has no docstring"
    sections = _sections(doc)
    assert "Examples" in sections and ">>>" in doc, f"{qualname}: no Examples section with a runnable example"
    if inspect.isclass(obj):
        if dataclasses.is_dataclass(obj):
            assert "Attributes" in sections, f"{qualname}: a result type lists its Attributes"
        elif not issubclass(obj, Exception) and _takes_arguments(obj.__init__) and obj.__init__ is not object.__init__:
            assert "Parameters" in sections, f"{qualname}: no Parameters section"
        for attr, member in vars(obj).items():
            if not attr.startswith("_") and (inspect.isfunction(member) or isinstance(member, (property, classmethod,
                                                                                             staticmethod))):
                assert inspect.getdoc(getattr(obj, attr)), f"{qualname}.{attr} has no docstring"
    else:
        if _takes_arguments(obj):
            assert "Parameters" in sections, f"{qualname}: no Parameters section"
        if inspect.signature(obj).return_annotation not in (None, "None"):
            assert sections & {"Returns", "Yields"}, f"{qualname}: no Returns section"


def _rendered_report(tmp_path: Path) -> tuple[str, str]:
    x, y = fs.synthetic.paired_embeddings(600, 16, image_only_factors=2)
    paths = fs.report.write_report(fs.audit(x, y, retrieval=False, backend="cpu"), tmp_path, formats=("html", "md"))
    return paths["html"].read_text(), paths["md"].read_text()


def test_one_sentence_for_the_sign_of_the_imbalance(tmp_path):
    page, md = _rendered_report(tmp_path)
    assert html.escape(IMBALANCE_SIGN, quote=True) in page and IMBALANCE_SIGN in md
    for text in ((ROOT / "README.md").read_text(), (ROOT / DEFINITIONS_DOCUMENT).read_text(), fs.sas.__doc__,
                 fs.alignment.__doc__):
        assert IMBALANCE_SIGN in " ".join(text.split()), "the sign sentence differs"


def test_definitions_live_in_the_repository_and_say_their_version():
    text = (ROOT / DEFINITIONS_DOCUMENT).read_text()
    assert f"`{fs.DEFINITIONS_VERSION}`" in text.split("\n\n")[1]
    for section in ("Spectral Alignment Score", "Covariance family", "Pairwise family", "MMD", "Retrieval",
                    "Modality-gap control", "Audits"):
        assert f"\n## {section}" in text, section


def test_nothing_points_outside_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    pattern = re.compile(r"METRICS\.md|DESIGN\.md|\.\./shared|\bshared/")
    offenders = [f for f in files if (ROOT / f).is_file() and f != "tests/test_docs.py"
                 and pattern.search((ROOT / f).read_text(errors="ignore"))]
    assert offenders == []
