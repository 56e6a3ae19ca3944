"""Throughput of fastsas embed's pipeline around the model, stage by stage, against the
model's own forward passes: is the model the bottleneck, or the pipeline?

    python benchmarks/bench_embed.py                          # tiny CLIP, 256 PNG + 256 DICOM
    python benchmarks/bench_embed.py --model-size base --n 128 --workers 1
    python benchmarks/bench_embed.py --model /path/to/local/model

Stages, each timed alone on one core (best of --repeat):
  decode PNG     read_image: file -> uint8 RGB (Pillow), --image-size square PNGs
  decode DICOM   read_dicom: file -> uint8 RGB (pydicom; 12-bit, rescale + window + MONOCHROME1)
  preprocess     the model's own image preprocessing (resize, crop, normalise) of decoded frames
  image forward  encode_images on preprocessed batches (--batch-size), unit float32 rows out
  text forward   encode_texts on report-like texts (--batch-size)
  store write    EmbeddingStore.append of embeddings + metadata, chunk files fsynced
Then fs.embed end to end (PNG archive, --workers decoding processes) against the model
alone (one image forward + one text forward per row; one text per row here, the worst
case). The model is random-initialised from a config (no weights are downloaded): "tiny"
is the test model (hidden 32, 32 px), "base" is CLIP ViT-B/32's architecture (224 px), whose
forward costs what the real model's does. With the tiny model the pipeline dominates by
design; what matters is that pipeline rows/s (and workers) exceed a real model's rows/s.
"""
from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
import _tiny_models as tm  # noqa: E402
from _common import best_of, machine, table  # noqa: E402


def build_model(size: str, root: Path) -> Path:
    path = root / f"clip-{size}"
    if (path / "config.json").exists():
        return path
    if size == "tiny":
        return tm.save_tiny_clip(path)
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    tok_dir = root / "clip-base-tokenizer-src"
    vocab = tm._clip_tokenizer_files(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir, model_max_length=77)
    config = CLIPConfig(text_config={"vocab_size": vocab, "bos_token_id": tokenizer.bos_token_id,
                                     "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id},
                        vision_config={"image_size": 224, "patch_size": 32})  # ViT-B/32 widths and depths
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(path)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(path)
    return path


def build_archive(root: Path, n: int, size: int) -> dict:
    from PIL import Image

    png, dcm = root / "png", root / "dicom"
    if not (root / "reports.csv").exists():
        rng = np.random.default_rng(0)
        for i in range(n):
            y, x = np.mgrid[0:size, 0:size]
            a, b = rng.uniform(0.01, 0.1, 2)
            rgb = (127 + 100 * np.sin(a * x + b * y)[:, :, None] + rng.normal(0, 20, (size, size, 3))).clip(0, 255)
            png.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb.astype(np.uint8)).save(png / f"s{i:06d}.png")
            px = (2048 + 1800 * np.sin(a * x + b * y) + rng.normal(0, 50, (size, size))).clip(0, 4095)
            tm.write_dicom(dcm / f"s{i:06d}.dcm", px.astype(np.uint16), photometric="MONOCHROME1", slope=1.0,
                           intercept=-1024.0, center=1000.0, width=3000.0)
        with open(root / "reports.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "text"])
            w.writerows((f"s{i:06d}", t) for i, t in enumerate(tm.reports(n, seed=1)))
    return {"png": sorted(png.iterdir()), "dicom": sorted(dcm.iterdir()), "png_dir": png, "dicom_dir": dcm,
            "texts": root / "reports.csv"}


def rate(items: int, seconds: float) -> str:
    return f"{items / seconds:,.0f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=256, help="files of each kind")
    p.add_argument("--image-size", type=int, default=256, help="side of the square PNG and DICOM images")
    p.add_argument("--model-size", choices=("tiny", "base"), default="tiny")
    p.add_argument("--model", type=Path, default=None, help="a local model directory instead of a built one")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=1, help="decoding processes in the end-to-end run")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "fastsas-bench-embed")
    args = p.parse_args()

    import torch

    from fastsas.embedding import load_model, read_dicom, read_image
    from fastsas.store import EmbeddingStore

    torch.set_num_threads(1)  # every stage on one core, comparable with one decoding worker
    args.dir.mkdir(parents=True, exist_ok=True)
    data = build_archive(args.dir / f"archive-{args.n}-{args.image_size}", args.n, args.image_size)
    model_dir = args.model or build_model(args.model_size, args.dir)
    enc = load_model(model_dir, device="cpu")
    n, bs = args.n, args.batch_size
    texts = [row["text"] for row in csv.DictReader(open(data["texts"]))]

    rows = []
    t = best_of(lambda: [read_image(f) for f in data["png"]], args.repeat)
    rows.append(("decode PNG", n, t, rate(n, t), f"{args.image_size} px RGB, Pillow"))
    t = best_of(lambda: [read_dicom(f) for f in data["dicom"]], args.repeat)
    rows.append(("decode DICOM", n, t, rate(n, t), f"{args.image_size} px 12-bit, rescale + window + MONOCHROME1"))
    frames = [read_image(f)[0] for f in data["png"]]
    t = best_of(lambda: [enc.preprocess([f]) for f in frames], args.repeat)
    rows.append(("preprocess", n, t, rate(n, t), f"{type(enc.preprocess).__name__}, one image per call"))
    batches = [enc.preprocess(frames[s:s + bs]) for s in range(0, n, bs)]
    t_img = best_of(lambda: [enc.encode_images(b) for b in batches], args.repeat)
    rows.append(("image forward", n, t_img, rate(n, t_img), f"{enc.describe()}, batch {bs}, 1 thread"))
    t_txt = best_of(lambda: [enc.encode_texts(texts[s:s + bs]) for s in range(0, n, bs)], args.repeat)
    rows.append(("text forward", n, t_txt, rate(n, t_txt), f"batch {bs}, 1 thread"))
    emb = np.random.default_rng(0).standard_normal((n, enc.dim)).astype(np.float32)

    def write():
        target = args.dir / "bench-store"
        with EmbeddingStore.create(target, enc.dim, chunk_rows=max(256, n // 4), overwrite=True) as store:
            for s in range(0, n, bs):
                store.append(emb[s:s + bs], emb[s:s + bs], {"id": [f"s{i}" for i in range(s, min(s + bs, n))],
                                                            "image": ["x.png"] * len(emb[s:s + bs])})

    t = best_of(write, args.repeat)
    rows.append(("store write", n, t, rate(n, t), f"dim {enc.dim}, fsync per chunk"))
    print(f"# fastsas embed pipeline throughput ({machine()})\n")
    print(table([(a, f"{b:,}", f"{c:.3f}", d, e) for a, b, c, d, e in rows],
                ("stage", "items", "seconds", "items/s", "what")))

    import fastsas as fs

    def end_to_end():
        return fs.embed(enc, data["png_dir"], data["texts"], args.dir / "e2e-store", workers=args.workers,
                        batch_size=bs, device="cpu", overwrite=True)

    t_e2e = best_of(end_to_end, args.repeat)
    model_alone = t_img + t_txt
    pipeline_one_core = sum(r[2] for r in rows if r[0] in ("decode PNG", "preprocess", "store write"))
    print()
    print(table([
        ("model alone (image + text forward)", rate(n, model_alone), "the floor: what the model costs"),
        ("pipeline alone, one core (decode PNG + preprocess + write)", rate(n, pipeline_one_core),
         "must exceed the model's rate for a real model"),
        (f"fs.embed end to end, {args.workers} worker(s)", rate(n, t_e2e),
         f"{t_e2e / model_alone:.2f}x the model-alone time"),
    ], ("measure", "rows/s", "note")))
    shutil.rmtree(args.dir / "bench-store", ignore_errors=True)
    shutil.rmtree(args.dir / "e2e-store", ignore_errors=True)


if __name__ == "__main__":
    main()
