"""The wheel as users get it: built, installed into a fresh venv without torch, used from elsewhere."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import digitpipe
from bench.make_photo import photo_of
from tests.conftest import ROOT, write_png

NUMBER = "2026"


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{cmd}: {done.stderr[-2000:]}"
    return done


def clean_env() -> dict:
    """No PYTHONPATH, no display, no venv of ours: what a new shell has."""
    drop = {"PYTHONPATH", "DISPLAY", "VIRTUAL_ENV", "PYTHONHOME"}
    return {k: v for k, v in os.environ.items() if k not in drop}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, ROOT], env=clean_env())
    (built,) = dist.glob("digitpipe-*.whl")
    return built


def test_wheel_holds_one_package_and_the_bundled_model(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"digitpipe", f"digitpipe-{digitpipe.__version__}.dist-info"}
    for part in ("runtime/cli.py", "train/engine.py", "export/cli.py", "models/digits.onnx",
                 "models/digits.report.json", "models/detector.onnx", "models/detector.report.json",
                 "models/sequence.onnx", "models/sequence.report.json"):
        assert f"digitpipe/{part}" in names


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_reads_without_torch(wheel, mnist_test, tmp_path):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv])
    python, bindir = venv / "bin" / "python", venv / "bin"
    run([python, "-m", "pip", "install", "-q", wheel], env=clean_env())
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())

    # What the wheel itself put at the top of site-packages (its RECORD; scripts go to bin/).
    (info,) = site.glob("digitpipe-*.dist-info")
    record = [line.split(",")[0] for line in (info / "RECORD").read_text().splitlines() if line]
    tops = {Path(p).parts[0] for p in record if not p.startswith("..")}
    assert tops == {"digitpipe", info.name}
    assert {"run-digit", "digitpipe-train"} <= {Path(p).name for p in record if p.startswith("..")}

    elsewhere = tmp_path / "elsewhere"  # no artifacts/, no repository on the path
    elsewhere.mkdir()
    write_png(elsewhere / "number.png", photo_of(NUMBER, *mnist_test))
    for backend in ("onnxruntime", "opencv"):
        done = run([bindir / "run-digit", "--image", "number.png", "--backend", backend, "--check-model"],
                   cwd=elsewhere, env=clean_env())
        assert done.stdout.startswith(f"number.png: {NUMBER}"), (backend, done.stdout)
    api = ("import sys, digitpipe; print(digitpipe.Reader().read('number.png').text); "
           "import importlib.util as u; "
           "print([m for m in ('torch', 'runtime', 'train', 'export') if u.find_spec(m)])")
    done = run([python, "-c", api], cwd=elsewhere, env=clean_env())
    assert done.stdout.split("\n")[:2] == [NUMBER, "[]"], done.stdout
    # Without the train extra the training scripts say what to install, in one line.
    done = subprocess.run([bindir / "digitpipe-train", "--help"], capture_output=True, text=True,
                          cwd=elsewhere, env=clean_env())
    assert done.returncode == 2 and "pip install 'digitpipe[train]'" in done.stderr
