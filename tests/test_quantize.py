"""INT8 quantization leaves the process's logging as it found it."""
import logging
from pathlib import Path

import numpy as np
import pytest

from digitpipe.export.quantize import quantize_int8


def test_quantizer_silences_only_itself_and_only_during_the_call(stand_in_model, caplog, capfd):
    root = logging.getLogger()
    level, handlers, filters = root.level, root.handlers[:], root.filters[:]
    calibration = np.random.default_rng(0).standard_normal((64, 1, 28, 28)).astype(np.float32)
    int8 = quantize_int8(Path(stand_in_model).read_bytes(), calibration)
    assert int8[:2] and "QuantizeLinear".encode() in int8
    assert (root.level, root.handlers, root.filters) == (level, handlers, filters)
    assert "onnxruntime" not in capfd.readouterr().err  # the quantizer's advice stayed quiet
    with caplog.at_level(logging.WARNING):
        logging.getLogger("digitpipe.elsewhere").warning("still heard")
        logging.warning("the root logger too")
    assert [r.getMessage() for r in caplog.records] == ["still heard", "the root logger too"]


def unquantizable_onnx(height: int = 24, width: int = 32) -> bytes:
    """A float model onnxruntime's quantizer cannot follow: a tensor joined to its own copy
    pooled and resized back (its symbolic shape inference stops there)."""
    import torch
    import torch.nn.functional as F

    from digitpipe.export.onnx_export import export_onnx

    class Resized(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(6, 1, 3, padding=1)

        def forward(self, x):
            return self.conv(torch.cat([x, F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="bilinear")], 1))

    return export_onnx(Resized(), 3, height, width=width, output_name="logits").SerializeToString()


def test_a_graph_the_quantizer_cannot_follow_is_one_error_and_leaves_no_files(tmp_path, monkeypatch):
    from digitpipe.export.quantize import QuantizationError

    monkeypatch.chdir(tmp_path)  # onnxruntime writes its half-done model to the working directory
    calibration = np.random.default_rng(0).random((8, 3, 24, 32), dtype=np.float32)
    with pytest.raises(QuantizationError) as failed:
        quantize_int8(unquantizable_onnx(), calibration)
    assert "could not quantize" in str(failed.value) and "\n" not in str(failed.value)
    assert list(tmp_path.iterdir()) == []
