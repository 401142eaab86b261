"""LPIPS (Zhang et al. 2018, `lpips` package, AlexNet trunk, v0.1 linear heads) computed from cached features.

`lpips.LPIPS.forward(x, y)` runs the trunk on both images of every pair; for real x generated pairs that is
(R x G) trunk passes per subject. Here each image goes through the trunk once (`lpips_features`) and every pair is
scored from the cached unit-normalised activations (`lpips_from_features`) with the package's own heads and the
same arithmetic, so the value equals the package's to float rounding and LPIPS(x, x) is exactly 0.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import lpips
import torch

from eval.hub import torch_hub_file
from eval.random_init import seeded

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision AlexNet_Weights.IMAGENET1K_V1, what lpips loads
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_FILE}"

Features = list[torch.Tensor]  # one (N, C_l, H_l, W_l) unit-normalised activation per trunk layer


def _quiet_lpips(**kwargs) -> lpips.LPIPS:
    """lpips.LPIPS without its prints and torchvision's `pretrained=` deprecation warnings."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return lpips.LPIPS(net="alex", version="0.1", verbose=False, **kwargs)


def _load_alexnet_trunk(model: lpips.LPIPS, state: dict[str, torch.Tensor]) -> None:
    """Copy torchvision AlexNet `features.{i}.*` weights into lpips' sliced trunk (`net.slice{k}.{i}.*`)."""
    targets = {}
    for slice_name, block in model.net.named_children():
        for index, _ in block.named_children():
            targets[index] = slice_name
    mapped = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "features" and parts[1] in targets:
            mapped[f"{targets[parts[1]]}.{parts[1]}.{parts[2]}"] = value
    missing, unexpected = model.net.load_state_dict(mapped, strict=False)
    if missing or unexpected or not mapped:
        raise ValueError(f"AlexNet weights do not fit the LPIPS trunk (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}); pass torchvision's alexnet-owt-7be5be79.pth")


def load_lpips(device: torch.device, backbone: str | None = None, random_init: bool = False,
               seed: int = 0) -> tuple[lpips.LPIPS, dict[str, str]]:
    """LPIPS-alex v0.1: heads from the `lpips` package; trunk = torchvision AlexNet (file, TORCH_HOME or download).

    random_init: random trunk and random heads (`pretrained=False, pnet_rand=True`), seeded.
    """
    if random_init:
        with seeded(seed):
            model = _quiet_lpips(pretrained=False, pnet_rand=True)
            for lin in model.lins:  # learned heads are non-negative; keep that so distances are >= 0
                lin.model[-1].weight.data.abs_()
        info = {"model": "random-init LPIPS (random AlexNet trunk, random heads)"}
    else:
        path = torch_hub_file(ALEXNET_FILE, ALEXNET_URL, backbone, "LPIPS AlexNet trunk", "--lpips-backbone")
        model = _quiet_lpips(pretrained=True, pnet_rand=True)  # heads ship inside the lpips package
        _load_alexnet_trunk(model, torch.load(path, map_location="cpu", weights_only=True))
        info = {"model": "lpips v0.1 net='alex'", "trunk_weights": str(path)}
    info["input"] = "resized to size x size (PIL bilinear), scaled to [-1, 1]"
    return model.to(device).eval(), info


@torch.no_grad()
def lpips_features(model: lpips.LPIPS, x: torch.Tensor) -> Features:
    """(N, 3, H, W) in [-1, 1] -> per-layer unit-normalised trunk activations (as in `LPIPS.forward`)."""
    outs = model.net.forward(model.scaling_layer(x))
    return [lpips.normalize_tensor(o) for o in outs]


@torch.no_grad()
def lpips_from_features(model: lpips.LPIPS, a: Features, b: Features) -> torch.Tensor:
    """Distances of pairs (a[k][i], b[k][i]); `a` may hold one image (broadcast). -> (N,) float32 on CPU."""
    total = 0
    for layer, (fa, fb) in enumerate(zip(a, b, strict=True)):
        diff = (fa - fb) ** 2  # (N, C_l, H_l, W_l)
        total = total + lpips.spatial_average(model.lins[layer](diff), keepdim=True)  # (N, 1, 1, 1)
    return total.reshape(-1).float().cpu()


def lpips_cross(model: lpips.LPIPS, a: Features, b: Features) -> torch.Tensor:
    """(A, B) distances between every image of `a` and every image of `b`."""
    n_a = a[0].shape[0]
    rows = [lpips_from_features(model, [f[i : i + 1] for f in a], b) for i in range(n_a)]
    return torch.stack(rows) if rows else torch.zeros(0, b[0].shape[0])
