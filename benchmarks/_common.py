"""Shared pieces of the benchmark scripts: timing, peak memory, machine facts, tables."""
from __future__ import annotations

import os
import platform
import resource
import time


def best_of_with_result(fn, repeat: int = 3) -> tuple[float, object]:
    """(best wall time of `repeat` calls in seconds, the last call's result)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def best_of(fn, repeat: int = 3) -> float:
    """Best wall time of `repeat` calls, in seconds."""
    return best_of_with_result(fn, repeat)[0]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0))
    return f"{cpu}, {cores} cores, Python {platform.python_version()}"


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def print_floor_table(rows: list[tuple[str, float | None, str]], floor: float) -> None:
    """Markdown table of (method, seconds or None, notes), each time also as x floor."""
    print("| method | seconds | x floor | notes |")
    print("|---|---:|---:|---|")
    for name, t, note in rows:
        secs = "-" if t is None else f"{t:.3f}"
        ratio = "-" if t is None else f"{t / floor:.2f}"
        print(f"| {name} | {secs} | {ratio} | {note} |")
