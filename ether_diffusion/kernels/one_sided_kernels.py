"""Triton kernels of the one-sided (ETHER) step fold, and the finishing kernel both plans share (tables and launches
in ``one_sided``; the two-sided ETHER+ kernels are in ``two_sided_kernels``).

Each program takes one row of a work table: one block (of ``b`` elements, padded to ``BB`` lanes) of up to ``RT``
rows of W of one layer, addressed as ``base pointer + element offset``. ``ALIGN``: the power of two the host proved
to divide every offset, leading dimension and block extent of the launch, so that loads and stores can be
vectorised. Import lazily (``kernels`` does).
"""

import triton
import triton.language as tl

NCOL = 10  # int64 columns of a work table row: x_off x_ld x_st y_off y_ld u_off M b c0 r0


@triton.jit
def _unit(PRM, off, ib, cm, eps):
    u = tl.load(PRM + off + ib, mask=cm, other=0.0).to(tl.float32)  # (BB,)
    return u / tl.maximum(tl.sqrt(tl.sum(u * u, axis=0)), eps)


@triton.jit
def _prologue(TAB, PRM, k, eps, NCOL: tl.constexpr, ALIGN: tl.constexpr, BB: tl.constexpr):
    # one work-table row: offsets moved to the block's first element (carrying the alignment the host proved for
    # this launch), the block's unit vector û (BB,), and the extents
    row = TAB + k * NCOL
    x_off = tl.multiple_of(tl.load(row + 0), ALIGN)
    x_ld = tl.multiple_of(tl.load(row + 1), ALIGN)
    x_st = tl.load(row + 2)
    y_off = tl.multiple_of(tl.load(row + 3), ALIGN)
    y_ld = tl.multiple_of(tl.load(row + 4), ALIGN)
    u_off, M, b = tl.load(row + 5), tl.load(row + 6), tl.load(row + 7)
    c0, r0 = tl.multiple_of(tl.load(row + 8), ALIGN), tl.load(row + 9)
    ib = tl.arange(0, BB)
    uh = _unit(PRM, u_off, ib, ib < b, eps)
    return x_off + c0 * x_st, x_ld, x_st, y_off + c0, y_ld, uh, M, b, r0, ib


@triton.jit
def _tile(r0, i, ib, M, b, x_ld, x_st, y_ld, UNIT: tl.constexpr, ALIGN: tl.constexpr, BM: tl.constexpr):
    # element offsets of one (BM rows, BB elements) tile in X's and in Y's layout, and its mask. Elements are
    # contiguous in Y (and in X when UNIT); the mask along them is written in units of ALIGN so that loads and
    # stores can be vectorised.
    vec = r0 + i + tl.arange(0, BM)
    m = (vec < M)[:, None] & ((ib // ALIGN) < (b // ALIGN))[None, :]
    oy = vec[:, None] * y_ld + ib[None, :]
    if UNIT:
        ox = vec[:, None] * x_ld + ib[None, :]
    else:
        ox = vec[:, None] * x_ld + ib[None, :] * x_st
    return ox, oy, m


@triton.jit
def one_sided_fold_kernel(X, Y, PRM, TAB, su, eps, UNIT: tl.constexpr, ALIGN: tl.constexpr, BM: tl.constexpr,
                          BB: tl.constexpr, RT: tl.constexpr, NCOL: tl.constexpr):
    # y = x + su (x·û) û on rows r0..r0+RT of one block of one layer
    x_off, x_ld, x_st, y_off, y_ld, uh, M, b, r0, ib = _prologue(TAB, PRM, tl.program_id(0), eps, NCOL, ALIGN, BB)
    for i in range(0, RT, BM):
        ox, oy, m = _tile(r0, i, ib, M, b, x_ld, x_st, y_ld, UNIT, ALIGN, BM)
        x = tl.load(X + x_off + ox, mask=m, other=0.0).to(tl.float32)
        y = x + su * tl.sum(x * uh[None, :], axis=1)[:, None] * uh[None, :]
        tl.store(Y + y_off + oy, y.to(Y.dtype.element_ty), mask=m)


@triton.jit
def one_sided_backward_kernel(G, X, P, PRM, TAB, su, eps, UNIT: tl.constexpr, ALIGN: tl.constexpr,
                              BM: tl.constexpr, BB: tl.constexpr, RT: tl.constexpr, NCOL: tl.constexpr):
    # g in the table's y layout, x in its x layout; P[item] = su Σ_rows [(x·û) g + (g·û) x]
    k = tl.program_id(0)
    x_off, x_ld, x_st, g_off, g_ld, uh, M, b, r0, ib = _prologue(TAB, PRM, k, eps, NCOL, ALIGN, BB)
    # per-lane accumulators, summed over the rows once at the end (measured faster than a sum per tile)
    acc = tl.zeros((BM, BB), dtype=tl.float32)
    for i in range(0, RT, BM):
        ox, og, m = _tile(r0, i, ib, M, b, x_ld, x_st, g_ld, UNIT, ALIGN, BM)
        g = tl.load(G + g_off + og, mask=m, other=0.0).to(tl.float32)
        x = tl.load(X + x_off + ox, mask=m, other=0.0).to(tl.float32)
        acc += tl.sum(x * uh[None, :], axis=1)[:, None] * g + tl.sum(g * uh[None, :], axis=1)[:, None] * x
    tl.store(P + k * 2 * BB + ib, su * tl.sum(acc, axis=0), mask=ib < b)


@triton.jit
def finish_kernel(P, PRM, OUT, FT, eps, HAS_V: tl.constexpr, BB: tl.constexpr, RB: tl.constexpr):
    # one (layer, side, block): sum its partials (``cnt`` slots of (u part, v part), 2 BB apart from element
    # ``k0`` of P), then through û = u / ‖u‖ into OUT
    row = FT + tl.program_id(0) * 7
    k0, cnt, u_off, v_off = tl.load(row + 0), tl.load(row + 1), tl.load(row + 2), tl.load(row + 3)
    b, gu_off, gv_off = tl.load(row + 4), tl.load(row + 5), tl.load(row + 6)
    ib = tl.arange(0, BB)
    cm = ib < b
    acc_u = tl.zeros((BB,), dtype=tl.float32)
    acc_v = tl.zeros((BB,), dtype=tl.float32)
    for r in range(0, cnt, RB):
        ks = r + tl.arange(0, RB)
        m = (ks < cnt)[:, None] & cm[None, :]
        base = k0 + ks[:, None] * 2 * BB + ib[None, :]
        acc_u += tl.sum(tl.load(P + base, mask=m, other=0.0), axis=0)
        if HAS_V:
            acc_v += tl.sum(tl.load(P + base + BB, mask=m, other=0.0), axis=0)
    u = tl.load(PRM + u_off + ib, mask=cm, other=0.0).to(tl.float32)
    nu = tl.maximum(tl.sqrt(tl.sum(u * u, axis=0)), eps)
    uh = u / nu
    tl.store(OUT + gu_off + ib, (acc_u - tl.sum(acc_u * uh, axis=0) * uh) / nu, mask=cm)
    if HAS_V:
        v = tl.load(PRM + v_off + ib, mask=cm, other=0.0).to(tl.float32)
        nv = tl.maximum(tl.sqrt(tl.sum(v * v, axis=0)), eps)
        vh = v / nv
        tl.store(OUT + gv_off + ib, (acc_v - tl.sum(acc_v * vh, axis=0) * vh) / nv, mask=cm)
