"""The one-sided (ETHER) plan of the step fold: a few kernel launches fold the maps of every adapted layer of a
model into its weight.

Why: with the frozen model's GPU work split over ~2,000 small kernels, an eager SD 1.5 training step is bound by the
host issuing them, not by the GPU. Any per-layer adapter work costs launches (3 per layer for the activation form,
``act_form``: 128 layers -> ~400 launches + autograd nodes). Here a training step costs, for all layers together, a few
launches per padded block width (3 widths on SD 1.5 at n = 4: blocks of 80, 160/192 and 320 pad to 128, 256, 512):

    forward:  W'_l = H̃_l W_l H_l for every layer l into one flat buffer, then each layer runs the frozen model's
              own y = x W'_lᵀ + b
    backward: each layer's linear also returns dL/dW'_l (one GEMM, f x d x tokens, in the same autograd node)
              then passes over (dL/dW', W) and a finishing pass give every layer's dL/du (and dL/dv)

ETHER (one side, ``OneSidedPlan`` here): one map pass forward, one pass + finish backward. ETHER+ (two sides,
``two_sided.TwoSidedPlan``): a column-sum pass and a write pass forward, two passes + finishes backward, never
forming W H. The work is O(Σ f d) (~93M weights for SD 1.5's attention) per step, independent of batch and
resolution. When W' is folded (once per forward of the model, shared by every layer): ``step_fold``.

Tables: every kernel reads a work table of int64 rows (one per layer x block x chunk of rows); tensors are
addressed as ``base pointer + element offset``, so one launch reaches every layer's separate weight tensor. Tiles
are read along W's contiguous rows with alignment hints the host proves per launch (``ALIGN``). H200, SD 1.5,
bs 4, n = 4: the ether fold takes 0.13 ms and its backward pass 0.34 ms per step.
"""

from __future__ import annotations

import torch
import triton

from .layout import Layout, finish, pow2_dividing, work_table
from .one_sided_kernels import NCOL, one_sided_backward_kernel, one_sided_fold_kernel
from .triton_reflect import EPS


# --------------------------------------------------------------------------- one side (ETHER)
class OneSidedLaunch:
    """One kernel launch of the one-sided map: the work items whose blocks pad to the same width ``BB``.

    Sizing per class (instead of one width for every layer) keeps lanes busy: with n = 4 on SD 1.5, blocks of 80,
    160, 192 and 320 pad to 128, 256, 256 and 512 rather than all to 512.
    """

    def __init__(self, rows: list, fin: list, bb: int, device):
        self.bb = bb
        self.unit = all(r[2] == 1 for r in rows)
        # offsets, leading dims, block start, block extent
        self.align = pow2_dividing(r[c] for r in rows for c in (0, 1, 3, 4, 7, 8)) if self.unit else 1
        self.rt = rows_per_item(bb)  # rows per work item, as OneSidedPlan cut them
        self.bm = min(self.rt, max(1, 4096 // bb))
        # H200 sweep (SD 1.5, n = 4): 4 warps on 4096-element tiles ran the backward in 0.31 ms against 0.46 with 8
        self.warps = 4 if bb * self.bm <= 4096 else 8
        self.tab, self.fin, self.items = work_table(rows, NCOL, device), work_table(fin, 7, device), len(rows)


def rows_per_item(bb: int) -> int:
    """Rows of W per work item for blocks padded to ``bb`` lanes: about 16K elements per program (8..256 rows)."""
    return int(min(256, max(8, 16384 // bb)))


class OneSidedPlan(Layout):
    """ETHER: W' = W H, every layer's rows mapped block by block (H acts on W's rows: W H = (H Wᵀ)ᵀ)."""

    def __init__(self, weights: list[torch.Tensor], prm: list[tuple], n: int):
        super().__init__(weights, prm)
        classes: dict[int, tuple[list, list]] = {}  # padded block width -> (table rows, finish rows)
        for li, ((f, d), w, (u, *_)) in enumerate(zip(self.shapes, weights, prm)):
            b = d // n
            bb = triton.next_power_of_2(b)
            rows, fin = classes.setdefault(bb, ([], []))
            rt = rows_per_item(bb)
            for j in range(n):
                k0 = len(rows)
                for r0 in range(0, f, rt):
                    rows.append([self.wo[li], w.stride(0), w.stride(1), int(self.woff[li]), d,
                                 self.po(u) + j * b, f, b, j * b, r0])
                fin.append([k0 * 2 * bb, len(rows) - k0, self.po(u) + j * b, 0, b, self.gof[(li, 0)] + j * b, 0])
        self.launches = [OneSidedLaunch(r, f, bb, self.device) for bb, (r, f) in sorted(classes.items())]

    def fold(self, dtype: torch.dtype, su: float, sv: float) -> tuple[torch.Tensor, tuple]:
        flat = torch.empty(self.total, device=self.device, dtype=dtype)
        for L in self.launches:
            one_sided_fold_kernel[(L.items,)](self.wbase, flat, self.pbase, L.tab, su, EPS, UNIT=L.unit,
                                              ALIGN=L.align, BM=L.bm, BB=L.bb, RT=L.rt, NCOL=NCOL, num_warps=L.warps)
        return flat, ()

    def backward(self, g: torch.Tensor, saved: tuple, su: float, sv: float) -> torch.Tensor:
        out = torch.empty(self.grad_total, device=self.device, dtype=torch.float32)
        for L in self.launches:
            part = torch.empty((L.items, 2, L.bb), device=self.device, dtype=torch.float32)
            one_sided_backward_kernel[(L.items,)](g, self.wbase, part, self.pbase, L.tab, su, EPS, UNIT=L.unit,
                                                  ALIGN=L.align, BM=L.bm, BB=L.bb, RT=L.rt, NCOL=NCOL,
                                                  num_warps=L.warps)
            finish(part, self.pbase, out, L.fin, L.bb, False)
        return out
