"""The IDX file format (MNIST's): read and write tensors, gzip-compressed or not, with every malformed file reported
as a :class:`~torchstn.errors.DataError` that names it.

Example:
    >>> import tempfile, torch
    >>> path = tempfile.mkdtemp() + "/x-idx1-ubyte.gz"
    >>> write_idx(path, torch.arange(5, dtype=torch.uint8))
    >>> read_idx(path).tolist()
    [0, 1, 2, 3, 4]
"""

from __future__ import annotations

import gzip
import os
import struct
import sys
import zlib
from pathlib import Path

import torch

from torchstn.data import _download
from torchstn.errors import DataError, DTypeError

__all__ = ["read_idx", "write_idx", "encode_idx"]

_IDX_DTYPES = {
    0x08: torch.uint8,
    0x09: torch.int8,
    0x0B: torch.int16,
    0x0C: torch.int32,
    0x0D: torch.float32,
    0x0E: torch.float64,
}
_IDX_CODES = {dtype: code for code, dtype in _IDX_DTYPES.items()}
_LITTLE = sys.byteorder == "little"


def read_idx(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an IDX file (the MNIST format), gzip-compressed or not.

    Args:
        path: The file. Gzip compression is detected from the content, not the name.

    Returns:
        A tensor with the file's dtype (uint8, int8, int16, int32, float32 or float64) and shape.

    Raises:
        DataError: If the file is missing, has a bad magic number or dtype code, is truncated, has trailing bytes,
            or is a corrupt gzip stream. The message names the file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            is_gz = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            file_size = os.fstat(raw.fileno()).st_size
            if is_gz:
                with gzip.GzipFile(fileobj=raw) as f:
                    return _parse_idx(f, path, file_size, True)
            return _parse_idx(raw, path, file_size, False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from e


def _parse_idx(f, path: Path, file_size: int, gz: bool) -> torch.Tensor:
    head = f.read(4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES or head[3] == 0:
        magic = head.hex() or "empty"
        raise DataError(f"{path}: not an IDX file (bad magic number 0x{magic}; expected 00 00 <dtype code> <ndim>)")
    dtype, ndim = _IDX_DTYPES[head[2]], head[3]
    raw_dims = f.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header ({ndim} dimensions announced)")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    itemsize = torch.empty((), dtype=dtype).element_size()
    need = itemsize
    for d in dims:
        need *= d
    what = f"header says {'x'.join(map(str, dims))} {str(dtype).removeprefix('torch.')} ({need:,} data bytes)"
    # check the size before allocating (a plain file holds exactly `need` more bytes; deflate expands <= ~1032:1)
    available = 1032 * file_size if gz else file_size - 4 - 4 * ndim
    if need > available:
        raise DataError(f"{path}: truncated IDX file: {what} but only {available:,} are present")
    buf = bytearray(need)
    view, got = memoryview(buf), 0
    while got < need and (n := f.readinto(view[got:])):
        got += n
    del view
    if got < need:
        raise DataError(f"{path}: truncated IDX file: {what} but only {got:,} are present")
    if f.read(1):
        raise DataError(f"{path}: IDX file is too long: {what} but more bytes follow")
    if need == 0:
        return torch.empty(dims, dtype=dtype)
    flat = torch.frombuffer(buf, dtype=torch.uint8)
    if itemsize > 1 and _LITTLE:  # IDX is big-endian
        flat = flat.view(-1, itemsize).flip(1).reshape(-1)
    return flat.view(dtype).reshape(dims)


def encode_idx(tensor: torch.Tensor) -> bytearray:
    """The bytes of ``tensor`` as an (uncompressed) IDX file; :func:`write_idx` writes them. Errors as there."""
    if not isinstance(tensor, torch.Tensor):
        raise DTypeError(f"write_idx needs a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dtype not in _IDX_CODES:
        allowed = ", ".join(str(d).removeprefix("torch.") for d in _IDX_CODES)
        raise DTypeError(f"IDX cannot store {tensor.dtype}; convert to one of {allowed} (e.g. labels.to(torch.uint8))")
    if not 1 <= tensor.dim() <= 255 or any(s >= 2**32 for s in tensor.shape):
        raise DataError(f"IDX needs 1 to 255 dimensions each below 2**32, got shape {tuple(tensor.shape)}")
    t = tensor.detach().cpu().contiguous().reshape(-1)
    header = bytes((0, 0, _IDX_CODES[t.dtype], tensor.dim())) + struct.pack(f">{tensor.dim()}I", *tensor.shape)
    payload = t.view(torch.uint8)
    if t.element_size() > 1 and _LITTLE:
        payload = payload.view(-1, t.element_size()).flip(1).reshape(-1)
    buf = bytearray(len(header) + payload.numel())
    buf[: len(header)] = header
    if payload.numel():
        torch.frombuffer(buf, dtype=torch.uint8, offset=len(header)).copy_(payload)
    return buf


def write_idx(path: str | os.PathLike[str], tensor: torch.Tensor) -> None:
    """Write a tensor as an IDX file, atomically (temporary file + rename); gzip-compressed if ``path`` ends in ``.gz``.

    Args:
        path: Destination file; its directory is created if needed.
        tensor: A uint8, int8, int16, int32, float32 or float64 tensor with 1 to 255 dimensions.

    Raises:
        DTypeError: If ``tensor`` is not a tensor or its dtype has no IDX code (e.g. int64: convert labels to uint8).
        DataError: If the shape cannot be stored in IDX.
    """
    path = Path(path)
    _download.write_atomic(path, encode_idx(tensor), compress=path.name.endswith(".gz"))
