"""Pure tensor math of the block-diagonal multiplicative adapters.

Every method transforms a linear layer ``y = W x + b`` (``W`` is ``f x d``, out x in) by block-diagonal matrices:

- ``ether``       ``y = W H x + b``,            ``H_i  = I - 2 û_i û_iᵀ``          (a reflection; never the identity)
- ``ether_plus``  ``y = H̃⁺ W H⁺ x + b``,        ``H⁺_i = I - û_i û_iᵀ + v̂_i v̂_iᵀ``  (identity when ``v = ±u``)
- ``oft``         ``y = W Q x + b``,            ``Q_i  = (I + S_i)(I - S_i)⁻¹``     (Cayley, ``S`` skew-symmetric)
- ``naive``       ``y = W (I + R) x + b``                                        (the paper's unconstrained control)

Activations are row vectors (``x`` is ``(..., d)``), so ``H x`` for a column vector is ``x @ Hᵀ`` here.
``transform(x, ...)`` computes exactly that, blockwise, without forming ``H``; ``dense_matrix`` forms ``H`` for tests;
``fold_weight`` folds the transforms into ``W`` (``H̃ W H``) by calling ``transform`` on the rows / columns of ``W``, so
merging re-uses the forward math instead of re-deriving it. The ``*_per_sample`` / ``*_per_adapter`` forms take
parameters stacked on a leading dimension (one adapter per sample of a batch, or several adapters at once). ``ether_lora_factors`` / ``ether_plus_lora_factors`` write
``fold_weight(W) - W`` exactly as a low-rank product ``B A`` (a LoRA's factors); ``svd_lora_factors`` gives the best
one of a chosen rank for any change.

Parameter shapes (``n`` blocks; ``b = dim / n``):
    ether:       {"u": (n, b)}
    ether_plus:  {"u": (n, b), "v": (n, b)}          per side ("in" on d, "out" on f)
    oft:         {"s": (n, b (b - 1) / 2)}           strictly upper triangle of S
    naive:       {"r": (n, b, b)}
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from .names import METHODS

Params = dict[str, torch.Tensor]

# methods with a second transform on the output side of the layer
OUTPUT_SIDE_METHODS = ("ether_plus",)
_EPS = 1e-12


# --------------------------------------------------------------------------- parameters
def param_shapes(method: str, dim: int, n_blocks: int) -> dict[str, tuple[int, ...]]:
    """Shapes of one side's parameters for a dimension ``dim`` split into ``n_blocks`` blocks."""
    b = dim // n_blocks
    if method == "ether":
        return {"u": (n_blocks, b)}
    if method == "ether_plus":
        return {"u": (n_blocks, b), "v": (n_blocks, b)}
    if method == "oft":
        return {"s": (n_blocks, b * (b - 1) // 2)}
    if method == "naive":
        return {"r": (n_blocks, b, b)}
    raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


def init_params(method: str, dim: int, n_blocks: int, generator: torch.Generator | None = None) -> Params:
    """Initial parameters of one side, in float32 on the CPU.

    ``ether`` starts as a random reflection (kaiming-uniform ``u`` as in the authors' code, bound ``1/sqrt(b)``);
    ``ether_plus`` starts at the identity (random ``u``, ``v = u``); ``oft`` and ``naive`` start at zero (identity).
    """
    shapes = param_shapes(method, dim, n_blocks)
    if method in ("ether", "ether_plus"):
        n, b = shapes["u"]
        bound = 1.0 / math.sqrt(b)
        u = (torch.rand(n, b, generator=generator) * 2 - 1) * bound
        return {"u": u} if method == "ether" else {"u": u, "v": u.clone()}
    return {k: torch.zeros(s) for k, s in shapes.items()}


# --------------------------------------------------------------------------- dense blocks
def _unit(u: torch.Tensor) -> torch.Tensor:
    # (n, b) -> (n, b), each row of unit length
    return u / u.norm(dim=-1, keepdim=True).clamp_min(_EPS)


def skew_from_params(s: torch.Tensor, b: int) -> torch.Tensor:
    """(n, b(b-1)/2) strictly-upper entries -> (n, b, b) skew-symmetric S."""
    n = s.shape[0]
    rows, cols = torch.triu_indices(b, b, offset=1, device=s.device)
    upper = s.new_zeros(n, b, b)
    upper[:, rows, cols] = s
    return upper - upper.transpose(-1, -2)


def _block_size_from_oft(m: int) -> int:
    # m = b (b - 1) / 2  ->  b
    b = int(round((1 + math.sqrt(1 + 8 * m)) / 2))
    if b * (b - 1) // 2 != m:
        raise ValueError(f"oft parameter of length {m} is not b(b-1)/2 for any block size b")
    return b


def dense_blocks(method: str, params: Params) -> torch.Tensor:
    """The ``n`` diagonal blocks ``(n, b, b)`` of the transform ``H`` (column-vector convention)."""
    if method == "ether":
        u = _unit(params["u"])
        eye = torch.eye(u.shape[-1], dtype=u.dtype, device=u.device)
        return eye - 2 * u.unsqueeze(-1) * u.unsqueeze(-2)
    if method == "ether_plus":
        u, v = _unit(params["u"]), _unit(params["v"])
        eye = torch.eye(u.shape[-1], dtype=u.dtype, device=u.device)
        return eye - u.unsqueeze(-1) * u.unsqueeze(-2) + v.unsqueeze(-1) * v.unsqueeze(-2)
    if method == "oft":
        s = params["s"]
        b = _block_size_from_oft(s.shape[-1])
        skew = skew_from_params(s, b)
        eye = torch.eye(b, dtype=s.dtype, device=s.device).expand_as(skew)
        # (I + S)(I - S)^-1 == (I - S)^-1 (I + S): the two factors commute
        return torch.linalg.solve(eye - skew, eye + skew)
    if method == "naive":
        r = params["r"]
        return torch.eye(r.shape[-1], dtype=r.dtype, device=r.device) + r
    raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


def dense_matrix(method: str, params: Params) -> torch.Tensor:
    """The full block-diagonal ``H`` (dim x dim). For tests and small layers only."""
    return torch.block_diag(*dense_blocks(method, params).unbind(0))


# --------------------------------------------------------------------------- activations
def householder(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """ETHER on activations: per block ``x - 2 (x·û) û``. x (..., n*b), u (n, b) -> (..., n*b).  O(N d).

    ``u`` may carry leading dimensions that broadcast against x's, e.g. (B, 1, n, b) for one vector per sample.
    """
    n, b = u.shape[-2:]
    uh = _unit(u).to(x.dtype)
    xb = x.unflatten(-1, (n, b))  # (..., n, b)
    coef = (xb * uh).sum(-1, keepdim=True)  # (..., n, 1)
    return (xb - 2 * coef * uh).flatten(-2)


def ether_plus_map(x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """ETHER+ on activations: per block ``x - (x·û) û + (x·v̂) v̂``. x (..., n*b), u, v (n, b) (or broadcastable
    leading dimensions, as in ``householder``)."""
    n, b = u.shape[-2:]
    uh, vh = _unit(u).to(x.dtype), _unit(v).to(x.dtype)
    xb = x.unflatten(-1, (n, b))  # (..., n, b)
    cu = (xb * uh).sum(-1, keepdim=True)  # (..., n, 1)
    cv = (xb * vh).sum(-1, keepdim=True)  # (..., n, 1)
    return (xb - cu * uh + cv * vh).flatten(-2)


def block_apply(x: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """x (..., n*b), blocks (n, b, b) -> (..., n*b) with each block ``x_i @ B_iᵀ`` (i.e. ``B_i x_i``)."""
    n, b, _ = blocks.shape
    xb = x.unflatten(-1, (n, b))  # (..., n, b)
    return torch.einsum("...nb,ncb->...nc", xb, blocks.to(x.dtype)).flatten(-2)


def transform(x: torch.Tensor, method: str, params: Params, transpose: bool = False) -> torch.Tensor:
    """Apply ``H`` (or ``Hᵀ`` with ``transpose``) to the row vectors of ``x`` (..., dim): returns ``x @ Hᵀ``.

    ``ether`` and ``ether_plus`` are symmetric, so ``transpose`` changes nothing for them.
    """
    if method == "ether":
        return householder(x, params["u"])
    if method == "ether_plus":
        return ether_plus_map(x, params["u"], params["v"])
    blocks = dense_blocks(method, params)  # (n, b, b): b^3 / b^2 work, independent of the number of tokens
    if transpose:
        blocks = blocks.transpose(-1, -2)
    return block_apply(x, blocks)


# --------------------------------------------------------------------------- layers
def adapted_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    method: str,
    params_in: Params,
    params_out: Params | None = None,
) -> torch.Tensor:
    """``y = H̃ W H x + b`` on activations, never forming ``H`` or ``W H``.

    x (..., d), weight (f, d), bias (f,) or None -> (..., f). ``params_out`` only for output-side methods.
    """
    h = transform(x, method, params_in)  # (..., d)
    if params_out is None:
        return F.linear(h, weight, bias)
    y = transform(F.linear(h, weight), method, params_out)  # (..., f): the bias is not transformed
    return y if bias is None else y + bias


def fold_weight(weight: torch.Tensor, method: str, params_in: Params | None,
                params_out: Params | None = None) -> torch.Tensor:
    """The merged weight ``H̃ W H`` (f, d), computed with ``transform`` (the forward math) in float32 or wider.

    Either side may be None (that map is the identity): ``fold_weight(A, m, p_in)`` is ``A H``,
    ``fold_weight(B, m, None, p_out)`` is ``H̃ B``.
    """
    dtype = torch.promote_types(weight.dtype, torch.float32)
    w = weight.to(dtype)
    if params_in is not None:
        # rows of W H are w_j H = (Hᵀ w_jᵀ)ᵀ: the transposed transform on the rows of W
        w = transform(w, method, {k: p.to(dtype) for k, p in params_in.items()}, transpose=True)  # (f, d)
    if params_out is not None:
        # H̃ W = (Wᵀ H̃ᵀ)ᵀ: the plain transform on the rows of Wᵀ
        w = transform(w.t(), method, {k: p.to(dtype) for k, p in params_out.items()}).t()  # (f, d)
    return w.to(weight.dtype)


# --------------------------------------------------------------------------- one adapter per sample
def stack_params(per: list[tuple[Params, Params | None]]) -> tuple[Params, Params | None]:
    """[(p_in, p_out)] of several adapters -> (p_in, p_out) with each tensor stacked on a new leading dimension."""
    p_in = {k: torch.stack([pi[k] for pi, _ in per]) for k in per[0][0]}
    p_out = None if per[0][1] is None else {k: torch.stack([po[k] for _, po in per]) for k in per[0][1]}
    return p_in, p_out


def transform_per_sample(x: torch.Tensor, method: str, params: Params) -> torch.Tensor:
    """x (B, N, dim), params stacked per sample (B, ...) -> (B, N, dim): sample i uses params[:][i].

    ``transform`` with an extra leading batch dimension on the parameters.
    """
    if method == "ether":  # (B, n, b) -> (B, 1, n, b): broadcast over the tokens of each sample
        return householder(x, params["u"][:, None])
    if method == "ether_plus":
        return ether_plus_map(x, params["u"][:, None], params["v"][:, None])
    first = next(iter(params.values()))
    blocks = torch.stack([dense_blocks(method, {k: p[i] for k, p in params.items()})
                          for i in range(first.shape[0])])  # (B, n, b, b)
    n, b = blocks.shape[1], blocks.shape[2]
    xb = x.unflatten(-1, (n, b))  # (B, N, n, b)
    return torch.einsum("sNnj,snkj->sNnk", xb, blocks.to(x.dtype)).flatten(-2)


def adapted_linear_per_sample(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, method: str,
                              p_in: Params, p_out: Params | None, active: torch.Tensor) -> torch.Tensor:
    """``y_i = H̃_i W H_i x_i + b`` for each sample i with ``active[i]``, ``W x_i + b`` otherwise. x (B, N, d),
    params stacked per sample (B, ...), active (B,) bool -> (B, N, f)."""
    keep = active.view(-1, *([1] * (x.dim() - 1)))  # (B, 1, 1)
    h = torch.where(keep, transform_per_sample(x, method, p_in), x)
    if p_out is None:
        return F.linear(h, weight, bias)
    y = F.linear(h, weight)
    y = torch.where(keep, transform_per_sample(y, method, p_out), y)
    return y if bias is None else y + bias


def fold_weight_per_adapter(weight: torch.Tensor, method: str, p_in: Params, p_out: Params | None) -> torch.Tensor:
    """``H̃_a W H_a`` for U adapters at once: weight (f, d), params stacked (U, ...) -> (U, f, d), in weight's dtype.

    ``fold_weight`` (float32 or wider) with the adapters as a leading dimension.
    """
    if method not in ("ether", "ether_plus"):
        first = next(iter(p_in.values()))
        return torch.stack([fold_weight(weight, method, {k: p[i] for k, p in p_in.items()},
                                        None if p_out is None else {k: p[i] for k, p in p_out.items()})
                            for i in range(first.shape[0])])
    dtype = torch.promote_types(weight.dtype, torch.float32)
    w = transform(weight.to(dtype), method, {k: p.to(dtype)[:, None] for k, p in p_in.items()})  # (U, f, d)
    if p_out is not None:  # H̃ W on the rows of Wᵀ, as in fold_weight
        w = transform(w.mT, method, {k: p.to(dtype)[:, None] for k, p in p_out.items()}).mT  # (U, f, d)
    return w.to(weight.dtype)


# --------------------------------------------------------------------------- measurements
def distance_to_identity(method: str, params: Params) -> torch.Tensor:
    """``||H - I||_F`` over all blocks of one side, from the dense blocks (n b² memory)."""
    blocks = dense_blocks(method, params)
    eye = torch.eye(blocks.shape[-1], dtype=blocks.dtype, device=blocks.device)
    return (blocks - eye).flatten().norm()


# --------------------------------------------------------------------------- low-rank form of the merged change
# ``fold_weight(W) - W`` is exactly low rank for the reflection methods: ``B A`` with B (f, r) and A (r, d), the
# factors of a LoRA (``y = (W + B A) x + b``). Call these in float64 for exact factors.
def embed_blocks(u: torch.Tensor) -> torch.Tensor:
    """u (n, b) -> (n, n*b): row i holds u_i in block i, zeros elsewhere (``P_i u_i`` as a row)."""
    n, b = u.shape
    eye = torch.eye(n, dtype=u.dtype, device=u.device)
    return (eye[:, :, None] * u[:, None, :]).reshape(n, n * b)  # [i, j, k] = δ_ij u_ik


def ether_plus_basis(params: Params) -> tuple[torch.Tensor, torch.Tensor]:
    """ETHER+'s ``H⁺ - I = E diag(s) Eᵀ`` as (E (dim, 2n), s (2n,)): E = [û_1..û_n, v̂_1..v̂_n] embedded in their
    blocks, s = [-1]*n + [+1]*n (rank <= 2n)."""
    u, v = _unit(params["u"]), _unit(params["v"])  # (n, b)
    e = torch.cat([embed_blocks(u), embed_blocks(v)]).t()  # (dim, 2n)
    n = u.shape[0]
    s = torch.cat([-torch.ones(n, dtype=e.dtype, device=e.device), torch.ones(n, dtype=e.dtype, device=e.device)])
    return e, s


def ether_lora_factors(weight: torch.Tensor, params_in: Params) -> tuple[torch.Tensor, torch.Tensor]:
    """ETHER: ``W H - W = B A`` with A (n, d) the embedded û_i and B (f, n), column i ``-2 W[:, block i] û_i``.

    ``H - I = -2 Σ_i P_i û_i û_iᵀ P_iᵀ``, so ``W (H - I) = (-2 W Aᵀ) A``: rank n.
    """
    a = embed_blocks(_unit(params_in["u"]))  # (n, d)
    return -2 * weight @ a.t(), a  # (f, n), (n, d)


def ether_plus_lora_factors(weight: torch.Tensor, params_in: Params,
                            params_out: Params | None) -> tuple[torch.Tensor, torch.Tensor]:
    """ETHER+: ``H̃⁺ W H⁺ - W = B A`` with B (f, 4n), A (4n, d) (rank 2n without an output side).

    With ``H⁺ = I + D``, ``H̃⁺ = I + D̃``: ``H̃⁺ W H⁺ - W = W D + D̃ (W H⁺)``, and ``D = E diag(s) Eᵀ``,
    ``D̃ = Ẽ diag(s) Ẽᵀ`` give ``B = [W E diag(s), Ẽ diag(s)]``, ``A = [Eᵀ ; Ẽᵀ W H⁺]``.
    """
    e, s = ether_plus_basis(params_in)  # (d, 2n), (2n,)
    w_e = weight @ e * s  # (f, 2n): W E diag(s)
    if params_out is None:
        return w_e, e.t()
    e_out, s_out = ether_plus_basis(params_out)  # (f, 2n), (2n,)
    w_h = weight + w_e @ e.t()  # (f, d): W H⁺
    return torch.cat([w_e, e_out * s_out], dim=1), torch.cat([e.t(), e_out.t() @ w_h])  # (f, 4n), (4n, d)


def svd_lora_factors(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The best rank-``rank`` ``B A`` of ``delta`` (f, d) by truncated SVD, the singular values split evenly between
    B (f, rank) and A (rank, d) (zero columns / rows past ``min(f, d)``), and its relative error
    ``‖delta - B A‖_F / ‖delta‖_F`` (0 for a zero delta)."""
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    u, sv, vh = torch.linalg.svd(delta, full_matrices=False)  # (f, k), (k,), (k, d)
    k = min(rank, sv.shape[0])
    root = sv[:k].sqrt()
    b, a = delta.new_zeros(delta.shape[0], rank), delta.new_zeros(rank, delta.shape[1])
    b[:, :k], a[:k] = u[:, :k] * root, root[:, None] * vh[:k]
    norm = delta.norm()
    error = float((delta - b @ a).norm() / norm) if norm > 0 else 0.0
    return b, a, error
