"""Datasets as uint8 tensors in memory, batched by indexing; image folders streamed from disk.

MNIST-sized data fits in a few MB, so indexing a tensor beats worker processes by far,
and the same code path runs on the GPU when there is one. A folder of photos does not fit:
it streams through a DataLoader (train/folder_stream.py) behind the same interface.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from digitpipe.train import sources
from digitpipe.train.augment import augment_batch
from digitpipe.train.datasets import DatasetSpec
from digitpipe.train.mnist_source import ensure_mnist
from digitpipe.train.negatives import SHARE, negatives


@dataclass
class Split:
    images: torch.Tensor  # uint8, N x C x H x W
    labels: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: torch.Tensor) -> "Split":
        return Split(self.images[index], self.labels[index])

    def to(self, device) -> "Split":
        return Split(self.images.to(device), self.labels.to(device))

    def batches(self, batch_size: int, order: torch.Tensor | None = None):
        """Yield (images, labels) in the given index order (default: as stored)."""
        order = torch.arange(len(self)) if order is None else order
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size].to(self.labels.device)
            yield self.images[index], self.labels[index]

    def images_at(self, positions) -> torch.Tensor:
        return self.images[positions]


LOADINGS = ("auto", "memory", "stream")
# auto: an image folder whose decoded images would take more than this streams from disk; a
# smaller one is decoded once into memory (faster from the second epoch: 291 vs 172 images/s
# at 64 px on 2 cores, docs/image-folders.md). The built-in datasets always sit in memory.
MEMORY_BUDGET = 512 << 20


def load_dataset(spec: DatasetSpec, root: Path, log=print, loading: str = "auto", workers: int | None = None):
    """(train, test) splits for a dataset spec; for an image folder, test is its val/ folder,
    streamed from disk unless loading is "memory" (then decoded into memory first)."""
    if loading not in LOADINGS:
        raise ValueError(f"unknown loading {loading!r}; choose from {', '.join(LOADINGS)}")
    if spec.name == "imagefolder":
        listed = [sources.list_image_folder(Path(spec.source) / part, spec.labels) for part in ("train", "val")]
        if loading == "stream" or (loading == "auto" and stored_bytes(listed, spec) > MEMORY_BUDGET):
            return _streamed_folder(spec, listed, log, workers)
    if loading == "stream":
        raise ValueError(f"--loading stream is for image folders; {spec.name} is read into memory")
    if spec.name == "mnist":
        from torchvision.datasets import MNIST

        ensure_mnist(Path(root), log=log)
        parts = [MNIST(str(root), train=t, download=False) for t in (True, False)]
        return tuple(Split(p.data.unsqueeze(1).contiguous(), p.targets.long()) for p in parts)
    if spec.name == "fashion-mnist":
        parts = sources.load_fashion_mnist(Path(root), log)
    elif spec.name == "cifar10":
        parts = sources.load_cifar10(Path(root), log)
    elif spec.name == "imagefolder":
        parts = [sources.load_image_folder(Path(spec.source) / part, spec.labels, spec.preprocess.resize_shorter, log,
                                           listed=found) for part, found in zip(("train", "val"), listed)]
    else:
        raise ValueError(f"no loader for dataset {spec.name!r}")
    return tuple(Split(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y).long()) for x, y in parts)


def split_validation(train: Split, val_size: int, seed: int) -> tuple[Split, Split]:
    """Hold out a seeded random validation set from the training split."""
    if not 0 < val_size < len(train):
        raise ValueError(f"validation size {val_size} must be between 1 and {len(train) - 1}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return train.take(order[val_size:]), train.take(order[:val_size])


def negatives_split(count: int, spec: DatasetSpec, seed: int, digits: Split) -> Split:
    """count generated images of non-digit ink labelled spec.reject (train/negatives.py);
    digits supplies the digit pairs."""
    tiles = torch.from_numpy(negatives(count, seed, digits.images[:, 0].cpu().numpy())).unsqueeze(1)
    return Split(tiles, torch.full((count,), spec.labels.index(spec.reject), dtype=torch.long))


def with_negatives(train: Split, spec: DatasetSpec, seed: int) -> Split:
    """The training split plus one generated non-digit for every 1/SHARE digits, at its end."""
    extra = negatives_split(round(len(train) * SHARE), spec, seed, train)
    return Split(torch.cat([train.images.cpu(), extra.images]), torch.cat([train.labels.cpu(), extra.labels]))


def subset(split: Split, count: int | None) -> Split:
    return split if not count or count >= len(split) else split.take(torch.arange(count))


def in_memory(split) -> Split:
    """A split's images in memory: a streamed folder split decoded (its readable files)."""
    return split if isinstance(split, Split) else split.materialize()


def normalize(images: torch.Tensor, spec: DatasetSpec) -> torch.Tensor:
    """uint8 (or 0..1 float) images -> the network's input, per the dataset spec."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images
    mean = torch.tensor(spec.preprocess.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.preprocess.std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The evaluation view of stored images (image folders are stored larger than the input)."""
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def model_input(images: torch.Tensor, spec: DatasetSpec) -> torch.Tensor:
    """uint8 stored images -> the network's evaluation input: what the runtime computes."""
    return normalize(center_crop(images, spec.size), spec)


def training_input(images: torch.Tensor, spec: DatasetSpec, augment: bool) -> torch.Tensor:
    if not augment:
        return model_input(images, spec)
    return normalize(augment_batch(images.float() / 255.0, spec), spec)


def batches(split, batch_size: int, order: torch.Tensor | None = None):
    """Yield (images, labels) of a Split or FolderSplit in the given index order (default: as
    stored); a streamed split leaves out the files it cannot read."""
    return split.batches(batch_size, order)


def stored_bytes(listed, spec: DatasetSpec) -> int:
    """Memory the listed files would take decoded at the stored side (uint8 RGB)."""
    return sum(len(paths) for paths, _ in listed) * 3 * spec.preprocess.resize_shorter ** 2


def _streamed_folder(spec: DatasetSpec, listed, log, workers: int | None):
    from digitpipe.train.folder_stream import FolderSplit, default_workers

    splits = []
    for part, (paths, targets) in zip(("train", "val"), listed):
        if not paths:
            raise sources.DataUnavailable(f"{Path(spec.source) / part}: no image files in {', '.join(spec.labels)}")
        splits.append(FolderSplit(paths, torch.from_numpy(targets), spec.preprocess.resize_shorter,
                                  default_workers() if workers is None else workers, log=log))
    log(f"data: streaming {len(splits[0])} + {len(splits[1])} image files with {splits[0].workers} loader workers")
    return tuple(splits)
