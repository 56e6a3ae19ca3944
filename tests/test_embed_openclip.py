"""fastsas.embed with open_clip checkpoints as BiomedCLIP ships them (open_clip_config.json +
weights), built tiny here: embeddings equal open_clip's own encode_image / encode_text on
its own preprocessing, both weight formats load safely, and an HF text tower that is not on
disk is refused with a clear message instead of downloaded.

These need the `openclip` extra (torch 2.14.1 + torchvision 0.29.1, which cannot sit beside
the `embed` extra's torch 2.13.0): .ci/openclip runs them in their own environment with
FASTSAS_REQUIRE_OPENCLIP=1, where a missing open_clip fails instead of skipping."""
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import fastsas as fs
from fastsas.store import open_source

sys.path.insert(0, str(Path(__file__).parent))
import _tiny_models as tm  # noqa: E402

pytestmark = pytest.mark.openclip


def _require_open_clip():
    try:
        import open_clip
        import torch
    except ImportError as exc:  # torchvision that does not fit torch fails here too
        if os.environ.get("FASTSAS_REQUIRE_OPENCLIP") == "1":
            pytest.fail(f"FASTSAS_REQUIRE_OPENCLIP=1 but open_clip cannot be imported ({exc}); install the openclip "
                        "extra", pytrace=False)
        pytest.skip(f"open_clip is not importable ({exc}); .ci/openclip runs these with the openclip extra")
    return open_clip, torch


@pytest.fixture(scope="module")
def oc():
    return _require_open_clip()


@pytest.fixture(scope="module")
def archive(tmp_path_factory, oc):
    root = tmp_path_factory.mktemp("oc")
    files = {}
    for i in range(6):
        files[f"s{i}.png"] = tm.save_image(root / "images" / f"s{i}.png", i)
    tm.write_dicom(root / "images" / "s6.dcm", tm.dicom_pixels(6), photometric="MONOCHROME1")
    texts = dict(zip([f"s{i}" for i in range(7)], tm.reports(7, seed=5)))
    with open(root / "reports.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        w.writerows(texts.items())
    return {"root": root, "files": files, "texts": texts}


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_open_clip_embeddings_equal_its_own_encoders(oc, archive, tmp_path, weights):
    open_clip, torch = oc
    from open_clip.model import CLIP
    from open_clip.transform import image_transform
    from PIL import Image

    model_dir = tm.save_tiny_open_clip(tmp_path / "model", weights=weights)
    result = fs.embed(model_dir, archive["root"] / "images", archive["root"] / "reports.csv", tmp_path / "store",
                      workers=0, device="cpu", batch_size=3)
    assert result.family == "open_clip" and result.rows == 7 and not result.skipped
    source = open_source(tmp_path / "store")
    meta = source.metadata()
    assert list(meta["image"]) == [f"s{i}.png" for i in range(6)] + ["s6.dcm"]
    assert list(meta["Modality"]) == [""] * 6 + ["CR"]
    x, y = (np.asarray(a) for a in source.arrays())

    # the reference: the same architecture and weights, open_clip's own transform and tokenizer
    ref = CLIP(**tm.OPEN_CLIP_CFG).eval()
    if weights == "safetensors":
        from safetensors.torch import load_file

        ref.load_state_dict(load_file(str(model_dir / "open_clip_model.safetensors")))
    else:
        ref.load_state_dict(torch.load(model_dir / "open_clip_pytorch_model.bin", weights_only=True))
    pp = tm.OPEN_CLIP_PREPROCESS
    transform = image_transform(tm.IMAGE_SIZE, is_train=False, mean=tuple(pp["mean"]), std=tuple(pp["std"]),
                                resize_mode=pp["resize_mode"], interpolation=pp["interpolation"])
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=tm.OPEN_CLIP_CFG["text_cfg"]["context_length"])
    from fastsas.embedding import read_dicom

    pictures = [Image.fromarray(archive["files"][k]) for k in meta["image"][:6]]
    pictures.append(Image.fromarray(read_dicom(archive["root"] / "images" / "s6.dcm").frames[0]))
    with torch.no_grad():
        want_x = ref.encode_image(torch.stack([transform(p) for p in pictures]), normalize=True).numpy()
        want_y = ref.encode_text(tokenizer([archive["texts"][i] for i in meta["id"]]), normalize=True).numpy()
    np.testing.assert_allclose(x, want_x, atol=1e-5)
    np.testing.assert_allclose(y, want_y, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-6)


def test_biomedclip_layout_with_a_local_hf_text_tower(oc, archive, tmp_path):
    open_clip, torch = oc
    from open_clip.model import CustomTextCLIP
    from open_clip.tokenizer import HFTokenizer
    from safetensors.torch import load_file

    from fastsas.embedding import load_model

    model_dir = tm.save_tiny_biomedclip(tmp_path / "biomedclip")
    enc = load_model(model_dir, device="cpu")
    local = model_dir / tm.BIOMED_TEXT.split("/")[-1]
    ref = CustomTextCLIP(embed_dim=24, vision_cfg=tm.OPEN_CLIP_CFG["vision_cfg"],
                         text_cfg={**tm.biomed_text_cfg(local), "hf_model_pretrained": False}).eval()
    ref.load_state_dict(load_file(str(model_dir / "open_clip_model.safetensors")))
    texts = list(archive["texts"].values())
    with torch.no_grad():
        want = ref.encode_text(HFTokenizer(str(local), context_length=16)(texts), normalize=True).numpy()
    np.testing.assert_allclose(enc.encode_texts(texts), want, atol=1e-5)
    assert enc.dim == 24 and enc.family.name == "open_clip"


def test_hf_text_tower_must_be_on_disk(oc, tmp_path):
    from fastsas.embedding import load_model

    model_dir = tm.save_tiny_open_clip(tmp_path / "biomed")
    cfg = json.loads((model_dir / "open_clip_config.json").read_text())
    cfg["model_cfg"]["text_cfg"] = {"hf_model_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
                                    "hf_tokenizer_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
                                    "hf_proj_type": "mlp", "hf_pooler_type": "cls_last_hidden_state_pooler",
                                    "context_length": 16}
    (model_dir / "open_clip_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"model_dir .*biomed: open_clip_config.json names the Hugging Face text "
                                         r"model 'microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract', which is "
                                         r"not on disk; put its files .* in .*biomed/BiomedNLP-BiomedBERT-base-"
                                         r"uncased-abstract \(nothing is downloaded\)"):
        load_model(model_dir, device="cpu")


def test_open_clip_checkpoint_that_does_not_fit_is_refused(oc, tmp_path):
    from fastsas.embedding import load_model

    model_dir = tm.save_tiny_open_clip(tmp_path / "m")
    cfg = json.loads((model_dir / "open_clip_config.json").read_text())
    cfg["model_cfg"]["embed_dim"] = 32
    (model_dir / "open_clip_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"model_dir .*: open_clip_model.safetensors does not fit open_clip_config"):
        load_model(model_dir, device="cpu")
    (model_dir / "open_clip_model.safetensors").unlink()
    with pytest.raises(ValueError, match="no weights: expected one of open_clip_model.safetensors"):
        load_model(model_dir, device="cpu")
