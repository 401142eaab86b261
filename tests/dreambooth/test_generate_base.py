"""`generate` samples an adapter on the base model its train_config.yaml records, and refuses an S2I model folder
(which needs its control encoder) in one line."""

from __future__ import annotations

import json

import pytest

from ether_diffusion import EtherConfig, apply_ether, save_ether
from ether_diffusion.models.control import ControlEncoder, save_control_encoder
from ether_diffusion.models.tiny import tiny_pipeline
from ether_diffusion.dreambooth.config import CONFIG_FILE
from ether_diffusion.dreambooth.generate import generate
from ether_diffusion.dreambooth.generate_config import GenerateConfig
from ether_diffusion.typed_config import ConfigError, save_config

from .conftest import tiny_config


@pytest.fixture
def tiny_adapter(tmp_path):
    """An adapter folder laid out as train_dreambooth writes it (weights + the resolved train_config.yaml)."""
    unet = tiny_pipeline().unet
    apply_ether(unet, EtherConfig(method="ether", n_blocks=4, init_seed=0))
    folder = save_ether(unet, tmp_path / "run" / "adapter")
    save_config(tiny_config(tmp_path / "run"), folder / CONFIG_FILE)
    return folder


def test_base_model_comes_from_the_adapter(tiny_adapter, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # SD 1.5 is not here: only the recorded 'tiny' can load
    manifest = generate(GenerateConfig(adapter=str(tiny_adapter), prompts=("a dog",), num_images_per_prompt=1,
                                       num_inference_steps=1, output_dir=str(tmp_path / "samples")))
    row = json.loads(manifest.read_text().splitlines()[0])
    assert row["base_model"] == "tiny" and row["method"] == "ether"
    assert (manifest.parent / row["path"]).is_file()
    assert f"base model 'tiny' (recorded in {tiny_adapter / CONFIG_FILE})" in capsys.readouterr().out


def test_s2i_model_folder_is_refused(tiny_adapter, tmp_path, monkeypatch):
    monkeypatch.setattr("ether_diffusion.models.loading.tiny_pipeline",
                        lambda *a, **k: pytest.fail("a model was loaded before the folder was checked"))
    unet_width_source = tiny_pipeline().unet
    save_control_encoder(ControlEncoder.for_unet(unet_width_source, (4, 8)), tiny_adapter, method="ether")
    with pytest.raises(ConfigError) as refused:
        generate(GenerateConfig(adapter=str(tiny_adapter), prompts=("a dog",), output_dir=str(tmp_path / "s")))
    assert "is an S2I model" in str(refused.value) and "generate_s2i.py --model" in str(refused.value)


def test_requests_file_uses_the_base_model_its_adapters_record(tiny_adapter, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps({"prompt": "a qwe dog", "adapter": str(tiny_adapter)}) + "\n"
                        + json.dumps({"prompt": "a dog", "adapter": None}) + "\n")
    manifest = generate(GenerateConfig(requests_file=str(requests), num_images_per_prompt=1, num_inference_steps=1,
                                       output_dir=str(tmp_path / "samples")))
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [r["base_model"] for r in rows] == ["tiny", "tiny"] and rows[0]["adapter"] == str(tiny_adapter)
    assert f"base model 'tiny' (recorded in {tiny_adapter / CONFIG_FILE})" in capsys.readouterr().out


def test_adapters_of_different_base_models_are_refused(tiny_adapter, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / CONFIG_FILE).write_text("pretrained_model_name_or_path: some/other-model\n")
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps({"prompt": "x", "adapter": str(f)}) + "\n" for f in (tiny_adapter, other)))
    with pytest.raises(ConfigError) as refused:
        generate(GenerateConfig(requests_file=str(requests), output_dir=str(tmp_path / "samples")))
    assert "different base models" in str(refused.value) and "'some/other-model'" in str(refused.value)


def test_generate_script_brings_tiny_sizes_for_a_requests_file_of_tiny_adapters(tmp_path, capsys):
    from .test_scripts import _script

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps({"prompt": "x", "adapter": str(adapter)}) + "\n")
    mod = _script("generate")
    assert mod.parse_args(["--requests_file", str(requests)]).num_inference_steps == 50  # nothing recorded yet
    (adapter / CONFIG_FILE).write_text("pretrained_model_name_or_path: tiny\n")
    assert mod.parse_args(["--requests_file", str(requests)]).num_inference_steps == 4
