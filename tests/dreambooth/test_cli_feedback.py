"""What a user sees (``--help``: tests/test_help.py): ``tiny`` with tiny-sized defaults unless a flag says
otherwise, and a line for each slow phase (loading, validation, checkpoint) plus where the adapter went."""

from __future__ import annotations

from ether_diffusion import names
from ether_diffusion.dreambooth.config import shipped_config
from ether_diffusion.dreambooth.train import train_dreambooth

from .conftest import tiny_config
from .test_scripts import _script


def test_light_names_match_the_library():
    from ether_diffusion.config import PROJECTIONS
    from ether_diffusion.data.dreambooth import PROMPTS_FILE
    from ether_diffusion.functional import METHODS
    from ether_diffusion.models.control import HINT_CHANNELS
    from ether_diffusion.models.tiny import TINY_ID, TINY_RESOLUTION

    # one definition: the library's names are the light module's objects, not copies
    assert (names.METHODS, names.PROJECTIONS, names.PROMPTS_FILE, names.HINT_CHANNELS) == (
        METHODS, PROJECTIONS, PROMPTS_FILE, HINT_CHANNELS)
    assert all(a is b for a, b in ((names.METHODS, METHODS), (names.PROJECTIONS, PROJECTIONS),
                                   (names.HINT_CHANNELS, HINT_CHANNELS), (names.TINY_ID, TINY_ID)))
    assert names.TINY_RESOLUTION == TINY_RESOLUTION


def test_tiny_brings_tiny_defaults_unless_a_flag_sets_them(capsys):
    mod = _script("train_dreambooth")
    yaml = ["--config", str(shipped_config("ether"))]
    real = mod.parse_args(yaml)
    assert (real.resolution, real.num_class_images, real.max_train_steps) == (512, 200, 2005)
    capsys.readouterr()
    tiny = mod.parse_args([*yaml, "--pretrained_model_name_or_path", "tiny", "--max_train_steps", "3"])
    assert (tiny.resolution, tiny.num_class_images, tiny.class_inference_steps) == (64, 4, 2)
    assert tiny.max_train_steps == 3 and tiny.learning_rate == real.learning_rate  # the flag wins; the rest stays
    out = capsys.readouterr().out
    assert "tiny model: resolution=64" in out and "max_train_steps" not in out


def test_progress_lines(tmp_path, capsys):
    train_dreambooth(tiny_config(tmp_path / "run", checkpointing_steps=2, validation_prompt="a qwe dog",
                                 num_validation_images=1, validation_inference_steps=1, validation_steps=2))
    captured = capsys.readouterr()
    text = captured.out + captured.err
    for line in ("loading base model 'tiny'", "validation at step 2", f"saved checkpoint {tmp_path / 'run'}",
                 f"adapter saved to {tmp_path / 'run' / 'adapter'} (step 2)"):
        assert line in text, line
