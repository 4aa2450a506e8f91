"""Inference backends: one class per engine, picked from BACKENDS by name.

Each takes the ONNX bytes and ModelInfo and runs a float32 NCHW blob to logits.
"""
from __future__ import annotations

import glob
import os

import numpy as np

from digitpipe.runtime.errors import ModelError, first_line
from digitpipe.runtime.metadata import ModelInfo


def gpu_present() -> bool:
    """An NVIDIA device node exists; without one, asking for CUDA only prints errors."""
    return bool(glob.glob("/dev/nvidia[0-9]*")) or os.name == "nt"


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, model_bytes: bytes, info: ModelInfo, device: str = "auto", threads: int = 0):
        import onnxruntime as ort

        # Fatal only: its errors reach the user as our one-line messages, not as its log lines.
        ort.set_default_logger_severity(4)
        options = ort.SessionOptions()
        options.log_severity_level = 4
        # Its threads wait for work asleep, not spinning: between the reader's short runs the
        # cores belong to OpenCV and the ink detector's worker (1.08x the frame rate read a
        # frame at a time; docs/measurements.md, "Reading video a frame ahead").
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if device in ("auto", "cuda") and gpu_present() and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        elif device == "cuda":
            raise ModelError("--device cuda: onnxruntime has no usable CUDA provider here")
        try:
            self.session = ort.InferenceSession(model_bytes, options, providers=providers)
        except Exception as exc:
            raise ModelError(f"onnxruntime cannot load it ({first_line(exc)})") from None
        self.input_name, self.output_name = info.input_name, info.output_name
        self.providers = self.session.get_providers()
        self.run_options = ort.RunOptions()
        self.run_options.log_severity_level = 4

    def run(self, blob: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: blob}, self.run_options)[0]


class OpenCVBackend:
    name = "opencv"

    def __init__(self, model_bytes: bytes, info: ModelInfo, device: str = "auto", threads: int = 0):
        import cv2

        if device == "cuda":
            raise ModelError("--device cuda is for --backend onnxruntime; OpenCV DNN runs here on the CPU")
        try:
            self.net = cv2.dnn.readNetFromONNX(np.frombuffer(model_bytes, dtype=np.uint8))
        except cv2.error as exc:
            raise ModelError(f"OpenCV DNN cannot load it ({first_line(exc)})") from None
        if self.net.empty():
            raise ModelError("OpenCV DNN loaded an empty network")
        self.input_name, self.output_name = info.input_name, info.output_name
        self.providers = ["opencv-cpu"]

    def run(self, blob: np.ndarray) -> np.ndarray:
        self.net.setInput(blob, self.input_name)
        return self.net.forward(self.output_name)


BACKENDS = {b.name: b for b in (OnnxRuntimeBackend, OpenCVBackend)}

