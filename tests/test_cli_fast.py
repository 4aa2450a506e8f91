"""run-digit's entry point on a stand-in model (seconds, no training): choices that do not
depend on how well a model reads."""
import json

import cv2
import numpy as np

from runtime.cli import EXIT_OK, main
from runtime.digits import Candidate, find_digits, most_prominent
from tests.conftest import write_png


def touching_rings() -> np.ndarray:
    """Four rings drawn touching: one group too wide for a digit, so only its pieces survive."""
    page = np.full((480, 640), 230, np.uint8)
    for i in range(4):
        cv2.circle(page, (170 + i * 100, 240), 52, 30, 6, cv2.LINE_AA)
    return page


def test_single_when_only_pieces_survive(stand_in_model, tmp_path, capsys):
    page = touching_rings()
    found = find_digits(page)
    assert found and all(c.piece for c in found), "the page must leave pieces without their whole"
    assert most_prominent(found) == [max(found, key=lambda c: c.area)]
    path = write_png(tmp_path / "rings.png", page)
    code = main(["--no-window", "--json", "--single", "--model", stand_in_model, "--image", str(path)])
    out, err = capsys.readouterr()
    assert code == EXIT_OK and "Traceback" not in err, err
    assert len(json.loads(out)["digits"]) <= 1


def test_single_prefers_ink_offered_whole():
    tile = np.zeros((28, 28), np.uint8)
    big_piece = Candidate((0, 0, 50, 50), tile, 900, group=0, piece=True)
    whole = Candidate((0, 0, 90, 50), tile, 800, group=0)
    alone = Candidate((100, 0, 20, 20), tile, 100)
    assert most_prominent([big_piece, whole, alone]) == [whole]
    assert most_prominent([]) == []


def test_fps_average_starts_from_the_first_frame():
    from runtime.cli import smoothed_fps

    fps = smoothed_fps(None, 0.01)
    assert fps == 100.0  # not a tenth of it
    for _ in range(10):
        fps = smoothed_fps(fps, 0.01)
    assert abs(fps - 100.0) < 1e-9
    assert smoothed_fps(100.0, 0.02) == 95.0  # a slower frame moves the average a tenth of the way


def test_training_scripts_without_torch_name_the_extra(tmp_path):
    """digitpipe-train/-export/-check in a process where importing torch fails: one line, exit 2."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    blocker = tmp_path / "block" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ModuleNotFoundError('torch is blocked in this test', name='torch')\n")
    env = {**os.environ, "PYTHONPATH": f"{blocker.parent}{os.pathsep}{ROOT}"}
    for script in ("train", "export", "check"):
        done = subprocess.run([sys.executable, "-c", f"import sys, train.entry as e; sys.exit(e.{script}())", "--help"],
                              capture_output=True, text=True, env=env, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip() == (f"error: digitpipe-{script} needs torch, which comes with the training extra: "
                                       "pip install 'digitpipe[train]'")
