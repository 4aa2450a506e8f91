"""Datasets held as uint8 tensors in memory, batched without a DataLoader.

MNIST-sized data fits in a few MB, so indexing a tensor beats worker processes by far,
and the same code path runs on the GPU when there is one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from train.datasets import DatasetSpec
from train.mnist_source import ensure_mnist


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


def load_dataset(spec: DatasetSpec, root: Path, log=print) -> tuple[Split, Split]:
    """(train, test) splits for a dataset spec."""
    if spec.name != "mnist":
        raise ValueError(f"no loader for dataset {spec.name!r}")
    from torchvision.datasets import MNIST

    ensure_mnist(Path(root), log=log)
    train = MNIST(str(root), train=True, download=False)
    test = MNIST(str(root), train=False, download=False)
    return (
        Split(train.data.unsqueeze(1).contiguous(), train.targets.long()),
        Split(test.data.unsqueeze(1).contiguous(), test.targets.long()),
    )


def split_validation(train: Split, val_size: int, seed: int) -> tuple[Split, Split]:
    """Hold out a seeded random validation set from the training split."""
    if not 0 < val_size < len(train):
        raise ValueError(f"validation size {val_size} must be between 1 and {len(train) - 1}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return train.take(order[val_size:]), train.take(order[:val_size])


def subset(split: Split, count: int | None) -> Split:
    return split if not count or count >= len(split) else split.take(torch.arange(count))


def normalize(images: torch.Tensor, spec: DatasetSpec) -> torch.Tensor:
    """uint8 (or 0..1 float) images -> the network's input, per the dataset spec."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images
    mean = torch.tensor(spec.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def batches(split: Split, batch_size: int, generator: torch.Generator | None = None):
    """Yield (images, labels); shuffled when a generator is given."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size].to(split.labels.device)
        yield split.images[index], split.labels[index]
