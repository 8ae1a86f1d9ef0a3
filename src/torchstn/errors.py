"""One exception family for torchstn.

Every error raised for bad user input subclasses :class:`TorchstnError` *and* the builtin it refines, so callers can
catch either ``torchstn.ShapeError`` or plain ``ValueError``.
"""

from __future__ import annotations

__all__ = [
    "TorchstnError",
    "ShapeError",
    "DTypeError",
    "OptionError",
    "NonFiniteError",
    "DataError",
    "ChecksumError",
    "ConfigError",
    "ExportError",
]


class TorchstnError(Exception):
    """Base class of every error torchstn raises on purpose."""


class ShapeError(TorchstnError, ValueError):
    """A tensor has the wrong rank, size or batch size."""


class DTypeError(TorchstnError, TypeError):
    """A tensor has a dtype the operation does not accept (e.g. integers where floats are needed)."""


class OptionError(TorchstnError, ValueError):
    """An option string or value is not one of the accepted ones."""


class NonFiniteError(TorchstnError, ValueError):
    """A transform parameter or sampling grid holds NaN or infinity."""


class DataError(TorchstnError, ValueError):
    """A data file is missing, truncated or malformed."""


class ChecksumError(DataError):
    """A downloaded or cached file does not have the expected SHA-256."""


class ConfigError(TorchstnError, ValueError):
    """A configuration has an unknown key or a bad value."""


class ExportError(TorchstnError, ValueError):
    """A model cannot be exported (ONNX, ``torch.export``), or its exported form disagrees with PyTorch."""
