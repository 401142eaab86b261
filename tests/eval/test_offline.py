"""Missing weights offline: one ModelNotAvailableError that names the model and how to provide it, fast."""

from __future__ import annotations

import time

import pytest
import torch

from eval.cli import main
from eval.encoders import load_clip, load_dino
from eval.errors import ModelNotAvailableError
from eval.fid import load_inception
from eval.lpips_metric import load_lpips
from eval.segmenter import load_segmenter

CPU = torch.device("cpu")
MISSING_ID = "facebook/dino-vits16-not-in-any-cache"


@pytest.fixture(autouse=True)
def empty_caches(tmp_path, monkeypatch):
    """Point every cache at an empty folder so nothing cached on this machine can satisfy a load."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # torch.hub.get_dir() re-reads TORCH_HOME


def test_hub_id_offline_names_the_model_and_the_fix():
    start = time.monotonic()
    with pytest.raises(ModelNotAvailableError) as err:
        load_dino(MISSING_ID, CPU)
    message = str(err.value)
    assert time.monotonic() - start < 20  # fails fast: no network retries
    assert f"DINO model '{MISSING_ID}' is not available offline" in message
    assert f"hf download {MISSING_ID} --local-dir dino-vits16-not-in-any-cache" in message and "--dino" in message
    assert "\n" not in message


@pytest.mark.parametrize("loader,flag,what", [
    (lambda spec: load_dino(spec, CPU), "--dino", "DINO model"),
    (lambda spec: load_clip(spec, CPU), "--clip", "CLIP model"),
    (lambda spec: load_segmenter(spec, CPU, 150), "--segmenter", "segmenter"),
])
def test_nonexistent_local_path_names_the_flag(tmp_path, loader, flag, what):
    spec = str(tmp_path / "no" / "such" / "model")
    with pytest.raises(ModelNotAvailableError, match=f"{what} '{spec}' not found") as err:
        loader(spec)
    assert flag in str(err.value)


def test_folder_without_weights_is_reported_not_crashed(tmp_path):
    (tmp_path / "empty_model").mkdir()
    with pytest.raises(ModelNotAvailableError, match="--clip"):
        load_clip(str(tmp_path / "empty_model"), CPU)


def test_torch_hub_weights_offline():
    with pytest.raises(ModelNotAvailableError, match="LPIPS AlexNet trunk weights 'alexnet-owt-7be5be79.pth'.*"
                                                     "--lpips-backbone"):
        load_lpips(CPU)
    with pytest.raises(ModelNotAvailableError, match="Inception \\(FID\\).*--inception-weights"):
        load_inception(CPU)
    with pytest.raises(ModelNotAvailableError, match="not found; pass --inception-weights"):
        load_inception(CPU, weights="/no/such/inception.pth")


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    from .conftest import DREAMBOOTH, write_manifest

    (tmp_path / "g.png").write_bytes((DREAMBOOTH / "dog" / "00.jpg").read_bytes())
    write_manifest(tmp_path, [{"path": "g.png", "prompt": "a dog", "seed": 0, "method": "m", "subject": "dog"}])
    code = main(["dreambooth", "--generated", str(tmp_path), "--real", str(DREAMBOOTH), "--dino", MISSING_ID,
                 "--metrics", "dino", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("ether-eval: error: DINO model") and "--dino" in err


def test_open_clip_openai_weights_get_quick_gelu_and_fail_offline_with_the_fix():
    from eval.open_clip_backend import parse_spec, quick_gelu_needed

    assert parse_spec("open_clip:ViT-B-32:openai") == ("ViT-B-32", "openai")
    assert quick_gelu_needed("ViT-B-32", "openai")  # the trap: OpenAI weights were trained with QuickGELU
    assert not quick_gelu_needed("ViT-B-32-quickgelu", "openai")  # already on
    assert not quick_gelu_needed("ViT-B-32", "laion2b_s34b_b79k")  # LAION weights use GELU
    with pytest.raises(ModelNotAvailableError, match="open_clip:ViT-B-32-quickgelu:/path"):
        load_clip("open_clip:ViT-B-32:openai", CPU)
