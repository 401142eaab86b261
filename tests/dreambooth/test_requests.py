"""scripts/generate.py --requests_file: (prompt, adapter) rows, batched across adapters, each image as if alone."""

import json

import numpy as np
import pytest
from PIL import Image

from ether_diffusion.typed_config import ConfigError
from ether_diffusion.dreambooth.generate import generate
from ether_diffusion.dreambooth.generate_config import GenerateConfig
from ether_diffusion.manifest import read_rows
from ether_diffusion.dreambooth.requests import adapter_labels, read_requests
from tests.multi.test_mixed_batch import make_adapters

COMMON = dict(pretrained_model_name_or_path="tiny", num_inference_steps=2, resolution=64, num_images_per_prompt=1,
              batch_size=4)


@pytest.mark.slow
def test_requests_file_batches_across_adapters(tmp_path):
    paths = make_adapters(tmp_path / "adapters", "ether")  # {"dog": .../dog, "cat": .../cat}
    requests = [{"prompt": "a photo of sks dog", "adapter": str(paths["dog"]), "seed": 3, "subject": "dog"},
                {"prompt": "a sks cat on the beach", "adapter": str(paths["cat"]), "seed": 5},
                {"prompt": "a photo of a dog", "adapter": None, "seed": 8},
                {"prompt": "a sks dog in the snow", "adapter": str(paths["dog"])}]  # default seed: 0 + 3 * 1
    file = tmp_path / "requests.jsonl"
    file.write_text("\n".join(json.dumps(r) for r in requests) + "\n")
    out = tmp_path / "mixed"
    generate(GenerateConfig(requests_file=str(file), output_dir=str(out), **COMMON))
    rows = read_rows(out)
    assert [r["adapter_name"] for r in rows] == ["dog", "cat", "none", "dog"]
    assert [r["seed"] for r in rows] == [3, 5, 8, 3] and rows[0]["subject"] == "dog"
    assert [r["method"] for r in rows] == ["ether", "ether", "base", "ether"]
    for i, (req, row) in enumerate(zip(requests, rows)):  # the same prompt, seed and adapter, generated alone
        alone = tmp_path / f"alone{i}"
        generate(GenerateConfig(prompts=(req["prompt"],), seed=row["seed"], adapter=req["adapter"],
                                output_dir=str(alone), **{**COMMON, "batch_size": 1}))
        (single,) = read_rows(alone)
        a = np.asarray(Image.open(out / row["path"])).astype(int)
        b = np.asarray(Image.open(alone / single["path"])).astype(int)
        assert np.abs(a - b).max() <= 1, row["path"]
    first = np.asarray(Image.open(out / rows[0]["path"]))
    assert not np.array_equal(first, np.asarray(Image.open(out / rows[3]["path"])))


def test_requests_file_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{"adapter": "x"}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: each line must be an object with a string 'prompt'"):
        read_requests(bad)
    bad.write_text('{"prompt": "a", "path": "x.png"}\n')
    with pytest.raises(ConfigError, match="written by the generator"):
        read_requests(bad)
    bad.write_text('{"prompt": "a", "adapter_name": "dog"}\n')
    with pytest.raises(ConfigError, match=r"\['adapter_name'\] are written by the generator"):
        read_requests(bad)
    bad.write_text("{nope\n")
    with pytest.raises(ConfigError, match="bad.jsonl:1: not JSON"):
        read_requests(bad)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_requests(tmp_path / "missing.jsonl")
    with pytest.raises(ConfigError, match="drop --adapter"):
        GenerateConfig(requests_file=str(bad), adapter="x")
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"prompt": "a", "adapter": str(tmp_path / "nowhere")}) + "\n")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        generate(GenerateConfig(requests_file=str(good), output_dir=str(tmp_path / "o"), **COMMON))


def test_adapter_labels_are_short_and_unique():
    assert adapter_labels(["runs/dog/adapter", "runs/cat/adapter"]) == {"runs/dog/adapter": "dog_adapter",
                                                                         "runs/cat/adapter": "cat_adapter"}
    assert adapter_labels(["a/dog", "b/cat"]) == {"a/dog": "dog", "b/cat": "cat"}
    assert adapter_labels(["x/none"]) == {"x/none": "adapter_none"}


def test_generate_script_requests_errors_are_one_line(tmp_path, capsys):
    from tests.dreambooth.test_scripts import _fails

    base = ["--pretrained_model_name_or_path", "tiny", "--output_dir", str(tmp_path / "o")]
    _fails(capsys, [*base, "--requests_file", str(tmp_path / "missing.jsonl")], "not found", script="generate")
    bad = tmp_path / "r.jsonl"
    bad.write_text('{"prompt": 3}\n')
    _fails(capsys, [*base, "--requests_file", str(bad)], "r.jsonl:1: each line must be an object", script="generate")
    _fails(capsys, [*base, "--requests_file", str(bad), "--adapter", "x"], "drop --adapter", script="generate")
