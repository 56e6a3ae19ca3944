"""Exact bidirectional retrieval: fastsas against its GEMM floors, NumPy and faiss-cpu.

    python benchmarks/bench_retrieval.py --n 100000 --d 512 --repeat 1 --no-numpy-full
    python benchmarks/bench_retrieval.py --n 300000 --d 768 --only-auto --no-faiss --no-floor

Rows of the table (same run, same data):
- fastsas auto: fs.retrieval as shipped (precision="auto": the reduced-precision screen the
  CPU and the data make fastest, with the exact re-check of every pair inside its band),
  one-to-one ground truth, both directions; then each precision forced ("int8", "bfloat16")
  and the float32 engine ("float32": tiles of one SGEMM, the engine before the screen).
  Notes give the band occupancy (rechecked / screened tile entries).
- floor: NumPy float32 multiplying the same 512 x 1024 tiles (X[i:i+tr] @ Y[j:j+tc].T into a
  preallocated buffer, nothing else): one n x n x d SGEMM, the float32 floor.
- reduced-precision GEMM floors: the same n x n x d product alone in bfloat16 and in int8
  through PyTorch's CPU matmul (oneDNN), timed on a 4096-row slab of the gallery against
  every query and scaled to the whole gallery; only when torch is importable.
- numpy full: the full n x n float32 similarity matrix and the ranks from it, as a user
  would write it; only when it fits in memory.
- faiss IndexFlatIP: exact inner-product top-10 in both directions (skipped with a note when
  faiss is not importable; this script never installs it).

Data (--data clip, default): the model of fastsas.synthetic.paired_embeddings with 16 shared
factors, noise 0.45, a cone of norm 8 and a gap of 1 (CLIP-like: mean cosine ~0.27 between
non-matching pairs, matched pairs ~0.3 above it), generated in float32 chunks. --data lowrank:
low-rank shared structure plus noise, no cone (the data of earlier figures).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of_with_result as best_of, machine, peak_rss_mb, print_floor_table  # noqa: E402

import fastsas as fs  # noqa: E402
from fastsas import _core  # noqa: E402


def make_lowrank(n: int, d: int, seed: int, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """float32 pairs without float64 temporaries: low-rank shared structure plus noise."""
    rng = np.random.default_rng(seed)
    rank = min(32, d)
    basis = rng.standard_normal((rank, d), dtype=np.float32) / np.float32(np.sqrt(rank))
    x = np.empty((n, d), dtype=np.float32)
    y = np.empty((n, d), dtype=np.float32)
    for i in range(0, n, chunk):
        r = min(chunk, n - i)
        z = rng.standard_normal((r, rank), dtype=np.float32) @ basis
        x[i:i + r] = z + 1.2 * rng.standard_normal((r, d), dtype=np.float32)
        y[i:i + r] = z + 1.2 * rng.standard_normal((r, d), dtype=np.float32)
    return x, y


def make_clip_like(n: int, d: int, seed: int, chunk: int = 8192, factors: int = 16, noise: float = 0.45,
                   cone: float = 8.0, gap: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """paired_embeddings' model (shared factors with std 3..1, isotropic noise, a cone and a
    modality gap along orthonormal directions), in float32 chunks."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((d, factors + 2)))
    basis = basis.astype(np.float32)
    std = np.linspace(3.0, 1.0, factors).astype(np.float32)
    offset_x = cone * basis[:, factors] + gap * basis[:, factors + 1]
    offset_y = cone * basis[:, factors] - gap * basis[:, factors + 1]
    x = np.empty((n, d), dtype=np.float32)
    y = np.empty((n, d), dtype=np.float32)
    for i in range(0, n, chunk):
        r = min(chunk, n - i)
        shared = (rng.standard_normal((r, factors), dtype=np.float32) * std) @ basis[:, :factors].T
        x[i:i + r] = shared + noise * rng.standard_normal((r, d), dtype=np.float32) + offset_x
        y[i:i + r] = shared + noise * rng.standard_normal((r, d), dtype=np.float32) + offset_y
    return x, y


def unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True).astype(a.dtype)


def floor_tiles(xn: np.ndarray, yn: np.ndarray, tr: int, tc: int) -> None:
    # One contiguous output buffer per tile shape (a strided `out` would leave BLAS).
    bufs: dict[tuple[int, int], np.ndarray] = {}
    n, m = xn.shape[0], yn.shape[0]
    for i in range(0, n, tr):
        a = xn[i:i + tr]
        for j in range(0, m, tc):
            b = yn[j:j + tc]
            shape = (a.shape[0], b.shape[0])
            out = bufs.get(shape)
            if out is None:
                out = bufs[shape] = np.empty(shape, dtype=np.float32)
            np.matmul(a, b.T, out=out)


def lowprec_floors(xn: np.ndarray, yn: np.ndarray, threads: int, slab: int = 4096) -> dict[str, float]:
    """Seconds for the whole n x m x d product in bfloat16 and int8 through torch (oneDNN),
    from every query against a `slab`-row piece of the gallery, scaled by m / slab."""
    try:
        import torch
    except ImportError:
        return {}
    torch.set_num_threads(threads)
    m = yn.shape[0]
    slab = min(slab, m)
    out = {}
    a = torch.from_numpy(xn).to(torch.bfloat16)
    b = torch.from_numpy(np.ascontiguousarray(yn[:slab])).to(torch.bfloat16)
    t, _ = best_of(lambda: [a[i:i + 8192] @ b.T for i in range(0, a.shape[0], 8192)], 2)
    out["bfloat16"] = t * m / slab
    scale = 127.0 / float(np.abs(xn).max())
    qa = torch.from_numpy(np.clip(np.rint(xn * scale), -127, 127).astype(np.int8))
    qb = torch.from_numpy(np.clip(np.rint(yn[:slab] * scale), -127, 127).astype(np.int8))
    try:  # quantized linear (oneDNN / fbgemm u8 x s8), the fastest int8 GEMM torch has on the CPU
        w = torch.ops.quantized.linear_prepack(
            torch._make_per_tensor_quantized_tensor(qb, 1.0 / scale, 0), None)
        xa = torch._make_per_tensor_quantized_tensor((qa.to(torch.int16) + 128).to(torch.uint8), 1.0 / scale, 128)
        t, _ = best_of(lambda: [torch.ops.quantized.linear(xa[i:i + 8192], w, 1.0, 0)
                                for i in range(0, xa.shape[0], 8192)], 2)
        out["int8"] = t * m / slab
    except Exception:  # pragma: no cover - a torch without quantized kernels
        qbt = qb.T.contiguous()
        t, _ = best_of(lambda: [torch._int_mm(qa[i:i + 8192], qbt) for i in range(0, qa.shape[0], 8192)], 2)
        out["int8"] = t * m / slab
    return out


def numpy_full(xn: np.ndarray, yn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    S = xn @ yn.T
    match = np.diagonal(S)
    i2t = 1 + (S > match[:, None]).sum(axis=1)
    t2i = 1 + (S > match[None, :]).sum(axis=0)
    return i2t, t2i


def occupancy(r) -> str:
    s = r.screen
    return f"{s['precision']}: rechecked {s['rechecked']:,} of {s['screened']:,} ({s['rechecked'] / s['screened']:.2e})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="pairs (images = texts = n)")
    p.add_argument("--d", type=int, default=512, help="embedding dimension")
    p.add_argument("--data", choices=("clip", "lowrank"), default="clip")
    p.add_argument("--repeat", type=int, default=3, help="runs per method, best reported")
    p.add_argument("--threads", type=int, default=None, help="fastsas threads (default: all cores)")
    p.add_argument("--tile-rows", type=int, default=None, help="floor tile rows (default: the core's)")
    p.add_argument("--tile-cols", type=int, default=None, help="floor tile columns (default: the core's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only-auto", action="store_true", help="fastsas auto only (no forced precisions)")
    p.add_argument("--no-floor", action="store_true", help="skip the NumPy float32 floor")
    p.add_argument("--no-numpy-full", action="store_true", help="skip the full-matrix NumPy baseline")
    p.add_argument("--no-faiss", action="store_true", help="skip the faiss baseline")
    args = p.parse_args(argv)

    n, d = args.n, args.d
    threads = args.threads or fs._validate.default_threads()
    tr = args.tile_rows or int(_core.RETRIEVAL_TILE_ROWS)
    tc = args.tile_cols or int(_core.RETRIEVAL_TILE_COLS)
    x, y = (make_clip_like if args.data == "clip" else make_lowrank)(n, d, args.seed)
    rss_inputs = peak_rss_mb()
    pairs = float(n) * n
    flop = 2.0 * pairs * d

    t_fs, res = best_of(lambda: fs.retrieval(x, y, threads=threads, return_ranks=True), args.repeat)
    rss_fs = peak_rss_mb()
    rows = [("fastsas auto (both directions)", t_fs,
             f"{occupancy(res)}; peak RSS {rss_fs:.0f} MB (inputs {rss_inputs:.0f} MB)")]
    runs = {"auto": t_fs}
    if not args.only_auto:
        for precision in ("int8", "bfloat16", "float32"):
            if precision != "float32" and not _core.screen_supported(precision=precision):
                rows.append((f"fastsas {precision}", None, "skipped: this CPU lacks the instructions"))
                continue
            t, r = best_of(lambda: fs.retrieval(x, y, threads=threads, return_ranks=True, precision=precision),
                           args.repeat)
            same = all(np.array_equal(r[k], res[k]) for k in ("i2t_ranks", "t2i_ranks"))
            runs[precision] = t
            label = "fastsas float32 engine (SGEMM tiles)" if precision == "float32" else f"fastsas {precision}"
            rows.append((label, t, f"{occupancy(r)}; ranks {'identical' if same else 'DIFFER'}"))

    xn, yn = unit(x), unit(y)
    t_floor = None
    if not args.no_floor:
        t_floor, _ = best_of(lambda: floor_tiles(xn, yn, tr, tc), args.repeat)
        rows.append((f"floor: NumPy float32 tiles {tr}x{tc} (n x n x d SGEMM)", t_floor,
                     f"{flop / t_floor / 1e9:.0f} GFLOP/s"))
    low = lowprec_floors(xn, yn, threads)
    for name, t in low.items():
        rows.append((f"floor: {name} GEMM alone (torch/oneDNN, n x n x d)", t, f"{flop / t / 1e9:.0f} G{'OP' if name == 'int8' else 'FLOP'}/s"))

    full_bytes = 5 * n * n  # float32 S + one boolean comparison matrix
    try:
        import psutil

        available = psutil.virtual_memory().available
    except ImportError:  # pragma: no cover
        available = 0
    if args.no_numpy_full:
        rows.append(("numpy full S + ranks", None, "skipped (--no-numpy-full)"))
    elif full_bytes < 0.7 * available:
        t_np, (i2t, t2i) = best_of(lambda: numpy_full(xn, yn), max(1, min(args.repeat, 2)))
        agree = float(np.mean(i2t == res["i2t_ranks"])), float(np.mean(t2i == res["t2i_ranks"]))
        rows.append(("numpy full S + ranks (float32)", t_np,
                     f"ranks equal to fastsas: i2t {agree[0]:.5f}, t2i {agree[1]:.5f}"))
    else:
        rows.append(("numpy full S + ranks", None,
                     f"skipped: needs {full_bytes / 2**30:.1f} GiB, {available / 2**30:.1f} GiB available"))

    if args.no_faiss:
        rows.append(("faiss IndexFlatIP top-10, both directions", None, "skipped (--no-faiss)"))
    else:
        try:
            import faiss
        except ImportError:
            rows.append(("faiss IndexFlatIP top-10, both directions", None,
                         "skipped: faiss not importable (pip install faiss-cpu to compare)"))
        else:
            faiss.omp_set_num_threads(threads)

            def run_faiss():
                ix = faiss.IndexFlatIP(d)
                ix.add(yn)
                ix.search(xn, 10)
                it = faiss.IndexFlatIP(d)
                it.add(xn)
                it.search(yn, 10)

            t_faiss, _ = best_of(run_faiss, args.repeat)
            rows.append((f"faiss {faiss.__version__} IndexFlatIP top-10, both directions", t_faiss, ""))

    print(f"# {machine()}")
    print(f"# retrieval, n = {n:,} images and texts, d = {d}, float32, data {args.data}, {threads} threads, "
          f"best of {args.repeat}")
    print(f"# fastsas: i2t R@1 {res['i2t_r1']:.4f}  t2i R@1 {res['t2i_r1']:.4f}  rsum {res['rsum']:.2f}")
    print()
    base = t_floor if t_floor is not None else t_fs
    print_floor_table(rows, base)
    print()
    if t_floor is not None:
        print(f"auto vs the float32 floor: {t_floor / t_fs:.2f}x faster", end="")
        if "float32" in runs:
            print(f"; vs the float32 engine: {runs['float32'] / t_fs:.2f}x faster", end="")
        print()
    for name, t in low.items():
        if name in runs:
            print(f"fastsas {name} / its GEMM floor: {runs[name] / t:.2f}")
    # Projection: the whole gallery both ways grows as n^2 d; from this run's measured rate.
    rate = pairs * d / t_fs
    big = 1_000_000.0 ** 2 * 768 / rate
    print(f"projection, n = 1,000,000 x d = 768 whole gallery both directions at this run's rate "
          f"({2 * rate / 1e9:.0f} G pair-ops/s): {big:,.0f} s = {big / 3600:.2f} h "
          f"(band occupancy as measured here)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
