"""Manifest rows and configs fail early, on the right line, with a message that says what to do."""

from __future__ import annotations

import json

import pytest

from ether_diffusion.typed_config import ConfigError
from ether_diffusion.typed_config import config_from_dict, load_config
from eval.cli import main, parse_args
from eval.config import DreamBoothEvalConfig, S2IEvalConfig
from eval.errors import EvalInputError
from eval.manifest import read_manifest

from .conftest import ADE20K, DREAMBOOTH

GOOD = {"path": "a.png", "prompt": "a dog", "seed": 1, "method": "ether", "subject": "dog", "extra": [1, 2]}


def _folder(tmp_path, lines):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_good_rows_are_read_and_extra_keys_ignored(tmp_path):
    absolute = {**GOOD, "path": str(tmp_path / "a.png"), "prompt_index": 3}
    (tmp_path / "b.png").write_bytes(b"")
    rows = read_manifest(_folder(tmp_path, [json.dumps(GOOD), "", json.dumps({**absolute, "path": "b.png"})]))
    assert [r.line for r in rows] == [1, 3]  # blank line skipped, numbering kept
    assert rows[0].path == (tmp_path / "a.png").resolve() and rows[0].subject == "dog"
    assert rows[0].prompt_index is None and rows[1].prompt_index == 3
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "manifest.jsonl").write_text(json.dumps(absolute) + "\n")
    assert read_manifest(other / "manifest.jsonl")[0].path == (tmp_path / "a.png").resolve()


@pytest.mark.parametrize("bad,needle", [
    ("{not json", "not valid JSON"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "seed"}), "missing key 'seed'"),
    (json.dumps({**GOOD, "seed": "1"}), "'seed' must be int"),
    (json.dumps({**GOOD, "seed": True}), "'seed' must be int"),
    (json.dumps({**GOOD, "path": "missing.png"}), "not found"),
    (json.dumps([1, 2]), "JSON object"),
])
def test_bad_rows_name_the_file_and_line(tmp_path, bad, needle):
    folder = _folder(tmp_path, [json.dumps(GOOD), bad])
    with pytest.raises(EvalInputError, match=needle) as err:
        read_manifest(folder)
    assert "manifest.jsonl:2" in str(err.value)


def test_required_protocol_keys_and_duplicates(tmp_path):
    folder = _folder(tmp_path, [json.dumps(GOOD)])
    with pytest.raises(EvalInputError, match="missing key 'condition'"):
        read_manifest(folder, require=("condition",))
    folder = _folder(tmp_path, [json.dumps(GOOD), json.dumps(GOOD)])
    with pytest.raises(EvalInputError, match="already listed on line 1"):
        read_manifest(folder)


def test_configs_validate_early(tmp_path):
    with pytest.raises(EvalInputError, match="--generated"):
        DreamBoothEvalConfig(generated=str(tmp_path / "nope"), real=str(DREAMBOOTH))
    with pytest.raises(EvalInputError, match="unknown metrics"):
        DreamBoothEvalConfig(generated=str(tmp_path), real=str(DREAMBOOTH), metrics=("dino", "fid"))
    with pytest.raises(EvalInputError, match="score_at"):
        S2IEvalConfig(generated=str(tmp_path), ade_root=str(ADE20K), score_at="middle")
    with pytest.raises(ConfigError, match="unknown config key 'lpips_sise'; did you mean 'lpips_size'"):
        config_from_dict(DreamBoothEvalConfig, {"lpips_sise": 3})
    with pytest.raises(ConfigError, match="batch_size must be an integer"):
        config_from_dict(DreamBoothEvalConfig, {"batch_size": "8"})
    with pytest.raises(ConfigError, match="batch_size must be an integer"):  # the Python API is checked too
        DreamBoothEvalConfig(generated=str(tmp_path), real=str(DREAMBOOTH), batch_size="8")


def test_cli_errors_are_one_line(tmp_path, capsys):
    for argv, message in ((["dreambooth", "--generated", str(tmp_path), "--lpips_sise", "3"], "unrecognized"),
                          (["dreambooth", "--generated", str(tmp_path), "--real", str(DREAMBOOTH), "--batch-size",
                            "x"], "--batch_size must be an integer"),
                          (["dreambooth", "--generated", str(tmp_path / "nope"), "--real", str(DREAMBOOTH)],
                           "--generated DIR"),
                          (["segment"], "unknown command 'segment'")):
        try:
            code = main(argv)  # bad values: main returns 2
        except SystemExit as ex:  # argparse (unknown flag) and unknown commands exit
            code = ex.code
        err = capsys.readouterr().err.strip()
        assert code == 2 and "\n" not in err and message in err, err


def test_cli_flags_override_yaml_which_overrides_defaults(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text(f"real: {DREAMBOOTH}\nbatch_size: 4\nlpips_size: 256\nmetrics: [dino, lpips]\n")
    command, cfg = parse_args(["dreambooth", "--config", str(yaml_file), "--generated", str(tmp_path),
                               "--batch-size", "2", "--random-init", "--no-real-self-pairs", "--lpips_size", "128"])
    assert command == "dreambooth" and isinstance(cfg, DreamBoothEvalConfig)
    assert (cfg.batch_size, cfg.lpips_size, cfg.metrics) == (2, 128, ("dino", "lpips"))
    assert cfg.random_init and not cfg.real_self_pairs and cfg.dino == "facebook/dino-vits16"


def test_shipped_yaml_configs_load(tmp_path):
    from pathlib import Path

    from eval.config import FIDEvalConfig

    root = Path(__file__).resolve().parents[2] / "configs" / "eval"
    paths = {"generated": str(tmp_path), "real": str(DREAMBOOTH), "ade_root": str(ADE20K), "reference": str(tmp_path)}
    loaded = {}
    for name, cls in (("dreambooth", DreamBoothEvalConfig), ("s2i", S2IEvalConfig), ("fid", FIDEvalConfig)):
        keep = {k: v for k, v in paths.items() if k in {f for f in cls.__dataclass_fields__}}
        loaded[name] = load_config(cls, root / f"{name}.yaml", **keep)
        assert loaded[name].random_init is False
    assert loaded["dreambooth"].dino == "facebook/dino-vits16"
    assert loaded["s2i"].segmenter == "nvidia/segformer-b4-finetuned-ade-512-512"


def test_public_api_names_resolve():
    import eval

    assert all(callable(getattr(eval, name)) for name in eval.__all__)
    with pytest.raises(AttributeError):
        eval.not_a_name  # noqa: B018


def test_cli_imports_no_torch():
    """`python -m eval --help` answers at once: the CLI and the shared config loader do not import torch."""
    import subprocess
    import sys

    code = "import sys, eval.cli, ether_diffusion.typed_config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
