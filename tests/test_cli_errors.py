"""`fastsas` answers bad input with one line on stderr and exit code 2, never a traceback,
and prints what it wrote truthfully: --out paths with rich markup characters, corrupted
compressed .npz files, a directory where a file is expected, lone surrogates (file names
that are not UTF-8) in titles and labels. Run as a real process, as a user would."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastsas as fs


def _fastsas(*args, cwd):
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}  # strict UTF-8 stdout, as on most terminals
    return subprocess.run([sys.executable, "-m", "fastsas", *args], capture_output=True, cwd=cwd, timeout=300,
                          env=env)


def _one_line_error(done, *fragments):
    err = done.stderr.decode("utf-8", "backslashreplace")
    assert done.returncode == 2, err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("fastsas: error: "), err
    for f in fragments:
        assert f in err, err
    return err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    x, y = fs.synthetic.paired_embeddings(300, 16, seed=2)
    np.save(root / "x.npy", x)
    np.save(root / "y.npy", y)
    np.savez(root / "pairs.npz", images=x, texts=y)
    np.savez_compressed(root / "small.npz", images=x, texts=y)
    (root / "folder").mkdir()
    return root


@pytest.mark.parametrize("out", ["r[/x]", "r[red]z", "r:smile:"])
def test_out_paths_with_markup_are_written_and_printed_as_they_are(files, out):
    done = _fastsas("audit", "pairs.npz", "--out", out, "--format", "json", "--jackknife-blocks", "5", "--quiet",
                    cwd=files)
    assert done.returncode == 0, done.stderr.decode()
    assert (files / out / "report.json").exists()
    assert f"json: {out}/report.json" in done.stdout.decode()


def test_corrupted_compressed_npz_is_one_line(files):
    raw = (files / "small.npz").read_bytes()
    rng = np.random.default_rng(0)
    seen = set()
    for trial in range(12):
        damaged = bytearray(raw)
        damaged[int(rng.integers(40, len(raw) - 200))] ^= 0xFF
        (files / "bad.npz").write_bytes(bytes(damaged))
        done = _fastsas("audit", "bad.npz", "--quiet", "--out", "bad-report", cwd=files)
        if done.returncode:
            seen.add(_one_line_error(done, "bad.npz"))
    assert seen  # at least one damage was caught (the others hit bytes that do not matter)


@pytest.mark.parametrize("args", [("audit", "x.npy", "folder"), ("align", "folder", "y.npy"),
                                  ("align", "x.npy", "folder"), ("audit", "folder"), ("compare", "folder", "--quiet"),
                                  ("gap", "folder"), ("audit", "pairs.npz", "--out", "x.npy", "--quiet")])
def test_a_directory_where_a_file_is_expected_is_one_line(files, args):
    _one_line_error(_fastsas(*args, cwd=files))


def test_file_names_that_are_not_utf8_give_a_report_and_a_readable_line(files):
    name = os.fsdecode(b"\xffward.npz")  # a lone surrogate in Python
    (files / name).write_bytes((files / "pairs.npz").read_bytes())
    done = _fastsas("audit", name, "--out", "sur", "--jackknife-blocks", "5", "--quiet", cwd=files)
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads((files / "sur" / "report.json").read_text(encoding="utf-8"))
    assert report["title"] == "fastsas audit: \\udcffward.npz"  # the escape, in valid UTF-8
    assert "\\udcffward.npz" in (files / "sur" / "report.html").read_text(encoding="utf-8")
    _one_line_error(_fastsas("audit", name, "--group-by", os.fsdecode(b"\xfe"), "--quiet", cwd=files),
                    "--group-by \\udcfe: no such metadata column")


def test_labels_with_lone_surrogates_give_every_report_file(tmp_path):
    from fastsas.report import write_report

    x, y = fs.synthetic.paired_embeddings(400, 16, seed=3)
    groups = np.array(["ward\udcff", "icu"])[np.arange(400) % 2]
    result = fs.audit(x, y, groups=groups, jackknife_blocks=5)
    paths = write_report(result, tmp_path, title="t\udcfe")
    assert sorted(paths) == ["html", "json", "md"]
    report = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert sorted(g["group"] for g in report["groups"]) == ["icu", "ward\\udcff"]
    assert "ward\\\\udcff" in paths["md"].read_text(encoding="utf-8")  # the backslash escaped for Markdown
