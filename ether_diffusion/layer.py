"""The layer: the attention processor of one `Attention`, which owns its adapters' parameters
(``ProjectionAdapter``) and computes each adapted projection, with one adapter for the batch or one per sample
(``PerSampleProjector``); the math is ``functional``'s, the fast paths ``kernels``'.

The processor follows the contract of diffusers' `AttnProcessor2_0` (diffusers 0.42,
`models/attention_processor.py`): same reshapes, masks, norms and residual; attention itself is PyTorch SDPA, or
xformers when asked for.

How a projection ``y = H̃ W H x + b`` is computed (``EtherAttnProcessor.impl``, set for a whole model with
``model.set_impl``):

| impl        | what                                                                                               |
| ----------- | -------------------------------------------------------------------------------------------------- |
| ``"auto"``  | ``"step"`` where the model's step fold serves the projection (ether / ether_plus, CUDA + triton,   |
|             | a frozen bare ``nn.Linear``; eager, CUDA graph, or the model under torch.compile), else ``"act"``   |
|             | where the Triton kernels run (eager), else ``"torch"`` (CPU, oft, naive, compiled single layers)   |
| ``"torch"`` | the reference: ``functional.adapted_linear``, the maps on the activations in PyTorch               |
| ``"act"``   | the per-layer fallback: ``kernels.act_linear``, the maps on the activations in Triton              |
| ``"step"``  | the model's step fold only (``kernels.StepFold``: every layer's W' folded once per forward)         |

A projection that is not a bare ``nn.Linear`` (a PEFT LoRA layer, an offload hook) is always called as a module on
the transformed input (``projection.compose_linear``).

A mixed batch (``ether_adapters``: one adapter per sample) runs at inference in ``mixed_form`` ``"fold"``: each
sample's adapter folded into its own copy of the weight, ``W_i = H̃_i W H_i`` (the base ``W`` for "none"), and one
batched matmul ``y_i = W_i x_i + b``; the folded stack (B, f, d) is built in every call (nothing is kept to the next
step, so values written behind autograd's back are always seen): per projection one fold per adapter (O(U f d)),
one gather and one ``bmm``. Memory: one weight copy per sample of the UNet batch for each adapted projection (SD
1.5, bf16, the four attention projections: ~190 MB per sample, so ~3 GB for 8 prompts with classifier-free
guidance). With gradients, or in ``mixed_form`` ``"act"``, the maps act per sample on the activations and the shared
weight is used once for the whole batch: no weight copies, several small kernels per projection.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import functional as Fn
from . import kernels
from .assignment import NONE, Assignment, assign
from .functional import OUTPUT_SIDE_METHODS
from .kernels import TRITON_METHODS, autocast_dtype, is_compiling, on_device, triton_available
from .projection import compose_linear, compose_per_sample, get_projection, is_hooked, is_plain
from .state import EtherError, UnknownAdapterError

DEFAULT_ADAPTER = "default"
IMPLS = ("auto", "torch", "act", "step")
MIXED_FORMS = ("fold", "act")


PROJECTION_KEYS = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "out"}


def projection_key(projection: str) -> str:
    """'to_q' -> 'q', 'to_out.0' -> 'out': the adapter's own module names, which no LoRA target such as 'to_q'
    or 'to_out.0' matches (PEFT matches target names as suffixes of every module name of the model)."""
    return PROJECTION_KEYS[projection]


class ProjectionAdapter(nn.Module):
    """Parameters of one adapted projection: an input-side set (``in_<name>``) and, for ETHER+, an output-side set
    (``out_<name>``), held directly so that a hook placed on this module (accelerate's offload) brings them in.

    They stay at least float32 when the model is cast (``model.to(torch.float16)``), as PEFT keeps its adapters.
    """

    def __init__(self, method: str, in_features: int, out_features: int, n_blocks: int,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.method = method
        for k, t in Fn.init_params(method, in_features, n_blocks, generator).items():
            self.register_parameter(f"in_{k}", nn.Parameter(t))
        self.in_keys = tuple(Fn.param_shapes(method, in_features, n_blocks))
        self.out_keys: tuple[str, ...] = ()
        if method in OUTPUT_SIDE_METHODS:
            for k, t in Fn.init_params(method, out_features, n_blocks, generator).items():
                self.register_parameter(f"out_{k}", nn.Parameter(t))
            self.out_keys = tuple(Fn.param_shapes(method, out_features, n_blocks))

    def params(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """(p_in, p_out): the registered parameters themselves, read directly (no hooks run)."""
        ps = self._parameters
        p_in = {k: ps["in_" + k] for k in self.in_keys}
        return p_in, ({k: ps["out_" + k] for k in self.out_keys} if self.out_keys else None)

    def forward(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """``params()`` through this module's hooks: an offloaded adapter is brought to the execution device."""
        return self.params()

    def side(self, side: str) -> dict[str, nn.Parameter]:
        """The parameters of one side, "in" or "out", by their short name ("u", "v", ...)."""
        keys = self.in_keys if side == "in" else self.out_keys
        return {k: self._parameters[f"{side}_{k}"] for k in keys}

    def _apply(self, fn, recurse=True):
        # a cast below float32 (model.half(), model.to(torch.bfloat16)) moves the parameters but keeps their dtype
        def keep_float32(t):
            out = fn(t)
            if t.is_floating_point() and out.is_floating_point() and out.dtype.itemsize < 4 <= t.dtype.itemsize:
                return t.to(device=out.device)
            return out

        return super()._apply(keep_float32, recurse)


class EtherAttnProcessor(nn.Module):
    """An `nn.Module` attention processor holding one or more named adapters for the projections of its layer.

    ``shapes`` maps projection names ('to_q', 'to_k', 'to_v', 'to_out.0') to ``(out_features, in_features)``.
    ``attention`` is "sdpa" or "xformers"; ``slice_size`` computes attention in slices of that many (batch x head)
    rows, as diffusers' ``SlicedAttnProcessor`` does (``unet.set_attention_slice``).
    """

    impl = "auto"  # how projections are computed: one of IMPLS (the module docstring)
    step_fold = None  # the model's kernels.StepFold, shared by its processors (model.apply_ether)
    mixed_form = "fold"  # how a mixed-adapter batch is computed at inference: one of MIXED_FORMS

    def __init__(self, method: str, n_blocks: int, shapes: dict[str, tuple[int, int]],
                 generator: torch.Generator | None = None, attention: str = "sdpa", slice_size: int | None = None):
        super().__init__()
        self.method = method
        self.n_blocks = n_blocks
        self.shapes = dict(shapes)
        self.attention = attention
        self.slice_size = slice_size
        self.adapters = nn.ModuleDict()
        self.active = DEFAULT_ADAPTER
        self._lookup: dict = {}  # (adapter name, projection) -> (its group, its ProjectionAdapter or None)
        self.add_adapter(DEFAULT_ADAPTER, generator)

    def add_adapter(self, name: str, generator: torch.Generator | None = None) -> None:
        check_adapter_name(name)
        self.adapters[name] = nn.ModuleDict({
            projection_key(p): ProjectionAdapter(self.method, d, f, self.n_blocks, generator)
            for p, (f, d) in self.shapes.items()
        })

    def adapter(self, projection: str, name: str | None = None) -> ProjectionAdapter | None:
        name = name or self.active
        # no cache while compiling: a dict filled during the first compiled step would make torch.compile retrace
        # the whole model on the second
        cached = not is_compiling()
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

    # ------------------------------------------------------------------ diffusers' processor switches
    def adopt(self, processor) -> None:
        """Take over what a stock diffusers processor set on this layer would change, keeping the adapter on
        (``stock_options``); any other processor would switch the adapter off: refused."""
        for key, value in stock_options(processor).items():
            setattr(self, key, value)

    def stock(self):
        """The stock diffusers processor that computes this layer's attention as this one does, without adapter."""
        from diffusers.models import attention_processor as ap

        if self.slice_size is not None:
            return ap.SlicedAttnProcessor(self.slice_size)
        return ap.XFormersAttnProcessor() if self.attention == "xformers" else ap.AttnProcessor2_0()

    # ------------------------------------------------------------------ projections
    def project(self, attn: nn.Module, projection: str, x: torch.Tensor) -> torch.Tensor:
        linear = get_projection(attn, projection)
        adapter = self.adapter(projection)
        if adapter is None:
            return linear(x)
        if not is_plain(linear) or is_hooked(adapter):
            # wrapped or hooked (a LoRA layer, offload): the module is called on the transformed input
            return compose_linear(x, linear, self.method, *adapter())
        step, impl = self.step_fold, self.impl
        if step is not None and impl in ("auto", "step"):  # the whole model's weights folded at once
            y = step.linear(self, projection, linear, x)
            if y is not None:
                return y
        if impl == "step":
            raise RuntimeError("impl='step' needs a model prepared by apply_ether with CUDA tensors and triton and a "
                               "frozen base weight (under torch.compile: the model compiled whole); use impl='auto'")
        p_in, p_out = adapter.params()
        return per_layer_linear(x, linear.weight, linear.bias, self.method, p_in, p_out, impl=impl)

    def project_many(self, attn: nn.Module, projections: tuple[str, ...], x: torch.Tensor) -> list[torch.Tensor]:
        """[project(p, x) for p in projections]: one GEMM where the model's step fold holds their folded weights
        side by side (``kernels.step_fold``: q, k, v of self-attention, k, v of cross-attention)."""
        step = self.step_fold
        if step is not None and self.impl in ("auto", "step"):
            modules = [get_projection(attn, p) for p in projections]
            if all(is_plain(m) for m in modules):
                ys = step.linear_many(self, projections, modules, x)
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
        if self.slice_size is not None:
            out = _sliced(query, key, value, attention_mask, self.slice_size, self._attention_fn(head_dim))
        else:
            out = self._attention_fn(head_dim)(query, key, value, attention_mask)
        # (B, H, N, D) -> (B, N, H*D)
        return out.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)

    def _attention_fn(self, head_dim: int):
        # (q, k, v (B, H, N, D), additive mask broadcast to (B, H, Nq, Nk) or None) -> (B, H, Nq, D)
        if self.attention == "xformers":
            import xformers.ops as xops

            def xformers_attention(q, k, v, mask):
                # xformers takes (B, N, H, D) and an additive bias broadcast to (B, H, Nq, Nk)
                bias = None if mask is None else mask.expand(-1, q.shape[1], q.shape[2], -1)
                return xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                       attn_bias=bias, scale=1.0 / math.sqrt(head_dim)).transpose(1, 2)

            return xformers_attention
        return lambda q, k, v, mask: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0,
                                                                    is_causal=False)

    def forward(self, attn: nn.Module, hidden_states: torch.Tensor,
                encoder_hidden_states: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                temb: torch.Tensor | None = None, ether_adapters: list[str | None] | None = None,
                ether_images_per_prompt: int | None = None, **kwargs) -> torch.Tensor:
        """diffusers' attention with adapted projections; ``ether_adapters`` picks an adapter per sample (the
        model's forward hook turns per-image or per-prompt names into an ``assignment.Assignment``)."""
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
            assignment = ether_adapters if isinstance(ether_adapters, Assignment) else assign(
                ether_adapters, batch_size, hidden_states.device, ether_images_per_prompt)
            project = PerSampleProjector(self, assignment)
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


def per_layer_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, method: str,
                     p_in: Fn.Params, p_out: Fn.Params | None = None, impl: str = "auto") -> torch.Tensor:
    """``y = H̃ W H x + b`` for one layer on its own: x (..., d), weight (f, d), bias (f,) or None -> (..., f), in
    the per-layer form ``impl`` ("torch" or "act"; "auto" takes "act" where the Triton kernels run, eagerly).
    ``"step"`` is not a per-layer form: a model's processors run it through their ``StepFold``."""
    if impl == "auto":
        if method in TRITON_METHODS and on_device(x) and not is_compiling() and triton_available():
            return kernels.act_linear(x, weight, bias, method, p_in, p_out)
        return Fn.adapted_linear(x, weight, bias, method, p_in, p_out)
    if impl == "torch":
        return Fn.adapted_linear(x, weight, bias, method, p_in, p_out)
    if impl == "step":
        raise RuntimeError("impl='step' folds a whole model: it runs in the processors of a CUDA model prepared by "
                           "apply_ether; use impl='auto'")
    if impl != "act":
        raise ValueError(f"impl={impl!r} is unknown; choose one of {IMPLS}")
    if method not in TRITON_METHODS:
        raise ValueError(f"impl='act' covers {TRITON_METHODS}, not {method!r}; use impl='torch'")
    if not on_device(x) or not triton_available():
        raise RuntimeError("impl='act' needs a CUDA tensor and triton (pip install triton); use impl='torch'")
    return kernels.act_linear(x, weight, bias, method, p_in, p_out)


class PerSampleProjector:
    """Computes a processor's projections with a per-sample choice among its named adapters (``assignment``)."""

    def __init__(self, proc: EtherAttnProcessor, assignment: Assignment):
        self.proc = proc
        self.names, self.index = assignment.names, assignment.index
        unknown = [n for n in self.names if n not in proc.adapters]
        if unknown:
            raise UnknownAdapterError(f"ether_adapters names {unknown} are not loaded; loaded: "
                                      f"{sorted(proc.adapters)} (load_ether(model, path, adapter_name=...)), or "
                                      "'none' for the base model")
        self.active = self.index < len(self.names)  # (B,) bool: False runs the base model

    def _stack(self, projection: str, call: bool = False) -> tuple[dict, dict | None]:
        """The activation form's parameters, gathered per sample (B, ...) from those of the adapters used (a
        "none" sample gets the first adapter's, masked off by ``active``). ``call``: read them through each
        adapter's module call (its hooks run: offload)."""
        adapters = [self.proc.adapter(projection, n) for n in self.names]
        p_in, p_out = Fn.stack_params([a() if call else a.params() for a in adapters])  # (U, ...)
        index = self.index.clamp(max=len(self.names) - 1)
        gather = lambda ps: None if ps is None else {k: t.index_select(0, index) for k, t in ps.items()}  # noqa: E731
        return gather(p_in), gather(p_out)

    def _folded(self, projection: str, linear: nn.Linear, dtype: torch.dtype) -> torch.Tensor:
        """(B, f, d): sample i's weight ``H̃ W H`` (``W`` for "none"), folded once per adapter."""
        folded = Fn.fold_weight_per_adapter(
            linear.weight, self.proc.method,
            *Fn.stack_params([self.proc.adapter(projection, n).params() for n in self.names]))  # (U, f, d)
        options = torch.cat([folded.to(dtype), linear.weight.to(dtype)[None]])  # (U + 1, f, d): last = "none"
        return options.index_select(0, self.index)  # (B, f, d)

    def __call__(self, attn: nn.Module, projection: str, x: torch.Tensor) -> torch.Tensor:
        linear = get_projection(attn, projection)
        if not self.names or self.proc.adapter(projection, self.names[0]) is None:
            return linear(x)  # every sample runs the base model, or this projection is not adapted
        if not is_plain(linear) or any(is_hooked(self.proc.adapter(projection, n)) for n in self.names):
            # wrapped or hooked: the maps act per sample around a call of the module
            p_in, p_out = self._stack(projection, call=True)
            return compose_per_sample(x, linear, self.proc.method, p_in, p_out, self.active)
        if self.proc.mixed_form == "fold" and not torch.is_grad_enabled():
            dtype = autocast_dtype(x, linear.weight.dtype)
            w = self._folded(projection, linear, dtype)  # (B, f, d)
            xb = x.reshape(w.shape[0], -1, x.shape[-1]).to(dtype)  # (B, N, d)
            if linear.bias is None:
                y = torch.bmm(xb, w.mT)
            else:
                y = torch.baddbmm(linear.bias.to(dtype), xb, w.mT)  # (B, N, f)
            return y.reshape(*x.shape[:-1], w.shape[1])
        p_in, p_out = self._stack(projection)
        return Fn.adapted_linear_per_sample(x, linear.weight, linear.bias, self.proc.method, p_in, p_out,
                                            self.active)


def _sliced(query, key, value, mask, slice_size: int, attention):
    """``attention`` over (batch x head) rows in slices of ``slice_size``: (B, H, N, D) -> (B, H, Nq, D)."""
    b, h = query.shape[:2]
    q, k, v = (t.reshape(b * h, 1, *t.shape[2:]) for t in (query, key, value))  # (B*H, 1, N, D)
    m = None if mask is None else mask.expand(b, h, -1, -1).reshape(b * h, 1, *mask.shape[2:])
    out = torch.cat([attention(q[i:i + slice_size], k[i:i + slice_size], v[i:i + slice_size],
                               None if m is None else m[i:i + slice_size])
                     for i in range(0, b * h, slice_size)])  # (B*H, 1, Nq, D)
    return out.reshape(b, h, *out.shape[2:])


def stock_options(processor) -> dict:
    """The ETHER processor's options that a stock diffusers processor stands for: ``AttnProcessor`` /
    ``AttnProcessor2_0`` (plain attention), ``SlicedAttnProcessor`` (its slice size), ``XFormersAttnProcessor``
    (xformers). Raises ``EtherError`` for any other processor (it would switch the adapter off)."""
    from diffusers.models import attention_processor as ap

    kind = type(processor)
    if kind in (ap.AttnProcessor, ap.AttnProcessor2_0):
        return {"slice_size": None, "attention": "sdpa"}
    if kind is ap.SlicedAttnProcessor:
        return {"slice_size": processor.slice_size}
    if kind is ap.XFormersAttnProcessor:
        return {"slice_size": None, "attention": "xformers"}
    raise EtherError(f"{kind.__name__} would replace an ETHER processor and switch the adapter off; "
                     "merge_ether(model) first (the adapter then lives in the weights) or remove_ether(model)")


def check_adapter_name(name: str) -> None:
    """Adapter names are non-empty strings other than "none" (the base model in ``ether_adapters``)."""
    if not isinstance(name, str) or not name or name == NONE:
        raise EtherError(f"adapter name {name!r} is not allowed: {NONE!r} stands for the base model in "
                         "ether_adapters; choose another name")
