"""Weight-only quantization of a WAM: int8 (per output channel), int4 (group-wise), fp8 e4m3.

At batch 1 a decode step reads every weight once per token, so its time is about weight bytes /
memory bandwidth: shrinking the weights is what buys speed on a Jetson. Every ``nn.Linear`` is
replaced by a ``QuantizedLinear`` except the ones a skip-list names (by default the embodiment
input projections, whose callers read their float weights). Linears an int8 list names (by default
the action head, whose logits pick the bins the robot executes) are int8 per output channel whatever
the precision: near-lossless at a quarter of float32. Tensors that stay float (embeddings, norms,
skipped layers) are rounded to ``keep_float`` (float16 by default) so the stored bundle is small and
what the bundle computes is exactly what the quantized model computes. The result saves to and loads
from one safetensors file.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import EmbodyHubError
from . import kernels

PRECISIONS = ("int8", "int4", "fp8")
FLOAT_PRECISIONS = ("float32", "float16")  # unquantized bundles: every weight stored at that precision
BUNDLE_PRECISIONS = (*FLOAT_PRECISIONS, *PRECISIONS)
DEFAULT_SKIP = ["model.joint_proj", "model.state_proj", "model.goal_proj", "model.patch_proj", "model.keypoint_proj"]
DEFAULT_INT8 = ["action_head"]
DEFAULT_GROUP_SIZE = 128  # int4 columns per scale/zero point: the export recipe's (smaller bundle, same success)
FLOAT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
WEIGHTS_NAME = "model.quantized.safetensors"
QUANT_CONFIG_NAME = "quantization.json"
FP8_MAX = 448.0  # largest finite float8 e4m3fn


def fp8_supported() -> bool:
    """Whether this torch build has the float8 e4m3 dtype (casts on CPU; matmuls dequantize first)."""
    return hasattr(torch, "float8_e4m3fn")


@dataclass
class QuantConfig:
    """What to quantize and how. ``skip`` holds module names or glob patterns (a name also skips its children)
    of Linears kept float; ``int8_layers`` (same syntax; ``skip`` wins) those stored int8 per output channel
    instead of at ``precision``. A float precision (``float32``, the reference a quantized bundle is
    compared with, or ``float16``) quantizes nothing and stores every tensor at that precision, so the
    name says what the file holds; ``keep_float`` applies to the float tensors of quantized bundles."""

    precision: str = "int8"
    group_size: int = DEFAULT_GROUP_SIZE
    skip: list[str] = field(default_factory=lambda: list(DEFAULT_SKIP))
    keep_float: str = "float16"
    int8_layers: list[str] = field(default_factory=lambda: list(DEFAULT_INT8))

    def __post_init__(self) -> None:
        if self.precision not in BUNDLE_PRECISIONS:
            raise EmbodyHubError(f"precision must be one of {BUNDLE_PRECISIONS}, got {self.precision!r}")
        if self.precision == "fp8" and not fp8_supported():
            raise EmbodyHubError("this torch build has no float8_e4m3fn dtype; use int8 or int4")
        if self.group_size < 1:
            raise EmbodyHubError(f"group_size must be positive, got {self.group_size}")
        if self.keep_float not in FLOAT_DTYPES:
            raise EmbodyHubError(f"keep_float must be one of {sorted(FLOAT_DTYPES)}, got {self.keep_float!r}")
        if self.precision in FLOAT_PRECISIONS:
            self.keep_float = self.precision

    def skips(self, name: str) -> bool:
        return _matches(name, self.skip)

    def layer_precision(self, name: str) -> str | None:
        """The precision Linear ``name`` is stored at; None: kept float."""
        if self.precision in FLOAT_PRECISIONS or self.skips(name):
            return None
        return "int8" if _matches(name, self.int8_layers) else self.precision

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantize_int8(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per-output-channel int8: ``(codes int8 [N, K], scale float32 [N])``."""
    w = weight.detach().to(torch.float32)
    scale = (w.abs().amax(1) / 127.0).clamp_min(1e-12)
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


def quantize_int4(weight: Tensor, group_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Asymmetric group-wise 4-bit codes, ``w = (code - zero) * scale``, packed two per byte by halves of K:
    ``(packed uint8 [N, ceil(K/2)], scale float16 [N, G], zero uint8 [N, G])``. Each group's range is widened
    to contain 0, so the integer zero point lies in 0..15 (the ONNX/TensorRT blocked-quantization format)."""
    w = weight.detach().to(torch.float32)
    N, K = w.shape
    groups = -(-K // group_size)
    padded = torch.nn.functional.pad(w, (0, groups * group_size - K)).view(N, groups, group_size)  # pads are 0: inside the range
    lo, hi = padded.amin(-1).clamp_max(0), padded.amax(-1).clamp_min(0)
    # Rounded to float16 first, so the codes are chosen for the scale that is stored.
    scale = ((hi - lo) / 15.0).clamp_min(2**-14).to(torch.float16)
    zero = torch.round(-lo / scale.float()).clamp(0, 15).to(torch.uint8)
    s = scale.float().repeat_interleave(group_size, 1)[:, :K]
    z = zero.float().repeat_interleave(group_size, 1)[:, :K]
    codes = torch.round(w / s + z).clamp(0, 15).to(torch.uint8)
    half = -(-K // 2)
    codes = torch.nn.functional.pad(codes, (0, 2 * half - K))
    return codes[:, :half] | (codes[:, half:] << 4), scale, zero


def quantize_fp8(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Per-output-channel scaled float8 e4m3: ``(e4m3 bits as uint8 [N, K], scale float32 [N])`` (uint8 storage
    keeps every serializer and exporter happy; the bits are reinterpreted, never converted)."""
    w = weight.detach().to(torch.float32)
    scale = (w.abs().amax(1) / FP8_MAX).clamp_min(1e-12)
    return (w / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).view(torch.uint8), scale


class _DequantizeTransposed(torch.autograd.Function):
    """The float32 weight transposed to ``[K, N]`` (so the traced matmul reads it directly). Exported as one
    ``embodyhub::DequantizeT`` placeholder node that ``onnx.py`` rewrites into a standard ONNX
    ``DequantizeLinear`` on the integer initializer: TensorRT's weight-only quantization pattern, and the
    exporter's constant folding cannot turn it back into float weights."""

    @staticmethod
    def forward(ctx: Any, qweight: Tensor, scale: Tensor, zero: Tensor, precision: str, group_size: int, in_features: int) -> Tensor:
        ref = kernels.reference
        if precision == "int8":
            w = ref.dequantize_int8(qweight, scale)
        elif precision == "int4":
            w = ref.dequantize_int4(qweight, scale, zero, group_size, in_features)
        else:
            w = ref.dequantize_fp8(qweight, scale)
        return w.t().contiguous()

    @staticmethod
    def symbolic(g: Any, qweight: Any, scale: Any, zero: Any, precision: str, group_size: int, in_features: int) -> Any:
        out = g.op("embodyhub::DequantizeT", qweight, scale, zero, precision_s=precision, group_size_i=group_size, in_features_i=in_features)
        # Typed output: with a known shape the exporter keeps folding the shape arithmetic downstream.
        out.setType(scale.type().with_dtype(torch.float32).with_sizes([in_features, qweight.type().sizes()[0]]))
        return out


class QuantizedLinear(nn.Module):
    """Drop-in ``nn.Linear`` with weight-only quantized storage; the matmul runs through
    ``embodyhub.export.kernels`` (fused Triton on CUDA, the torch reference on CPU and in ONNX)."""

    def __init__(self, in_features: int, out_features: int, precision: str = "int8", group_size: int = DEFAULT_GROUP_SIZE, bias: bool = False) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise EmbodyHubError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.in_features, self.out_features = in_features, out_features
        self.precision, self.group_size = precision, group_size
        if precision == "int4":
            groups = -(-in_features // group_size)
            self.register_buffer("qweight", torch.zeros(out_features, -(-in_features // 2), dtype=torch.uint8))
            self.register_buffer("scale", torch.zeros(out_features, groups, dtype=torch.float16))
            self.register_buffer("zero", torch.zeros(out_features, groups, dtype=torch.uint8))
        else:
            dtype = torch.int8 if precision == "int8" else torch.uint8
            self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=dtype))
            self.register_buffer("scale", torch.zeros(out_features, dtype=torch.float32))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.dequantized_t: Tensor | None = None  # [in, out], set only inside ``dequantize_once``

    @classmethod
    def from_linear(cls, linear: nn.Linear, precision: str = "int8", group_size: int = DEFAULT_GROUP_SIZE) -> QuantizedLinear:
        """Quantize a float Linear's weight (its bias stays float32)."""
        layer = cls(linear.in_features, linear.out_features, precision, group_size, linear.bias is not None)
        w = linear.weight
        if precision == "int8":
            layer.qweight, layer.scale = quantize_int8(w)
        elif precision == "int4":
            layer.qweight, layer.scale, layer.zero = quantize_int4(w, group_size)
        else:
            layer.qweight, layer.scale = quantize_fp8(w)
        if linear.bias is not None:
            layer.bias = linear.bias.detach().to(torch.float32).clone()
        return layer.to(w.device)

    def dequantize_t(self) -> Tensor:
        """The float32 weight this layer computes with, transposed: ``[in, out]``."""
        zero = self.zero if self.precision == "int4" else self.scale  # unused outside int4
        return _DequantizeTransposed.apply(self.qweight, self.scale, zero, self.precision, self.group_size, self.in_features)

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """``x @ W.T + bias``, then ``+ residual`` if given (fused into the GEMV on CUDA: a decoder layer's
        residual add costs no kernel of its own)."""
        if self.dequantized_t is not None:
            y = x @ self.dequantized_t.to(x.dtype)
            return kernels.reference.plus_residual(y if self.bias is None else y + self.bias.to(x.dtype), residual)
        if self.precision == "int8":
            return kernels.int8_linear(x, self.qweight, self.scale, self.bias, residual)
        if self.precision == "int4":
            return kernels.int4_linear(x, self.qweight, self.scale, self.zero, self.group_size, self.bias, residual)
        return kernels.fp8_linear(x, self.qweight, self.scale, self.bias, residual)

    def extra_repr(self) -> str:
        group = f", group_size={self.group_size}" if self.precision == "int4" else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, precision={self.precision}{group}"


@contextlib.contextmanager
def dequantize_once(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within the block every ``QuantizedLinear`` computes with a weight dequantized on entry. Traced for
    ONNX, the dequantize arithmetic then appears once per layer instead of once per decoded token (the
    file keeps the integer weights); eagerly, a chunk pays the dequantization once instead of per token.
    ``enabled=False`` leaves the layers as they are (a fused kernel dequantizes in place)."""
    layers = [m for m in model.modules() if isinstance(m, QuantizedLinear)] if enabled else []
    try:
        for layer in layers:
            layer.dequantized_t = layer.dequantize_t()
        yield
    finally:
        for layer in layers:
            layer.dequantized_t = None


def quantize_model(model: nn.Module, config: QuantConfig) -> dict[str, list[str]]:
    """Replace the model's Linears in place (``config.layer_precision``) and round the remaining float
    parameters to ``config.keep_float``. Returns ``{"quantized": [...], "int8": [...], "skipped": [...]}``
    module names (at ``config.precision``, on the int8 list, kept float)."""
    report: dict[str, list[str]] = {"quantized": [], "int8": [], "skipped": []}
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear) or config.precision in FLOAT_PRECISIONS:
            continue
        precision = config.layer_precision(name)
        if precision is None:
            report["skipped"].append(name)
            continue
        report["quantized" if precision == config.precision else "int8"].append(name)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, QuantizedLinear.from_linear(module, precision, config.group_size))
    keep = FLOAT_DTYPES[config.keep_float]
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if _stored_as_keep(name, t):
                t.copy_(t.to(keep).to(t.dtype))
    model.quant_config = config
    return report


def save_quantized(model: nn.Module, save_directory: str | os.PathLike, processor: Any | None = None) -> Path:
    """Write ``model.quantized.safetensors`` (float tensors in ``keep_float``), ``config.json``,
    ``quantization.json`` and, if given, the processor (with its embodiment cards)."""
    from safetensors.torch import save_file

    config: QuantConfig = model.quant_config
    out = Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    keep = FLOAT_DTYPES[config.keep_float]
    tensors = {}
    for name, t in model.state_dict().items():
        if _stored_as_keep(name, t):
            t = t.to(keep)
        tensors[name] = t.detach().contiguous().cpu()
    save_file(tensors, str(out / WEIGHTS_NAME), metadata={"format": "pt", "precision": config.precision})
    model.config.save_pretrained(out)
    (out / QUANT_CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    if processor is not None:
        processor.save_pretrained(out)
    return out / WEIGHTS_NAME


def load_quantized(directory: str | os.PathLike) -> nn.Module:
    """Rebuild a quantized ``WamForActionPrediction`` saved by ``save_quantized`` (float tensors back to float32)."""
    from safetensors.torch import load_file

    from ..models.wam import WamConfig, WamForActionPrediction

    folder = Path(directory)
    config = QuantConfig(**json.loads((folder / QUANT_CONFIG_NAME).read_text()))
    model = WamForActionPrediction(WamConfig.from_pretrained(folder))
    quantize_model(model, config)
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype) if k in own else v for k, v in load_file(str(folder / WEIGHTS_NAME)).items()}, strict=True)
    return model.eval()


def _matches(name: str, patterns: list[str]) -> bool:
    """Module ``name`` is one of ``patterns`` (names or glob patterns), or a child of one."""
    return any(name == p or name.startswith(p + ".") or fnmatch.fnmatchcase(name, p) for p in patterns)


def _stored_as_keep(name: str, t: Tensor) -> bool:
    """Float32 tensors other than the per-channel quantization scales are stored (and rounded) to ``keep_float``."""
    return t.dtype == torch.float32 and not name.endswith(".scale")
