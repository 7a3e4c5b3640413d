"""Export for Jetson Thor: weight-only quantization, fused kernels, ONNX graphs and the deployable bundle.

onnx/onnxruntime (the ``export`` extra) are imported only by the functions that need them; Triton only
when a CUDA tensor (or ``EMBODYHUB_KERNELS=triton``) asks for the fused kernels.
"""

from .fused import fuse_decoder
from .onnx import export_decode_step, export_policy
from .quantize import (
    QuantConfig,
    QuantizedLinear,
    load_quantized,
    quantize_model,
    save_quantized,
)
from .runtime import GraphedDecoder, OnnxPolicy
from .thor import build_bundle, verify_bundle

__all__ = [
    "GraphedDecoder",
    "OnnxPolicy",
    "QuantConfig",
    "QuantizedLinear",
    "build_bundle",
    "export_decode_step",
    "export_policy",
    "fuse_decoder",
    "load_quantized",
    "quantize_model",
    "save_quantized",
    "verify_bundle",
]
