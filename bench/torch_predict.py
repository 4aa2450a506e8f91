"""The baseline predictor for cold-start timing: torch loads the checkpoint and reads one image."""
import sys

import cv2
import torch

from digitpipe.train import checkpoint
from digitpipe.train.data import normalize
from digitpipe.train.datasets import DatasetSpec


def main(ckpt_path: str, image_path: str) -> None:
    ck = checkpoint.load(ckpt_path)
    model = checkpoint.model_from_checkpoint(ck)
    spec = DatasetSpec.from_dict(ck["dataset"])
    gray = cv2.imread(image_path, cv2.IMREAD_GRAYSCALE)
    tile = cv2.resize(255 - gray, (spec.size, spec.size), interpolation=cv2.INTER_AREA)
    with torch.inference_mode():
        print(int(model(normalize(torch.from_numpy(tile)[None, None], spec)).argmax()))


if __name__ == "__main__":
    main(*sys.argv[1:3])
