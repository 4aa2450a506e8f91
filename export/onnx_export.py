"""torch.onnx export with fixed I/O names, a pinned opset and optional dynamic batch."""
from __future__ import annotations

import io
import warnings

import onnx
import torch

from digitpipe.runtime.metadata import ModelInfo, to_props

INPUT_NAME, OUTPUT_NAME = "input", "logits"
DEFAULT_OPSET = 18
EXPORTERS = ("torchscript", "dynamo")


def export_onnx(model: torch.nn.Module, channels: int, size: int, exporter: str = "torchscript",
                opset: int = DEFAULT_OPSET, dynamic_batch: bool = True, width: int | None = None,
                output_name: str = OUTPUT_NAME) -> onnx.ModelProto:
    """size x size inputs, or size high and `width` wide."""
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; choose from {', '.join(EXPORTERS)}")
    model = model.eval().to(memory_format=torch.contiguous_format)
    example = torch.zeros(1, channels, size, width or size)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # exporter deprecation chatter; verification speaks instead
        if exporter == "dynamo":
            program = torch.onnx.export(
                model, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[output_name], verbose=False,
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None,
            )
            program.save(buf)
        else:
            torch.onnx.export(
                model, (example,), buf, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[output_name], do_constant_folding=True,
                dynamic_axes={INPUT_NAME: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None,
            )
    return onnx.load_from_string(buf.getvalue())


def attach_metadata(proto: onnx.ModelProto, info: ModelInfo) -> onnx.ModelProto:
    del proto.metadata_props[:]
    for key, value in to_props(info).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "digitpipe"
    return proto


def input_shape(proto: onnx.ModelProto) -> tuple:
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    return tuple(d.dim_param if d.dim_param else d.dim_value for d in dims)
