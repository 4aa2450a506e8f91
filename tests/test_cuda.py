"""The CUDA paths, run where torch sees a GPU and skipped, saying so, where it does not (CI's
machines have none). They train on the GPU with mixed precision and check that what comes
out is an ordinary CPU artifact: a checkpoint that loads with weights_only on the CPU and
exports and verifies there, as on a machine that never had the GPU."""
from __future__ import annotations

import pytest
import torch

from tests.conftest import DATA_DIR, SEED

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: torch.cuda.is_available() is False")

# One epoch on 6,000 images scores 96-98% on the CPU; the floor leaves room for AMP's rounding.
ACCURACY_FLOOR = 0.90


@pytest.fixture(scope="module")
def cuda_run(tmp_path_factory):
    from digitpipe.train.engine import TrainConfig, run

    out = tmp_path_factory.mktemp("cuda")
    lines = []
    cfg = TrainConfig(epochs=2, train_subset=6000, test_subset=2000, data_dir=str(DATA_DIR), seed=SEED, device="cuda",
                      out=str(out / "digits.pt"), run_dir=str(out / "run"))
    first = run(cfg, log=lines.append, stop_after=1)  # a time-boxed job stops after one epoch ...
    summary = run(cfg, resume=True, log=lines.append)  # ... and resumes with the CUDA generator's state
    return cfg, first, summary, lines


def test_training_runs_on_the_gpu_with_mixed_precision_and_resumes(cuda_run):
    cfg, first, summary, lines = cuda_run
    assert any("cuda (" in line and "AMP on" in line for line in map(str, lines)), lines[:3]
    assert first["stopped_at"] == 1
    assert [h["epoch"] for h in summary["history"]] == [1, 2]
    assert summary["test_acc"] >= ACCURACY_FLOOR, summary["test_acc"]


def test_a_checkpoint_written_on_the_gpu_exports_and_verifies_on_the_cpu(cuda_run, tmp_path):
    from digitpipe.export.cli import build_parser, export_checkpoint
    from digitpipe.train import checkpoint

    cfg = cuda_run[0]
    ckpt = checkpoint.load(cfg.out)  # torch.load(map_location="cpu", weights_only=True)
    assert all(t.device.type == "cpu" for t in ckpt["model_state"].values())
    args = build_parser().parse_args(["--checkpoint", cfg.out, "--out", str(tmp_path / "digits.onnx"),
                                      "--data-dir", str(DATA_DIR), "--verify-images", "2000", "--no-int8"])
    report = export_checkpoint(args, log=lambda *_: None)
    assert report["passed"], report


def test_the_detector_trains_on_the_gpu_and_comes_back_on_the_cpu():
    from digitpipe.train.detector import DetectorConfig, ink_loss, train_detector

    cfg = DetectorConfig(scenes=300, steps=150, val_scenes=60, seed=SEED, data_dir=str(DATA_DIR), real_photos=False,
                         hard_negatives=3)
    net, result = train_detector(cfg, log=lambda *_: None)
    assert next(net.parameters()).device.type == "cpu"
    assert 0 < result.iou <= 1 and result.precision > 0
    # The mined loss gives the same value on the GPU as on the CPU.
    g = torch.Generator().manual_seed(SEED)
    logits, ink = torch.randn(2, 1, 30, 40, generator=g), (torch.rand(2, 1, 30, 40, generator=g) < 0.05).float()
    assert torch.allclose(ink_loss(logits.cuda(), ink.cuda(), 3).cpu(), ink_loss(logits, ink, 3), rtol=1e-5)
