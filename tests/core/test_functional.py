"""The pure math: properties of each transform and the fast activation path against the dense formula."""

import pytest
import torch

from ether_diffusion import functional as Fn

torch.set_default_dtype(torch.float32)


def random_params(method, dim, n, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g, dtype=dtype) * 0.3 for k, s in Fn.param_shapes(method, dim, n).items()}


@pytest.mark.parametrize("n", [1, 2, 4, 12])
def test_ether_is_a_reflection(n):
    p = random_params("ether", 24, n)
    H = Fn.dense_matrix("ether", p)
    eye = torch.eye(24, dtype=H.dtype)
    torch.testing.assert_close(H @ H.T, eye)
    torch.testing.assert_close(H @ H, eye)
    for block in Fn.dense_blocks("ether", p):
        assert abs((block - torch.eye(24 // n, dtype=H.dtype)).norm().item() - 2.0) < 1e-10


def test_ether_init_is_a_reflection_not_identity():
    p = Fn.init_params("ether", 16, 4, torch.Generator().manual_seed(0))
    blocks = Fn.dense_blocks("ether", p)
    dist = (blocks - torch.eye(4)).flatten(1).norm(dim=1)
    torch.testing.assert_close(dist, torch.full((4,), 2.0))


@pytest.mark.parametrize("n", [1, 3, 6])
def test_ether_plus_bounds_and_identity_at_init(n):
    init = Fn.init_params("ether_plus", 18, n, torch.Generator().manual_seed(1))
    torch.testing.assert_close(Fn.dense_matrix("ether_plus", init), torch.eye(18), atol=1e-6, rtol=0)
    for seed in range(5):
        p = random_params("ether_plus", 18, n, seed)
        for block in Fn.dense_blocks("ether_plus", p):
            assert (block - torch.eye(18 // n, dtype=block.dtype)).norm() <= 2.0 + 1e-12
    # and it is not orthogonal in general: a relaxation of the reflection
    H = Fn.dense_matrix("ether_plus", random_params("ether_plus", 18, n, 7))
    assert not torch.allclose(H @ H.T, torch.eye(18, dtype=H.dtype), atol=1e-3)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_oft_is_orthogonal_and_identity_at_zero(n):
    H = Fn.dense_matrix("oft", random_params("oft", 16, n))
    torch.testing.assert_close(H @ H.T, torch.eye(16, dtype=H.dtype))
    assert not torch.allclose(H, torch.eye(16, dtype=H.dtype), atol=1e-2)
    zero = Fn.init_params("oft", 16, n)
    torch.testing.assert_close(Fn.dense_matrix("oft", zero), torch.eye(16))
    torch.testing.assert_close(Fn.dense_matrix("naive", Fn.init_params("naive", 16, n)), torch.eye(16))


@pytest.mark.parametrize("method", Fn.METHODS)
@pytest.mark.parametrize("n", [1, 2, 8])
def test_transform_equals_dense(method, n):
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    p = random_params(method, 16, n)
    H = Fn.dense_matrix(method, p)
    torch.testing.assert_close(Fn.transform(x, method, p), x @ H.T)
    torch.testing.assert_close(Fn.transform(x, method, p, transpose=True), x @ H)


@pytest.mark.parametrize("method", Fn.METHODS)
@pytest.mark.parametrize("n", [1, 4, 8])
@pytest.mark.parametrize("bias", [True, False])
def test_adapted_linear_and_fold_equal_dense_formula(method, n, bias):
    f, d = 24, 16
    W = torch.randn(f, d, dtype=torch.float64)
    b = torch.randn(f, dtype=torch.float64) if bias else None
    p_in = random_params(method, d, n, 1)
    p_out = random_params(method, f, n, 2) if method in Fn.OUTPUT_SIDE_METHODS else None
    W_dense = W @ Fn.dense_matrix(method, p_in)  # W H
    if p_out is not None:
        W_dense = Fn.dense_matrix(method, p_out) @ W_dense  # H̃ W H
    x = torch.randn(2, 7, d, dtype=torch.float64)
    expected = x @ W_dense.T + (b if bias else 0)
    torch.testing.assert_close(Fn.adapted_linear(x, W, b, method, p_in, p_out), expected)
    torch.testing.assert_close(Fn.fold_weight(W, method, p_in, p_out), W_dense)


def test_non_contiguous_input():
    x = torch.randn(16, 6, dtype=torch.float64).T  # (6, 16), non-contiguous
    p = random_params("ether", 16, 4)
    torch.testing.assert_close(Fn.transform(x, "ether", p), x @ Fn.dense_matrix("ether", p).T)


def test_ether_fold_is_an_involution():
    """(W H) H = W: a reflection is its own inverse."""
    W = torch.randn(8, 12, dtype=torch.float64)
    p = random_params("ether", 12, 3)
    torch.testing.assert_close(Fn.fold_weight(Fn.fold_weight(W, "ether", p), "ether", p), W)


@pytest.mark.parametrize("method", Fn.METHODS)
def test_gradcheck(method):
    f, d, n = 6, 4, 2
    W = torch.randn(f, d, dtype=torch.float64)
    b = torch.randn(f, dtype=torch.float64)
    x = torch.randn(3, d, dtype=torch.float64, requires_grad=True)
    p_in = {k: v.requires_grad_() for k, v in random_params(method, d, n).items()}
    has_out = method in Fn.OUTPUT_SIDE_METHODS
    p_out = {k: v.requires_grad_() for k, v in random_params(method, f, n, 3).items()} if has_out else {}
    names_in, names_out = list(p_in), list(p_out)

    def fn(x, *flat):
        pi = dict(zip(names_in, flat[: len(names_in)]))
        po = dict(zip(names_out, flat[len(names_in):])) if has_out else None
        return Fn.adapted_linear(x, W, b, method, pi, po)

    assert torch.autograd.gradcheck(fn, (x, *p_in.values(), *p_out.values()))


def test_distance_to_identity():
    p = random_params("ether", 16, 4)
    assert abs(Fn.distance_to_identity("ether", p).item() - 2.0 * 4 ** 0.5) < 1e-10
