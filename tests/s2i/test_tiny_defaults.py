"""``tiny`` brings tiny sizes to the S2I scripts (the shipped YAMLs are SD 1.5's 512 px / 50 steps) unless a flag
sets them; sampling a model trained on ``tiny`` does the same through its train_config.yaml."""

from __future__ import annotations

from ether_diffusion.names import TINY_RESOLUTION
from ether_diffusion.s2i.config import TINY_S2I

from .conftest import ADE20K, CAPTIONS, REPO
from .test_scripts import _script

TRAIN_YAML = str(REPO / "configs" / "s2i" / "ether.yaml")
GENERATE_YAML = str(REPO / "configs" / "s2i" / "generate.yaml")


def test_train_s2i_tiny_sizes_unless_a_flag_sets_them(capsys):
    mod = _script("train_s2i")
    data = ["--config", TRAIN_YAML, "--data_root", str(ADE20K), "--captions", str(CAPTIONS)]
    real = mod.parse_args(data)
    assert (real.resolution, real.train_batch_size, real.validation_inference_steps) == (512, 16, 50)
    capsys.readouterr()
    tiny = mod.parse_args([*data, "--pretrained_model_name_or_path", "tiny", "--max_train_steps", "3"])
    assert tiny.resolution == TINY_RESOLUTION
    assert tiny.validation_inference_steps == TINY_S2I["validation_inference_steps"]
    assert tiny.checkpointing_steps == TINY_S2I["checkpointing_steps"] and tiny.max_train_steps == 3  # the flag wins
    assert tiny.learning_rate == real.learning_rate and tiny.captions == real.captions  # the rest stays the YAML's
    out = capsys.readouterr().out
    assert "tiny model: resolution=64" in out and "max_train_steps" not in out


def test_generate_s2i_tiny_from_the_recorded_base_model(tmp_path, capsys):
    mod = _script("generate_s2i")
    model = tmp_path / "model"
    model.mkdir()
    argv = ["--config", GENERATE_YAML, "--model", str(model), "--annotations", str(ADE20K), "--captions",
            str(CAPTIONS), "--pretrained_model_name_or_path", "null"]
    real = mod.parse_args(argv)  # no train_config.yaml: not known to be tiny, the YAML's sizes stay
    assert (real.resolution, real.num_inference_steps) == (512, 50)
    (model / "train_config.yaml").write_text("pretrained_model_name_or_path: tiny\nresolution: 32\n")
    tiny = mod.parse_args(argv)
    assert tiny.resolution is None and tiny.num_inference_steps == 4  # None: the training resolution
    assert tiny.guidance_scale == real.guidance_scale
    assert mod.parse_args([*argv, "--num_inference_steps", "7"]).num_inference_steps == 7
