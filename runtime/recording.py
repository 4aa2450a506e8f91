"""--save: the annotated stream written as a video, renamed into place only when complete."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from digitpipe.runtime.errors import InputError

FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


class VideoRecorder:
    def __init__(self, path: str | Path, fps: float):
        self.path = Path(path)
        if self.path.suffix.lower() not in FOURCC:
            raise InputError(f"--save {path}: use one of {', '.join(FOURCC)}")
        # OpenCV picks the container from the extension, so the temp name keeps it.
        self.tmp = self.path.with_name(f".{self.path.stem}.part{self.path.suffix}")
        self.fps, self.writer, self.frames = fps, None, 0

    def write(self, frame: np.ndarray) -> None:
        if self.writer is None:
            h, w = frame.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*FOURCC[self.path.suffix.lower()])
            self.writer = cv2.VideoWriter(str(self.tmp), fourcc, self.fps, (w, h))
            if not self.writer.isOpened():
                raise InputError(f"--save {self.path}: cannot write a video there")
        self.writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
        if self.frames:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
