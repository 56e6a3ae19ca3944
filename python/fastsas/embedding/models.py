"""Dual-encoder models from a local directory, never from the network.

A small registry of model families knows each family's loader and text preprocessing;
``load_model(dir)`` recognises the family from the directory's files:

- ``open_clip_config.json`` (+ ``open_clip_model.safetensors`` / ``open_clip_pytorch_model.bin``):
  an open_clip checkpoint (BiomedCLIP and many medical models). Needs the ``openclip`` extra.
- ``config.json``: a Hugging Face ``transformers`` model (CLIP, SigLIP, SigLIP2, ALIGN, or any
  ``AutoModel`` with ``get_image_features``/``get_text_features``) and its processor files.

Safety: the hub is switched off (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE, local_files_only),
remote code is never trusted (a directory whose configs name ``auto_map`` or which holds
``.py`` files is refused), and weights load through safetensors or
``torch.load(weights_only=True)``.

Every encoder returns L2-normalised float32 rows, whatever precision the model runs in.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["FAMILIES", "Encoder", "Family", "describe_families", "detect_family", "load_model"]

_REMOTE_CODE_CONFIGS = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json",
                        "image_processor_config.json")
_OPEN_CLIP_CONFIG = "open_clip_config.json"
# open_clip checkpoint names, safetensors first (no pickle at all).
_OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "model.safetensors",
                      "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth", "pytorch_model.bin")


def _offline() -> None:
    """No hub call from anything loaded after this: set before transformers, open_clip and
    huggingface_hub are imported (they read these once), and local_files_only is passed
    everywhere for the case they were imported earlier."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


# -- the registry ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """A model family: how to load it and how its texts were tokenised in training.

    Attributes
    ----------
    name : str
        The family's name (clip, siglip, siglip2, align, chinese_clip, transformers, open_clip).
    loader : str
        "transformers" or "open_clip".
    model_types : tuple of str
        The config.json ``model_type`` values that select it (transformers).
    text_padding : str
        "longest" or "max_length" (SigLIP and ALIGN were trained on padded texts).
    text_max_length : int or None
        Tokens; None: the tokenizer's own model_max_length.
    about : str
        One line for ``describe_families``.
    text_inputs : tuple of str or None
        The tokenizer outputs the model was trained with (None: all).

    Examples
    --------
    >>> from fastsas.embedding import FAMILIES
    >>> FAMILIES["siglip"].text_padding, FAMILIES["siglip"].text_max_length
    ('max_length', 64)
    """

    name: str
    loader: str  # "transformers" or "open_clip"
    model_types: tuple[str, ...]  # config.json model_type values (transformers)
    text_padding: str  # "longest" or "max_length" (SigLIP and ALIGN were trained on padded texts)
    text_max_length: int | None  # tokens; None: the tokenizer's own model_max_length
    about: str
    text_inputs: tuple[str, ...] | None = None  # tokenizer outputs the model was trained with (None: all)


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("clip", "transformers", ("clip",), "longest", 77,
           "OpenAI CLIP and its fine-tunes (PubMedCLIP, PLIP, ...): 77 tokens"),
    # SigLIP was trained on pad tokens without an attention mask; transformers 5 tokenizers
    # return a mask, which would change the embeddings, so only input_ids are passed.
    Family("siglip", "transformers", ("siglip",), "max_length", 64,
           "SigLIP: texts padded to 64 tokens, no attention mask, as in training", ("input_ids",)),
    Family("siglip2", "transformers", ("siglip2",), "max_length", 64,
           "SigLIP 2: texts padded to 64 tokens, no attention mask; NaFlex images keep their patch mask",
           ("input_ids",)),
    Family("align", "transformers", ("align",), "max_length", 64, "ALIGN: BERT texts padded to 64 tokens"),
    Family("chinese_clip", "transformers", ("chinese_clip",), "longest", 52, "Chinese-CLIP: 52 tokens"),
    Family("transformers", "transformers", (), "longest", None,
           "any other transformers AutoModel with get_image_features / get_text_features"),
    Family("open_clip", "open_clip", (), "max_length", None,
           "open_clip checkpoints (BiomedCLIP, ...): open_clip_config.json + weights; the `openclip` extra"),
)}


def describe_families() -> str:
    """One line per model family: its name and what fastsas does for it.

    Returns
    -------
    str
        The lines (for ``fastsas embed --help``).

    Examples
    --------
    >>> from fastsas.embedding import describe_families
    >>> describe_families().splitlines()[0].split()[0]
    'clip'
    """
    return "\n".join(f"{f.name:<13} {f.about}" for f in FAMILIES.values())


def _model_error(model_dir: Path, reason: str) -> ValueError:
    return ValueError(f"model_dir {model_dir}: {reason}")


def _read_json(path: Path, model_dir: Path) -> dict:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise _model_error(model_dir, f"{path.name} is unreadable ({exc})") from None
    if not isinstance(obj, dict):
        raise _model_error(model_dir, f"{path.name} is not a JSON object")
    return obj


def refuse_remote_code(model_dir: Path, shown: Path | None = None) -> None:
    """Refuse a directory whose model would run code shipped with it (trust_remote_code)."""
    shown = shown or model_dir
    code = sorted(p.name for p in model_dir.glob("*.py"))
    if code:
        raise _model_error(shown, f"the directory ships Python code ({', '.join(code)}), i.e. a model that needs "
                                  "trust_remote_code; fastsas never runs code from a model directory: use a model "
                                  "whose architecture transformers or open_clip implements")
    for name in _REMOTE_CODE_CONFIGS:
        path = model_dir / name
        if path.is_file() and "auto_map" in _read_json(path, shown):
            raise _model_error(shown, f"{name} names custom code (auto_map), i.e. a model that needs "
                                      "trust_remote_code; fastsas never runs code from a model directory: use a "
                                      "model whose architecture transformers or open_clip implements")


def detect_family(model_dir: str | os.PathLike) -> Family:
    """The family of a local model directory, from its files (see the module docstring)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model_dir {model_dir}: no such directory (give a local model directory; "
                                "nothing is downloaded)")
    if (model_dir / _OPEN_CLIP_CONFIG).is_file():
        return FAMILIES["open_clip"]
    config = model_dir / "config.json"
    if not config.is_file():
        raise _model_error(model_dir, "neither config.json (a transformers model saved with save_pretrained) nor "
                                      f"{_OPEN_CLIP_CONFIG} (an open_clip checkpoint) is in it")
    model_type = _read_json(config, model_dir).get("model_type")
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    return FAMILIES["transformers"]


def _fingerprint(model_dir: Path, config_files: tuple[str, ...]) -> str:
    """Identifies a model for resumption: its configs' bytes and its weight files' names and
    sizes (hashing gigabytes of weights on every run would cost more than the check is worth)."""
    h = hashlib.sha256()
    for name in config_files:
        p = model_dir / name
        if p.is_file():
            h.update(name.encode() + b"\0" + p.read_bytes())
    for p in sorted(model_dir.iterdir()):
        if p.suffix in (".safetensors", ".bin", ".pth", ".pt"):
            h.update(f"{p.name}:{p.stat().st_size}".encode())
    return h.hexdigest()[:16]


# -- devices and precision -----------------------------------------------------------------------
def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: CUDA is not available to this torch "
                         f"({torch.__version__}); use device='cpu'")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return device


def resolve_dtype(precision: str, device: str):
    import torch

    table = {"float32": torch.float32, "fp32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16}
    if precision == "auto":
        if device == "cpu":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision not in table:
        raise ValueError(f"precision must be 'auto', 'float32', 'bf16' or 'fp16', got {precision!r}")
    dtype = table[precision]
    if device == "cpu" and dtype != torch.float32:
        raise ValueError(f"precision={precision!r} is for GPUs; on the CPU use precision='float32' (or 'auto')")
    return dtype


def _unit_rows(features) -> np.ndarray:
    """float32 rows of unit L2 norm, normalised in float32 whatever the model's precision."""
    import torch

    x = features.float()
    x = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12)
    return x.cpu().numpy().astype(np.float32, copy=False)


# -- the encoder interface ------------------------------------------------------------------------------
class Encoder:
    """A loaded dual encoder. ``preprocess`` (picklable, runs in DataLoader workers) turns uint8
    RGB frames into the model's inputs; ``encode_images`` / ``encode_texts`` return unit
    float32 rows of dimension ``dim``. Made by :func:`load_model`.

    Examples
    --------
    >>> from fastsas.embedding import load_model                    # doctest: +SKIP
    >>> encoder = load_model("models/clip", device="cpu")           # doctest: +SKIP
    >>> encoder.encode_texts(["a chest radiograph"]).shape          # doctest: +SKIP
    (1, 512)
    """

    family: Family
    model_dir: Path
    fingerprint: str
    dim: int
    device: str
    preprocess: Callable[[list[np.ndarray]], dict[str, np.ndarray]]

    def encode_images(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """(batch, dim) unit float32 rows of preprocessed images (``preprocess``'s output)."""
        raise NotImplementedError

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) unit float32 rows, tokenised as the family was trained."""
        raise NotImplementedError

    def describe(self) -> str:
        """``family:directory name``, recorded in the store's manifest."""
        return f"{self.family.name}:{self.model_dir.name}"


def _to_pil(frames: list[np.ndarray]):
    from PIL import Image

    return [Image.fromarray(f) for f in frames]


class HFImagePreprocess:
    """The model's own image processor, applied to PIL images (picklable for workers)."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, frames: list[np.ndarray]) -> dict[str, np.ndarray]:
        out = self.image_processor(images=_to_pil(frames), return_tensors="np")
        return {k: np.asarray(v) for k, v in out.items()}


def _named_params(fn) -> set[str]:
    return {p.name for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _features(out):
    """transformers 4.x returns the projected features; 5.x a model output whose
    pooler_output holds them."""
    if hasattr(out, "pooler_output") and not hasattr(out, "shape"):
        return out.pooler_output
    return out


class TransformersEncoder(Encoder):
    def __init__(self, model_dir: Path, family: Family, device: str, dtype):
        _offline()
        import transformers
        from transformers import AutoConfig, AutoModel

        transformers.utils.logging.disable_progress_bar()  # fastsas draws its own
        refuse_remote_code(model_dir)
        safe = dict(local_files_only=True, trust_remote_code=False)
        self.family, self.model_dir, self.device, self.dtype = family, model_dir, device, dtype
        self.fingerprint = _fingerprint(model_dir, _REMOTE_CODE_CONFIGS)
        try:
            config = AutoConfig.from_pretrained(model_dir, **safe)
            has_safetensors = any(model_dir.glob("*.safetensors"))
            # Without safetensors, transformers (>= 4.45 here) loads .bin with torch.load(weights_only=True).
            model = AutoModel.from_pretrained(model_dir, config=config, use_safetensors=has_safetensors or None,
                                              **safe)
        except (OSError, ValueError, KeyError) as exc:
            raise _model_error(model_dir, f"transformers {transformers.__version__} cannot load it "
                                          f"({' '.join(str(exc).split())[:300]})") from None
        missing = [m for m in ("get_image_features", "get_text_features") if not hasattr(model, m)]
        if missing:
            raise _model_error(model_dir, f"{type(model).__name__} has no {' / '.join(missing)}: not an image-text "
                                          "dual encoder")
        self.model = model.to(device=device, dtype=dtype).eval()
        self.image_processor, self.tokenizer = self._processors(model_dir, safe)
        self.preprocess = HFImagePreprocess(self.image_processor)
        self.max_length = self._max_length(config)
        self._image_keys = _named_params(self.model.get_image_features)
        self._text_keys = _named_params(self.model.get_text_features)
        if family.text_inputs is not None:
            self._text_keys &= set(family.text_inputs)
        self.dim = int(self.encode_texts(["a"]).shape[1])

    @staticmethod
    def _processors(model_dir: Path, safe: dict):
        from transformers import AutoImageProcessor, AutoTokenizer

        try:
            image_processor = AutoImageProcessor.from_pretrained(model_dir, **safe)
            tokenizer = AutoTokenizer.from_pretrained(model_dir, **safe)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise _model_error(model_dir, "its image processor or tokenizer files are missing or unreadable "
                                          f"({' '.join(str(exc).split())[:300]}); save them beside the model "
                                          "with processor.save_pretrained(dir)") from None
        return image_processor, tokenizer

    def _max_length(self, config) -> int:
        limits = [self.family.text_max_length, getattr(self.tokenizer, "model_max_length", None)]
        text_config = getattr(config, "text_config", None)
        limits.append(getattr(text_config, "max_position_embeddings", None))
        usable = [int(v) for v in limits if isinstance(v, int) and 0 < v < 1_000_000]
        return min(usable) if usable else 512

    def _inputs(self, batch: dict, keys: set[str]) -> dict:
        import torch

        out = {}
        for k, v in batch.items():
            if k not in keys:
                continue
            t = torch.as_tensor(v).to(self.device)
            out[k] = t.to(self.dtype) if t.is_floating_point() else t
        return out

    def encode_images(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return _unit_rows(_features(self.model.get_image_features(**self._inputs(inputs, self._image_keys))))

    def tokenize(self, texts: list[str]) -> dict:
        padding = "max_length" if self.family.text_padding == "max_length" else True
        return dict(self.tokenizer(list(texts), padding=padding, truncation=True, max_length=self.max_length,
                                   return_tensors="np"))

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tokens = self._inputs(self.tokenize(texts), self._text_keys)
            return _unit_rows(_features(self.model.get_text_features(**tokens)))


class OpenClipPreprocess:
    """open_clip's evaluation transform, applied to PIL images (picklable for workers)."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, frames: list[np.ndarray]) -> dict[str, np.ndarray]:
        return {"pixel_values": np.stack([self.transform(im).numpy() for im in _to_pil(frames)])}


def _import_open_clip(model_dir: Path):
    _offline()
    try:
        import open_clip
    except ImportError as exc:
        raise ImportError(f"model_dir {model_dir} is an open_clip checkpoint and open_clip cannot be imported "
                          f"({exc}); install the openclip extra: pip install 'fastsas[openclip]' (torch 2.14.1 with "
                          "torchvision 0.29.1, in an environment without the embed extra's torch 2.13)") from None
    return open_clip


def _local_hf_dir(model_dir: Path, name: str, what: str) -> Path:
    """The local directory of a Hugging Face text model or tokenizer an open_clip config
    names (BiomedCLIP names PubMedBERT): an existing path as given (absolute or relative to
    the model directory), else a folder named like the repository's last part inside the
    model directory. Never a download."""
    for candidate in (Path(name), model_dir / name, model_dir / name.rstrip("/").split("/")[-1]):
        if candidate.is_dir() and any((candidate / f).is_file() for f in ("config.json", "tokenizer_config.json")):
            refuse_remote_code(candidate, model_dir)
            return candidate
    local = model_dir / name.rstrip("/").split("/")[-1]
    raise _model_error(model_dir, f"{_OPEN_CLIP_CONFIG} names the Hugging Face {what} {name!r}, which is not on "
                                  f"disk; put its files (config.json, tokenizer files) in {local} (nothing is "
                                  "downloaded)")


def _safe_state_dict(path: Path, model_dir: Path) -> dict:
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only, never pickled code
    except Exception as exc:  # noqa: BLE001 - any failure to read weights is the user's file
        raise _model_error(model_dir, f"{path.name} cannot be loaded safely ({' '.join(str(exc).split())[:300]}); "
                                      "give weights as safetensors or a plain state dict") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise _model_error(model_dir, f"{path.name} holds no state dict")
    if all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


class OpenClipEncoder(Encoder):
    def __init__(self, model_dir: Path, family: Family, device: str, dtype):
        _import_open_clip(model_dir)
        from open_clip.model import CLIP, CustomTextCLIP

        refuse_remote_code(model_dir)
        self.family, self.model_dir, self.device, self.dtype = family, model_dir, device, dtype
        self.fingerprint = _fingerprint(model_dir, (_OPEN_CLIP_CONFIG,))
        cfg = _read_json(model_dir / _OPEN_CLIP_CONFIG, model_dir)
        model_cfg = dict(cfg.get("model_cfg") or {})
        if not model_cfg.get("vision_cfg") or not model_cfg.get("text_cfg"):
            raise _model_error(model_dir, f"{_OPEN_CLIP_CONFIG} has no model_cfg with vision_cfg and text_cfg")
        if "multimodal_cfg" in model_cfg:
            raise _model_error(model_dir, "CoCa checkpoints (multimodal_cfg) are captioners, not supported here")
        text_cfg = dict(model_cfg["text_cfg"])
        custom_text = bool(model_cfg.pop("custom_text", False))
        if text_cfg.get("hf_model_name"):
            text_cfg["hf_model_name"] = str(_local_hf_dir(model_dir, text_cfg["hf_model_name"], "text model"))
            text_cfg["hf_model_pretrained"] = False  # its weights are in the checkpoint
            custom_text = True
        model_cfg["text_cfg"] = text_cfg
        model = (CustomTextCLIP if custom_text else CLIP)(**model_cfg)
        weights = next((model_dir / n for n in _OPEN_CLIP_WEIGHTS if (model_dir / n).is_file()), None)
        if weights is None:
            raise _model_error(model_dir, f"no weights: expected one of {', '.join(_OPEN_CLIP_WEIGHTS)}")
        state = _safe_state_dict(weights, model_dir)
        own = model.state_dict()
        state = {k: v for k, v in state.items() if k in own or not k.endswith("position_ids")}
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise _model_error(model_dir, f"{weights.name} does not fit {_OPEN_CLIP_CONFIG} "
                                          f"({' '.join(str(exc).split())[:300]})") from None
        self.model = model.to(device=device, dtype=dtype).eval()
        self.preprocess = OpenClipPreprocess(self._transform(cfg.get("preprocess_cfg") or {}))
        self.tokenizer = self._tokenizer(model_dir, text_cfg)
        self.dim = int(self.encode_texts(["a"]).shape[1])

    def _transform(self, preprocess_cfg: dict):
        from open_clip.transform import PreprocessCfg, image_transform

        defaults = PreprocessCfg()
        size = getattr(self.model.visual, "image_size", None) or preprocess_cfg.get("size") or defaults.size
        return image_transform(size, is_train=False, mean=tuple(preprocess_cfg.get("mean", defaults.mean)),
                               std=tuple(preprocess_cfg.get("std", defaults.std)),
                               resize_mode=preprocess_cfg.get("resize_mode", defaults.resize_mode),
                               interpolation=preprocess_cfg.get("interpolation", defaults.interpolation),
                               fill_color=preprocess_cfg.get("fill_color", defaults.fill_color))

    @staticmethod
    def _tokenizer(model_dir: Path, text_cfg: dict):
        from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

        context_length = int(text_cfg.get("context_length", 77))
        kwargs = dict(text_cfg.get("tokenizer_kwargs") or {})
        name = text_cfg.get("hf_tokenizer_name")
        if name:
            local = _local_hf_dir(model_dir, name, "tokenizer")
            return HFTokenizer(str(local), context_length=context_length, local_files_only=True, **kwargs)
        return SimpleTokenizer(context_length=context_length, **kwargs)

    def tokenize(self, texts: list[str]):
        return self.tokenizer(list(texts))

    def encode_images(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            pixels = torch.as_tensor(inputs["pixel_values"]).to(self.device, self.dtype)
            return _unit_rows(self.model.encode_image(pixels))

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return _unit_rows(self.model.encode_text(self.tokenize(texts).to(self.device)))


def load_model(model_dir: str | os.PathLike, *, device: str = "auto", precision: str = "auto") -> Encoder:
    """Load a local dual encoder (see the module docstring), never from the network.

    Parameters
    ----------
    model_dir : str or os.PathLike
        A directory saved with ``save_pretrained`` (transformers) or an open_clip checkpoint
        (``open_clip_config.json`` + weights).
    device : str, default "auto"
        "auto" (CUDA when present), "cpu", "cuda" or "cuda:N".
    precision : str, default "auto"
        "auto" (bf16, else fp16, on a GPU; float32 on the CPU), "float32", "bf16", "fp16".

    Returns
    -------
    Encoder
        The encoder.

    Raises
    ------
    FileNotFoundError
        When `model_dir` is not a directory.
    ValueError
        When the model cannot be loaded safely (code shipped with it, unreadable weights,
        missing processor files), or for a bad `device` or `precision`; the message names
        the parameter and the fix.
    ImportError
        For an open_clip checkpoint without the openclip extra.

    Examples
    --------
    >>> from fastsas.embedding import load_model                    # doctest: +SKIP
    >>> encoder = load_model("models/siglip-base", device="cpu")    # doctest: +SKIP
    >>> encoder.family.name, encoder.dim                            # doctest: +SKIP
    ('siglip', 768)
    """
    model_dir = Path(model_dir).expanduser()
    family = detect_family(model_dir)
    device = resolve_device(device)
    dtype = resolve_dtype(precision, device)
    cls = OpenClipEncoder if family.loader == "open_clip" else TransformersEncoder
    return cls(model_dir, family, device, dtype)
