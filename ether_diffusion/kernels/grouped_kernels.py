"""Triton kernels of the step-fold form (tables, launches and autograd in ``grouped``).

Each program takes one row of a work table: one block (of ``b`` elements, padded to ``BB`` lanes) of up to ``RT``
vectors of one layer, addressed as ``base pointer + element offset``. A vector is a row of W (input side) or a
column of W1 = W H (output side, ``TRANS``: the tile is read as (block elements, vectors) so that loads run along
W1's contiguous rows). ``ALIGN``: the power of two the host proved to divide every offset, leading dimension and
contiguous extent of the launch, so that loads and stores can be vectorised. Import lazily (``kernels`` does).
"""

import triton
import triton.language as tl

NCOL = 11  # int64 columns of a work table row: x_off x_ld x_st y_off y_ld u_off v_off M b c0 r0


@triton.jit
def _unit(PRM, off, ib, cm, eps):
    u = tl.load(PRM + off + ib, mask=cm, other=0.0).to(tl.float32)  # (BB,)
    return u / tl.maximum(tl.sqrt(tl.sum(u * u, axis=0)), eps)


@triton.jit
def _item(TAB, k, NCOL: tl.constexpr, ALIGN: tl.constexpr):
    # one work-table row; offsets and leading dims carry the alignment the host proved for this launch
    row = TAB + k * NCOL
    x_off = tl.multiple_of(tl.load(row + 0), ALIGN)
    x_ld = tl.multiple_of(tl.load(row + 1), ALIGN)
    x_st = tl.load(row + 2)
    y_off = tl.multiple_of(tl.load(row + 3), ALIGN)
    y_ld = tl.multiple_of(tl.load(row + 4), ALIGN)
    u_off, v_off = tl.load(row + 5), tl.load(row + 6)
    M, b = tl.load(row + 7), tl.load(row + 8)
    c0, r0 = tl.multiple_of(tl.load(row + 9), ALIGN), tl.load(row + 10)
    return x_off, x_ld, x_st, y_off, y_ld, u_off, v_off, M, b, c0, r0


@triton.jit
def _tile(r0, i, ib, M, b, x_ld, x_st, y_ld, TRANS: tl.constexpr, UNIT: tl.constexpr, ALIGN: tl.constexpr,
          BM: tl.constexpr):
    # element offsets of one tile in X's and in Y's layout, and its mask. Not TRANS: (BM vectors, BB elements),
    # elements contiguous in Y (and in X when UNIT). TRANS: (BB elements, BM vectors), vectors contiguous in both.
    # Masks on a contiguous axis are written in units of ALIGN so that loads and stores can be vectorised.
    vec = r0 + i + tl.arange(0, BM)
    if TRANS:
        m = (ib < b)[:, None] & ((vec // ALIGN) < (M // ALIGN))[None, :]
        ox = ib[:, None] * x_ld + vec[None, :]
        oy = ib[:, None] * y_ld + vec[None, :]
    else:
        m = (vec < M)[:, None] & ((ib // ALIGN) < (b // ALIGN))[None, :]
        oy = vec[:, None] * y_ld + ib[None, :]
        if UNIT:
            ox = vec[:, None] * x_ld + ib[None, :]
        else:
            ox = vec[:, None] * x_ld + ib[None, :] * x_st
    return ox, oy, m


@triton.jit
def _dot(x, w, TRANS: tl.constexpr):
    # x·w for every vector of the tile, broadcast back along its elements
    if TRANS:
        r = tl.sum(x * w, axis=0)[None, :]
    else:
        r = tl.sum(x * w, axis=1)[:, None]
    return r


@triton.jit
def _tile_zeros(TRANS: tl.constexpr, BM: tl.constexpr, BB: tl.constexpr):
    if TRANS:
        z = tl.zeros((BB, BM), dtype=tl.float32)
    else:
        z = tl.zeros((BM, BB), dtype=tl.float32)
    return z


@triton.jit
def _sum_vectors(t, TRANS: tl.constexpr):
    # (tile) -> (BB,): summed over the tile's vectors
    if TRANS:
        r = tl.sum(t, axis=1)
    else:
        r = tl.sum(t, axis=0)
    return r


@triton.jit
def _start(x_off, y_off, x_ld, x_st, y_ld, c0, uh, vh, TRANS: tl.constexpr):
    # move the offsets to the block's first element; shape the unit vectors to broadcast along the tile
    if TRANS:
        x0 = x_off + c0 * x_ld
        y0 = y_off + c0 * y_ld
        u2 = uh[:, None]
        v2 = vh[:, None]
    else:
        x0 = x_off + c0 * x_st
        y0 = y_off + c0
        u2 = uh[None, :]
        v2 = vh[None, :]
    return x0, y0, u2, v2


@triton.jit
def gmap_kernel(X, Y, PRM, TAB, su, sv, eps, HAS_V: tl.constexpr, TRANS: tl.constexpr, UNIT: tl.constexpr,
                 ALIGN: tl.constexpr, BM: tl.constexpr, BB: tl.constexpr, RT: tl.constexpr, NCOL: tl.constexpr):
    # y = x + su (x·û) û + sv (x·v̂) v̂ on vectors r0..r0+RT of one block of one layer
    x_off, x_ld, x_st, y_off, y_ld, u_off, v_off, M, b, c0, r0 = _item(TAB, tl.program_id(0), NCOL, ALIGN)
    ib = tl.arange(0, BB)
    cm = ib < b
    uh = _unit(PRM, u_off, ib, cm, eps)
    vh = uh
    if HAS_V:
        vh = _unit(PRM, v_off, ib, cm, eps)
    x_off, y_off, uh, vh = _start(x_off, y_off, x_ld, x_st, y_ld, c0, uh, vh, TRANS)
    for i in range(0, RT, BM):
        ox, oy, m = _tile(r0, i, ib, M, b, x_ld, x_st, y_ld, TRANS, UNIT, ALIGN, BM)
        x = tl.load(X + x_off + ox, mask=m, other=0.0).to(tl.float32)
        y = x + su * _dot(x, uh, TRANS) * uh
        if HAS_V:
            y += sv * _dot(x, vh, TRANS) * vh
        tl.store(Y + y_off + oy, y.to(Y.dtype.element_ty), mask=m)


@triton.jit
def gmap_backward_kernel(G, X, DX, P, PRM, TAB, su, sv, eps, HAS_V: tl.constexpr, WRITE_DX: tl.constexpr,
                          TRANS: tl.constexpr, UNIT: tl.constexpr, ALIGN: tl.constexpr, BM: tl.constexpr,
                          BB: tl.constexpr, RT: tl.constexpr, NCOL: tl.constexpr):
    # g (and dx) in the table's y layout, x in its x layout; P[item] = (su Σ[(x·û)g + (g·û)x], same for v)
    k = tl.program_id(0)
    x_off, x_ld, x_st, g_off, g_ld, u_off, v_off, M, b, c0, r0 = _item(TAB, k, NCOL, ALIGN)
    ib = tl.arange(0, BB)
    cm = ib < b
    uh = _unit(PRM, u_off, ib, cm, eps)
    vh = uh
    if HAS_V:
        vh = _unit(PRM, v_off, ib, cm, eps)
    x_off, g_off, uh, vh = _start(x_off, g_off, x_ld, x_st, g_ld, c0, uh, vh, TRANS)
    # per-lane accumulators, summed over the vectors once at the end (measured faster than a sum per tile)
    acc_u = _tile_zeros(TRANS, BM, BB)
    acc_v = _tile_zeros(TRANS, BM, BB)
    for i in range(0, RT, BM):
        ox, og, m = _tile(r0, i, ib, M, b, x_ld, x_st, g_ld, TRANS, UNIT, ALIGN, BM)
        g = tl.load(G + g_off + og, mask=m, other=0.0).to(tl.float32)
        x = tl.load(X + x_off + ox, mask=m, other=0.0).to(tl.float32)
        gu = _dot(g, uh, TRANS)
        acc_u += _dot(x, uh, TRANS) * g + gu * x
        dx = g + su * gu * uh
        if HAS_V:
            gv = _dot(g, vh, TRANS)
            acc_v += _dot(x, vh, TRANS) * g + gv * x
            dx += sv * gv * vh
        if WRITE_DX:
            tl.store(DX + g_off + og, dx.to(DX.dtype.element_ty), mask=m)
    tl.store(P + k * 2 * BB + ib, su * _sum_vectors(acc_u, TRANS), mask=cm)
    if HAS_V:
        tl.store(P + k * 2 * BB + BB + ib, sv * _sum_vectors(acc_v, TRANS), mask=cm)


@triton.jit
def gfinish_kernel(P, PRM, OUT, FT, eps, HAS_V: tl.constexpr, BB: tl.constexpr, RB: tl.constexpr):
    # one (layer, side, block): sum its items' partials, then through û = u / ‖u‖ into OUT
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
        base = (k0 + ks)[:, None] * 2 * BB + ib[None, :]
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
