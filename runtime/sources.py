"""Where frames come from: image files and folders, a video file, or a camera."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

# FFmpeg logs decoder complaints straight to stderr; we report a broken stream ourselves.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
import cv2  # noqa: E402
import numpy as np

from digitpipe.runtime.errors import InputError
from digitpipe.runtime.imageio import IMAGE_EXTENSIONS


def expand_paths(paths: list[str]) -> list[tuple[str, Path | InputError]]:
    """Each file as given; each folder as its image files, sorted. Problems become entries."""
    out: list[tuple[str, Path | InputError]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            try:
                files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
            except PermissionError:
                out.append((raw, InputError(f"{raw}: permission denied")))
                continue
            if not files:
                out.append((raw, InputError(f"{raw}: folder has no image files")))
            out.extend((str(f), f) for f in files)
        else:
            out.append((raw, p))
    return out


class FrameSource:
    """Frames of a video file or camera; `ended_early` says why a stream stopped, if it did."""

    def __init__(self, capture: cv2.VideoCapture, name: str, is_camera: bool):
        self.capture, self.name, self.is_camera = capture, name, is_camera
        self.count = 0
        self.ended_early: str | None = None

    @property
    def fps(self) -> float:
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        return fps if fps and fps > 0 else 30.0

    def __iter__(self) -> Iterator[np.ndarray]:
        total = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        try:
            while True:
                ok, frame = self.capture.read()
                if not ok or frame is None or frame.size == 0:
                    break
                self.count += 1
                yield frame
        finally:
            self.capture.release()
        if self.count == 0:
            self.ended_early = "no frame could be read"
        elif self.is_camera:
            self.ended_early = f"camera stopped delivering frames after {self.count}"
        else:
            if total and self.count < total - 1:
                self.ended_early = f"video ended after {self.count} of {total} frames (truncated or corrupt?)"


def open_video(path: str) -> FrameSource:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such video file")
    capture = cv2.VideoCapture(str(p))
    if not capture.isOpened():
        raise InputError(f"{path}: not a readable video")
    return FrameSource(capture, str(p), is_camera=False)


def open_camera(index: int) -> FrameSource:
    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise InputError(f"camera {index}: cannot be opened (no such camera, or it is busy)")
    return FrameSource(capture, f"camera {index}", is_camera=True)
