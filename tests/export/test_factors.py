"""The LoRA factors of a merged change, in float64: ETHER / ETHER+ in closed form against the change the forward math
folds (``fold_weight(W) - W``) and against the dense formula; the truncated SVD against Eckart-Young."""

import pytest
import torch

from ether_diffusion import functional as Fn
from ether_diffusion.export import ExportError, exact_rank, layer_factors

F64 = torch.float64


def params(method, dim, n, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(*s, generator=g, dtype=F64) for k, s in Fn.param_shapes(method, dim, n).items()}


def weight(f, d, seed=0):
    return torch.randn(f, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def dense_change(w, method, p_in, p_out=None):
    """H̃ W H - W with the transforms formed as dense matrices."""
    h = Fn.dense_matrix(method, p_in)
    h_out = Fn.dense_matrix(method, p_out) if p_out is not None else torch.eye(w.shape[0], dtype=F64)
    return h_out @ w @ h - w


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_ether_factors_are_the_merged_change(n):
    w, p_in = weight(48, 32), params("ether", 32, n, seed=n)
    b, a = Fn.ether_lora_factors(w, p_in)
    assert b.shape == (48, n) and a.shape == (n, 32)
    torch.testing.assert_close(b @ a, Fn.fold_weight(w, "ether", p_in) - w, atol=1e-12, rtol=0)
    torch.testing.assert_close(b @ a, dense_change(w, "ether", p_in), atol=1e-12, rtol=0)
    assert torch.linalg.matrix_rank(b @ a) == n
    # each row of A is a unit vector inside its own block
    blocks = a.reshape(n, n, 32 // n)  # (row, block, b)
    assert torch.count_nonzero(blocks.norm(dim=-1) * (1 - torch.eye(n, dtype=F64))) == 0
    torch.testing.assert_close(a.norm(dim=1), torch.ones(n, dtype=F64))


@pytest.mark.parametrize("n", [1, 2, 4])
def test_ether_plus_factors_are_the_merged_change(n):
    w, p_in, p_out = weight(48, 32), params("ether_plus", 32, n, seed=1), params("ether_plus", 48, n, seed=2)
    b, a = Fn.ether_plus_lora_factors(w, p_in, p_out)
    assert b.shape == (48, 4 * n) and a.shape == (4 * n, 32)
    torch.testing.assert_close(b @ a, Fn.fold_weight(w, "ether_plus", p_in, p_out) - w, atol=1e-12, rtol=0)
    torch.testing.assert_close(b @ a, dense_change(w, "ether_plus", p_in, p_out), atol=1e-12, rtol=0)
    assert torch.linalg.matrix_rank(b @ a) == 4 * n  # the rank is reached: no factor is wasted
    b, a = Fn.ether_plus_lora_factors(w, p_in, None)  # input side only: rank 2n
    assert b.shape == (48, 2 * n)
    torch.testing.assert_close(b @ a, dense_change(w, "ether_plus", p_in), atol=1e-12, rtol=0)


def test_ether_plus_at_init_has_no_change():
    w, p = weight(16, 16), params("ether_plus", 16, 4, seed=0)
    p["v"] = p["u"].clone()  # v = u: the identity
    b, a = Fn.ether_plus_lora_factors(w, p, p)
    assert (b @ a).abs().max() < 1e-12


def test_exact_ranks():
    assert exact_rank("ether", 4) == 4 and exact_rank("ether_plus", 4) == 16 and exact_rank("oft", 4) is None


@pytest.mark.parametrize("method", ["oft", "naive"])
def test_svd_factors_full_rank_exact_low_rank_optimal(method):
    w, p_in = weight(24, 16), params(method, 16, 4, seed=3)
    delta = Fn.fold_weight(w, method, p_in) - w
    b, a, error = layer_factors(w, method, p_in, None, rank=16)
    torch.testing.assert_close(b @ a, delta, atol=1e-12, rtol=0)
    assert error < 1e-12
    b, a, error = layer_factors(w, method, p_in, None, rank=3)
    assert b.shape == (24, 3) and a.shape == (3, 16)
    sv = torch.linalg.svdvals(delta)  # Eckart-Young: the best rank-3 error is the tail of the singular values
    best = float(sv[3:].norm() / sv.norm())
    assert error == pytest.approx(best, rel=1e-9) and error > 1e-3
    assert float((delta - b @ a).norm() / delta.norm()) == pytest.approx(error, rel=1e-9)


def test_svd_rank_above_the_dimensions_pads_with_zeros():
    delta = weight(8, 6)
    b, a, error = Fn.svd_lora_factors(delta, 10)
    assert b.shape == (8, 10) and a.shape == (10, 6) and error < 1e-12
    assert b[:, 6:].abs().max() == 0 and a[6:].abs().max() == 0


def test_ether_at_another_rank_goes_through_the_svd():
    w, p_in = weight(48, 32), params("ether", 32, 4, seed=5)
    b, a, error = layer_factors(w, "ether", p_in, None, rank=2)
    assert b.shape == (48, 2) and error > 1e-3


def test_oft_needs_a_rank():
    w, p_in = weight(8, 8), params("oft", 8, 2, seed=0)
    with pytest.raises(ExportError, match="rank"):
        layer_factors(w, "oft", p_in, None)
