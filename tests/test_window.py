"""A real window under Xvfb: run-digit shows the photo with its reading drawn on it."""
import os
import select
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from digitpipe.train.photos import render_photo
from digitpipe.runtime.display import GREEN, WINDOW_TITLE
from tests.system_packages import require

pytestmark = pytest.mark.slow


def read_xwd(data: bytes) -> np.ndarray:
    """A 24/32-bit ZPixmap XWD screenshot (what `xwd -root` writes) as a BGR image."""
    header = np.frombuffer(data[:100], dtype=">u4")
    header_size, width, height = int(header[0]), int(header[4]), int(header[5])
    byte_order, bits_per_pixel, bytes_per_line = int(header[7]), int(header[11]), int(header[12])
    ncolors = int(header[19])
    step = bits_per_pixel // 8
    assert step in (3, 4) and byte_order == 0, f"unexpected XWD layout: {bits_per_pixel} bpp, byte order {byte_order}"
    offset = header_size + 12 * ncolors
    rows = np.frombuffer(data[offset : offset + height * bytes_per_line], dtype=np.uint8).reshape(height, bytes_per_line)
    return rows[:, : width * step].reshape(height, width, step)[:, :, :3].copy()  # LSB first: B, G, R


@pytest.fixture
def xvfb():
    """A fresh X server on a free display, yielded once it accepts connections: Xvfb picks the
    display and writes its number to -displayfd when ready (a fixed sleep was not enough on a
    busy machine, and a fixed number can collide with another server)."""
    require("Xvfb", "xwd", "xdotool")
    read_end, write_end = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                              pass_fds=(write_end,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 60)
        number = os.read(read_end, 32).decode().strip() if ready else ""
        assert number.isdigit(), f"Xvfb did not start (exit {server.poll()})"
        # Ready by its own word, and answering a client too, before run-digit is pointed at it.
        env, end = {**os.environ, "DISPLAY": f":{number}"}, time.time() + 30
        while subprocess.run(["xdotool", "getdisplaygeometry"], env=env, capture_output=True).returncode != 0:
            assert time.time() < end and server.poll() is None, f"Xvfb on :{number} does not answer (exit {server.poll()})"
            time.sleep(0.2)
        yield f":{number}"
    finally:
        os.close(read_end)
        server.terminate()
        server.wait(5)


def wait_for_window(env: dict, proc, search: list[str], timeout: float = 30.0) -> str:
    """The X window ids xdotool finds for run-digit's window, waiting for it to appear."""
    end = time.time() + timeout
    while time.time() < end:
        found = subprocess.run(["xdotool", "search", *search], env=env, capture_output=True, text=True).stdout.strip()
        if found:
            return found
        assert proc.poll() is None, f"run-digit exited ({proc.returncode}) before its window appeared: {proc.stderr.read()[-1500:]}"
        time.sleep(0.2)
    raise AssertionError(f"no run-digit window appeared in {timeout:.0f} s")


def test_window_shows_the_reading(exported, mnist_test, tmp_path, xvfb):
    model, _ = exported
    images, labels = mnist_test
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), render_photo([images[0], images[1]], np.random.default_rng(2)))
    env = {**os.environ, "DISPLAY": xvfb}
    proc = subprocess.Popen([sys.executable, "-m", "digitpipe.runtime", "--model", str(model), "--image", str(photo),
                             "--delay", "6000"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        window = wait_for_window(env, proc, ["--name", WINDOW_TITLE])
        deadline = time.monotonic() + 5.0  # a loaded machine paints late: look again until then
        while True:
            shot = read_xwd(subprocess.run(["xwd", "-root", "-silent"], env=env, capture_output=True, check=True).stdout)
            overlay = np.all(np.abs(shot.astype(int) - np.array(GREEN)) <= 10, axis=2)
            if overlay.sum() > 200 or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        cv2.imwrite(str(tmp_path / "screen.png"), shot)
        assert overlay.sum() > 200, "no digit boxes drawn in the window"
    finally:
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.startswith(f"{photo}: {labels[0]}{labels[1]}") and err == ""


def test_live_window_snapshot_and_quit_keys(exported, mnist_test, tmp_path, xvfb):
    """A long video in a window: pressing q ends the run cleanly, before the video ends."""
    model, _ = exported
    images, _ = mnist_test
    rng = np.random.default_rng(4)
    frames = [render_photo([images[3]], rng, jpeg_quality=None) for _ in range(10)] * 60
    video = tmp_path / "long.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 480))
    for f in frames:
        writer.write(f)
    writer.release()
    env = {**os.environ, "DISPLAY": xvfb}
    proc = subprocess.Popen([sys.executable, "-m", "digitpipe.runtime", "--model", str(model), "--video", str(video), "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        window = wait_for_window(env, proc, ["--onlyvisible", "--name", WINDOW_TITLE])
        # Real key events (XTEST) to the focused window: Qt ignores synthetic XSendEvent keys.
        target = window.splitlines()[-1]
        subprocess.run(["xdotool", "mousemove", "100", "100"], env=env, check=True)
        subprocess.run(["xdotool", "windowfocus", "--sync", target], env=env, check=False, timeout=10)
        subprocess.run(["xdotool", "key", "s"], env=env, check=True)
        time.sleep(0.3)
        for _ in range(20):
            subprocess.run(["xdotool", "key", "q"], env=env, check=True)
            try:
                out, err = proc.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert 0 < len(lines) < len(frames), "q did not stop the run early"
    snapshots = list(tmp_path.glob("snapshot-*.png"))
    assert len(snapshots) == 1 and "saved snapshot-" in err
    assert cv2.imread(str(snapshots[0])).shape == (480, 640, 3)
