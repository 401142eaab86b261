"""The step options of the shared loop: when a CUDA graph is used, tensor learning rates the scheduler fills in place,
loss means read only when logging."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from ether_diffusion.training.loop import LossMeter
from ether_diffusion.training.optim import build_lr_scheduler, lr_on_device
from ether_diffusion.training.setup import use_cuda_graph
from ether_diffusion.typed_config import ConfigError

from .conftest import tiny_config


def _accelerator(device="cuda", processes=1, precision="bf16"):
    return SimpleNamespace(device=torch.device(device), num_processes=processes, mixed_precision=precision)


@pytest.mark.parametrize("change, blocker", [
    (dict(), None),
    (dict(device="cpu"), "a CUDA device"),
    (dict(processes=2), "one process"),
    (dict(precision="fp16"), "mixed_precision other than fp16"),
    (dict(cfg=dict(gradient_accumulation_steps=2)), "gradient_accumulation_steps 1"),
    (dict(cfg=dict(gradient_checkpointing=True)), "gradient_checkpointing off"),
    (dict(cfg=dict(use_8bit_adam=True)), "not use_8bit_adam"),
])
def test_cuda_graph_only_where_safe(tmp_path, change, blocker):
    change = dict(change)
    cfg_changes = change.pop("cfg", {})
    acc = _accelerator(**change)
    assert use_cuda_graph(acc, tiny_config(tmp_path, **cfg_changes)) is (blocker is None)
    assert use_cuda_graph(acc, tiny_config(tmp_path, cuda_graph="off", **cfg_changes)) is False
    if blocker is not None:
        with pytest.raises(ConfigError, match=blocker):
            use_cuda_graph(acc, tiny_config(tmp_path, cuda_graph="on", **cfg_changes))


def test_scheduler_fills_the_tensor_learning_rate_in_place(tmp_path):
    cfg = tiny_config(tmp_path, lr_scheduler="linear", lr_warmup_steps=2, max_train_steps=10, learning_rate=1e-3)
    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.AdamW([p], lr=cfg.learning_rate)
    lr_on_device(opt)
    lr = opt.param_groups[0]["lr"]
    assert torch.is_tensor(lr) and isinstance(opt.param_groups[0]["initial_lr"], float)
    sched = build_lr_scheduler(opt, cfg, 10)
    seen = []
    for _ in range(4):
        seen.append(lr.item())
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] is lr  # the same tensor a captured step reads
    assert seen == pytest.approx([0.0, 5e-4, 1e-3, 1e-3 * 7 / 8])
    assert float(sched.get_last_lr()[0]) == pytest.approx(1e-3 * 6 / 8)

    opt.load_state_dict(opt.state_dict() | {"param_groups": [dict(opt.state_dict()["param_groups"][0], lr=0.5)]})
    lr_on_device(opt)  # a loaded checkpoint's plain value becomes a tensor again
    assert torch.is_tensor(opt.param_groups[0]["lr"]) and opt.param_groups[0]["lr"].item() == 0.5


def test_loss_meter_means_over_the_window():
    meter = LossMeter()
    out = {"loss": torch.tensor(1.0)}
    meter.add(out)
    out["loss"].fill_(3.0)  # a graph overwrites its outputs: the meter must have copied them
    meter.add({"loss": torch.tensor(3.0)})
    assert meter.mean() == {"loss": 2.0}
    meter.add({"loss": torch.tensor(5.0)})
    assert meter.mean() == {"loss": 5.0}
