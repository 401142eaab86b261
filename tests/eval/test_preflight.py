"""The eval CLI checks everything a run needs (flags, images, weights, --out) before the first pass, and writes each
finished pass's numbers as it ends, so an interruption keeps them."""

from __future__ import annotations

import json

import pytest

import eval.dreambooth as dreambooth
from eval.cli import main
from eval.errors import ModelNotAvailableError


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


def test_missing_required_flag_is_named(synthetic_dreambooth, tmp_path, capsys):
    gen, real, _ = synthetic_dreambooth({"a": 2})
    assert main(["dreambooth", "--generated", str(gen), "--random-init", "--out", str(tmp_path / "o")]) == 2
    assert "real folder is required; pass --real" in _err(capsys)
    assert main(["dreambooth", "--real", str(real), "--random-init", "--out", str(tmp_path / "o")]) == 2
    assert "generated folder is required; pass --generated" in _err(capsys)
    assert main(["fid", "--generated", str(gen / "m"), "--random-init"]) == 2
    assert "pass --reference" in _err(capsys)


@pytest.fixture
def no_pass(monkeypatch):
    """A pass over the images fails the test: the checks must all come first."""
    monkeypatch.setattr(dreambooth, "embed_files", lambda *a, **k: pytest.fail("a pass ran before the checks"))


def test_missing_weights_and_corrupt_images_stop_before_any_pass(synthetic_dreambooth, tmp_path, capsys,
                                                                 monkeypatch, no_pass):
    gen, real, _ = synthetic_dreambooth({"a": 2})
    argv = ["dreambooth", "--generated", str(gen), "--real", str(real), "--random-init", "--out", str(tmp_path / "o")]

    def no_lpips(*args, **kwargs):
        raise ModelNotAvailableError("LPIPS backbone not found; pass --lpips-backbone FILE")

    with monkeypatch.context() as m:
        m.setattr(dreambooth, "load_lpips", no_lpips)  # loaded after DINO and CLIP, used last
        assert main(argv) == 2
        assert "--lpips-backbone" in _err(capsys)
    (real / "a" / "01.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    assert main(argv) == 2
    err = _err(capsys)
    assert "cannot read real image" in err and "01.jpg" in err
    assert not (tmp_path / "o").exists()


def test_finished_passes_are_written_as_they_end(synthetic_dreambooth, tmp_path, capsys, monkeypatch):
    gen, real, _ = synthetic_dreambooth({"a": 2, "b": 3})
    argv = ["dreambooth", "--generated", str(gen), "--real", str(real), "--random-init", "--lpips-size", "64"]
    assert main([*argv, "--out", str(tmp_path / "full")]) == 0
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())["results"]["m"]["means"]
    stages = json.loads((tmp_path / "full" / "stages.json").read_text())
    assert list(stages) == ["dino", "clip", "lpips"]
    merged = {k: v for stage in stages.values() for k, v in stage["m"].items()}
    assert merged == pytest.approx(full)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dreambooth, "lpips_generated", interrupted)  # stopped during the last pass
    with pytest.raises(KeyboardInterrupt):
        main([*argv, "--out", str(tmp_path / "cut")])
    kept = json.loads((tmp_path / "cut" / "stages.json").read_text())
    assert list(kept) == ["dino", "clip"] and kept == {k: stages[k] for k in ("dino", "clip")}
    assert not (tmp_path / "cut" / "metrics.json").exists()
