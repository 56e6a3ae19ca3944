"""The retrieval share of an audit's time, with the float32 retrieval engine and with the
reduced-precision screen (precision="auto"), same run, same archive.

    python benchmarks/bench_audit_retrieval.py                    # the `fastsas audit --demo` archive
    python benchmarks/bench_audit_retrieval.py --n 300000 --dim 768

The archive is fastsas.synthetic.demo_archive(n, dim) audited as `fastsas audit --demo` does
(subgroups by modality, drift by year, ids by study, retrieval over the whole archive and
within each subgroup), once to warm up and then timed. Every fs.retrieval call the audit makes is timed; the first run forces
precision="float32" (the engine before the screen), the second leaves "auto".
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table  # noqa: E402

import fastsas as fs  # noqa: E402
from fastsas.store import open_source  # noqa: E402
from fastsas.synthetic import demo_archive  # noqa: E402

# The audit's run module: it calls fs.retrieval through its name `retrieval_of`, looked up
# there at each call.
audit_run = sys.modules["fastsas.audit.run"]


def timed_audit(source, meta, precision: str, threads: int | None) -> tuple[float, float, list[str]]:
    """(audit seconds, seconds inside fs.retrieval, precisions that ran)."""
    original = audit_run.retrieval_of
    spent, used = [0.0], []

    def wrapper(*args, **kwargs):
        kwargs["precision"] = precision
        t = time.perf_counter()
        out = original(*args, **kwargs)
        spent[0] += time.perf_counter() - t
        used.append(out.screen["precision"])
        return out

    audit_run.retrieval_of = wrapper
    try:
        t = time.perf_counter()
        fs.audit(source, groups=np.asarray(meta["modality"]), periods=np.asarray(meta["year"]),
                 image_ids=np.asarray(meta["study_id"]), text_ids=np.asarray(meta["study_id"]), retrieval="both",
                 threads=threads, backend="cpu")
        return time.perf_counter() - t, spent[0], used
    finally:
        audit_run.retrieval_of = original


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20_000, help="studies (the --demo archive has 20,000)")
    p.add_argument("--dim", type=int, default=128, help="embedding dimension (the --demo archive: 128)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    archive = demo_archive(args.n, args.dim)
    source = open_source(archive["images"], archive["texts"], metadata=archive["metadata"])
    meta = archive["metadata"]
    timed_audit(source, meta, "auto", args.threads)  # warm-up: imports, first-call costs
    rows = []
    for precision in ("float32", "auto"):
        total, spent, used = timed_audit(source, meta, precision, args.threads)
        rows.append((precision, f"{total:.2f}", f"{spent:.2f}", f"{100 * spent / total:.1f}%",
                     ", ".join(sorted(set(used)))))
    print(f"# {machine()}")
    print(f"# fs.audit of demo_archive({args.n:,}, {args.dim}): whole-archive and within-subgroup retrieval")
    print(table(rows, ("retrieval precision", "audit s", "retrieval s", "retrieval share", "tiles ran in")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
