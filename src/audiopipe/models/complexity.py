"""Model complexity: parameters, multiply-accumulates (MACs) and analytical peak activation memory.

Counting follows EfficientAT (spec efficientat.md §2.6, §8; `helpers/flop_count.py`, `helpers/peak_memory.py`),
generalised so that any `nn.Module` can be profiled with one forward pass of a batch-1 example input:

* MACs: forward hooks on leaf modules.
    - Conv1d/2d/3d: output elements x (k x in/groups + 1 if bias); ConvTranspose: input elements x k x out/groups.
    - DyMN `DynamicConv`: as the equivalent static Conv2d (output elements x k x in/groups); mixing its K kernels
      is not counted. This gives the README's DyMN MACs (dymn10 0.58 G); EfficientAT's `count_macs` skips these
      convolutions altogether (0.064 G for dymn10, spec §3).
    - Linear: positions x (weights + biases), positions = output elements / out_features. For every published
      MobileNet (SE layers and heads see one position) this equals EfficientAT's `count_macs`; for sequence models
      it is EfficientAT's `count_macs_transformer` rule.
    - nn.MultiheadAttention: q/k/v/out projections per position plus 2 x Lq x Lk x E for the attention matmuls.
    - Matrix products outside those modules (attention written with `@`, `torch.matmul`/`bmm`, `F.linear`,
      `F.scaled_dot_product_attention`) are caught with a TorchFunctionMode: output elements x inner size.
    - Parameter-free direct children of the model (front ends such as `tagger.mel`) are not counted, like the
      paper, which counts the network without its spectrogram front end.
    - Element-wise work (BN, activations, pooling, SE gating, additions) is not counted.
* Peak memory (Lin et al. 2021, as EfficientAT): per layer, input + output activation elements, 16 bits per
  element, in kB (elements x 16 / 8 / 1000); peak = max over layers. Inside residual blocks (modules with
  `use_res_connect = True`) every conv after the first also holds the block input for the skip connection.
  For MobileNetV3 the memory-efficient figure (`peak_memory_mnv3`, MobileNetV2-style slicing into 8 parts of the
  expanded map of blocks without SE) is reported as well.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd
from torch.overrides import TorchFunctionMode

from audiopipe.models.dymn.dynamic import DynamicConv
from audiopipe.models.mobilenet.blocks import ConcurrentSE, ConvNormAct, InvertedResidual
from audiopipe.models.mobilenet.model import MobileNetV3

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@dataclass(frozen=True)
class ComplexityReport:
    """Parameters, MACs of one forward pass and peak memory (kB) of one example (batch 1)."""

    params: int
    macs: int
    peak_memory_kb: float
    peak_memory_efficient_kb: float | None = None


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (buffers such as BN running statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


_MATMULS = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm, torch.Tensor.mm, torch.bmm,
             torch.Tensor.bmm}  # fmt: skip
_ADD_MATMULS = {torch.addmm, torch.Tensor.addmm, torch.baddbmm, torch.Tensor.baddbmm}


def _matmul_cost(func: Callable[..., Any], args: tuple[Any, ...], out: Any) -> tuple[int, int] | None:
    """(MACs, input + output elements) of a matrix-product call, None for other functions."""
    if func is nn.functional.scaled_dot_product_attention:
        q, k, v = args[0], args[1], args[2]
        batch_heads = math.prod(q.shape[:-2])
        macs = batch_heads * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])
        return macs, q.numel() + k.numel() + v.numel() + out.numel()
    if func is nn.functional.linear:
        x, weight = args[0], args[1]
        bias = args[2] if len(args) > 2 else None
        return out.numel() * (weight.shape[-1] + int(bias is not None)), x.numel() + out.numel()
    if func in _MATMULS:
        a, b = args[0], args[1]
    elif func is torch.Tensor.__rmatmul__:
        a, b = args[1], args[0]
    elif func in _ADD_MATMULS:
        a, b = args[1], args[2]
    else:
        return None
    return out.numel() * a.shape[-1], a.numel() + b.numel() + out.numel()


class _MatmulCounter(TorchFunctionMode):
    """Counts matrix products called outside hooked modules (depth == 0), e.g. attention written with `@`."""

    def __init__(self, record: Callable[[int, int], None]) -> None:
        super().__init__()
        self.record = record
        self.depth = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        if self.depth == 0 and isinstance(out, torch.Tensor):
            cost = _matmul_cost(func, args, out)
            if cost is not None:
                self.record(*cost)
        return out


def _mha_cost(module: nn.MultiheadAttention, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, int]:
    names = ("query", "key", "value")
    query, key, value = (args[i] if i < len(args) else kwargs[name] for i, name in enumerate(names))
    if query.dim() == 2:  # unbatched (L, E)
        lq, lk = query.shape[0], key.shape[0]
    else:  # (N, L, E) if batch_first else (L, N, E)
        lq, lk = (query.shape[1], key.shape[1]) if module.batch_first else (query.shape[0], key.shape[0])
    e = module.embed_dim
    batch = query.numel() // (lq * e)
    bias = int(module.in_proj_bias is not None)
    projections = lq * e * (e + bias) + lk * e * (module.kdim + bias) + lk * e * (module.vdim + bias)
    out_projection = lq * e * (e + int(module.out_proj.bias is not None))
    attention = 2 * lq * lk * e  # scores q k^T and their weighted sum of v
    attention_map = batch * module.num_heads * lq * lk
    memory = query.numel() + key.numel() + value.numel() + attention_map + query.numel()
    return batch * (projections + out_projection + attention), memory


class _Profiler:
    """Registers the hooks, runs one forward, collects MAC and memory entries."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.macs: list[int] = []
        self.memory: list[int] = []
        self.residual_inputs: list[int] = []  # stack of block-input sizes of enclosing residual blocks
        self.first_conv: list[bool] = []
        self.counter = _MatmulCounter(self._record)
        self.handles: list[Any] = []

    def _record(self, macs: int, memory: int) -> None:
        self.macs.append(macs)
        self.memory.append(memory)

    def _enter(self, *_: Any) -> None:
        self.counter.depth += 1

    def _leave(self, *_: Any) -> None:
        self.counter.depth -= 1

    def _conv_hook(self, module: _ConvNd | DynamicConv, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        if isinstance(module, DynamicConv):  # counted as its static-equivalent Conv2d
            macs = output.numel() * math.prod(module.static_weight_shape[1:])
        elif isinstance(module, _CONV_T):
            macs = inputs[0].numel() * module.weight[0].numel()
        else:
            macs = output.numel() * (module.weight[0].numel() + int(module.bias is not None))
        memory = inputs[0].numel() + output.numel()
        if self.residual_inputs:
            if not self.first_conv[-1]:
                memory += self.residual_inputs[-1]
            self.first_conv[-1] = False
        self._record(macs, memory)

    def _linear_hook(self, module: nn.Linear, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        positions = output.numel() // module.out_features
        bias = module.bias.numel() if module.bias is not None else 0
        self._record(positions * (module.weight.numel() + bias), inputs[0].numel() + output.numel())

    def _mha_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        self._record(*_mha_cost(module, args, kwargs))  # type: ignore[arg-type]

    def _block_enter(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        self.residual_inputs.append(inputs[0].numel())
        self.first_conv.append(True)

    def _block_leave(self, *_: Any) -> None:
        self.residual_inputs.pop()
        self.first_conv.pop()

    def _register(self, exclude: tuple[nn.Module, ...]) -> None:
        for module in exclude:
            self.handles += [module.register_forward_pre_hook(self._enter), module.register_forward_hook(self._leave)]
        excluded = {id(m) for root in exclude for m in root.modules()}
        for module in self.model.modules():
            if id(module) in excluded:
                continue
            hook: Callable[..., None] | None = None
            if isinstance(module, (*_CONV, *_CONV_T, DynamicConv)):
                hook = self._conv_hook
            elif isinstance(module, nn.Linear):
                hook = self._linear_hook
            if hook is not None:
                self.handles += [module.register_forward_pre_hook(self._enter), module.register_forward_hook(hook)]
                self.handles.append(module.register_forward_hook(self._leave))
            elif isinstance(module, nn.MultiheadAttention):
                self.handles.append(module.register_forward_pre_hook(self._enter))
                self.handles.append(module.register_forward_hook(self._mha_hook, with_kwargs=True))
                self.handles.append(module.register_forward_hook(self._leave))
            if getattr(module, "use_res_connect", False):
                self.handles.append(module.register_forward_pre_hook(self._block_enter))
                self.handles.append(module.register_forward_hook(self._block_leave))

    def run(self, example_input: torch.Tensor, exclude: tuple[nn.Module, ...]) -> None:
        self._register(exclude)
        was_training = self.model.training
        try:
            self.model.eval()
            with torch.no_grad(), self.counter:
                self.model(example_input)
        finally:
            self.model.train(was_training)
            for handle in self.handles:
                handle.remove()


def _default_exclude(model: nn.Module) -> tuple[nn.Module, ...]:
    return tuple(child for child in model.children() if count_parameters(child) == 0)


def _check_batch(example_input: torch.Tensor) -> None:
    if example_input.shape[0] != 1:
        raise ValueError(f"complexity is counted for one example; got batch {example_input.shape[0]}")


def count_macs(model: nn.Module, example_input: torch.Tensor, exclude: tuple[nn.Module, ...] | None = None) -> int:
    """MACs of one forward pass on a batch-1 `example_input` (see the module docstring for the rules)."""
    _check_batch(example_input)
    profiler = _Profiler(model)
    profiler.run(example_input, _default_exclude(model) if exclude is None else exclude)
    return int(sum(profiler.macs))


def peak_memory_kb(
    model: nn.Module,
    example_input: torch.Tensor,
    bits_per_element: int = 16,
    exclude: tuple[nn.Module, ...] | None = None,
) -> float:
    """Analytical peak activation memory (plain execution) in kB for a batch-1 `example_input`."""
    _check_batch(example_input)
    profiler = _Profiler(model)
    profiler.run(example_input, _default_exclude(model) if exclude is None else exclude)
    return max(profiler.memory, default=0) * bits_per_element / 8 / 1000


def find_mobilenet(model: nn.Module) -> MobileNetV3 | None:
    """The MobileNetV3 inside `model` (or `model` itself), None if there is none."""
    return next((m for m in model.modules() if isinstance(m, MobileNetV3)), None)


def peak_memory_mnv3_kb(net: MobileNetV3, mel: torch.Tensor, bits_per_element: int = 16) -> float:
    """Peak memory with memory-efficient inference of MobileNetV3 blocks (EfficientAT `peak_memory_mnv3`).

    The stem + first block and every block without SE keep the block input and output plus 1/8 of the
    expanded map before and after the depthwise conv; SE blocks hold the project conv's input and output plus
    the block input. Unlike EfficientAT it also handles blocks without an expansion conv (alpha = 0.1).

    Args:
        mel: Batch-1 network input, (1, F, T) or (1, 1, F, T).
    """
    _check_batch(mel)
    entries: list[float] = []
    sizes: dict[str, int] = {}
    handles = [net.features[0].register_forward_hook(lambda m, i, o: sizes.update(stem_in=i[0].numel()))]

    def first_block(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        entries.append(sizes["stem_in"] + output.numel() + 2 * inputs[0].numel() / 8)

    def plain_block(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        _, _, freq, time = inputs[0].shape
        layers = cast(InvertedResidual, module).block
        expanded = cast(ConvNormAct, layers[0]).out_channels
        depthwise = cast(nn.Conv2d, cast(ConvNormAct, layers[-2])[0])  # the conv before the project conv
        stride = depthwise.stride[0]
        before, after = freq * time * expanded / 8, (freq // stride) * (time // stride) * expanded / 8
        entries.append(inputs[0].numel() + output.numel() + before + after)

    def se_project(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        entries.append(inputs[0].numel() + output.numel() + sizes["block_in"])

    handles.append(net.features[1].register_forward_hook(first_block))
    for block in cast(list[InvertedResidual], list(net.features)[2:-1]):
        if any(isinstance(layer, ConcurrentSE) for layer in block.block):
            handles.append(block.register_forward_pre_hook(lambda m, i: sizes.update(block_in=i[0].numel())))
            handles.append(block.block[-1].register_forward_hook(se_project))
        else:
            handles.append(block.register_forward_hook(plain_block))
    was_training = net.training
    try:
        with torch.no_grad():
            net.eval()(mel)
    finally:
        net.train(was_training)
        for handle in handles:
            handle.remove()
    return max(entries) * bits_per_element / 8 / 1000


def profile(
    model: nn.Module,
    example_input: torch.Tensor,
    bits_per_element: int = 16,
    exclude: tuple[nn.Module, ...] | None = None,
    mel_input: torch.Tensor | None = None,
) -> ComplexityReport:
    """Parameters, MACs and peak memory of `model`; adds the memory-efficient figure when it holds a MobileNetV3.

    Args:
        mel_input: Input of the inner MobileNetV3 when `model` is a wrapper that takes waveforms; if None and
            `model` is itself a MobileNetV3, `example_input` is used.
    """
    _check_batch(example_input)
    profiler = _Profiler(model)
    profiler.run(example_input, _default_exclude(model) if exclude is None else exclude)
    efficient = None
    net = find_mobilenet(model)
    if net is not None and (mel_input is not None or net is model):
        efficient = peak_memory_mnv3_kb(net, example_input if mel_input is None else mel_input, bits_per_element)
    return ComplexityReport(
        params=count_parameters(model),
        macs=int(sum(profiler.macs)),
        peak_memory_kb=max(profiler.memory, default=0) * bits_per_element / 8 / 1000,
        peak_memory_efficient_kb=efficient,
    )
