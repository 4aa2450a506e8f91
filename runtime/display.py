"""The window: the frame with a box, digit and confidence per digit, and the number read."""
from __future__ import annotations

import os
import socket
import sys

import cv2
import numpy as np

from digitpipe.runtime.reader import Reading

WINDOW_TITLE = "run-digit"
GREEN, BLACK, WHITE, YELLOW = (60, 200, 60), (0, 0, 0), (255, 255, 255), (0, 220, 255)


def _connect_unix(path: str) -> None:
    """Connect to a local X server: its abstract socket (Linux), else the socket file."""
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect("\0" + path)
            return
        except OSError:
            pass
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)


def display_problem() -> str | None:
    """Why no window can open here, or None. On Linux, OpenCV's Qt aborts the whole process
    when it cannot reach the display (no DISPLAY, a stale one after ssh, an X server still
    starting), so the X server is checked first: a connection to its socket, no traffic."""
    if not sys.platform.startswith("linux"):
        return None
    display = os.environ.get("DISPLAY", "")
    if not display:
        return "no display" if not os.environ.get("WAYLAND_DISPLAY") else None
    host, _, rest = display.rpartition(":")
    number = rest.split(".")[0]
    if not number.isdigit():
        return f"DISPLAY={display!r} is not a display name"
    try:
        if host in ("", "unix"):
            _connect_unix(f"/tmp/.X11-unix/X{number}")
        else:
            socket.create_connection((host, 6000 + int(number)), timeout=1.0).close()
    except OSError as exc:
        return f"cannot connect to display {display} ({exc.strerror or exc})"
    return None


def annotate(image: np.ndarray, reading: Reading, status: str = "", roi=None, fit: bool = True) -> np.ndarray:
    """A BGR copy of the image with the reading drawn on it; fit: scaled to a viewable size."""
    frame = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
    h, w = frame.shape[:2]
    scale = 1.0
    if fit and (max(h, w) < 320 or max(h, w) > 1280):  # tiles become visible, huge photos fit a screen
        scale = (320 if max(h, w) < 320 else 1280) / max(h, w)
        frame = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_NEAREST if scale > 1 else cv2.INTER_AREA)
    thick = max(1, round(max(frame.shape[:2]) / 320))
    if roi is not None:
        x, y, bw, bh = (round(v * scale) for v in roi)
        cv2.rectangle(frame, (x, y), (x + bw, y + bh), YELLOW, thick)
    for d in reading.digits:
        x, y, bw, bh = (round(v * scale) for v in d.box)
        cv2.rectangle(frame, (x, y), (x + bw, y + bh), GREEN, thick)
        label(frame, f"{d.label} {d.confidence:.0%}", (x, y - 2 * thick), 0.5 * thick, thick, fill=GREEN, ink=BLACK)
    headline = f"read: {reading.text or 'no digit'}"
    (_, text_h), _ = cv2.getTextSize(headline, FONT, 0.7 * thick, thick)
    label(frame, headline, (8, 8 + text_h), 0.7 * thick, thick)
    if status:
        label(frame, status, (8, frame.shape[0] - 8), 0.5 * thick, thick)
    return frame


FONT = cv2.FONT_HERSHEY_SIMPLEX


def label(frame: np.ndarray, text: str, org, size: float, thick: int, fill=BLACK, ink=WHITE) -> tuple:
    """Text on a filled box, as detection tools draw labels: readable on light and dark paper
    alike (outlined white text vanished on white paper). Kept inside the frame; returns the
    box (x0, y0, x1, y1)."""
    (tw, th), base = cv2.getTextSize(text, FONT, size, thick)
    pad = thick + 1
    x = int(min(max(org[0], pad), max(pad, frame.shape[1] - tw - pad)))
    y = int(min(max(org[1], th + pad), max(th + pad, frame.shape[0] - base - pad)))
    box = (x - pad, y - th - pad, x + tw + pad, y + base + pad)
    cv2.rectangle(frame, box[:2], box[2:], fill, -1)
    cv2.putText(frame, text, (x, y), FONT, size, ink, thick, cv2.LINE_AA)
    return box


class Window:
    def __init__(self, title: str = WINDOW_TITLE):
        self.title = title
        # opencv-python's bundled Qt warns about its missing font folder on every window.
        os.environ.setdefault("QT_LOGGING_RULES", "default.warning=false")
        cv2.namedWindow(title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
        self.size: tuple[int, int] | None = None

    def show(self, frame: np.ndarray, wait_ms: int = 1) -> int:
        """Show a frame; return the key pressed within wait_ms (0 = until a key), or -1."""
        size = (frame.shape[1], frame.shape[0])
        if size != self.size:  # pixel for pixel; the user may still resize it
            cv2.resizeWindow(self.title, *size)
            self.size = size
        cv2.imshow(self.title, frame)
        return cv2.waitKey(wait_ms) & 0xFF if wait_ms >= 0 else -1

    def closed(self) -> bool:
        try:
            return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
        except cv2.error:
            return True

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass
