"""save / load: self-describing files, identical outputs after a round trip, one clear error on a mismatch."""

import json

import pytest
import torch

import ether_diffusion as ed
from ether_diffusion.io import CONFIG_NAME, WEIGHTS_NAME

from .helpers import IDENTITY_METHODS, perturb, tiny_unet, unet_inputs


def run(model, x):
    with torch.no_grad():
        return model(**x).sample


@pytest.mark.parametrize("method", ("ether",) + IDENTITY_METHODS)
def test_save_load_round_trip(tmp_path, method):
    unet, x = tiny_unet(), unet_inputs()
    ed.apply_ether(unet, ed.EtherConfig(method=method, n_blocks=2))
    perturb(ed.ether_parameters(unet), seed=2)
    expected = run(unet, x)
    ed.save_ether(unet, tmp_path / "adapter")
    meta = json.loads((tmp_path / "adapter" / CONFIG_NAME).read_text())
    assert meta["config"]["method"] == method and meta["config"]["n_blocks"] == 2
    layer = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    assert meta["layers"][layer] == {"out_features": 32, "in_features": 32}

    fresh = tiny_unet()  # same base weights, no adapter
    ed.load_ether(fresh, tmp_path / "adapter")
    torch.testing.assert_close(run(fresh, x), expected, atol=0, rtol=0)
    # loading again into a model that already has the adapter replaces its values
    ed.load_ether(fresh, tmp_path / "adapter")
    torch.testing.assert_close(run(fresh, x), expected, atol=0, rtol=0)


def test_save_merged_model_saves_the_adapter(tmp_path):
    unet = tiny_unet()
    ed.apply_ether(unet, ed.EtherConfig("ether", 4, init_seed=3))
    ed.merge_ether(unet)
    ed.save_ether(unet, tmp_path / "a")
    fresh = tiny_unet()
    ed.apply_ether(fresh, ed.EtherConfig("ether", 4, init_seed=3))  # same seed -> same vectors
    ed.load_ether(fresh, tmp_path / "a")
    for a, b in zip(ed.ether_parameters(fresh), ed.ether_parameters(unet)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("make,match", [
    (lambda: (tiny_unet(block_out_channels=[64, 64]), None), "layer .* was saved with"),
    (lambda: (tiny_unet(), ed.EtherConfig("oft", 2)), "method='ether' but the model's adapter has method='oft'"),
    (lambda: (tiny_unet(), ed.EtherConfig("ether", 4)), "n_blocks=2 but the model's adapter has n_blocks=4"),
    (lambda: (tiny_unet(cross_attention_dim=48), None), r"attn2\.to_k was saved with \(out, in\) = \(32, 32\)"),
])
def test_mismatched_adapter_raises_and_changes_nothing(tmp_path, make, match):
    src = tiny_unet()
    ed.apply_ether(src, ed.EtherConfig("ether", 2))
    ed.save_ether(src, tmp_path / "a")
    model, existing = make()
    if existing is not None:
        ed.apply_ether(model, existing)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ed.AdapterMismatchError, match=match):
        ed.load_ether(model, tmp_path / "a")
    assert (existing is None) == (not hasattr(model, "_ether"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_missing_or_foreign_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ed.load_ether(tiny_unet(), tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=f"has no {CONFIG_NAME}"):
        ed.load_ether(tiny_unet(), tmp_path / "empty")
    src = tiny_unet()
    ed.apply_ether(src, ed.EtherConfig("ether", 2))
    ed.save_ether(src, tmp_path / "a")
    (tmp_path / "a" / WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=f"has no {WEIGHTS_NAME}"):
        ed.load_ether(tiny_unet(), tmp_path / "a")


def test_config_json_round_trip_and_unknown_key():
    cfg = ed.EtherConfig("ether_plus", 8, ("to_q", "attn2.to_k"), init_seed=1)
    assert ed.EtherConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ed.ConfigError, match="unknown EtherConfig key 'nblocks'"):
        ed.EtherConfig.from_dict({"nblocks": 4})
    with pytest.raises(ed.ConfigError, match="positive integer"):
        ed.EtherConfig(n_blocks="4")
