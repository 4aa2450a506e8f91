"""The training loop: epochs, validation, best-on-validation and resumable checkpoints."""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from digitpipe.train import checkpoint, distributed, plots
from digitpipe.train.data import (Split, batches, center_crop, load_dataset, model_input, negatives_split, split_validation, subset,
                        training_input, with_negatives)
from digitpipe.train.datasets import DatasetSpec, get_spec, with_reject_class
from digitpipe.train.files import atomic_write_json
from digitpipe.train.interrupt import DeferredInterrupt
from digitpipe.train.models import DEFAULT_WIDTHS, RESNETS, ModelConfig, backbone_parameters, build_model, load_pretrained
from digitpipe.train.run_log import RunLog


@dataclass
class TrainConfig:
    dataset: str = "mnist"
    arch: str = "digitnet"
    epochs: int = 8
    batch_size: int = 128
    optimizer: str = "adamw"  # adamw | adam | sgd
    schedule: str = "onecycle"  # onecycle | step | constant
    lr: float = 4e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.05
    ema: float = 0.998  # decay of an exponential moving average of the weights (0 = off)
    augment: bool = True
    reject_class: bool = True  # digit datasets: an extra "no digit" class learnt from generated non-digit ink
    patience: int = 0  # stop after this many epochs without a better validation accuracy (0 = never)
    weights: str = ""  # ImageNet state_dict file for resnets
    freeze_epochs: int = 0  # with weights: train only the new head for this many epochs first
    image_size: int = 0  # imagefolder input side (0 = 224)
    loading: str = "auto"  # auto | memory | stream: how image folders reach training (train/data.py)
    workers: int = -1  # loader processes for streamed folders (-1 = one per core)
    tensorboard: bool = False
    val_size: int = 5000
    train_subset: int = 0  # 0 = all; small numbers make quick test runs
    test_subset: int = 0
    seed: int = 0
    device: str = "auto"
    data_dir: str = "data"
    out: str = "artifacts/digits.pt"
    run_dir: str = "artifacts/runs/digits"


class TrainingDiverged(RuntimeError):
    pass


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)}, AMP on)"
    return f"cpu ({torch.get_num_threads()} threads)"


OPTIMIZERS = {
    "adamw": lambda params, cfg: torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
    "adam": lambda params, cfg: torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
    "sgd": lambda params, cfg: torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay),
}
# Each takes the number of batches in every epoch (epochs may differ in size) and is stepped per batch.
SCHEDULES = {
    "onecycle": lambda opt, cfg, steps: torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=sum(steps), pct_start=0.25),
    "step": lambda opt, cfg, steps: torch.optim.lr_scheduler.MultiStepLR(  # x0.1 after every third of the epochs
        opt, milestones=list(itertools.accumulate(steps))[max(1, cfg.epochs // 3) - 1 :: max(1, cfg.epochs // 3)],
        gamma=0.1),
    "constant": lambda opt, cfg, steps: torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0),
}


def ema_update(decay: float):
    """EMA step with a warm-up (as in timm): early on the average forgets the random start quickly."""
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        if not averaged[0].is_floating_point():  # BatchNorm's step counters: follow the model
            torch._foreach_copy_(averaged, current)
            return
        n = float(num_averaged)
        torch._foreach_lerp_(averaged, current, 1.0 - min(decay, (1.0 + n) / (10.0 + n)))
    return update


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[cfg.optimizer](model.parameters(), cfg)


def make_schedule(cfg: TrainConfig, optimizer, epoch_steps: list[int]):
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; choose from {', '.join(SCHEDULES)}")
    return SCHEDULES[cfg.schedule](optimizer, cfg, epoch_steps)


EVAL_VALUES = 1000 * 28 * 28  # input values per evaluation batch: 1,000 MNIST digits, 5 colour photos at 224 px


@torch.no_grad()
def predict(model: torch.nn.Module, split, spec: DatasetSpec, device, batch_size: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) for every image of a split, in order, on the evaluation view (centre
    crop); a streamed split's unreadable files are left out of both. The default batch keeps
    activations as small for large colour inputs as for digits (1,000 photos at 128 px took
    over 2 GB in the first convolution alone)."""
    model.eval()
    batch_size = batch_size or max(1, EVAL_VALUES // (spec.preprocess.channels * spec.size**2))
    out, labels = [], []
    for images, y in batches(split, batch_size):
        x = model_input(images.to(device), spec).contiguous(memory_format=torch.channels_last)
        out.append(model(x).float().cpu())
        labels.append(y.cpu())
    if not out:
        return torch.empty(0, len(spec.labels)), torch.empty(0, dtype=torch.long)
    return torch.cat(out), torch.cat(labels)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels.cpu()).float().mean().item() if len(labels) else float("nan")


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    index = labels.cpu() * num_classes + preds.cpu()
    return torch.bincount(index, minlength=num_classes**2).view(num_classes, num_classes)


def class_report(logits: torch.Tensor, labels: torch.Tensor, class_names) -> dict:
    cm = confusion_matrix(logits.argmax(1), labels, len(class_names))
    per_class = (cm.diag().float() / cm.sum(1).clamp(min=1).float()).tolist()
    present = cm.sum(1) > 0  # the "no digit" class has no test images
    return {"per_class_accuracy": {name: acc for name, acc, p in zip(class_names, per_class, present) if p},
            "confusion_matrix": cm.tolist()}


def run(cfg: TrainConfig, resume: bool = False, log=print, stop_after: int | None = None, on_epoch=None) -> dict:
    """Train per cfg; write the best checkpoint to cfg.out and metrics and plots to cfg.run_dir.

    stop_after: end this invocation after that many epochs (a time-boxed job); the run
    continues later with resume=True exactly as if it had not stopped.
    on_epoch(epoch, model, elapsed_s): called after each epoch with the clock stopped
    (benchmarks score the test set there without charging it to training).
    Under torchrun every rank trains its share; rank 0 alone writes and logs.
    """
    device = distributed.setup(pick_device(cfg.device))
    log = log if distributed.is_main() else (lambda *_: None)
    try:
        with DeferredInterrupt() as interrupt:
            return _train(cfg, device, resume, log, stop_after, on_epoch, interrupt)
    finally:
        distributed.teardown()


def _train(cfg: TrainConfig, device, resume: bool, log, stop_after, on_epoch, interrupt: DeferredInterrupt) -> dict:
    main = distributed.is_main()
    spec = get_spec(cfg.dataset, cfg.image_size)
    spec = with_reject_class(spec) if cfg.reject_class else spec
    torch.manual_seed(cfg.seed)
    world = distributed.world_size()
    log(f"device: {describe_device(device)}" + (f" x {world} processes" if world > 1 else ""))
    model, model_cfg = _build_model(cfg, spec, log)
    data = _load_data(cfg, spec, device, log)
    state = TrainState.create(cfg, model.to(device).to(memory_format=torch.channels_last), device, data.epoch_steps)
    last_path = Path(cfg.run_dir) / "last.pt"
    if resume:
        state.restore(last_path, cfg, device)
        best = best_epoch(state.history)
        log(f"resuming after epoch {state.epoch} (best validation {best['val_acc']:.4f}, epoch {best['epoch']})")
    board = RunLog(Path(cfg.run_dir), cfg.tensorboard) if main else None

    t0 = time.perf_counter() - (state.history[-1]["elapsed_s"] if state.history else 0.0)
    first_epoch = state.epoch + 1
    for epoch in range(first_epoch, cfg.epochs + 1):
        if epoch == first_epoch or epoch == cfg.freeze_epochs + 1:  # a new stage: (un)freeze, then wrap for DDP
            net = _start_stage(state.model, epoch, cfg, device, log)
        train_loss, train_acc = train_one_epoch(net, state, data, spec, cfg, epoch, device, interrupt, main)
        val_logits, val_labels = predict(state.evaluated, data.val, spec, device)
        val_acc = distributed.from_main(accuracy(val_logits, val_labels), device)
        elapsed = time.perf_counter() - t0
        state.history.append({"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                              "val_loss": F.cross_entropy(val_logits, val_labels).item(), "val_acc": val_acc,
                              "lr": state.scheduler.get_last_lr()[0], "elapsed_s": elapsed})
        improved = best_epoch(state.history) is state.history[-1]
        state.epoch = epoch
        if main:
            if improved:
                checkpoint.save(Path(cfg.out), _model_payload(state.evaluated, model_cfg, spec, cfg, epoch, val_acc))
            state.save(last_path, cfg, device)
            board.epoch(cfg, state.history)
        log(f"epoch {epoch}/{cfg.epochs}: loss {train_loss:.4f}  val acc {val_acc:.4f}"
            f"{'  (best, saved)' if improved else ''}  [{elapsed:.0f} s]")
        if on_epoch is not None:
            paused = time.perf_counter()
            on_epoch(epoch, state.evaluated, elapsed)
            t0 += time.perf_counter() - paused
        interrupt.check()
        best = best_epoch(state.history)["epoch"]
        if cfg.patience and epoch - best >= cfg.patience and epoch < cfg.epochs:
            log(f"early stop: no better validation for {cfg.patience} epochs (best: epoch {best})")
            break
        if stop_after is not None and epoch - first_epoch + 1 >= stop_after and epoch < cfg.epochs:
            log(f"stopping after epoch {epoch} as asked; continue with --resume")
            return {"config": asdict(cfg), "history": state.history, "stopped_at": epoch}

    interrupt.check()
    if not main:
        return {"config": asdict(cfg), "history": state.history}
    summary = _finish(cfg, spec, data.test, device, state.history, log)
    board.close()
    return summary


def _build_model(cfg: TrainConfig, spec: DatasetSpec, log) -> tuple[torch.nn.Module, ModelConfig]:
    if (cfg.weights or cfg.freeze_epochs) and cfg.arch not in RESNETS:
        raise ValueError(f"--weights and --freeze-epochs are for {', '.join(RESNETS)}, not {cfg.arch}")
    model_cfg = ModelConfig(cfg.arch, in_channels=spec.preprocess.channels, num_classes=len(spec.labels),
                            input_size=spec.size, widths=DEFAULT_WIDTHS.get(cfg.arch, ()))
    model = build_model(model_cfg)
    if cfg.weights:
        skipped = load_pretrained(model, cfg.weights)
        log(f"loaded {cfg.weights}" + (f" except {', '.join(skipped)} (shapes differ)" if skipped else ""))
    return model, model_cfg


@dataclass
class TrainingData:
    train: Split
    val: Split
    test: Split
    epoch_sizes: list[int]  # each epoch draws its images from the front of train
    epoch_steps: list[int]  # batches per epoch on this process


def _load_data(cfg: TrainConfig, spec: DatasetSpec, device, log) -> TrainingData:
    full_train, test = load_dataset(spec, Path(cfg.data_dir), log=log, loading=cfg.loading,
                                    workers=None if cfg.workers < 0 else cfg.workers)
    train, val = split_validation(full_train, min(cfg.val_size, len(full_train) // 10 or 1), cfg.seed)
    train, test = subset(train, cfg.train_subset), subset(test, cfg.test_subset)
    # Generated non-digits sit at the end of the training split and join from epoch 2:
    # learnt from the first step, they cost 0.1-0.25 points of test accuracy after epoch 1
    # (seeds 0 and 1); the final accuracy was about the same.
    epoch_sizes = [len(train)] * cfg.epochs
    if spec.reject:
        train = with_negatives(train, spec, cfg.seed)
        epoch_sizes[1:] = [len(train)] * (cfg.epochs - 1)
        log(f"data: {len(train) - epoch_sizes[0]} generated images of non-digit ink labelled {spec.reject!r}, "
            "from epoch 2 (validation and test stay digits only)")
    log(f"data: {spec.name}, {len(train)} train / {len(val)} validation / {len(test)} test images")
    world = distributed.world_size()
    steps = [math.ceil(math.ceil(n / world) / cfg.batch_size) for n in epoch_sizes]
    return TrainingData(train.to(device), val.to(device), test.to(device), epoch_sizes, steps)


def best_epoch(history: list[dict]) -> dict:
    """The epoch whose weights are kept (best on validation): the highest accuracy and, among
    equal accuracies, the lowest loss; the first of equals. A small validation set (a dozen
    photos of an image folder) reaches 100% early and would otherwise keep the first, least
    trained, epoch that did."""
    return max(history, key=lambda h: (h["val_acc"], -h["val_loss"]))


@dataclass
class TrainState:
    """Everything training changes, and so everything last.pt holds for an exact --resume."""
    model: torch.nn.Module
    ema: AveragedModel | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    shuffle: torch.Generator
    epoch: int = 0  # epochs done
    history: list = field(default_factory=list)

    @classmethod
    def create(cls, cfg: TrainConfig, model: torch.nn.Module, device, epoch_steps: list[int]) -> "TrainState":
        ema = AveragedModel(model, multi_avg_fn=ema_update(cfg.ema), use_buffers=True) if cfg.ema else None
        optimizer = make_optimizer(cfg, model)
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype(device) == torch.float16)
        return cls(model, ema, optimizer, make_schedule(cfg, optimizer, epoch_steps), scaler,
                   torch.Generator().manual_seed(cfg.seed))

    @property
    def evaluated(self) -> torch.nn.Module:
        """The weights validated, kept and exported: the EMA's when it is on."""
        return self.ema.module if self.ema is not None else self.model

    def save(self, path: Path, cfg: TrainConfig, device) -> None:
        checkpoint.save(path, {
            "train_config": asdict(cfg), "epoch": self.epoch, "history": self.history,
            "model_state": self.model.state_dict(), "ema_state": self.ema.state_dict() if self.ema is not None else None,
            "optimizer_state": self.optimizer.state_dict(), "scheduler_state": self.scheduler.state_dict(),
            "scaler_state": self.scaler.state_dict(), "shuffle_rng": self.shuffle.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None,
        })

    def restore(self, path: Path, cfg: TrainConfig, device) -> None:
        saved = checkpoint.load(path)
        if _settings(saved["train_config"]) != _settings(asdict(cfg)):
            raise ValueError(f"{path} was written with other settings; resume with the same arguments")
        self.model.load_state_dict(saved["model_state"])
        if self.ema is not None:
            self.ema.load_state_dict(saved["ema_state"])
        self.optimizer.load_state_dict(saved["optimizer_state"])
        self.scheduler.load_state_dict(saved["scheduler_state"])
        self.scaler.load_state_dict(saved["scaler_state"])
        self.shuffle.set_state(saved["shuffle_rng"])
        torch.set_rng_state(saved["torch_rng"])
        if device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"])
        self.epoch, self.history = saved["epoch"], saved["history"]  # the best epoch is derived: best_epoch(history)


def _settings(config: dict) -> dict:
    """What decides a run's results: not how many processes load its images."""
    return {k: v for k, v in config.items() if k != "workers"}


def amp_dtype(device) -> torch.dtype | None:
    """Mixed precision on CUDA (bfloat16 where supported, else float16 with a grad scaler); none on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _start_stage(model: torch.nn.Module, epoch: int, cfg: TrainConfig, device, log) -> torch.nn.Module:
    """Freeze the backbone for the head-only epochs (thaw it after); the model to train, DDP-wrapped under torchrun."""
    frozen = epoch <= cfg.freeze_epochs
    for p in backbone_parameters(model):
        p.requires_grad_(not frozen)
    if frozen:
        log(f"epochs 1-{cfg.freeze_epochs}: backbone frozen, training the head only")
    return distributed.wrap(model, device)


def train_one_epoch(net: torch.nn.Module, state: TrainState, data: TrainingData, spec: DatasetSpec, cfg: TrainConfig,
                    epoch: int, device, interrupt: DeferredInterrupt, show_progress: bool) -> tuple[float, float]:
    """One pass over this epoch's images; returns the training loss and accuracy."""
    net.train()
    dtype = amp_dtype(device)
    total_loss, correct, seen = 0.0, 0, 0
    order = distributed.epoch_order(data.epoch_sizes[epoch - 1], epoch, state.shuffle)
    bar = tqdm(batches(data.train, cfg.batch_size, order), total=data.epoch_steps[epoch - 1], disable=not show_progress,
               desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False, mininterval=1.0)
    for images, labels in bar:
        interrupt.check()
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)  # streamed batches
        x = training_input(images, spec, cfg.augment).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = net(x)
            loss = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss.item()} in epoch {epoch}; try a lower --lr")
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.scheduler.step()
        if state.ema is not None:
            state.ema.update_parameters(state.model)
        total_loss += loss.item() * len(labels)
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", refresh=False)
    return total_loss / max(seen, 1), correct / max(seen, 1)


def _rejection_report(model, spec: DatasetSpec, test: Split, test_logits: torch.Tensor, device, seed: int) -> dict:
    """How often the reject class is chosen: on non-digit ink generated with another seed
    (pairs from test digits), and on the test digits (each one a digit lost)."""
    fresh = negatives_split(2000, spec, seed + 1, test)
    return {"generated_rejected": accuracy(*predict(model, fresh, spec, device)), "generated_images": len(fresh),
            "test_digits_rejected": (test_logits.argmax(1) == spec.labels.index(spec.reject)).float().mean().item()}


def _finish(cfg: TrainConfig, spec: DatasetSpec, test: Split, device, history: list, log) -> dict:
    """Score the best checkpoint on the test set; record it in the checkpoint, metrics.json and plots."""
    best = checkpoint.load(Path(cfg.out))
    model = checkpoint.model_from_checkpoint(best).to(device).to(memory_format=torch.channels_last)
    logits, test_labels = predict(model, test, spec, device)
    test_acc = accuracy(logits, test_labels)
    report = class_report(logits, test_labels, spec.labels)
    best["metrics"].update(test_acc=test_acc, test_images=len(test_labels), train_time_s=history[-1]["elapsed_s"])
    checkpoint.save(Path(cfg.out), {k: v for k, v in best.items() if k != "format"})
    summary = {"config": asdict(cfg), "history": history, "best_epoch": best["metrics"]["epoch"],
               "val_acc": best["metrics"]["val_acc"], "test_acc": test_acc,
               "train_time_s": history[-1]["elapsed_s"], **report}
    if spec.reject:
        summary["no_digit"] = _rejection_report(model, spec, test, logits, device, cfg.seed)
        log(f"'{spec.reject}': {summary['no_digit']['generated_rejected']:.1%} of unseen generated non-digit ink, "
            f"{summary['no_digit']['test_digits_rejected']:.2%} of test digits")
    run_dir = Path(cfg.run_dir)
    atomic_write_json(run_dir / "metrics.json", summary)
    plots.confusion(report["confusion_matrix"], spec.labels, run_dir / "confusion.png")
    preds = logits.argmax(1).numpy()
    labels = test_labels.numpy()
    wrong = np.flatnonzero(preds != labels)[:12]
    shown = np.sort(np.concatenate([wrong, np.setdiff1d(np.arange(min(len(labels), 36)), wrong)[: 36 - len(wrong)]]))
    plots.prediction_grid(center_crop(test.images_at(shown).cpu(), spec.size).numpy(), labels[shown], preds[shown],
                          spec.labels, run_dir / "predictions.png")
    log(f"test accuracy {test_acc:.4f} on {len(test_labels)} images (best epoch {summary['best_epoch']}, "
        f"{summary['train_time_s']:.0f} s of training) -> {cfg.out}; plots in {run_dir}")
    return summary


def _model_payload(model, model_cfg: ModelConfig, spec: DatasetSpec, cfg: TrainConfig, epoch: int, val_acc: float) -> dict:
    state = {k: v.detach().float().cpu().contiguous() if v.is_floating_point() else v.detach().cpu()
             for k, v in model.state_dict().items()}
    return {
        "model_state": state,
        "model_config": model_cfg.to_dict(),
        "dataset": spec.to_dict(),
        "train_config": asdict(cfg),
        "metrics": {"epoch": epoch, "val_acc": val_acc},
        "torch_version": str(torch.__version__),
    }
