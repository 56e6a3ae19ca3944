"""Tiny models and archives built locally for the embedding tests: a randomly initialised
CLIP and SigLIP (transformers, saved with save_pretrained together with real tokenizer and
processor files), a tiny open_clip checkpoint, and small PNG/JPEG/TIFF, DICOM and text
fixtures. Nothing is downloaded: the CLIP BPE vocabulary is written here and the SigLIP
SentencePiece model is trained here on a few sentences."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

IMAGE_SIZE = 32
WORDS = ("no acute cardiopulmonary process the heart size is normal lungs are clear there is a small left "
         "pleural effusion right lower lobe opacity consistent with pneumonia fracture of the distal radius "
         "mild degenerative change stable postoperative appearance").split()


def reports(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 14)))) for _ in range(n)]


# -- transformers models -------------------------------------------------------------------------
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte-level alphabet: every byte as a printable character."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _clip_tokenizer_files(path: Path) -> int:
    """vocab.json + merges.txt of a real (small) CLIP byte-level BPE: every byte, with and
    without the end-of-word mark, a few merges of frequent pairs, and the special tokens."""
    alphabet = list(_bytes_to_unicode().values())
    vocab_list = alphabet + [c + "</w>" for c in alphabet]
    merges = ["t h", "th e</w>", "i s</w>", "e r", "a l</w>", "o n</w>", "r e", "e n"]
    for m in merges:
        vocab_list.append(m.replace(" ", ""))
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab_list)}))
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return len(vocab_list)


def _tower(hidden=32, layers=1, heads=2, **kw) -> dict:
    return dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                num_attention_heads=heads, **kw)


def save_tiny_clip(path: Path, seed: int = 0) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    tok_dir = path.parent / (path.name + "-tokenizer-src")
    vocab_size = _clip_tokenizer_files(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir, model_max_length=16)
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                         crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    config = CLIPConfig(
        text_config=_tower(vocab_size=vocab_size, max_position_embeddings=16,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id),
        vision_config=_tower(image_size=IMAGE_SIZE, patch_size=8), projection_dim=24)
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(path)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


def _sentencepiece_model(vocab_size: int = 60) -> bytes:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(reports(400, seed=7) + [" ".join(WORDS)]),
                                   model_writer=model, vocab_size=vocab_size, model_type="unigram",
                                   character_coverage=1.0, hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   minloglevel=2)
    return model.getvalue()


def save_tiny_siglip(path: Path, seed: int = 0) -> Path:
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor, SiglipTokenizer

    path.mkdir(parents=True, exist_ok=True)
    spm_file = path.parent / (path.name + "-spiece.model")
    spm_file.write_bytes(_sentencepiece_model())
    tokenizer = SiglipTokenizer(vocab_file=str(spm_file), model_max_length=16)
    image_processor = SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    config = SiglipConfig(text_config=_tower(vocab_size=tokenizer.vocab_size, max_position_embeddings=16),
                          vision_config=_tower(image_size=IMAGE_SIZE, patch_size=8))
    torch.manual_seed(seed)
    SiglipModel(config).save_pretrained(path)
    SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


# -- open_clip -------------------------------------------------------------------------------------
OPEN_CLIP_CFG = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
OPEN_CLIP_PREPROCESS = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "interpolation": "bicubic",
                        "resize_mode": "shortest"}


def save_tiny_open_clip(path: Path, seed: int = 0, weights: str = "safetensors") -> Path:
    """A tiny open_clip CLIP saved as BiomedCLIP ships: open_clip_config.json (model_cfg +
    preprocess_cfg) and open_clip_model.safetensors (or open_clip_pytorch_model.bin)."""
    import torch
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    model = CLIP(**OPEN_CLIP_CFG)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if weights == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path / "open_clip_model.safetensors"))
    else:
        torch.save(state, path / "open_clip_pytorch_model.bin")
    (path / "open_clip_config.json").write_text(json.dumps({"model_cfg": OPEN_CLIP_CFG,
                                                            "preprocess_cfg": OPEN_CLIP_PREPROCESS}))
    return path


BIOMED_TEXT = "microsoft/BiomedNLP-TinyBERT-uncased"  # a hub name, resolved to the folder of the same last part


def biomed_text_cfg(local: Path | str) -> dict:
    return {"hf_model_name": str(local), "hf_tokenizer_name": str(local), "hf_proj_type": "mlp",
            "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 16}


def save_tiny_biomedclip(path: Path, seed: int = 0) -> Path:
    """A BiomedCLIP-shaped open_clip checkpoint: ViT image tower, a (tiny) BERT text tower
    named by its hub id in open_clip_config.json, whose config and WordPiece tokenizer lie
    in path/<last part of the hub id>, as an offline copy of BiomedCLIP would be laid out."""
    import torch
    from open_clip.model import CustomTextCLIP
    from safetensors.torch import save_file
    from transformers import BertConfig, BertTokenizer

    bert = path / BIOMED_TEXT.split("/")[-1]
    bert.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(WORDS)) + list("abcdefghijklmnopqrstuvwxyz")
    (bert / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer.from_pretrained(bert, model_max_length=16).save_pretrained(bert)
    BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=32).save_pretrained(bert)
    cfg = {"embed_dim": 24, "vision_cfg": OPEN_CLIP_CFG["vision_cfg"], "text_cfg": biomed_text_cfg(bert)}
    torch.manual_seed(seed)
    model = CustomTextCLIP(**{**cfg, "text_cfg": {**cfg["text_cfg"], "hf_model_pretrained": False}})
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "open_clip_model.safetensors"))
    shipped = {**cfg, "text_cfg": biomed_text_cfg(BIOMED_TEXT)}
    (path / "open_clip_config.json").write_text(json.dumps({"model_cfg": shipped,
                                                            "preprocess_cfg": OPEN_CLIP_PREPROCESS}))
    return path


# -- images ---------------------------------------------------------------------------------------
def image_array(seed: int, size=(40, 48)) -> np.ndarray:
    """A smooth random RGB picture (not square, so resize and crop matter)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[0], 0:size[1]]
    out = np.empty(size + (3,), dtype=np.uint8)
    for c in range(3):
        a, b, p = rng.uniform(0.05, 0.4, 3)
        out[..., c] = (127.5 + 120 * np.sin(a * x + b * y + 6 * p) * rng.uniform(0.4, 1)).astype(np.uint8)
    return out


def save_image(path: Path, seed: int, fmt: str | None = None) -> np.ndarray:
    from PIL import Image

    arr = image_array(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)
    return arr


# -- DICOM ----------------------------------------------------------------------------------------
def write_dicom(path: Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2", slope: float = 1.0,
                intercept: float = 0.0, center: float | None = None, width: float | None = None,
                voi_function: str | None = None, modality: str = "CR", body_part: str = "CHEST",
                study_date: str = "20210304", manufacturer: str = "ACME", accession: str = "",
                with_pixels: bool = True, signed: bool = False) -> Path:
    """A Part 10 file with uint16 (or int16) grayscale pixels: (rows, cols) or (frames, rows, cols)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.Modality, ds.BodyPartExamined, ds.StudyDate, ds.Manufacturer = modality, body_part, study_date, manufacturer
    if accession:
        ds.AccessionNumber = accession
    if with_pixels:
        frames = pixels.shape[0] if pixels.ndim == 3 else 1
        ds.Rows, ds.Columns = pixels.shape[-2:]
        if frames > 1:
            ds.NumberOfFrames = frames
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 1 if signed else 0
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        if center is not None:
            ds.WindowCenter, ds.WindowWidth = center, width
        if voi_function:
            ds.VOILUTFunction = voi_function
        ds.PixelData = np.ascontiguousarray(pixels.astype(np.int16 if signed else np.uint16)).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_pixels(seed: int, frames: int = 1, size=(36, 44)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[0], 0:size[1]]
    out = []
    for _ in range(frames):
        a, b = rng.uniform(0.05, 0.3, 2)
        out.append((2048 + 1800 * np.sin(a * x + b * y) + rng.normal(0, 50, size)).clip(0, 4095))
    arr = np.asarray(out, dtype=np.uint16)
    return arr if frames > 1 else arr[0]
