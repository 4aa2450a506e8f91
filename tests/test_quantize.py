"""INT8 quantization leaves the process's logging as it found it."""
import logging
from pathlib import Path

import numpy as np

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
