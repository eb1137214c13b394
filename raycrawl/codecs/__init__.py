"""Codecs for Frontera's message protocol, chosen by name (``msgpack`` or ``json``)."""

from __future__ import annotations

import importlib
from types import ModuleType

from raycrawl.errors import ConfigError

__all__ = ["codec_module"]


def codec_module(name: str) -> ModuleType:
    """The codec module called ``name``; it exports ``Encoder`` and ``Decoder``."""
    if name not in ("msgpack", "json"):
        raise ConfigError(f"codec: unknown codec {name!r} (choose msgpack or json)")
    return importlib.import_module(f"{__name__}.{name}")
