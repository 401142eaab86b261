"""Properties behind the robustness study: ETHER's distance is fixed, ETHER+'s bounded, HE kept by orthogonal maps."""

import pytest
import torch

import ether_diffusion as ed
from ether_diffusion import functional as Fn
from ether_diffusion.analysis import hyperspherical_energy, layer_stats, summarize
from ether_diffusion.models.unet_configs import TINY_UNET, build_unet


def brute_force_he(W):
    w = W.double() / W.double().norm(dim=1, keepdim=True)
    return sum(1.0 / (w[i] - w[j]).norm() for i in range(len(w)) for j in range(len(w)) if i != j)


def test_he_matches_definition():
    W = torch.randn(7, 5)
    torch.testing.assert_close(hyperspherical_energy(W), torch.tensor(float(brute_force_he(W)), dtype=torch.float64))


@pytest.mark.parametrize("method,keeps", [("ether", True), ("oft", True), ("naive", False), ("ether_plus", False)])
def test_he_invariance_under_orthogonal_transforms(method, keeps):
    f, d, n = 10, 8, 2
    W = torch.randn(f, d, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    p_in = {k: torch.randn(s, generator=g, dtype=torch.float64) for k, s in Fn.param_shapes(method, d, n).items()}
    p_out = ({k: torch.randn(s, generator=g, dtype=torch.float64) for k, s in Fn.param_shapes(method, f, n).items()}
             if method in Fn.OUTPUT_SIDE_METHODS else None)
    he0 = hyperspherical_energy(W)
    he1 = hyperspherical_energy(Fn.fold_weight(W, method, p_in, p_out))
    assert torch.isclose(he0, he1, rtol=1e-9) == keeps


@pytest.mark.parametrize("lr", [1e-4, 1e-2, 1.0, 100.0])
def test_distance_to_identity_after_training_at_any_learning_rate(lr):
    torch.manual_seed(0)
    x = dict(sample=torch.randn(1, 4, 8, 8), timestep=torch.tensor(5), encoder_hidden_states=torch.randn(1, 5, 32))
    for method in ("ether", "ether_plus"):
        unet = build_unet(TINY_UNET, seed=0)
        ed.apply_ether(unet, ed.EtherConfig(method, 4, init_seed=0))
        opt = torch.optim.SGD(ed.ether_parameters(unet), lr=lr)
        for _ in range(3):
            opt.zero_grad()
            unet(**x).sample.square().mean().backward()
            opt.step()
        stats = layer_stats(unet)
        for name, s in stats.items():
            n_blocks = 4
            if method == "ether":  # every block exactly 2 away: sqrt(4 blocks * 2^2)
                assert abs(s["dist_in"] - 2.0 * n_blocks ** 0.5) < 1e-9, name
                assert abs(s["he"] - s["he_base"]) <= 1e-9 * s["he_base"], name
            else:  # never above 2 per block
                assert s["dist_in"] <= 2.0 * n_blocks ** 0.5 + 1e-9 and s["dist_out"] <= 2.0 * n_blocks ** 0.5 + 1e-9
        assert summarize(stats)["n_layers"] == len(stats) > 0
