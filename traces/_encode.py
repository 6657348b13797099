"""Turning typed messages into JSON values, fast and deterministically."""

from __future__ import annotations

import enum
from typing import Any

import attrs

_FIELDS: dict[type, tuple[str, ...]] = {}
_U64_MAX = (1 << 64) - 1


def to_jsonable(obj: Any) -> Any:
    """orjson's ``default`` hook: attrs instances, bytes and sets.

    An attrs message becomes ``{"type": ClassName, field: value, ...}``; bytes
    become lowercase hex; sets and frozensets become sorted lists. The field
    names of each class are looked up once and cached.
    """
    cls = type(obj)
    names = _FIELDS.get(cls)
    if names is None:
        if attrs.has(cls):
            names = _FIELDS[cls] = tuple(a.name for a in attrs.fields(cls))
        elif isinstance(obj, (bytes, bytearray, memoryview)):
            return bytes(obj).hex()
        elif isinstance(obj, (set, frozenset)):
            return sorted(obj)
        elif isinstance(obj, enum.Enum):
            return obj.name
        else:
            raise TypeError(f"cannot put {cls.__name__} in a trace")
    out = {"type": cls.__name__}
    for name in names:
        value = getattr(obj, name)
        if value.__class__ is int and value > _U64_MAX:
            value = hex(value)  # JSON numbers stop at 64 bits (QUI's 256-bit bitmap)
        out[name] = value
    return out
