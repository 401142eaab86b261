"""A re-run of an evaluation over the same files reuses every finished pass (features and areas cached in
<out>/cache, keyed by file content, model and settings), so an interrupted run resumes where it stopped."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import eval.dreambooth as dreambooth
import eval.s2i as s2i
from eval.cli import main

from .conftest import ADE20K, random_image


class Counted:
    """Wraps a pass function of an eval module; counts calls, and raises after ``fail_after`` calls if set."""

    def __init__(self, monkeypatch, module, name: str, fail_after: int | None = None):
        self.inner, self.calls, self.fail_after = getattr(module, name), 0, fail_after
        monkeypatch.setattr(module, name, self)

    def __call__(self, *args, **kwargs):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("killed mid-evaluation")
        self.calls += 1
        return self.inner(*args, **kwargs)


def _dreambooth(gen, real, out, *extra):
    return main(["dreambooth", "--generated", str(gen), "--real", str(real), "--random-init", "--lpips-size", "64",
                 "--out", str(out), *extra])


def _results(out):
    return json.loads((out / "metrics.json").read_text())["results"]


def test_interrupted_dreambooth_evaluation_resumes_and_matches_a_fresh_one(synthetic_dreambooth, tmp_path,
                                                                           monkeypatch, capsys):
    gen, real, _ = synthetic_dreambooth({"a": 2, "b": 3})
    out = tmp_path / "out"
    embeds = Counted(monkeypatch, dreambooth, "embed_files")
    killed = Counted(monkeypatch, dreambooth, "lpips_generated", fail_after=0)
    with pytest.raises(KeyboardInterrupt):  # DINO and CLIP finished, then the run died in LPIPS
        _dreambooth(gen, real, out)
    assert embeds.calls == 4 and not (out / "metrics.json").exists()

    monkeypatch.setattr(dreambooth, "lpips_generated", killed.inner)
    capsys.readouterr()
    assert _dreambooth(gen, real, out) == 0
    assert embeds.calls == 4  # nothing embedded again
    assert "dino generated: reused" in capsys.readouterr().out

    fresh = tmp_path / "fresh"
    assert _dreambooth(gen, real, fresh, "--reuse", "false") == 0
    assert embeds.calls == 8 and not (fresh / "cache").exists()
    assert _results(out) == _results(fresh)


def test_a_changed_image_or_model_is_computed_again(synthetic_dreambooth, tmp_path, monkeypatch):
    gen, real, rows = synthetic_dreambooth({"a": 2})
    out = tmp_path / "out"
    embeds = Counted(monkeypatch, dreambooth, "embed_files")
    lpips = Counted(monkeypatch, dreambooth, "lpips_generated")
    assert _dreambooth(gen, real, out) == 0
    assert (embeds.calls, lpips.calls) == (4, 1)
    assert _dreambooth(gen, real, out) == 0
    assert (embeds.calls, lpips.calls) == (4, 1)  # all reused

    random_image(np.random.default_rng(99)).save(gen / rows[0]["path"])  # same name, other content
    assert _dreambooth(gen, real, out) == 0
    assert (embeds.calls, lpips.calls) == (6, 2)  # generated images again; the real ones are unchanged
    assert _dreambooth(gen, real, out, "--seed", "1") == 0  # other random-init weights: another model
    assert (embeds.calls, lpips.calls) == (10, 3)

    fresh = tmp_path / "fresh"
    assert _dreambooth(gen, real, fresh, "--seed", "1") == 0
    assert _results(out) == _results(fresh)


@pytest.mark.slow
def test_s2i_rerun_reuses_segmentation_and_inception(tmp_path, monkeypatch, ade_generated):
    gen, out = ade_generated("copies"), tmp_path / "out"
    argv = ["s2i", "--generated", str(gen), "--ade-root", str(ADE20K), "--random-init", "--batch-size", "2",
            "--out", str(out)]
    segment = Counted(monkeypatch, s2i, "score_images")
    inception = Counted(monkeypatch, s2i, "inception_features")
    assert main(argv) == 0
    first = _results(out)
    assert (segment.calls, inception.calls) == (1, 2)
    assert main(argv) == 0
    assert (segment.calls, inception.calls) == (1, 2) and _results(out) == first
    first_image = sorted(gen.glob("*.png"))[0]
    Image.open(first_image).rotate(90).save(first_image)  # same name, other content
    assert main(argv) == 0
    assert (segment.calls, inception.calls) == (2, 3)  # the generated set changed; the reference features did not
