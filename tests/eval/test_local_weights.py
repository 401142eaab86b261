"""Real-mode loading from local folders and files (no hub): the path a user takes with downloaded weights.

Tiny random models are saved the way real checkpoints are (save_pretrained / state-dict files), then scored in
real mode with --dino / --clip / --lpips-backbone / --segmenter; DINO / CLIP numbers must equal
the random-init run of the same models.
"""

from __future__ import annotations

import gzip
import json

import pytest
import torch
import torchvision
from transformers import CLIPTokenizer

from eval.cli import main
from eval.random_init import tiny_clip, tiny_dino, tiny_segmenter

from .conftest import ADE20K, DREAMBOOTH


def clip_tokenizer_from_open_clip() -> CLIPTokenizer:
    """A transformers CLIPTokenizer built from the OpenAI BPE file that open_clip_torch ships."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    units = list(bytes_to_unicode().values())
    vocab = units + [u + "</w>" for u in units] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[tuple(m.split()) for m in merges])


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    for name, (model, processor) in {"dino": tiny_dino(0), "clip": tiny_clip(0), "seg": tiny_segmenter(0, 150)}.items():
        model.save_pretrained(root / name)
        processor.save_pretrained(root / name)
    clip_tokenizer_from_open_clip().save_pretrained(root / "clip")
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), root / "alexnet-owt-7be5be79.pth")
    return root


def test_tokenizer_matches_open_clip():
    import open_clip

    prompt = "a cube shaped sks backpack!"
    assert clip_tokenizer_from_open_clip()(prompt)["input_ids"] == [
        t for t in open_clip.get_tokenizer("ViT-L-14")([prompt])[0].tolist() if t]


def test_dreambooth_from_local_weights_equals_random_init(local, tmp_path):
    gen = tmp_path / "gen"
    gen.mkdir()
    rows = []
    for k, src in enumerate(sorted((DREAMBOOTH / "dog").glob("*.jpg"))[:3]):
        (gen / f"{k}.jpg").write_bytes(src.read_bytes())
        rows.append({"path": f"{k}.jpg", "prompt": ["a sks dog", "a sks dog in the snow"][k % 2], "seed": k,
                     "method": "m", "subject": "dog"})
    (gen / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["dreambooth", "--generated", str(gen), "--real", str(DREAMBOOTH), "--lpips-size", "64",
              "--metrics", "dino", "clip_i", "clip_t", "lpips", "--device", "cpu"]
    assert main(common + ["--dino", str(local / "dino"), "--clip", str(local / "clip"), "--lpips-backbone",
                          str(local / "alexnet-owt-7be5be79.pth"), "--out", str(tmp_path / "real")]) == 0
    assert main(common + ["--random-init", "--out", str(tmp_path / "rand")]) == 0
    real = json.loads((tmp_path / "real" / "metrics.json").read_text())
    rand = json.loads((tmp_path / "rand" / "metrics.json").read_text())
    assert real["comparable_to_papers"] is True and real["warning"] is None
    assert real["models"]["dino"]["model"] == str(local / "dino")
    assert real["models"]["dino"]["preprocessing"]["image_mean"] == [0.5, 0.5, 0.5]
    assert real["models"]["lpips"]["trunk_weights"] == str(local / "alexnet-owt-7be5be79.pth")
    for metric in ("dino", "clip_i", "clip_t"):
        assert real["results"]["m"]["means"][metric] == pytest.approx(rand["results"]["m"]["means"][metric], abs=1e-6)
    assert real["results"]["m"]["means"]["lpips"] > 0
    assert not (tmp_path / "real" / "report.md").read_text().startswith("> **RANDOM-INIT")


def test_s2i_from_local_weights(local, ade_generated, tmp_path):
    out = tmp_path / "out"  # FID from a weights file: test_fid.py (bit for bit) and the s2i e2e test
    code = main(["s2i", "--generated", str(ade_generated("copies")), "--ade-root", str(ADE20K), "--segmenter",
                 str(local / "seg"), "--no-fid", "--score-real", "--device", "cpu", "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["models"]["segmenter"]["model"] == str(local / "seg")
    assert metrics["models"]["segmenter"]["architecture"] == "SegformerForSemanticSegmentation"
    assert metrics["real_images"]["mIoU"] == pytest.approx(metrics["results"]["m"]["mIoU"])
    assert "inception" not in metrics["models"] and "fid" not in metrics["results"]["m"]
    assert "Scored by **" + str(local / "seg") in (out / "report.md").read_text()


def test_legacy_vit_feature_extractor_config_loads_as_the_pil_processor(tmp_path):
    """facebook/dino-vits16 ships a ViTFeatureExtractor config (a class transformers 5 removed)."""
    from eval.encoders import load_dino

    model, _ = tiny_dino(0)
    model.save_pretrained(tmp_path)
    legacy = {"do_normalize": True, "do_resize": True, "feature_extractor_type": "ViTFeatureExtractor",
              "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 2, "size": 224}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(legacy))
    encoder = load_dino(str(tmp_path), torch.device("cpu"))
    prep = encoder.info["preprocessing"]
    assert prep["class"].endswith("Pil") and prep["size"] == {"height": 224, "width": 224}
    assert prep["resample"] == 2 and prep["image_std"] == [0.5, 0.5, 0.5] and not prep["do_center_crop"]
