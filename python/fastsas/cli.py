"""The `fastsas` command."""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

EXIT_USAGE = 2


def _print_table(result: dict, seconds: float) -> None:
    print(f"fastsas alignment of {result['n']:,} pairs (topq={result['topq']}) in {seconds:.2f} s")
    width = max(len(k) for k in result)
    for key, value in result.items():
        if key in ("n", "topq"):
            continue
        print(f"  {key:<{width}}  {value: .6f}")


def _demo(args: argparse.Namespace) -> dict:
    from fastsas import synthetic

    print(f"synthetic paired embeddings: n={args.n:,}, dim={args.dim}, "
          f"{args.image_only} factors only the images carry")
    images, texts = synthetic.paired_embeddings(args.n, args.dim, image_only_factors=args.image_only,
                                                seed=args.seed)
    import fastsas as fs

    return fs.Moments(args.dim).update(images, texts).alignment(args.topq)


def _align(args: argparse.Namespace) -> dict:
    import fastsas as fs
    from fastsas.io import iter_npy_pairs

    moments = fs.Moments.from_chunks(iter_npy_pairs(args.images, args.texts, args.chunk_rows))
    return moments.alignment(args.topq)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastsas", description="Spectral Alignment Score and related metrics.")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="alignment of built-in synthetic paired embeddings")
    demo.add_argument("--n", type=int, default=100_000)
    demo.add_argument("--dim", type=int, default=256)
    demo.add_argument("--image-only", type=int, default=6, help="factors only the images carry")
    demo.add_argument("--seed", type=int, default=0)
    align = sub.add_parser("align", help="alignment of two .npy files (streamed, any size)")
    align.add_argument("images", help="(n, d) float .npy of image embeddings")
    align.add_argument("texts", help="(n, d) float .npy of text embeddings, row i paired with images row i")
    align.add_argument("--chunk-rows", type=int, default=32768)
    for sp in (demo, align):
        sp.add_argument("--topq", type=float, default=0.1, help="top fraction of anchor modes (0, 1]")
        sp.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        result = {"demo": _demo, "align": _align}[args.command](args)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"fastsas: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    seconds = time.perf_counter() - start
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_table(result, seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
