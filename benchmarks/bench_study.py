"""A study end to end (15 models x 4 datasets of 10,000 pairs x 768, synthetic, in the SAS
paper's feature-file layout) with fs.study, beside the same study computed the way the paper's
four scripts compute it (per-cell torch code written here from the paper's definitions), in
the same run.

    python benchmarks/bench_study.py                     # the full size (tens of minutes on 2 cores)
    python benchmarks/bench_study.py --models 4 --pairs 2000 --dim 256   # a quick look
    python benchmarks/bench_study.py --paper-models 3    # the paper's way on 3 models' cells only

The natural datasets hold 2,000 images x 5 captions (10,000 image-caption pairs, as COCO's
test split holds 5 per image), the medical ones 10,000 image-report pairs. fastsas computes,
per cell, every alignment metric with a 20-block jackknife interval (20 leave-one-out
analyses), retrieval with every caption and the SAS sweep, then the four experiments with
their permutation and bootstrap tests; the paper's way computes, per cell and per script,
the metrics without intervals (each of its four scripts loads every file and recomputes
what it needs: three metric suites, retrieval with per-query top-k loops, twenty SAS calls
for the q sweep), then its pooled tests. Both skip MMD and SVCCA (--skip-slow) unless
--with-slow. "engine" is the time inside fastsas's engine calls (moments, the jackknife's
analyses, retrieval, MMD); the rest is reading, fingerprinting, the statistics and the report.
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table  # noqa: E402

import fastsas as fs  # noqa: E402
from fastsas.study import SYNTHETIC_DATASETS, synthetic_cell, synthetic_models  # noqa: E402


# -- the study's files -----------------------------------------------------------------------------------------
def write_study(root: Path, models: int, pairs: int, dim: int) -> list[str]:
    """Every cell as the paper's extraction script saves it (float32 records of (1, d) and (C, d))."""
    import torch

    specs = synthetic_models(models)
    for index, spec in enumerate(specs):
        folder = root / spec["name"]
        folder.mkdir(parents=True, exist_ok=True)
        for dataset, (domain, _) in SYNTHETIC_DATASETS.items():
            path = folder / f"{dataset}_test_features.pt"
            if path.exists():
                continue
            n_images = pairs // 5 if domain == "natural" else pairs
            cell = synthetic_cell(spec, dataset, n_images, dim, captions=5, model_index=index)
            images, texts, c = cell["images"], cell["texts"], cell["captions"]
            torch.save([{"image": torch.from_numpy(images[i:i + 1].copy()),
                         "text": torch.from_numpy(texts[i * c:(i + 1) * c].copy()), "label_ids": 0}
                        for i in range(len(images))], path)
    domains = "\n".join(f'"{d}" = {{ domain = "{dom}" }}' for d, (dom, _) in SYNTHETIC_DATASETS.items())
    (root.parent / "study.toml").write_text(f'[study]\nroot = "{root.name}"\n\n[datasets]\n{domains}\n')
    return [s["name"] for s in specs]


# -- the paper's way: per-cell torch code from the paper's definitions --------------------------------------------
def paper_way(root: Path, models: list[str], datasets: list[str], skip_slow: bool, topq: float = 0.1) -> dict:
    """The four scripts of the paper, each loading every feature file and computing what it
    reports, with torch (float32, as the scripts' .float()), from the definitions."""
    import torch
    import torch.nn.functional as F
    from scipy.stats import mannwhitneyu, spearmanr, ttest_1samp

    def load(model, dataset):
        data = torch.load(root / model / f"{dataset}_test_features.pt")
        imgs = torch.cat([d["image"] for d in data], 0).float()
        txts = torch.cat([d["text"][:1] for d in data], 0).float()
        return imgs, txts, data

    def sas(a, b, q):
        ac, bc = a - a.mean(0), b - b.mean(0)
        n = a.shape[0]
        ca, cb, cab = ac.T @ ac / n, bc.T @ bc / n, ac.T @ bc / n
        lam, vec = torch.linalg.eigh(ca)
        lam, vec = lam.flip(0).clamp(min=0), vec.flip(1)
        ak = ((vec.T @ cab) * vec.T).sum(1)
        sk = ((vec.T @ cb) * vec.T).sum(1)
        rho = ak / torch.sqrt(lam * sk + 1e-8)
        kept = lam >= torch.quantile(lam, 1 - q)
        return float(((lam[kept] * rho[kept].abs()).sum() / lam[kept].sum()).clamp(0, 1))

    def cka(x, y):
        xc, yc = x - x.mean(0), y - y.mean(0)
        return float((xc.T @ yc).norm() ** 2 / ((xc.T @ xc).norm() * (yc.T @ yc).norm()))

    def coral(x, y):
        n = x.shape[0]
        xc, yc = x - x.mean(0), y - y.mean(0)
        return float((xc.T @ xc / (n - 1) - yc.T @ yc / (n - 1)).norm())

    def rmg_paper(x, y):
        xn, yn = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
        n = x.shape[0]
        m = float((1 - (xn * yn).sum(1)).mean())
        sx = float(torch.tril(xn @ xn.T, -1).sum())
        dy = float(torch.tril(1 - yn @ yn.T, -1).sum())
        return m / ((sx + dy) / (2 * n * (n - 1)) + m)

    def delta_cos(x, y):
        sim = F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T
        n = sim.shape[0]
        return float(sim.diagonal().mean() - sim[~torch.eye(n, dtype=torch.bool)].mean())

    def mmd(x, y, sigma=10.0):
        k = lambda a, b: torch.exp(-torch.cdist(a, b) ** 2 / (2 * sigma ** 2)).mean()  # noqa: E731
        return float(100 * (k(x, x) + k(y, y) - 2 * k(x, y)))

    def svcca(x, y, dims=10):
        def top(z):
            z = (z - z.mean(0)) / (z.std(0) + 1e-8)
            u, s, _ = torch.svd_lowrank(z, q=dims)
            return u * s
        a, b = top(x), top(y)
        qa, _ = torch.linalg.qr(a - a.mean(0))
        qb, _ = torch.linalg.qr(b - b.mean(0))
        return float(torch.linalg.svdvals(qa.T @ qb).clamp(0, 1).mean())

    def metrics(x, y, slow):
        out = {"cka": cka(x, y), "coral": coral(x, y), "rmg": rmg_paper(x, y), "delta_cos": delta_cos(x, y),
               "sas_i2t": sas(x, y, topq), "sas_t2i": sas(y, x, topq)}
        out["sas_sym"] = 0.5 * (sas(x, y, topq) + sas(y, x, topq))
        out["sas_imbalance"] = out["sas_i2t"] - out["sas_t2i"]
        if slow:
            out["mmd"], out["svcca"] = mmd(x, y), svcca(x, y)
        return out

    def retrieval(data, ks=(1, 5, 10)):
        imgs = F.normalize(torch.cat([d["image"] for d in data], 0).float(), dim=-1)
        texts = F.normalize(torch.cat([d["text"] for d in data], 0).float(), dim=-1)
        n, c = len(data), data[0]["text"].shape[0]
        sim = imgs @ texts.T
        out = {}
        for k in ks:
            out[f"i2t_r{k}"] = sum(any(j in sim[i].topk(k).indices.tolist() for j in range(i * c, i * c + c))
                                   for i in range(n)) / n
        for k in ks:
            out[f"t2i_r{k}"] = sum((j // c) in sim[:, j].topk(k).indices.tolist() for j in range(n * c)) / (n * c)
        it, ti = (100 * sum(out[f"{s}_r{k}"] for k in ks) for s in ("i2t", "t2i"))
        return {"rsum": it + ti, "rsum_i2t": it, "rsum_t2i": ti}

    domain = {d: SYNTHETIC_DATASETS[d][0] for d in datasets}
    seconds = {}
    t0 = time.perf_counter()
    profile = {(m, d): metrics(*load(m, d)[:2], not skip_slow) for m in models for d in datasets}
    for key in profile[(models[0], datasets[0])]:
        mannwhitneyu([v[key] for (m, d), v in profile.items() if domain[d] == "natural"],
                     [v[key] for (m, d), v in profile.items() if domain[d] == "medical"])
    seconds["alignment profile"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    imbalance = {(m, d): metrics(*load(m, d)[:2], False) for m in models for d in datasets}
    for dom in ("natural", "medical"):
        ttest_1samp([v["sas_imbalance"] for (m, d), v in imbalance.items() if domain[d] == dom], 0.0)
    seconds["imbalance signature"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = {}
    for m in models:
        for d in datasets:
            x, y, data = load(m, d)
            rows[(m, d)] = {**metrics(x, y, not skip_slow), **retrieval(data)}
    for key in profile[(models[0], datasets[0])]:
        for d in datasets:
            spearmanr([rows[(m, d)][key] for m in models], [rows[(m, d)]["rsum"] for m in models])
    seconds["retrieval predictivity"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sweep = {}
    for m in models:
        for d in datasets:
            x, y, _ = load(m, d)
            sweep[(m, d)] = [(sas(x, y, q), sas(y, x, q)) for q in [round(0.1 * i, 1) for i in range(1, 11)]]
    seconds["eigenspectrum concentration"] = time.perf_counter() - t0
    seconds["total"] = sum(seconds.values())
    return {"seconds": seconds, "rows": rows, "sweep": sweep}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=15)
    p.add_argument("--pairs", type=int, default=10_000, help="image-text pairs per dataset")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--with-slow", action="store_true", help="also MMD and SVCCA (both sides)")
    p.add_argument("--dir", type=Path, default=Path("/tmp/fastsas-bench-study"))
    p.add_argument("--keep", action="store_true", help="keep the feature files afterwards")
    p.add_argument("--skip-paper", action="store_true", help="only the fastsas side")
    p.add_argument("--paper-models", type=int, default=None,
                   help="run the paper's way on the first K models only (its seconds per cell are then also "
                        "projected to every cell); default: every model")
    args = p.parse_args()
    import torch

    torch.set_num_threads(len(__import__("os").sched_getaffinity(0)))
    features = args.dir / "data"
    t0 = time.perf_counter()
    models = write_study(features, args.models, args.pairs, args.dim)
    t_write = time.perf_counter() - t0
    datasets = list(SYNTHETIC_DATASETS)
    catalog = args.dir / "study.toml"
    cache = args.dir / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    options = dict(skip_slow=not args.with_slow, cache=cache)

    t0 = time.perf_counter()
    cold = fs.study(catalog, **options)
    t_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    cold.write(args.dir / "report")
    t_report = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = fs.study(catalog, **options)
    t_warm = time.perf_counter() - t0
    engine = cold.provenance["seconds"]["engine"]
    stages = {k: sum((c.get("seconds") or {}).get(k, 0.0) for c in cold.cells)
              for k in ("read", "fingerprint", "moments", "jackknife", "retrieval", "mmd")}
    paper_models = models if args.paper_models is None else models[:max(1, args.paper_models)]
    paper = None if args.skip_paper else paper_way(features, paper_models, datasets, not args.with_slow)

    cells = len(cold.cells)
    print(f"study of {args.models} models x {len(datasets)} datasets of {args.pairs:,} pairs x {args.dim} "
          f"({cells} cells; natural: {args.pairs // 5:,} images x 5 captions), "
          f"{'with' if args.with_slow else 'without'} MMD/SVCCA; {machine()}; torch {torch.__version__}")
    print(f"feature files written in {t_write:.0f} s (not counted)\n")
    rows = [("fs.study, cold cache (end to end)", f"{t_cold:.1f}", f"{t_cold / cells:.2f}",
             f"{engine:.1f} ({100 * engine / t_cold:.0f}%)"),
            ("  its report (html, json, md)", f"{t_report:.1f}", "-", "-"),
            ("fs.study, warm cache (every cell cached)", f"{t_warm:.1f}", f"{t_warm / cells:.2f}", "0 (0%)")]
    if paper is not None:
        paper_cells = len(paper_models) * len(datasets)
        per_cell = paper["seconds"]["total"] / paper_cells
        subset = "" if paper_cells == cells else f", {len(paper_models)} of {args.models} models ({paper_cells} cells)"
        rows.append((f"the paper's four scripts (torch){subset}", f"{paper['seconds']['total']:.1f}",
                     f"{per_cell:.2f}", "-"))
        if paper_cells != cells:
            rows.append((f"  projected to all {cells} cells (s per cell x cells)", f"{per_cell * cells:.0f}", "-", "-"))
        for name, secs in paper["seconds"].items():
            if name != "total":
                rows.append((f"  {name}", f"{secs:.1f}", "-", "-"))
    print(table(rows, ("computation", "seconds", "s per cell", "in the engine")))
    print("\nfastsas per stage, summed over cells (s): "
          + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
    print(f"experiments and tests: {cold.provenance['seconds']['experiments']:.1f} s")
    if paper is not None:
        worst = 0.0
        for (m, d), row in paper["rows"].items():
            cell = cold.cell(m, d)
            for key in ("sas_i2t", "sas_t2i", "cka", "delta_cos"):
                worst = max(worst, abs(row[key] - cell["alignment"][key]))
            for key in ("rsum", "rsum_i2t", "rsum_t2i"):
                ours = cell["retrieval"]["rsum"] if key == "rsum" else cell[key]
                worst = max(worst, abs(row[key] - ours) / 100)
        print(f"largest difference, paper's way vs fastsas, over SAS, CKA, delta-cos and rSum/100 of every cell: "
              f"{worst:.2e} (float32 torch against float64-accumulated fastsas; top-k ties broken arbitrarily)")
    if not args.keep:
        shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
