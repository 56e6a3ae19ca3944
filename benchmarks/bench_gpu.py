"""GPU figures for issue 8 (run on a machine with a CUDA GPU and CuPy):

  python benchmarks/bench_gpu.py [--n 1000000] [--dim 768] [--precision fp16] [--cpu-n 20000]

Prints, with the device name on every figure:
- the device's measured matmul rates (fp16 and bf16 tensor cores with float32 accumulation,
  TF32, float32 without TF32) and its float32 Gram (SYRK-shaped) rate;
- exact bidirectional retrieval n x n at d: total time, split into GEMM / count / re-check
  (CUDA events), achieved TFLOP/s of the GEMMs against the measured rate of their precision,
  and the number of re-checked pairs;
- moments of n x d pairs from host memory (time, PCIe GB/s) and from device memory (time
  against the measured Gram rate);
- the CPU engine on a smaller n beside it, scaled by n^2 (retrieval) or n (moments).
Exits with a clear message where no GPU is usable.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import fastsas as fs
from fastsas import gpu


def _timed(fn, repeat: int = 3) -> float:
    import cupy as cp

    fn()
    cp.cuda.Device().synchronize()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        cp.cuda.Device().synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_rates(size: int = 8192) -> dict[str, float]:
    """TFLOP/s of size^3 NT products through the same cuBLAS calls the backend uses."""
    import cupy as cp

    from fastsas.gpu._blas import COMPUTE_32F, COMPUTE_32F_FAST_TF32, batched_gram, gemm_nt
    from fastsas.gpu.retrieval import _fast_copy

    rng = cp.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=cp.float32) / np.float32(np.sqrt(size))
    c = cp.empty((size, size), dtype=cp.float32)
    flops = 2.0 * size ** 3
    out = {}
    for precision in ("fp16", "bf16"):
        fast, ftype, compute = _fast_copy(a, precision)
        out[precision] = flops / _timed(lambda: gemm_nt(fast, fast, c, a_type=ftype, compute=compute)) / 1e12
    out["tf32"] = flops / _timed(lambda: gemm_nt(a, a, c, a_type="float32", compute=COMPUTE_32F_FAST_TF32)) / 1e12
    out["fp32"] = flops / _timed(lambda: gemm_nt(a, a, c, a_type="float32", compute=COMPUTE_32F)) / 1e12
    # The moments' shape: width 2d x 2048-row blocks, batched (useful flops: the full product).
    w, blocks = 1536, 64
    z = rng.standard_normal((blocks * 2048, w), dtype=cp.float32)
    g = cp.empty((blocks, w, w), dtype=cp.float32)
    out["gram_fp32"] = 2.0 * w * w * 2048 * blocks / _timed(lambda: batched_gram(z, 2048, blocks, g)) / 1e12
    return out


def bench_retrieval(n: int, d: int, precision: str, rates: dict[str, float], cpu_n: int) -> None:
    import cupy as cp

    from fastsas.gpu.retrieval import retrieval_ranks

    name = gpu.device_name()
    x = cp.random.default_rng(1).standard_normal((n, d), dtype=cp.float32)
    y = x + np.float32(0.7) * cp.random.default_rng(2).standard_normal((n, d), dtype=cp.float32)
    retrieval_ranks(x[:20000], y[:20000], None, None, precision=precision)  # compile kernels, warm cuBLAS
    cp.cuda.Device().synchronize()
    stats: dict = {}
    start = time.perf_counter()
    ri, rt = retrieval_ranks(x, y, None, None, precision=precision, stats=stats)
    total = time.perf_counter() - start
    untimed_start = time.perf_counter()
    retrieval_ranks(x, y, None, None, precision=precision)
    untimed = time.perf_counter() - untimed_start
    tflops = 2.0 * n * n * d / stats["gemm_s"] / 1e12
    print(f"[{name}] retrieval {n:,} x {n:,}, d={d}, {precision}: {untimed:.2f} s end to end "
          f"({total:.2f} s with per-kernel events); GEMM {stats['gemm_s']:.2f} s, count {stats['count_s']:.2f} s, "
          f"re-check {stats['recheck_s']:.2f} s ({stats['rechecked']:,} pairs, band {stats['band']:.2e}); "
          f"GEMM {tflops:.0f} TFLOP/s = {100 * tflops / rates[precision]:.0f} % of the measured "
          f"{rates[precision]:.0f} TFLOP/s; R@1 i2t {np.mean(ri == 1):.4f} t2i {np.mean(rt == 1):.4f}")
    xs, ys = cp.asnumpy(x[:cpu_n]), cp.asnumpy(y[:cpu_n])
    start = time.perf_counter()
    fs.retrieval(xs, ys, backend="cpu")
    cpu = time.perf_counter() - start
    print(f"[CPU, {fs._validate.default_threads()} threads] retrieval {cpu_n:,} x {cpu_n:,}: {cpu:.2f} s, "
          f"scaled by n^2 to {n:,}: {cpu * (n / cpu_n) ** 2:.0f} s")


def bench_moments(n: int, d: int, rates: dict[str, float], cpu_n: int) -> None:
    import cupy as cp

    name = gpu.device_name()
    x, y = fs.synthetic.paired_embeddings(n, d, seed=3)
    gpu.GpuMoments(d).update(x[:50000], y[:50000])  # compile, pin, warm
    cp.cuda.Device().synchronize()
    m = gpu.GpuMoments(d)
    start = time.perf_counter()
    m.update(x, y)
    cp.cuda.Device().synchronize()
    host = time.perf_counter() - start
    print(f"[{name}] moments of {n:,} x {d} pairs from host memory: {host:.2f} s, "
          f"{m.bytes_from_host / host / 1e9:.1f} GB/s over PCIe (pinned double buffers; includes the host copy "
          f"into pinned memory)")
    dx, dy = cp.asarray(x), cp.asarray(y)
    dev = _timed(lambda: gpu.GpuMoments(d).update(dx, dy), repeat=2)
    w = 2 * d
    flops = 2.0 * w * w * n
    print(f"[{name}] moments from device memory: {dev:.3f} s; Gram products {flops / dev / 1e12:.1f} TFLOP/s "
          f"against the measured {rates['gram_fp32']:.1f} TFLOP/s float32 Gram rate "
          f"({100 * flops / dev / 1e12 / rates['gram_fp32']:.0f} %)")
    start = time.perf_counter()
    fs.Moments(d).update(x[:cpu_n], y[:cpu_n])
    cpu = time.perf_counter() - start
    print(f"[CPU, {fs._validate.default_threads()} threads] moments {cpu_n:,} x {d}: {cpu:.2f} s, scaled to "
          f"{n:,}: {cpu * n / cpu_n:.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--precision", default="fp16", choices=("fp16", "bf16", "tf32"))
    parser.add_argument("--cpu-n", type=int, default=20000)
    parser.add_argument("--skip", nargs="*", default=(), choices=("retrieval", "moments"))
    args = parser.parse_args()
    if not gpu.available():
        print(f"bench_gpu: no usable CUDA GPU ({gpu.unavailable_reason()}); nothing measured", file=sys.stderr)
        return 2
    name = gpu.device_name()
    rates = matmul_rates()
    print(f"[{name}] measured matmul TFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()))
    if "retrieval" not in args.skip:
        bench_retrieval(args.n, args.dim, args.precision, rates, args.cpu_n)
    if "moments" not in args.skip:
        bench_moments(args.n, args.dim, rates, args.cpu_n * 10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
