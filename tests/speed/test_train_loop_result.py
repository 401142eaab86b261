"""`benchmarks/train_loop.py` result files: re-measuring one script's rows replaces those rows only and keeps each
script's date, commit and command beside its rows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train_loop.py"


@pytest.fixture(scope="module")
def train_loop():
    spec = importlib.util.spec_from_file_location("train_loop_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(script, method, ms, mode="default"):
    return dict(script=script, method=method, batch=1 if script == "dreambooth" else 4, prior_preservation=False,
                mode=mode, ms_per_step=ms, gpu_busy_ms=ms - 1, peak_gib=3.0)


def test_measuring_one_script_again_keeps_the_other(train_loop):
    old = dict(gpu="G", measurements=[dict(scripts=["dreambooth", "s2i"], date="2026-01-01", commit="aaaaaaa",
                                           command="python benchmarks/train_loop.py")],
               rows=[_row("dreambooth", "ether", 30.0), _row("s2i", "ether", 50.0)],
               eager_rows=[_row("dreambooth", "ether", 150.0, "eager"), _row("s2i", "ether", 280.0, "eager")],
               runs=[_row("dreambooth", "ether", 30.0), _row("s2i", "ether", 50.0)],
               reference_rows=[dict(_row("s2i", "ether", 0.0), mode="before", commit="56a9a4c")])
    new = dict(gpu="G", measurements=[dict(scripts=["dreambooth"], date="2026-02-02", commit="bbbbbbb",
                                           command="python benchmarks/train_loop.py --rows dreambooth")],
               rows=[_row("dreambooth", "ether", 20.0)], eager_rows=[_row("dreambooth", "ether", 140.0, "eager")],
               runs=[_row("dreambooth", "ether", 20.0)])
    out = train_loop.combine(old, new)
    assert [(r["script"], r["ms_per_step"]) for r in out["rows"]] == [("s2i", 50.0), ("dreambooth", 20.0)]
    assert [(r["script"], r["ms_per_step"]) for r in out["eager_rows"]] == [("s2i", 280.0), ("dreambooth", 140.0)]
    assert [r["script"] for r in out["runs"]] == ["s2i", "dreambooth"]
    assert out["reference_rows"] == old["reference_rows"]
    assert [(m["scripts"], m["commit"]) for m in out["measurements"]] == [(["s2i"], "aaaaaaa"),
                                                                          (["dreambooth"], "bbbbbbb")]
    text = train_loop.report(out)
    assert "- s2i rows: 2026-01-01, commit aaaaaaa" in text
    assert "- dreambooth rows: 2026-02-02, commit bbbbbbb: `python benchmarks/train_loop.py --rows dreambooth`" in text
    # measuring every script again leaves nothing of the old file but the reference rows
    both = dict(new, measurements=[dict(new["measurements"][0], scripts=["dreambooth", "s2i"])],
                rows=[_row("dreambooth", "ether", 21.0), _row("s2i", "ether", 48.0)])
    again = train_loop.combine(out, both)
    assert [m["commit"] for m in again["measurements"]] == ["bbbbbbb"]
    assert [r["ms_per_step"] for r in again["rows"]] == [21.0, 48.0]
    assert again["eager_rows"] == new["eager_rows"]


def test_a_result_file_that_is_not_json_is_one_error_line(train_loop, tmp_path):
    bad = tmp_path / "train_loop.json"
    bad.write_text('{"gpu": "G", "rows": [')  # a file cut short
    with pytest.raises(SystemExit, match=f"error: cannot read the result file {bad}"):
        train_loop.read_result(bad)
    with pytest.raises(SystemExit, match="error: cannot read the result file"):
        train_loop.read_result(tmp_path / "missing.json")


def test_written_whole_and_read_back(train_loop, tmp_path):
    result = dict(gpu="G", measurements=[dict(scripts=["s2i"], date="d", commit="c", command="x")],
                  rows=[_row("s2i", "ether", 50.0)], eager_rows=[], runs=[])
    out = tmp_path / "r.json"
    train_loop.write_result(out, result, train_loop.report)
    assert train_loop.read_result(out) == result
    assert (tmp_path / "r.md").read_text() == train_loop.report(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.md"]
