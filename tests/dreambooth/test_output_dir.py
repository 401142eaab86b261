"""A new run into a folder that holds another run is refused in one line (before any model loads), continues it
with ``--resume_from_checkpoint``, or replaces it with ``--overwrite_output_dir``."""

from __future__ import annotations

import pytest

from ether_diffusion.outputs import OutputDirError
from ether_diffusion.training.checkpoint import list_checkpoints
from ether_diffusion.dreambooth.train import train_dreambooth
from ether_diffusion.typed_config import ConfigError

from .conftest import reset_accelerate, tiny_config


def test_finished_run_refused_then_overwritten(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    validation = dict(validation_prompt="a qwe dog", num_validation_images=1, validation_inference_steps=1,
                      validation_steps=2)
    train_dreambooth(tiny_config(run, checkpointing_steps=1, **validation))
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-1", "checkpoint-2"]
    assert (run / "adapter").is_dir() and list((run / "validation").iterdir())
    reset_accelerate()

    with monkeypatch.context() as m:
        m.setattr("ether_diffusion.models.loading.tiny_pipeline",
                  lambda *a, **k: pytest.fail("a model was loaded before the folder was checked"))
        with pytest.raises(OutputDirError) as refused:
            train_dreambooth(tiny_config(run))
        message = str(refused.value)
        assert "\n" not in message and "adapter/, checkpoint-1/, checkpoint-2/" in message
        assert "--resume_from_checkpoint latest" in message and "--overwrite_output_dir" in message
        # checkpoints alone (a run stopped before its end) are refused as well
        (tmp_path / "stopped" / "checkpoint-7").mkdir(parents=True)
        with pytest.raises(OutputDirError, match="checkpoint-7/"):
            train_dreambooth(tiny_config(tmp_path / "stopped"))
    with pytest.raises(ConfigError, match="not both"):
        tiny_config(run, overwrite_output_dir=True, resume_from_checkpoint="latest")

    capsys.readouterr()
    result = train_dreambooth(tiny_config(run, overwrite_output_dir=True, max_train_steps=1))
    assert "overwrite_output_dir: removed" in capsys.readouterr().out
    assert result["step"] == 1 and (run / "adapter" / "adapter_model.safetensors").is_file()
    assert not list(run.glob("checkpoint-*")) and not (run / "validation").exists()
    assert "max_train_steps: 1" in (run / "adapter" / "train_config.yaml").read_text()  # the new run's config
