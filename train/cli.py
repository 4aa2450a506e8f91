"""`python -m train` / `digitpipe-train`: train a classifier, keep the best checkpoint."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from train.engine import TrainConfig, TrainingDiverged, run

D = TrainConfig()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="digitpipe-train", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=D.dataset, help="dataset name")
    g.add_argument("--data-dir", default=D.data_dir, help="where datasets are found or fetched to")
    g.add_argument("--val-size", type=int, default=D.val_size, help="validation images held out of train")
    g.add_argument("--train-subset", type=int, default=D.train_subset, help="train on the first N images only (0 = all)")
    g.add_argument("--test-subset", type=int, default=D.test_subset, help="test on the first N images only (0 = all)")
    g.add_argument("--no-augment", dest="augment", action="store_false", help="turn augmentation off")
    g = p.add_argument_group("model and optimisation")
    g.add_argument("--arch", default=D.arch, help="network: digitnet or classic")
    g.add_argument("--epochs", type=int, default=D.epochs, help="passes over the training set")
    g.add_argument("--batch-size", type=int, default=D.batch_size, help="images per optimisation step")
    g.add_argument("--optimizer", default=D.optimizer, choices=["adamw", "adam", "sgd"], help="optimiser")
    g.add_argument("--schedule", default=D.schedule, choices=["onecycle", "constant"], help="learning-rate schedule")
    g.add_argument("--lr", type=float, default=D.lr, help="learning rate (the peak of a one-cycle schedule)")
    g.add_argument("--weight-decay", type=float, default=D.weight_decay, help="AdamW weight decay")
    g.add_argument("--label-smoothing", type=float, default=D.label_smoothing, help="cross-entropy label smoothing")
    g.add_argument("--seed", type=int, default=D.seed, help="seeds weights, data order, split and augmentation")
    g.add_argument("--device", default=D.device, choices=["auto", "cpu", "cuda"], help="auto: CUDA when available")
    g = p.add_argument_group("outputs")
    g.add_argument("--out", default=D.out, help="best-on-validation checkpoint")
    g.add_argument("--run-dir", default=D.run_dir, help="metrics.json and the resumable last.pt")
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
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
