"""`python -m digitpipe.train` / `digitpipe-train`: train a classifier, keep the best checkpoint."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from digitpipe.runtime.errors import first_line
from digitpipe.train.engine import TrainConfig, TrainingDiverged, run
from digitpipe.train.models import ARCHS

D = TrainConfig()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="digitpipe-train", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=D.dataset,
                   help="mnist, fashion-mnist, cifar10, or imagefolder:PATH (PATH/train/<class>/, PATH/val/<class>/)")
    g.add_argument("--image-size", type=int, default=D.image_size, help="imagefolder input side (0 = 224)")
    g.add_argument("--data-dir", default=D.data_dir, help="where datasets are found or fetched to")
    g.add_argument("--loading", default=D.loading, choices=["auto", "memory", "stream"],
                   help="image folders: stream from disk through DataLoader workers, or decode into memory first; "
                        "auto streams a folder that would take more than 512 MB decoded (built-in datasets: memory)")
    g.add_argument("--workers", type=int, default=D.workers,
                   help="DataLoader worker processes for a streamed folder (-1 = one per core, 0 = load in this process)")
    g.add_argument("--val-size", type=int, default=D.val_size, help="validation images held out of train")
    g.add_argument("--train-subset", type=int, default=D.train_subset, help="train on the first N images only (0 = all)")
    g.add_argument("--test-subset", type=int, default=D.test_subset, help="test on the first N images only (0 = all)")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=D.augment,
                   help="augment the training images (--no-augment turns it off)")
    g.add_argument("--reject-class", action=argparse.BooleanOptionalAction, default=D.reject_class,
                   help="digit datasets: an extra 'no digit' class learnt from generated non-digit ink")
    g = p.add_argument_group("model and optimisation")
    g.add_argument("--arch", default=D.arch, choices=sorted(ARCHS), help="network")
    g.add_argument("--weights", default=D.weights, metavar="FILE",
                   help="ImageNet weights for a resnet (a torchvision state_dict file); the head is new")
    g.add_argument("--freeze-epochs", type=int, default=D.freeze_epochs,
                   help="train only the head for this many epochs, then everything (transfer learning)")
    g.add_argument("--epochs", type=int, default=D.epochs, help="passes over the training set")
    g.add_argument("--batch-size", type=int, default=D.batch_size, help="images per optimisation step")
    g.add_argument("--optimizer", default=D.optimizer, choices=["adamw", "adam", "sgd"], help="optimiser")
    g.add_argument("--schedule", default=D.schedule, choices=["onecycle", "step", "constant"],
                   help="learning-rate schedule (step: x0.1 every third of the epochs)")
    g.add_argument("--lr", type=float, default=D.lr, help="learning rate (the peak of a one-cycle schedule)")
    g.add_argument("--weight-decay", type=float, default=D.weight_decay, help="weight decay (decoupled for adamw, L2 for adam and sgd)")
    g.add_argument("--label-smoothing", type=float, default=D.label_smoothing, help="cross-entropy label smoothing")
    g.add_argument("--ema", type=float, default=D.ema,
                   help="evaluate and keep an exponential moving average of the weights with this decay (0 = off)")
    g.add_argument("--patience", type=int, default=D.patience,
                   help="stop early after this many epochs without a better validation accuracy, or an equal one with a lower loss (0 = never)")
    g.add_argument("--seed", type=int, default=D.seed, help="seeds weights, data order, split and augmentation")
    g.add_argument("--device", default=D.device, choices=["auto", "cpu", "cuda"], help="auto: CUDA when available")
    g = p.add_argument_group("outputs")
    g.add_argument("--out", default=D.out, help="best-on-validation checkpoint")
    g.add_argument("--run-dir", default=D.run_dir,
                   help="metrics.json, curves.png, confusion.png, predictions.png and the resumable last.pt")
    g.add_argument("--tensorboard", action="store_true", help="also write TensorBoard logs to RUN_DIR/tensorboard")
    g.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last.pt")
    g.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop after N epochs of this invocation (continue later with --resume)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    resume, stop_after = args.__dict__.pop("resume"), args.__dict__.pop("stop_after")
    cfg = TrainConfig(**vars(args))
    try:
        run(cfg, resume=resume, stop_after=stop_after)
    except KeyboardInterrupt:
        last = Path(cfg.run_dir) / "last.pt"
        hint = (f"the last finished epoch is in {last}; run again with --resume to continue" if last.is_file()
                else "no epoch had finished, so there is nothing to resume")
        print(f"\ninterrupted: {hint}", file=sys.stderr)
        return 130
    except TrainingDiverged as exc:
        print(f"error: {exc}; {cfg.out} keeps the last good model", file=sys.stderr)
        return 1
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
