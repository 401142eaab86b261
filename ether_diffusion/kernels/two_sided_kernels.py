"""Triton kernels of the two-sided (ETHER+) step fold: W' = H̃ W H in one reduce pass and one write pass, and its
gradients in two read passes, with no W H buffer (tables and launches in ``two_sided``).

Per layer, with blocks j of the d columns (û_j, v̂_j), blocks J of the f rows (ŝ_J, t̂_J), su/sv the coefficients:

    P_r = W_r·û_j, Q_r = W_r·v̂_j                      (row r, block j: complete inside one tile)
    A0 = Σ_{r in J} ŝ_r W_r, C0 = Σ_{r in J} t̂_r W_r   (column sums over the rows of J, per column block)
    A  = ŝᵀ (W H)_J = A0 + su (A0·û) û + sv (A0·v̂) v̂,  C likewise from C0
    W'_r = W_r + su P_r û + sv Q_r v̂ + su ŝ_r A + sv t̂_r C

Backward, from G = dL/dW' (GA = Σ_r ŝ_r G_r, GC = Σ_r t̂_r G_r over the rows of J):

    dL/dû_j = su Σ_J [Σ_r (P_r G_r + (G_r·û) W_r) + su (A0·û) GA + sv (C0·û) GC
                      + su (GA·û) A0 + sv (GC·û) C0]
    dL/dŝ_r = su Σ_j [G_r·A + (W H)_r·GA],  (W H)_r·GA = W_r·GA + su P_r (GA·û) + sv Q_r (GA·v̂)

(v̂ and t̂ alike with sv and C, GC). Each term is either local to one row of one block or linear in a column sum,
so a work item (layer, column block j, row block J, row chunk k) handles R rows of one block tile; the column sums
of the chunks of J meet in small float32 partial rows (K per J, summed by whoever reads them).

Table row (int64, ``NCOL``): w_off w_ld w_st o_off o_ld u_off v_off s_off t_off sJ_off tJ_off B M b cp_off cp0 K
pr_off bbo. ``w_off``/``o_off``: the tile's first element in W (any strides) and in the flat (f, d) buffers;
``s_off``/``t_off``: the chunk's first output-side entries, ``sJ_off``/``tJ_off`` its block's (B entries);
``cp_off``: this chunk's column partials (A part, then C part ``o_ld`` later), ``cp0``: chunk 0's (chunks 2·o_ld
apart); ``pr_off``: this chunk's rows in the row-partial slot of (layer, J, j), whose C half is ``bbo`` later.
"""

import triton
import triton.language as tl

NCOL = 19


@triton.jit
def _item(TAB, k, NCOL: tl.constexpr, ALIGN: tl.constexpr):
    row = TAB + k * NCOL
    w_off = tl.multiple_of(tl.load(row + 0), ALIGN)
    w_ld = tl.multiple_of(tl.load(row + 1), ALIGN)
    w_st = tl.load(row + 2)
    o_off = tl.multiple_of(tl.load(row + 3), ALIGN)
    o_ld = tl.multiple_of(tl.load(row + 4), ALIGN)
    return w_off, w_ld, w_st, o_off, o_ld


@triton.jit
def _vectors(TAB, PRM, k, ib, b, eps, NCOL: tl.constexpr):
    # the input side's unit vectors of this item's column block, (BB,) each
    row = TAB + k * NCOL
    cm = ib < b
    u = tl.load(PRM + tl.load(row + 5) + ib, mask=cm, other=0.0).to(tl.float32)
    v = tl.load(PRM + tl.load(row + 6) + ib, mask=cm, other=0.0).to(tl.float32)
    uh = u / tl.maximum(tl.sqrt(tl.sum(u * u, axis=0)), eps)
    vh = v / tl.maximum(tl.sqrt(tl.sum(v * v, axis=0)), eps)
    return uh, vh


@triton.jit
def _norm(PRM, off, n, eps):
    # ‖PRM[off : off + n]‖, clamped below by eps
    acc = tl.zeros((128,), dtype=tl.float32)
    for i in range(0, n, 128):
        r = i + tl.arange(0, 128)
        x = tl.load(PRM + off + r, mask=r < n, other=0.0).to(tl.float32)
        acc += x * x
    return tl.maximum(tl.sqrt(tl.sum(acc, axis=0)), eps)


@triton.jit
def _row_scales(TAB, PRM, k, eps, NCOL: tl.constexpr):
    # output side: the chunk's first entries, and 1/‖ŝ_J‖, 1/‖t̂_J‖ of its row block
    row = TAB + k * NCOL
    s_off, t_off = tl.load(row + 7), tl.load(row + 8)
    sJ, tJ, B = tl.load(row + 9), tl.load(row + 10), tl.load(row + 11)
    return s_off, t_off, 1.0 / _norm(PRM, sJ, B, eps), 1.0 / _norm(PRM, tJ, B, eps)


@triton.jit
def _colsum(CP, cp0, o_ld, K, ib, cm):
    # a column block's complete sums over its row block: the K chunk partials (A part, C part), (BB,) each
    a = tl.zeros(ib.shape, dtype=tl.float32)
    c = tl.zeros(ib.shape, dtype=tl.float32)
    for kk in range(0, K):
        base = CP + cp0 + kk * 2 * o_ld
        a += tl.load(base + ib, mask=cm, other=0.0)
        c += tl.load(base + o_ld + ib, mask=cm, other=0.0)
    return a, c


@triton.jit
def _tile(i, ib, M, b, w_ld, w_st, o_ld, UNIT: tl.constexpr, ALIGN: tl.constexpr, BM: tl.constexpr):
    # rows i..i+BM of the chunk: offsets in W and in the flat buffers, the mask, the row indices and their mask
    r = i + tl.arange(0, BM)
    rm = r < M
    m = rm[:, None] & ((ib // ALIGN) < (b // ALIGN))[None, :]
    if UNIT:
        ow = r[:, None] * w_ld + ib[None, :]
    else:
        ow = r[:, None] * w_ld + ib[None, :] * w_st
    oo = r[:, None] * o_ld + ib[None, :]
    return ow, oo, m, r, rm


@triton.jit
def two_sided_reduce_kernel(W, CP, PRM, TAB, eps, UNIT: tl.constexpr, ALIGN: tl.constexpr, BM: tl.constexpr,
                            BB: tl.constexpr, NCOL: tl.constexpr):
    # forward, pass 1: this chunk's parts of A0 = Σ ŝ_r W_r and C0 = Σ t̂_r W_r
    k = tl.program_id(0)
    w_off, w_ld, w_st, o_off, o_ld = _item(TAB, k, NCOL, ALIGN)
    row = TAB + k * NCOL
    M, b, cp_off = tl.load(row + 12), tl.load(row + 13), tl.load(row + 14)
    s_off, t_off, rs, rt = _row_scales(TAB, PRM, k, eps, NCOL)
    ib = tl.arange(0, BB)
    acc_a = tl.zeros((BM, BB), dtype=tl.float32)
    acc_c = tl.zeros((BM, BB), dtype=tl.float32)
    for i in range(0, M, BM):
        ow, oo, m, r, rm = _tile(i, ib, M, b, w_ld, w_st, o_ld, UNIT, ALIGN, BM)
        w = tl.load(W + w_off + ow, mask=m, other=0.0).to(tl.float32)
        s = tl.load(PRM + s_off + r, mask=rm, other=0.0).to(tl.float32) * rs
        t = tl.load(PRM + t_off + r, mask=rm, other=0.0).to(tl.float32) * rt
        acc_a += s[:, None] * w
        acc_c += t[:, None] * w
    cm = ib < b
    tl.store(CP + cp_off + ib, tl.sum(acc_a, axis=0), mask=cm)
    tl.store(CP + cp_off + o_ld + ib, tl.sum(acc_c, axis=0), mask=cm)


@triton.jit
def two_sided_fold_kernel(W, Y, CP, PRM, TAB, su, sv, eps, UNIT: tl.constexpr, ALIGN: tl.constexpr,
                          BM: tl.constexpr, BB: tl.constexpr, NCOL: tl.constexpr):
    # forward, pass 2: W'_r = W_r + su P_r û + sv Q_r v̂ + su ŝ_r A + sv t̂_r C for the chunk's rows
    k = tl.program_id(0)
    w_off, w_ld, w_st, o_off, o_ld = _item(TAB, k, NCOL, ALIGN)
    row = TAB + k * NCOL
    M, b, cp0, K = tl.load(row + 12), tl.load(row + 13), tl.load(row + 15), tl.load(row + 16)
    s_off, t_off, rs, rt = _row_scales(TAB, PRM, k, eps, NCOL)
    ib = tl.arange(0, BB)
    cm = ib < b
    uh, vh = _vectors(TAB, PRM, k, ib, b, eps, NCOL)
    a0, c0 = _colsum(CP, cp0, o_ld, K, ib, cm)
    a = a0 + su * tl.sum(a0 * uh, axis=0) * uh + sv * tl.sum(a0 * vh, axis=0) * vh
    c = c0 + su * tl.sum(c0 * uh, axis=0) * uh + sv * tl.sum(c0 * vh, axis=0) * vh
    for i in range(0, M, BM):
        ow, oo, m, r, rm = _tile(i, ib, M, b, w_ld, w_st, o_ld, UNIT, ALIGN, BM)
        w = tl.load(W + w_off + ow, mask=m, other=0.0).to(tl.float32)
        s = tl.load(PRM + s_off + r, mask=rm, other=0.0).to(tl.float32) * rs
        t = tl.load(PRM + t_off + r, mask=rm, other=0.0).to(tl.float32) * rt
        p = tl.sum(w * uh[None, :], axis=1)
        q = tl.sum(w * vh[None, :], axis=1)
        y = (w + (su * p)[:, None] * uh[None, :] + (sv * q)[:, None] * vh[None, :]
             + (su * s)[:, None] * a[None, :] + (sv * t)[:, None] * c[None, :])
        tl.store(Y + o_off + oo, y.to(Y.dtype.element_ty), mask=m)


@triton.jit
def two_sided_backward_kernel(G, W, CP, GP, PART, RP, PRM, TAB, su, sv, eps, UNIT: tl.constexpr,
                              ALIGN: tl.constexpr, BM: tl.constexpr, BB: tl.constexpr, NCOL: tl.constexpr):
    # backward, pass 1: this chunk's parts of GA, GC (into GP), its rows' su G_r·A and sv G_r·C (into RP), and its
    # input-side partial gradients (into PART[item] = (su ..., sv ...), summed by finish_kernel)
    k = tl.program_id(0)
    w_off, w_ld, w_st, o_off, o_ld = _item(TAB, k, NCOL, ALIGN)
    row = TAB + k * NCOL
    M, b, cp_off = tl.load(row + 12), tl.load(row + 13), tl.load(row + 14)
    cp0, K, pr_off, bbo = tl.load(row + 15), tl.load(row + 16), tl.load(row + 17), tl.load(row + 18)
    s_off, t_off, rs, rt = _row_scales(TAB, PRM, k, eps, NCOL)
    ib = tl.arange(0, BB)
    cm = ib < b
    uh, vh = _vectors(TAB, PRM, k, ib, b, eps, NCOL)
    a0, c0 = _colsum(CP, cp0, o_ld, K, ib, cm)
    sp, sq = tl.sum(a0 * uh, axis=0), tl.sum(a0 * vh, axis=0)
    tp, tq = tl.sum(c0 * uh, axis=0), tl.sum(c0 * vh, axis=0)
    a = a0 + su * sp * uh + sv * sq * vh
    c = c0 + su * tp * uh + sv * tq * vh
    acc_ga = tl.zeros((BM, BB), dtype=tl.float32)
    acc_gc = tl.zeros((BM, BB), dtype=tl.float32)
    acc_u = tl.zeros((BM, BB), dtype=tl.float32)
    acc_v = tl.zeros((BM, BB), dtype=tl.float32)
    for i in range(0, M, BM):
        ow, oo, m, r, rm = _tile(i, ib, M, b, w_ld, w_st, o_ld, UNIT, ALIGN, BM)
        w = tl.load(W + w_off + ow, mask=m, other=0.0).to(tl.float32)
        g = tl.load(G + o_off + oo, mask=m, other=0.0).to(tl.float32)
        s = tl.load(PRM + s_off + r, mask=rm, other=0.0).to(tl.float32) * rs
        t = tl.load(PRM + t_off + r, mask=rm, other=0.0).to(tl.float32) * rt
        p = tl.sum(w * uh[None, :], axis=1)
        q = tl.sum(w * vh[None, :], axis=1)
        gu = tl.sum(g * uh[None, :], axis=1)
        gv = tl.sum(g * vh[None, :], axis=1)
        acc_ga += s[:, None] * g
        acc_gc += t[:, None] * g
        acc_u += p[:, None] * g + gu[:, None] * w
        acc_v += q[:, None] * g + gv[:, None] * w
        tl.store(RP + pr_off + r, su * tl.sum(g * a[None, :], axis=1), mask=rm)
        tl.store(RP + pr_off + bbo + r, sv * tl.sum(g * c[None, :], axis=1), mask=rm)
    ga = tl.sum(acc_ga, axis=0)
    gc = tl.sum(acc_gc, axis=0)
    tl.store(GP + cp_off + ib, ga, mask=cm)
    tl.store(GP + cp_off + o_ld + ib, gc, mask=cm)
    du = (tl.sum(acc_u, axis=0) + su * sp * ga + sv * tp * gc
          + su * tl.sum(ga * uh, axis=0) * a0 + sv * tl.sum(gc * uh, axis=0) * c0)
    dv = (tl.sum(acc_v, axis=0) + su * sq * ga + sv * tq * gc
          + su * tl.sum(ga * vh, axis=0) * a0 + sv * tl.sum(gc * vh, axis=0) * c0)
    tl.store(PART + k * 2 * BB + ib, su * du, mask=cm)
    tl.store(PART + k * 2 * BB + BB + ib, sv * dv, mask=cm)


@triton.jit
def two_sided_backward_rows_kernel(W, GP, RP, PRM, TAB, su, sv, eps, UNIT: tl.constexpr, ALIGN: tl.constexpr,
                                   BM: tl.constexpr, BB: tl.constexpr, NCOL: tl.constexpr):
    # backward, pass 2 (GA, GC complete): adds su (W H)_r·GA and sv (W H)_r·GC to the chunk's rows in RP
    k = tl.program_id(0)
    w_off, w_ld, w_st, o_off, o_ld = _item(TAB, k, NCOL, ALIGN)
    row = TAB + k * NCOL
    M, b, cp0, K = tl.load(row + 12), tl.load(row + 13), tl.load(row + 15), tl.load(row + 16)
    pr_off, bbo = tl.load(row + 17), tl.load(row + 18)
    ib = tl.arange(0, BB)
    cm = ib < b
    uh, vh = _vectors(TAB, PRM, k, ib, b, eps, NCOL)
    ga, gc = _colsum(GP, cp0, o_ld, K, ib, cm)
    gau, gav = tl.sum(ga * uh, axis=0), tl.sum(ga * vh, axis=0)
    gcu, gcv = tl.sum(gc * uh, axis=0), tl.sum(gc * vh, axis=0)
    for i in range(0, M, BM):
        ow, oo, m, r, rm = _tile(i, ib, M, b, w_ld, w_st, o_ld, UNIT, ALIGN, BM)
        w = tl.load(W + w_off + ow, mask=m, other=0.0).to(tl.float32)
        p = tl.sum(w * uh[None, :], axis=1)
        q = tl.sum(w * vh[None, :], axis=1)
        ra = tl.sum(w * ga[None, :], axis=1) + su * p * gau + sv * q * gav
        rc = tl.sum(w * gc[None, :], axis=1) + su * p * gcu + sv * q * gcv
        tl.store(RP + pr_off + r, tl.load(RP + pr_off + r, mask=rm, other=0.0) + su * ra, mask=rm)
        tl.store(RP + pr_off + bbo + r, tl.load(RP + pr_off + bbo + r, mask=rm, other=0.0) + sv * rc, mask=rm)
