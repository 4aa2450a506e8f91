"""INT8 static quantization with onnxruntime, in the format both runtimes load.

QOperator format (QLinearConv / QLinearMatMul, uint8 activations, per-channel int8
weights): onnxruntime runs it natively and OpenCV 5.0's default DNN engine loads it.
The QDQ format is onnxruntime's recommendation, but OpenCV 5.0's default engine fails on
it at the first forward (`bufidx >= 0 in function 'argTensor'`); it loads only with the
classic engine, which run-digit does not select.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx

from digitpipe.export.onnx_export import INPUT_NAME, attach_metadata
from digitpipe.runtime.errors import first_line
from digitpipe.runtime.metadata import from_props

CALIBRATION_IMAGES = 1024
CALIBRATION_BATCH = 64
QUANT_FORMAT = "QOperator"


class QuantizationError(RuntimeError):
    """onnxruntime could not quantize a model (it raises bare Exceptions for graphs it cannot
    follow, e.g. a resized tensor joined to its input): the float model stands."""


def quantize_int8(fp32_bytes: bytes, calibration: np.ndarray, keep_float: tuple[str, ...] = ()) -> bytes:
    """An INT8 copy of the float model, activation ranges from the calibration blob (N,C,H,W);
    nodes whose names start with one of keep_float stay float32."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32 = onnx.load_from_string(fp32_bytes)
    batch = fp32.graph.input[0].type.tensor_type.shape.dim[0].dim_value or CALIBRATION_BATCH  # 0: dynamic axis

    class Batches(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{INPUT_NAME: calibration[i : i + batch]} for i in range(0, len(calibration), batch)])

        def get_next(self):
            return next(self._it, None)

    # In the scratch folder: where shape inference fails, onnxruntime writes its half-done
    # model to the working directory, and that is the user's.
    with _quantizer_quiet(), tempfile.TemporaryDirectory(prefix="digitpipe-int8-") as tmp, contextlib.chdir(tmp):
        src, pre, out = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        src.write_bytes(fp32_bytes)
        try:
            quant_pre_process(str(src), str(pre))  # shape inference + graph optimisation first, as documented
            floats = [n.name for n in onnx.load(str(pre)).graph.node if n.name.startswith(keep_float)] if keep_float else []
            quantize_static(str(pre), str(out), Batches(), quant_format=QuantFormat.QOperator, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=floats)
        except Exception as exc:  # noqa: BLE001 - the quantizer's own errors are bare Exceptions
            raise QuantizationError(f"onnxruntime could not quantize it: {first_line(exc)}") from exc
        proto = onnx.load(str(out))
    return attach_metadata(proto, _int8_info(fp32, len(calibration))).SerializeToString()


@contextlib.contextmanager
def _quantizer_quiet():
    """onnxruntime's quantizer gives advice through logging.warning/info on the root logger
    (which also installs a stderr handler there if none exists). For the call only, drop
    its records, and only its, and put the root logger's handlers back as they were."""
    root = logging.getLogger()
    handlers = root.handlers[:]
    source = os.sep + os.path.join("onnxruntime", "quantization") + os.sep

    def not_quantizer(record: logging.LogRecord) -> bool:
        return source not in record.pathname

    root.addFilter(not_quantizer)
    try:
        yield
    finally:
        root.removeFilter(not_quantizer)
        root.handlers[:] = handlers


def _int8_info(fp32: onnx.ModelProto, calibration_count: int):
    """The float model's metadata, its provenance saying how this copy was made."""
    info = from_props({p.key: p.value for p in fp32.metadata_props})
    provenance = dict(info.provenance, quantization={
        "format": QUANT_FORMAT, "weights": "int8 per-channel", "activations": "uint8",
        "calibration": f"{calibration_count} training images, MinMax"})
    return dataclasses.replace(info, provenance=provenance)


def int8_path(fp32_path: Path) -> Path:
    """artifacts/digits.onnx -> artifacts/digits.int8.onnx"""
    return fp32_path.with_name(f"{fp32_path.stem}.int8{fp32_path.suffix}")


def calibration_blob(split, spec, count: int = CALIBRATION_IMAGES, seed: int = 0) -> np.ndarray:
    """A seeded random sample of a training split's images, as the network sees them at evaluation."""
    import torch

    from digitpipe.train.data import in_memory, model_input

    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(split), generator=gen)[:count]
    return model_input(in_memory(split.take(idx)).images, spec).numpy()
