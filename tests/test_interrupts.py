"""Interrupted and failed runs never leave a half-written or replaced-by-worse artifact."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from digitpipe.runtime.model import Model
from tests.conftest import DATA_DIR, ROOT
from digitpipe.train import checkpoint

pytestmark = pytest.mark.slow


def train_cmd(tmp: Path, *extra):
    return [sys.executable, "-m", "digitpipe.train", "--train-subset", "1500", "--val-size", "500", "--test-subset", "500",
            "--data-dir", str(DATA_DIR), "--out", str(tmp / "digits.pt"), "--run-dir", str(tmp / "run"), *extra]


def start(cmd):
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc, timeout=120):
    end = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < end, f"{path} never appeared"
        time.sleep(0.1)


def test_ctrl_c_leaves_a_resumable_run(tmp_path):
    proc = start(train_cmd(tmp_path, "--epochs", "40"))
    wait_for(tmp_path / "run" / "last.pt", proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "run again with --resume" in err and "Traceback" not in err, err
    done_epochs = checkpoint.load(tmp_path / "run" / "last.pt")["epoch"]
    resumed = subprocess.run(train_cmd(tmp_path, "--epochs", "40", "--resume", "--stop-after", "1"),
                             cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming after epoch {done_epochs}" in resumed.stdout
    assert checkpoint.load(tmp_path / "run" / "last.pt")["epoch"] == done_epochs + 1


def _caller_handler(signum, frame):
    raise AssertionError("the caller's own SIGINT handler ran during training")


@pytest.mark.parametrize("before", [signal.default_int_handler, signal.SIG_IGN, _caller_handler],
                         ids=["python-default", "ignored", "caller's own"])
def test_ctrl_c_inside_a_checkpoint_write_waits_for_it(tmp_path, monkeypatch, before):
    """The signal lands while last.pt is being written: the write completes, then the run
    stops; afterwards SIGINT has exactly the handler it had before (ignored under nohup)."""
    from digitpipe.train.engine import TrainConfig, run

    real_save = checkpoint.save

    def save_interrupted(path, payload):
        if Path(path).name == "last.pt":
            os.kill(os.getpid(), signal.SIGINT)
        return real_save(path, payload)

    monkeypatch.setattr(checkpoint, "save", save_interrupted)
    cfg = TrainConfig(epochs=3, train_subset=512, val_size=256, test_subset=256, data_dir=str(DATA_DIR),
                      out=str(tmp_path / "d.pt"), run_dir=str(tmp_path / "run"))
    outer = signal.signal(signal.SIGINT, before)
    try:
        with pytest.raises(KeyboardInterrupt):
            run(cfg, log=lambda *_: None)
        assert signal.getsignal(signal.SIGINT) is before
    finally:
        signal.signal(signal.SIGINT, outer)
    assert checkpoint.load(tmp_path / "run" / "last.pt")["epoch"] == 1
    assert checkpoint.load(tmp_path / "d.pt")["metrics"]["epoch"] == 1


def test_handler_restored_after_a_run_that_ends_normally_or_fails():
    from digitpipe.train.interrupt import DeferredInterrupt

    outer = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with DeferredInterrupt():
            assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        with pytest.raises(ValueError), DeferredInterrupt():
            raise ValueError("training failed")
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, outer)


def test_sigkill_at_any_moment_leaves_loadable_checkpoints(tmp_path):
    """Kill at start-up, right as the first checkpoint lands, and in the middle of later epochs."""
    moments = {
        "start-up": lambda run, proc: time.sleep(0.5),
        "first save": lambda run, proc: wait_for(run / "digits.pt", proc),
        "mid epoch 2": lambda run, proc: (wait_for(run / "run" / "last.pt", proc), time.sleep(0.7)),
        "later": lambda run, proc: (wait_for(run / "run" / "last.pt", proc), time.sleep(2.3)),
    }
    for name, wait in moments.items():
        run = tmp_path / name.replace(" ", "-")
        proc = start(train_cmd(run, "--epochs", "40"))
        wait(run, proc)
        proc.kill()
        proc.communicate()
        for artifact in ("digits.pt", "run/last.pt"):
            if (run / artifact).exists():
                checkpoint.load(run / artifact)  # raises on a torn file
        if name != "start-up":
            assert (run / "digits.pt").exists()


def test_diverging_loss_stops_and_keeps_the_best(trained, tmp_path):
    ckpt, _ = trained
    shutil.copy(ckpt, tmp_path / "digits.pt")
    before = (tmp_path / "digits.pt").read_bytes()
    done = subprocess.run(train_cmd(tmp_path, "--epochs", "2", "--lr", "1e12"), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1 and "loss became" in done.stderr and "keeps the last good model" in done.stderr
    assert "Traceback" not in done.stderr
    assert (tmp_path / "digits.pt").read_bytes() == before


def test_killed_export_leaves_the_previous_model(exported, trained, tmp_path):
    good, _ = exported
    ckpt, _ = trained
    out = tmp_path / "digits.onnx"
    shutil.copy(good, out)
    before = out.read_bytes()
    for delay in (1.0, 3.0, 5.0):
        proc = start([sys.executable, "-m", "digitpipe.export", "--checkpoint", str(ckpt), "--out", str(out),
                      "--data-dir", str(DATA_DIR), "--verify-images", "2000"])
        time.sleep(delay)
        proc.kill()
        proc.communicate()
        assert out.read_bytes() == before or Model(out).labels  # old bytes, or a complete verified file
        Model(out)
