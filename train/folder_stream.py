"""Image folders streamed from disk through torch's DataLoader, instead of decoded into memory.

Worker processes read each photo with run-digit's own reader and preparation (shorter side
to resize_shorter, centre crop: sources.prepare_folder_image), so training sees exactly what
the runtime will. Memory is bounded by batch size x workers x prefetch depth, not by the
folder, and the first step comes after a folder listing, not after decoding everything.

A FolderSplit behaves like data.Split (len, take, to, batches in a given index order), so
the training loop, validation, best-on-validation, resume and torchrun (each rank streams
its DistributedSampler share, distributed.epoch_order) run unchanged. Augmentation stays
batched on tensors after the transfer, the same code as the in-memory path.
"""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass, field, replace

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from digitpipe.runtime.errors import InputError
from digitpipe.runtime.imageio import read_image
from digitpipe.train.sources import prepare_folder_image


def default_workers() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class _Photos(Dataset):
    """Item i: (3 x side x side uint8 RGB tensor, i, None), or (None, i, message) for an unreadable file."""

    def __init__(self, paths: list[str], side: int):
        self.paths, self.side = paths, side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return torch.from_numpy(prepare_folder_image(read_image(self.paths[i]), self.side)), i, None
        except InputError as exc:
            return None, i, str(exc)


def _fork_safely(loader):
    """The first iter(loader), which forks its persistent workers, without handing them native
    thread pools or garbage they could hang on. A forked worker inherits the training
    process's memory as it was: OpenCV's thread pool (a worker that changed its thread count
    hung in pthread_cond_destroy) and any object waiting in a reference cycle (a worker's
    garbage collector freeing an inherited onnxruntime session hung the same way). So
    OpenCV runs on one thread here (no pool to inherit; the workers, one per core, decode
    single-threaded anyway), cyclic garbage is collected here first, and what survives is
    frozen so the workers' collector never walks it."""
    import cv2

    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)
    gc.collect()
    gc.freeze()
    try:
        return iter(loader)
    finally:
        gc.unfreeze()


def _collate(items):
    """(images, their item indices, [(item, message)] of the unreadable ones)."""
    good = [(img, i) for img, i, _ in items if img is not None]
    errors = [(i, message) for img, i, message in items if img is None]
    if not good:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long), errors
    return torch.stack([g[0] for g in good]), torch.tensor([g[1] for g in good]), errors


class _OrderedBatches(Sampler):
    """Batches of indices in whatever order the next pass sets: one DataLoader (and its
    persistent workers) serves every epoch's shuffle."""

    def __init__(self, batch_size: int):
        self.batch_size, self.order = batch_size, torch.arange(0)

    def __iter__(self):
        for start in range(0, len(self.order), self.batch_size):
            yield self.order[start : start + self.batch_size].tolist()

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)


@dataclass
class FolderSplit:
    paths: list[str]  # this split's files, in item order
    labels: torch.Tensor  # int64, one per path
    side: int  # stored side: the shorter side is scaled to it, then the centre cropped
    workers: int = field(default_factory=default_workers)
    pin_memory: bool = False  # on CUDA: page-locked batches, copied asynchronously
    log: object = print
    _loaders: dict = field(default_factory=dict, repr=False)
    _unreadable: set = field(default_factory=set, repr=False)  # paths, shared by every view of the folder

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: torch.Tensor) -> "FolderSplit":
        index = torch.as_tensor(index).cpu()
        return replace(self, paths=[self.paths[i] for i in index.tolist()], labels=self.labels[index],
                       _loaders={}, _unreadable=self._unreadable)

    def to(self, device) -> "FolderSplit":
        """Batches go to the device as they are loaded; the split itself stays on disk."""
        return replace(self, pin_memory=torch.device(device).type == "cuda", _loaders={}, _unreadable=self._unreadable)

    def batches(self, batch_size: int, order: torch.Tensor | None = None):
        """Yield (uint8 images, labels) in the given index order; an unreadable file is
        reported (once for the whole run) and left out of its batch."""
        loader = self._loaders.get(batch_size)
        first = loader is None  # persistent workers fork on a loader's first pass only
        if first:
            loader = self._loaders[batch_size] = DataLoader(
                _Photos(self.paths, self.side), batch_sampler=_OrderedBatches(batch_size), collate_fn=_collate,
                num_workers=self.workers, pin_memory=self.pin_memory, persistent_workers=self.workers > 0,
                generator=torch.Generator())  # its own: worker seeds never draw on the training RNG (exact resume)
        loader.batch_sampler.order = torch.arange(len(self)) if order is None else torch.as_tensor(order).cpu()
        for images, index, errors in (_fork_safely(loader) if first and self.workers > 0 else loader):
            for item, message in errors:
                if self.paths[item] not in self._unreadable:
                    self._unreadable.add(self.paths[item])
                    self.log(f"skipped {message}")
            if len(index):
                yield images, self.labels[index]

    def images_at(self, positions) -> torch.Tensor:
        """Prepared images by position among the readable items (as a pass yields them),
        decoded here: for plots of a few predictions."""
        readable = [i for i, p in enumerate(self.paths) if p not in self._unreadable]
        photos = _Photos(self.paths, self.side)
        return torch.stack([photos[readable[k]][0] for k in torch.as_tensor(positions).tolist()])

    def materialize(self):
        """This split decoded into memory as a data.Split (the readable images only)."""
        from digitpipe.train.data import Split

        parts = list(replace(self, workers=0, _loaders={}).batches(256))
        if not parts:
            return Split(torch.empty(0, 3, self.side, self.side, dtype=torch.uint8), torch.empty(0, dtype=torch.long))
        return Split(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
