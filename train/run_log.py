"""What a run records after every epoch: metrics.json, the training curves, TensorBoard scalars."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from digitpipe.train import plots
from digitpipe.train.files import atomic_write_json


class RunLog:
    def __init__(self, run_dir: Path, tensorboard: bool):
        self.run_dir = Path(run_dir)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))

    def epoch(self, cfg, history: list[dict]) -> None:
        atomic_write_json(self.run_dir / "metrics.json", {"config": asdict(cfg), "history": history})
        plots.training_curves(history, self.run_dir / "curves.png")
        if self.writer is not None:
            h = history[-1]
            for key in ("train_loss", "val_loss", "train_acc", "val_acc", "lr"):
                group, _, name = key.partition("_")
                self.writer.add_scalar(f"{name}/{group}" if name else key, h[key], h["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
