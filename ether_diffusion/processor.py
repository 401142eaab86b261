"""The attention processor: owns the adapter parameters of one `Attention`, calls `functional` for the math.

Follows the contract of diffusers' `AttnProcessor2_0` (diffusers 0.42, `models/attention_processor.py`): same
reshapes, masks, norms and residual; attention itself is PyTorch SDPA, or xformers when asked for.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import functional as Fn
from .functional import OUTPUT_SIDE_METHODS
from .kernels import _compiling, adapted_linear
from .multi import PerSampleProjector

DEFAULT_ADAPTER = "default"


def projection_key(projection: str) -> str:
    """'to_out.0' -> 'to_out_0' (module names cannot hold dots)."""
    return projection.replace(".", "_")


def get_projection(attn: nn.Module, projection: str) -> nn.Linear:
    return attn.to_out[0] if projection == "to_out.0" else getattr(attn, projection)


class ProjectionAdapter(nn.Module):
    """Parameters of one adapted projection: an input-side set and, for ETHER+, an output-side set."""

    def __init__(self, method: str, in_features: int, out_features: int, n_blocks: int,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.method = method
        self.p_in = nn.ParameterDict(
            {k: nn.Parameter(t) for k, t in Fn.init_params(method, in_features, n_blocks, generator).items()})
        self.p_out = None
        if method in OUTPUT_SIDE_METHODS:
            self.p_out = nn.ParameterDict(
                {k: nn.Parameter(t) for k, t in Fn.init_params(method, out_features, n_blocks, generator).items()})

    def params(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        # the registered parameters themselves (a plain dict copy: this runs for every projection call)
        p_in = dict(self.p_in._parameters)
        return p_in, (dict(self.p_out._parameters) if self.p_out is not None else None)


class EtherAttnProcessor(nn.Module):
    """An `nn.Module` attention processor holding one or more named adapters for the projections of its layer.

    ``shapes`` maps projection names ('to_q', 'to_k', 'to_v', 'to_out.0') to ``(out_features, in_features)``.
    """

    impl = "auto"  # how projections are computed: see ether_diffusion.kernels (fused Triton kernels on CUDA)
    _ether_step = None  # the model's StepFold, shared by its processors (kernels.attach)
    mixed_form = "fold"  # how a mixed-adapter batch is computed at inference: "fold" or "act" (ether_diffusion.multi)

    def __init__(self, method: str, n_blocks: int, shapes: dict[str, tuple[int, int]],
                 generator: torch.Generator | None = None, attention: str = "sdpa"):
        super().__init__()
        self.method = method
        self.n_blocks = n_blocks
        self.shapes = dict(shapes)
        self.attention = attention
        self.adapters = nn.ModuleDict()
        self.active = DEFAULT_ADAPTER
        self._lookup: dict = {}  # (adapter name, projection) -> (its group, its ProjectionAdapter or None)
        self.add_adapter(DEFAULT_ADAPTER, generator)

    def add_adapter(self, name: str, generator: torch.Generator | None = None) -> None:
        self.adapters[name] = nn.ModuleDict({
            projection_key(p): ProjectionAdapter(self.method, d, f, self.n_blocks, generator)
            for p, (f, d) in self.shapes.items()
        })

    def adapter(self, projection: str, name: str | None = None) -> ProjectionAdapter | None:
        name = name or self.active
        # no cache while compiling: a dict filled during the first compiled step would make torch.compile retrace
        # the whole model on the second
        cached = not _compiling()
        if cached:
            hit = self._lookup.get((name, projection))
            if hit is not None and hit[0] is self.adapters._modules.get(name):  # valid while the name holds that group
                return hit[1]
        group = self.adapters[name]  # KeyError for an unknown name
        key = projection_key(projection)
        found = group[key] if key in group else None
        if cached:
            self._lookup[(name, projection)] = (group, found)
        return found

    # ------------------------------------------------------------------ projections
    def project(self, attn: nn.Module, projection: str, x: torch.Tensor) -> torch.Tensor:
        linear = get_projection(attn, projection)
        adapter = self.adapter(projection)
        if adapter is None:
            return linear(x)
        step, impl = self._ether_step, self.impl
        if step is not None and impl in ("auto", "step"):  # the whole model's weights folded at once
            y = step.linear(self, projection, linear, x)
            if y is not None:
                return y
        if impl == "step":
            raise RuntimeError("impl='step' needs a model prepared by apply_ether with CUDA tensors and triton and a "
                               "frozen base weight (under torch.compile: the model compiled whole); use impl='auto'")
        p_in, p_out = adapter.params()
        return adapted_linear(x, linear.weight, linear.bias, self.method, p_in, p_out, impl=impl)

    def project_many(self, attn: nn.Module, projections: tuple[str, ...], x: torch.Tensor) -> list[torch.Tensor]:
        """[project(p, x) for p in projections]: one GEMM where the model's step fold holds their folded weights
        side by side (``kernels.step``: q, k, v of self-attention, k, v of cross-attention)."""
        step = self._ether_step
        if step is not None and self.impl in ("auto", "step"):
            ys = step.linear_many(self, projections, x)
            if ys is not None:
                return ys
        return [self.project(attn, p, x) for p in projections]

    # ------------------------------------------------------------------ attention
    def _attend(self, attn, query, key, value, attention_mask, batch_size):
        head_dim = key.shape[-1] // attn.heads
        # (B, N, H*D) -> (B, H, N, D)
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if self.attention == "xformers":
            import xformers.ops as xops

            # xformers takes (B, N, H, D) and an additive bias broadcast to (B, H, Nq, Nk)
            bias = None
            if attention_mask is not None:
                bias = attention_mask.expand(-1, attn.heads, query.shape[2], -1)
            out = xops.memory_efficient_attention(
                query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attn_bias=bias,
                scale=1.0 / math.sqrt(head_dim)).transpose(1, 2)
        else:
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                                 is_causal=False)
        # (B, H, N, D) -> (B, N, H*D)
        return out.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)

    def forward(self, attn: nn.Module, hidden_states: torch.Tensor,
                encoder_hidden_states: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                temb: torch.Tensor | None = None, ether_adapters: list[str | None] | None = None,
                **kwargs) -> torch.Tensor:
        """diffusers' attention with adapted projections; ``ether_adapters`` picks an adapter per sample."""
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)  # (B, HW, C)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        if ether_adapters is None:
            project, many = self.project, self.project_many
        else:
            project = PerSampleProjector(self, ether_adapters, batch_size)
            many = lambda attn, ps, x: [project(attn, p, x) for p in ps]  # noqa: E731
        if encoder_hidden_states is None:  # self-attention: q, k, v share their input
            query, key, value = many(attn, ("to_q", "to_k", "to_v"), hidden_states)
        else:
            query = project(attn, "to_q", hidden_states)
            if attn.norm_cross:
                encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
            key, value = many(attn, ("to_k", "to_v"), encoder_hidden_states)

        hidden_states = self._attend(attn, query, key, value, attention_mask, batch_size)
        hidden_states = project(attn, "to_out.0", hidden_states)
        hidden_states = attn.to_out[1](hidden_states)  # dropout

        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    # diffusers inspects `processor.__call__` to decide which cross_attention_kwargs to pass
    __call__ = forward
