"""The config system: defaults < YAML < flags, one-line errors for unknown keys and wrong types, shipped configs."""

from __future__ import annotations

import pytest

from ether_diffusion.typed_config import ConfigError
from ether_diffusion.typed_config import load_config, parse_config, save_config
from ether_diffusion.dreambooth.config import DreamBoothConfig, shipped_config
from ether_diffusion.dreambooth.generate_config import GenerateConfig
from ether_diffusion.training.options import ADAPTER_METHODS

from .conftest import DOG

REQUIRED = ["--instance_data_dir", str(DOG), "--instance_prompt", "a photo of qwe dog"]


def test_yaml_then_flags_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 1e-4\nmethod: oft\nmax_train_steps: 10\nrandom_flip: true\n"
                    "target_modules: [to_q, to_v]\n")
    cfg = parse_config(DreamBoothConfig, ["--config", str(path), *REQUIRED, "--max_train_steps", "3",
                                          "--gradient_checkpointing", "--seed", "none"])
    assert cfg.learning_rate == 1e-4 and isinstance(cfg.learning_rate, float)  # YAML's 1e-4 read as a number
    assert (cfg.method, cfg.max_train_steps, cfg.random_flip) == ("oft", 3, True)
    assert cfg.target_modules == ("to_q", "to_v")
    assert cfg.gradient_checkpointing is True and cfg.seed is None
    assert cfg.lr_scheduler == "constant"  # untouched default


@pytest.mark.parametrize("yaml_text, message", [
    ("learnig_rate: 0.1\n", "unknown config key 'learnig_rate' in .*c.yaml; did you mean 'learning_rate'"),
    ("max_train_steps: many\n", "max_train_steps must be an integer or null, got 'many'"),
    ("random_flip: 1\n", "random_flip must be true/false, got 1"),
    ("method: adapter\n", "method='adapter' is not allowed"),
    ("- a\n- b\n", "must hold a mapping"),
])
def test_bad_yaml_is_one_clear_error(tmp_path, yaml_text, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message) as err:
        parse_config(DreamBoothConfig, ["--config", str(path), *REQUIRED])
    assert "\n" not in str(err.value)


def test_bad_flags(capsys):
    with pytest.raises(ConfigError, match="--learning_rate must be a number, got 'fast'"):
        parse_config(DreamBoothConfig, [*REQUIRED, "--learning_rate", "fast"])
    with pytest.raises(SystemExit):  # argparse: unknown flag
        parse_config(DreamBoothConfig, [*REQUIRED, "--learnig_rate", "1"])
    assert "unrecognized arguments: --learnig_rate" in capsys.readouterr().err


def test_checks_of_values():
    with pytest.raises(ConfigError, match="instance_data_dir is required"):
        DreamBoothConfig(instance_prompt="a photo of qwe dog")
    with pytest.raises(ConfigError, match="needs class_prompt"):
        DreamBoothConfig(instance_data_dir=str(DOG), instance_prompt="x", with_prior_preservation=True)
    with pytest.raises(ConfigError, match="resolution must be a positive multiple of 8"):
        DreamBoothConfig(instance_data_dir=str(DOG), instance_prompt="x", resolution=100)
    with pytest.raises(ConfigError, match="train_batch_size must be >= 1"):
        DreamBoothConfig(instance_data_dir=str(DOG), instance_prompt="x", train_batch_size=0)
    with pytest.raises(ConfigError, match="exactly one of --prompts, --prompts_file, --subject"):
        GenerateConfig(prompts=("a",), subject="dog")


def test_adapter_fields_are_checked_as_the_adapter_when_the_config_is_built():
    from ether_diffusion.config import EtherConfig

    # a typo in target_modules: one line from the flags, before any model loads
    with pytest.raises(ConfigError, match="target_modules entry 'to_qq' does not end in one of"):
        parse_config(DreamBoothConfig, [*REQUIRED, "--target_modules", "to_q", "to_qq"])
    with pytest.raises(ConfigError, match="n_blocks must be >= 1"):
        DreamBoothConfig(instance_data_dir=str(DOG), instance_prompt="x", n_blocks=0)
    with pytest.raises(ConfigError, match="must end in one of"):  # LoRA: its own check
        DreamBoothConfig(instance_data_dir=str(DOG), instance_prompt="x", method="lora", target_modules=("to_qq",))
    cfg = DreamBoothConfig(instance_data_dir=str(DOG), instance_prompt="x", method="ether_plus", n_blocks=8,
                           target_modules=("attn2.to_k",), seed=5)
    assert cfg.ether_config(cfg.seed) == EtherConfig("ether_plus", 8, ("attn2.to_k",), init_seed=5)
    assert cfg.ether_config() == EtherConfig("ether_plus", 8, ("attn2.to_k",))  # for checking: no seed
    with pytest.raises(ConfigError, match="has no EtherConfig"):
        DreamBoothConfig(instance_data_dir=str(DOG), instance_prompt="x", method="lora").ether_config()


def test_resolved_config_round_trips(tmp_path):
    cfg = DreamBoothConfig(instance_data_dir=str(DOG), instance_prompt="a photo of qwe dog", lora_alpha=8,
                           target_modules=("attn2.to_k",), seed=3)
    again = load_config(DreamBoothConfig, save_config(cfg, tmp_path / "resolved.yaml"))
    assert again == cfg


@pytest.mark.parametrize("method", ADAPTER_METHODS)
def test_shipped_configs_load(method):
    cfg = load_config(DreamBoothConfig, shipped_config(method))
    assert cfg.method == method
    assert cfg.with_prior_preservation and cfg.resolution == 512 and cfg.train_batch_size == 1
    # every value in the file carries a comment with its source
    lines = [line for line in (shipped_config(method)).read_text().splitlines()
             if line and not line.startswith("#")]
    assert all("#" in line for line in lines), [line for line in lines if "#" not in line]


def test_scale_lr_and_scheduler_steps():
    import torch

    from ether_diffusion.training.optim import build_lr_scheduler, build_optimizer, effective_learning_rate

    cfg = DreamBoothConfig(instance_data_dir=str(DOG), instance_prompt="x", learning_rate=1e-4, scale_lr=True,
                           train_batch_size=2, gradient_accumulation_steps=3, lr_scheduler="linear",
                           lr_warmup_steps=2)
    assert effective_learning_rate(cfg, num_processes=4) == pytest.approx(1e-4 * 4 * 2 * 3)
    param = torch.nn.Parameter(torch.zeros(3))
    opt = build_optimizer([param], cfg, num_processes=1)
    sched = build_lr_scheduler(opt, cfg, max_train_steps=10, num_processes=1)
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    peak = 1e-4 * 6
    assert lrs[0] == 0 and lrs[2] == pytest.approx(peak) and lrs[-1] < lrs[3] < peak  # warm-up, then linear decay
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer([], cfg)
    assert not opt.defaults.get("fused")  # CPU parameters: the default AdamW
    from ether_diffusion.training.optim import fused_ok

    cuda_like = torch.nn.Parameter(torch.zeros(3, device="meta"))
    assert not fused_ok([param]) and not fused_ok([{"params": [param]}]) and not fused_ok([cuda_like])


def test_optional_bounds_of_the_other_configs(tmp_path):
    """None passes, a value at or past the bound is one ConfigError line naming the field and the value."""
    from ether_diffusion.dreambooth.export_config import ExportConfig
    from ether_diffusion.study.config import StudyConfig
    from tests.s2i.conftest import tiny_config as s2i_config

    assert s2i_config(tmp_path, control_learning_rate=None).control_learning_rate is None
    with pytest.raises(ConfigError, match=r"control_learning_rate must be > 0 or null, got 0\b"):
        s2i_config(tmp_path, control_learning_rate=0)
    export = dict(adapter="a", to="merged", output="o")
    assert ExportConfig(**export, rank=None).rank is None
    with pytest.raises(ConfigError, match=r"rank must be >= 1 or null, got 0\b"):
        ExportConfig(**export, rank=0)
    assert StudyConfig(record_every=None).record_every is None
    with pytest.raises(ConfigError, match=r"record_every must be >= 1 or null, got 0\b"):
        StudyConfig(record_every=0)
    with pytest.raises(ConfigError, match=r"max_train_steps must be >= 1 or null, got -1\b"):
        StudyConfig(max_train_steps=-1)
