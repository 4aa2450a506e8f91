"""PyTorch side of digitpipe: datasets, models, the training loop and checkpoints."""
