"""fastsas.report: report.json carries the audit's numbers, report.html is self-contained,
escapes everything it inserts and renders in headless Chromium, report.md has the key
numbers; fingerprint_arrays."""
import base64
import dataclasses
import datetime as dt
import html
import io
import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

import fastsas as fs
from fastsas import report as rp

SCRIPT = "<script>alert(1)</script>"
ATTR = '"><img src=x onerror=alert(1)>'
EVIL_ID = "<b onmouseover=alert(2)>ST-evil</b>"

# Figures of the full report below, in page order, with their pixel heights (all are
# FIG_WIDTH_PX wide). The subgroup figure is 42 px per subgroup + 150 (4 subgroups).
EXPECTED_FIGURES = {"spectrum": 600, "sas_vs_q": 360, "subgroups": 318, "recall": 440, "drift": 360,
                    "gap_sweep": 380}


def _plain(value):
    """What strict JSON makes of a value: tuples -> lists, NaN/Inf -> None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _strict_load(text):
    def bad(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=bad)


@pytest.fixture(scope="module")
def archive():
    a = fs.synthetic.demo_archive(3000, 32)
    modality = a["metadata"]["modality"].astype("<U64")
    modality[modality == "US"] = SCRIPT
    modality[modality == "CR"] = ATTR
    a["labels"] = modality
    return a


@pytest.fixture(scope="module")
def audit(archive):
    ids = archive["metadata"]["study_id"]
    return fs.audit(archive["images"], archive["texts"], groups=archive["labels"],
                    periods=archive["metadata"]["year"], image_ids=ids, text_ids=ids, jackknife_blocks=10)


@pytest.fixture(scope="module")
def sweep(archive):
    m = 1500
    return fs.gap.sweep(archive["images"][:m], archive["texts"][:m], lams=(0.0, 0.5, 1.0),
                        labels=archive["metadata"]["modality"][:m], cv=3)


@pytest.fixture(scope="module")
def written(audit, sweep, archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    fingerprint = rp.fingerprint_arrays(archive["images"], archive["texts"])
    paths = rp.write_report(audit, out, gap_sweep=sweep, title=f"demo {SCRIPT}", input_fingerprint=fingerprint,
                            id_column_name="study_id", extra_context={ATTR: SCRIPT, "model": "demo"})
    return {"paths": paths, "fingerprint": fingerprint, "html": paths["html"].read_text(encoding="utf-8"),
            "json": paths["json"].read_text(encoding="utf-8"), "md": paths["md"].read_text(encoding="utf-8")}


def _figures(page):
    """(name, width attr, height attr, png bytes) of every <img> of the page, in order."""
    out = []
    for tag in re.findall(r"<img\b[^>]*>", page):
        src = re.search(r'\ssrc="([^"]*)"', tag).group(1)
        assert src.startswith("data:image/png;base64,"), tag[:120]
        name = re.search(r'\sdata-figure="([^"]*)"', tag).group(1)
        w = int(re.search(r'\swidth="(\d+)"', tag).group(1))
        h = int(re.search(r'\sheight="(\d+)"', tag).group(1))
        out.append((name, w, h, base64.b64decode(src.split(",", 1)[1], validate=True)))
    return out


def _rgb(png_bytes):
    from PIL import Image  # a dependency of matplotlib

    return np.asarray(Image.open(io.BytesIO(png_bytes)).convert("RGB"))


# ------------------------------------------------------------------------------------ files
def test_writes_the_three_files(written, tmp_path):
    paths = written["paths"]
    assert list(paths) == ["html", "json", "md"]
    assert [p.name for p in paths.values()] == ["report.html", "report.json", "report.md"]
    assert not [p for p in paths["html"].parent.iterdir() if p.name.startswith(".")]  # no temp files left
    only = rp.write_report(_small_audit(), tmp_path / "a" / "b", formats="json")
    assert list(only) == ["json"] and sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["report.json"]


def test_json_has_every_number_of_the_audit(written, audit, sweep):
    text = written["json"]
    assert not re.search(r"\b(NaN|Infinity)\b", text)
    data = _strict_load(text)
    expected = _plain(audit.to_dict())
    for key, value in expected.items():
        assert data[key] == value, key
    assert data["gap_sweep"] == _plain(sweep.to_dict())
    assert data["definitions_version"] == fs.DEFINITIONS_VERSION == audit.definitions_version
    assert data["fastsas_version"] == fs.__version__
    assert data["input_fingerprint"] == written["fingerprint"]
    assert data["id_column"] == "study_id"
    assert data["context"] == {ATTR: SCRIPT, "model": "demo"}
    created = dt.datetime.fromisoformat(data["created"])
    assert created.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.timezone.utc) - created).total_seconds()) < 600
    assert data["mismatches"] and all(isinstance(m["id"], str) for m in data["mismatches"])


def test_json_writes_nan_and_inf_as_null(audit, tmp_path):
    a = {**audit.alignment, "svcca": float("nan"), "coral": float("inf")}
    u = {**audit.uncertainty, "imbalance_test": {**audit.uncertainty["imbalance_test"], "t": float("-inf")}}
    bad = dataclasses.replace(audit, alignment=a, uncertainty=u)
    path = rp.write_report(bad, tmp_path, formats=("json", "md"))["json"]
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = _strict_load(text)
    assert data["alignment"]["svcca"] is None and data["alignment"]["coral"] is None
    assert data["uncertainty"]["imbalance_test"]["t"] is None
    assert data["alignment"]["sas_i2t"] == audit.alignment["sas_i2t"]


# ------------------------------------------------------------------------------------ HTML
def test_html_is_self_contained(written):
    page = written["html"]
    assert page.startswith("<!DOCTYPE html>")
    for needle in ("http://", "https://", "<script", "<link", "url(", "@import", "<iframe", "<object", "//cdn"):
        assert needle not in page.lower(), needle
    for m in re.finditer(r"\s(src|href)\s*=\s*\"([^\"]*)\"", page):
        assert m.group(1) == "src" and m.group(2).startswith("data:image/png;base64,"), m.group(0)[:80]
    figures = _figures(page)
    assert [f[0] for f in figures] == list(EXPECTED_FIGURES)
    assert "Content-Security-Policy" in page


def test_inline_pngs_are_real_figures_of_the_stated_size(written):
    for name, w, h, data in _figures(written["html"]):
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        img = _rgb(data)
        assert img.shape == (h, w, 3), name
        assert (w, h) == (rp.FIG_WIDTH_PX, EXPECTED_FIGURES[name]), name
        assert img.std() > 20, name  # not blank
        assert np.mean(np.any(img < 200, axis=2)) > 0.01, name  # ink on at least 1% of the pixels


def test_html_shows_the_key_parts(written, audit):
    page = written["html"]
    a = audit.alignment
    assert f"{a['sas_i2t']:.4f}" in page and f"{a['sas_t2i']:.4f}" in page
    assert rp.format_value(a["sas_imbalance"]) in page
    u = audit.uncertainty["sas_imbalance"]
    # at d = 32 the demo's image-only factors stay outside the top 10% of modes: no clear imbalance
    assert (u["ci_low"] < 0 < u["ci_high"]) == ("No clear imbalance" in page)
    for m in audit.mismatches:
        assert f"<td>{html.escape(m['id'])}</td>" in page
    assert "<th>study_id</th>" in page
    assert fs.__version__ in page and fs.DEFINITIONS_VERSION in page and written["fingerprint"] in page
    assert "<td>computed on</td><td>moments: cpu, retrieval: cpu</td>" in page
    for section in ("summary", "spectrum", "subgroups", "retrieval", "drift", "gap", "mismatches", "metrics",
                    "provenance"):
        assert f'<section id="{section}">' in page, section


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attrs = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [name for name, _ in attrs]


def test_everything_inserted_into_html_is_escaped(written, audit, tmp_path):
    evil = dataclasses.replace(audit, mismatches=[{**audit.mismatches[0], "id": EVIL_ID}] + audit.mismatches[1:])
    page = rp.write_report(evil, tmp_path, formats="html", title=ATTR, id_column_name=SCRIPT,
                           extra_context={SCRIPT: ATTR})["html"].read_text()
    for text in (written["html"], page):
        for raw in (SCRIPT, ATTR, EVIL_ID, "<img src=x", "<b "):
            assert raw not in text, raw
        parser = _Tags()
        parser.feed(text)
        assert set(parser.tags) <= {"html", "head", "meta", "title", "style", "body", "main", "h1", "h2", "h3",
                                    "p", "div", "section", "figure", "img", "figcaption", "table", "caption",
                                    "thead", "tbody", "tr", "th", "td", "code", "footer", "ol", "li"}, set(parser.tags)
        assert not [a for a in parser.attrs if a.startswith("on")]
        assert parser.tags.count("img") == len(_figures(text))
    assert html.escape(SCRIPT) in written["html"] and html.escape(ATTR) in written["html"]  # labels, escaped
    assert f"<td>{html.escape(EVIL_ID)}</td>" in page
    assert f"<title>{html.escape(ATTR)}</title>" in page


def test_show_ids_false_drops_ids_everywhere(audit, tmp_path):
    paths = rp.write_report(audit, tmp_path, show_ids=False)
    data = _strict_load(paths["json"].read_text())
    assert data["mismatches"] and not any("id" in m for m in data["mismatches"])
    assert [m["row"] for m in data["mismatches"]] == [m["row"] for m in audit.mismatches]
    for path in paths.values():
        text = path.read_text()
        assert not any(m["id"] in text for m in audit.mismatches), path.name


def _small_audit():
    x, y = fs.synthetic.paired_embeddings(400, 16, image_only_factors=2, seed=3)
    return fs.audit(x, y, retrieval="none", jackknife_blocks=5)


def test_report_without_subgroups_retrieval_or_sweep(tmp_path):
    small = _small_audit()
    assert small.uncertainty["sas_imbalance"]["ci_high"] < 0  # image-only factors: images carry more
    paths = rp.write_report(small, tmp_path)
    page, md = paths["html"].read_text(), paths["md"].read_text()
    assert [f[0] for f in _figures(page)] == ["spectrum", "sas_vs_q"]
    # the mismatch test needs no retrieval: the section says what it found either way
    assert rp.mismatch_summary(small.to_dict()) in md
    assert html.escape(rp.mismatch_summary(small.to_dict())) in page
    for text in (page, md):
        assert "The images carry structure that the texts do not mirror" in text


def test_bad_arguments(audit, tmp_path):
    with pytest.raises(ValueError, match="unknown report format"):
        rp.write_report(audit, tmp_path, formats=("html", "pdf"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        rp.write_report(audit, tmp_path / "file")
    with pytest.raises(TypeError, match="AuditResult"):
        rp.write_report([1, 2], tmp_path)


# ------------------------------------------------------------------------------------ Markdown
def test_markdown_has_the_key_numbers(written, audit):
    md = written["md"]
    a, u = audit.alignment, audit.uncertainty
    for key in ("sas_i2t", "sas_t2i", "cka"):
        assert f"{a[key]:.4f}" in md, key
    assert f"| imbalance | {rp.format_value(a['sas_imbalance'])} |" in md
    lo, hi = u["sas_imbalance"]["ci_low"], u["sas_imbalance"]["ci_high"]
    assert f"{rp.format_value(lo)} to {rp.format_value(hi)}" in md
    assert f"| imbalance test p | {u['imbalance_test']['p_value']:.3f} |" in md
    assert f"| image→text R@1 | {100 * audit.retrieval['i2t_r1']:.1f}% |" in md  # recall in percent
    assert f"Suspected mismatches: {audit.mismatch_test['flagged']:,} at a 5% false discovery rate" in md
    worst = min((g for g in audit.groups if g["status"] == "ok"), key=lambda g: g["alignment"]["sas_sym"])
    from fastsas.report.markdown import _md  # labels are escaped for Markdown

    assert f"| {_md(worst['group'])} | {worst['n']:,} | ok | {worst['alignment']['sas_i2t']:.4f} |" in md  # subgroups
    for period in audit.drift:  # and the drift table
        assert f"| {period['group']} | {period['n']:,} | ok | {period['alignment']['sas_i2t']:.4f} |" in md
    assert SCRIPT not in md and ATTR not in md and "<img" not in md
    # the same content as the HTML page: the suspects by id (show_ids=False drops them, tested above)
    assert audit.mismatches and all(m["id"] in md for m in audit.mismatches)


# ------------------------------------------------------------------------------------ fingerprint
def test_fingerprint_streams_and_depends_only_on_content(tmp_path):
    x, y = fs.synthetic.paired_embeddings(1000, 12, seed=1)
    f = rp.fingerprint_arrays(x, y)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", f)
    assert rp.fingerprint_arrays(x, y, chunk_rows=7) == f
    assert rp.fingerprint_arrays(np.asfortranarray(x), y, chunk_rows=100) == f
    assert rp.fingerprint_arrays(x.astype(">f4"), y) == f
    np.save(tmp_path / "x.npy", x)
    assert rp.fingerprint_arrays(np.load(tmp_path / "x.npy", mmap_mode="r"), y, chunk_rows=333) == f
    changed = x.copy()
    changed[999, 11] = np.nextafter(changed[999, 11], np.float32(np.inf))
    assert rp.fingerprint_arrays(changed, y) != f
    assert rp.fingerprint_arrays(y, x) != f
    assert rp.fingerprint_arrays(x.astype(np.float64), y) != f
    assert rp.fingerprint_arrays(x.reshape(2000, 6), y) != f
    with pytest.raises(ValueError, match="chunk_rows"):
        rp.fingerprint_arrays(x, y, chunk_rows=0)


# ------------------------------------------------------------------------------------ Chromium
def _chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _run_chromium(exe, page, profile, shot, height):
    cmd = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--no-default-browser-check", "--hide-scrollbars", "--force-device-scale-factor=1",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", f"--screenshot={shot}",
           f"--window-size=1280,{height}", page.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def _frames(shot, width, height):
    """Top-left corners (row, col) of the 1-px figure frames enclosing width x height."""
    frame = np.all(shot == np.array(rp.FIGURE_FRAME_RGB, dtype=shot.dtype), axis=2)
    found = []
    rows, cols = frame.shape
    for r in range(rows - height - 1):
        line = np.concatenate([[0], frame[r].astype(np.int8), [0]])
        edges = np.flatnonzero(np.diff(line))
        for start, stop in zip(edges[::2], edges[1::2]):
            if stop - start != width + 2:
                continue
            bottom = r + height + 1
            if (frame[bottom, start:stop].all() and frame[r:bottom + 1, start].all()
                    and frame[r:bottom + 1, stop - 1].all()):
                found.append((r, start))
    return found


@pytest.mark.browser
@pytest.mark.skipif(_chromium() is None, reason="headless Chromium not found: no chromium or chromium-browser on "
                    "PATH (Debian: apt-get install -y chromium); CI installs it")
def test_html_renders_in_headless_chromium(written, tmp_path):
    exe = _chromium()
    figures = _figures(written["html"])
    height = sum(h for _, _, h, _ in figures) + 80 * len(figures) + 5000

    # Control: a page that logs to the console must show up in the log, or the check below
    # would prove nothing.
    probe = tmp_path / "probe.html"
    probe.write_text('<!DOCTYPE html><html><body><p>probe</p><script>console.error("fastsas-console-probe");'
                     "</script></body></html>")
    log = _run_chromium(exe, probe, tmp_path / "profile-probe", tmp_path / "probe.png", 600)
    assert "fastsas-console-probe" in log, "Chromium did not log page console messages:\n" + log[-3000:]

    shot_path = tmp_path / "shot.png"
    log = _run_chromium(exe, written["paths"]["html"], tmp_path / "profile", shot_path, height)
    page_lines = [ln for ln in log.splitlines()
                  if "CONSOLE" in ln or "Uncaught" in ln or "Refused to" in ln or "Not allowed to load" in ln]
    assert not page_lines, "console messages from report.html:\n" + "\n".join(page_lines)

    shot = _rgb(shot_path.read_bytes())
    assert shot.shape[1] == 1280
    top = -1
    for name, w, h, data in figures:  # in page order, each below the previous one
        corners = [rc for rc in _frames(shot, w, h) if rc[0] > top]
        assert corners, f"figure {name} ({w}x{h}) not found in the screenshot at its natural size"
        r, c = corners[0]
        top = r
        shown = shot[r + 1:r + 1 + h, c + 1:c + 1 + w].astype(np.int16)
        assert shown.std() > 20, name  # non-blank
        assert np.mean(np.any(shown < 200, axis=2)) > 0.01, name
        diff = np.abs(shown - _rgb(data).astype(np.int16)).mean()
        assert diff < 4, f"figure {name} on screen differs from its PNG (mean abs diff {diff:.1f})"


class _FindingsList(HTMLParser):
    """The items (kind, severity, text) of the page's findings list, as a browser's DOM has them."""

    def __init__(self):
        super().__init__()
        self.items, self._in_list, self._item = [], False, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "ol" and a.get("id") == "findings-list":
            self._in_list = True
        elif tag == "li" and self._in_list:
            self._item = [a.get("data-kind"), a.get("class"), ""]

    def handle_endtag(self, tag):
        if tag == "li" and self._item is not None:
            self.items.append(tuple(self._item))
            self._item = None
        elif tag == "ol":
            self._in_list = False

    def handle_data(self, data):
        if self._item is not None:
            self._item[2] += data


def test_findings_are_the_same_in_the_json_the_page_and_the_markdown(written):
    data = _strict_load(written["json"])
    assert data["findings"] and data["findings"][0]["kind"] == "mismatches"
    kinds = [f["kind"] for f in data["findings"]]
    assert {"mismatches", "imbalance", "chance", "drift", "unit"} <= set(kinds)
    parser = _FindingsList()
    parser.feed(written["html"])
    assert [(k, t) for k, _, t in parser.items] == [(f["kind"], f["text"]) for f in data["findings"]]
    from fastsas.report.markdown import _md  # Markdown's escaping of data text

    for i, f in enumerate(data["findings"], 1):
        assert f"{i}. {_md(f['text'])}" in written["md"]
    # recall in percent in the words, as fractions in the numbers
    chance = next(f for f in data["findings"] if f["kind"] == "chance")
    assert f"{100 * data['retrieval']['i2t_r1']:.1f}%" in chance["text"]
    assert chance["values"]["i2t_r1"]["value"] == data["retrieval"]["i2t_r1"]


@pytest.mark.browser
@pytest.mark.skipif(_chromium() is None, reason="headless Chromium not found: no chromium or chromium-browser on "
                    "PATH (Debian: apt-get install -y chromium); CI installs it")
def test_findings_list_in_headless_chromium_matches_the_json(written, tmp_path):
    cmd = [_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--no-default-browser-check", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
           written["paths"]["html"].as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    parser = _FindingsList()
    parser.feed(done.stdout)  # the DOM the browser built from the page
    data = _strict_load(written["json"])
    assert len(parser.items) == len(data["findings"]) > 3
    for (kind, severity, text), f in zip(parser.items, data["findings"]):
        assert (kind, severity, text) == (f["kind"], f["severity"], f["text"])
    numbers = next(f for f in data["findings"] if f["kind"] == "mismatches")["values"]
    assert f"{numbers['flagged']:,}" in parser.items[0][2] and numbers["flagged"] == data["mismatch_test"]["flagged"]
