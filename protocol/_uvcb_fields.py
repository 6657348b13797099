"""How a UVCB class declares its fields: offset, width, validation.

``u64(0x18)`` and friends return an attrs ``field`` whose metadata records
where the value lives in the block (a :class:`UvcbField`); the validator
rejects a value that does not fit that width, at construction, with a
message naming class and field. ``_uvcb_base.uvcb_layout`` compiles the
recorded slots into one :class:`struct.Struct` per class.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from attrs import field, frozen

from ._errors import UsageError

META = "sesim.uvcb"
"""The attrs metadata key under which a field's :class:`UvcbField` is stored."""


@frozen(kw_only=True)
class UvcbField:
    """Where one field lives in its UVCB.

    ``code`` is the :mod:`struct` code of one element (``"Q"``, ``"16s"``);
    ``count`` > 1 makes the field a tuple of that many elements;
    ``as_int`` holds a ``"<n>s"`` field as one big-endian unsigned int.
    """

    name: str
    offset: int
    code: str
    count: int = 1
    as_int: bool = False

    @property
    def size(self) -> int:
        """Bytes the whole field occupies."""
        return struct.calcsize(">" + self.code) * self.count

    @property
    def bits(self) -> int | None:
        """Width of an integer element in bits; None for a byte-string field."""
        if self.as_int:
            return 8 * self.size
        return {"B": 8, "H": 16, "I": 32, "Q": 64}.get(self.code)


class UintValidator:
    """Validator: an int (not bool) that fits in ``bits`` unsigned bits."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.limit = 1 << bits

    def __call__(self, inst: Any, attr: Any, value: Any) -> None:
        if type(value) is not int and (not isinstance(value, int) or isinstance(value, bool)):
            raise UsageError(f"{type(inst).__name__}.{attr.name} must be an int, got {value!r}")
        if not 0 <= value < self.limit:
            raise UsageError(
                f"{type(inst).__name__}.{attr.name} must be a u{self.bits} "
                f"(0..{self.limit - 1:#x}), got {value:#x}"
            )

    def __repr__(self) -> str:
        return f"<u{self.bits} validator>"


class _UintTuple:
    """Validator: a tuple of exactly ``count`` u``bits`` ints."""

    def __init__(self, bits: int, count: int) -> None:
        self.item = UintValidator(bits)
        self.count = count

    def __call__(self, inst: Any, attr: Any, value: Any) -> None:
        if not isinstance(value, tuple) or len(value) != self.count:
            raise UsageError(f"{type(inst).__name__}.{attr.name} must be {self.count} ints, got {value!r}")
        for item in value:
            self.item(inst, attr, item)


class _Bytes:
    """Validator: bytes of exactly ``size`` (each of ``count`` elements, if a tuple)."""

    def __init__(self, size: int, count: int = 1) -> None:
        self.size = size
        self.count = count

    def _one(self, inst: Any, attr: Any, value: Any) -> None:
        if not isinstance(value, bytes) or len(value) != self.size:
            got = f"{len(value)} bytes" if isinstance(value, bytes) else repr(value)
            raise UsageError(f"{type(inst).__name__}.{attr.name} must be {self.size} bytes, got {got}")

    def __call__(self, inst: Any, attr: Any, value: Any) -> None:
        if self.count == 1:
            self._one(inst, attr, value)
            return
        if not isinstance(value, tuple) or len(value) != self.count:
            raise UsageError(f"{type(inst).__name__}.{attr.name} must be {self.count} byte strings")
        for item in value:
            self._one(inst, attr, item)


def _to_bytes(value: Any) -> Any:
    return bytes(value) if isinstance(value, bytearray | memoryview) else value


def _padded_to(size: int) -> Callable[[Any], Any]:
    def conv(value: Any) -> Any:
        value = _to_bytes(value)
        return value.ljust(size, b"\0") if isinstance(value, bytes) else value

    return conv


def _int_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value


def _bytes_tuple(value: Any) -> Any:
    return tuple(_to_bytes(x) for x in value) if isinstance(value, list | tuple) else value


def _int_field(offset: int, code: str, bits: int, default: int) -> Any:
    meta = {META: UvcbField(name="", offset=offset, code=code)}
    return field(default=default, validator=UintValidator(bits), metadata=meta)


def u8(offset: int, *, default: int = 0) -> Any:
    """A 1-byte unsigned field at ``offset``."""
    return _int_field(offset, "B", 8, default)


def u16(offset: int, *, default: int = 0) -> Any:
    """A 2-byte unsigned big-endian field at ``offset``."""
    return _int_field(offset, "H", 16, default)


def u32(offset: int, *, default: int = 0) -> Any:
    """A 4-byte unsigned big-endian field at ``offset``."""
    return _int_field(offset, "I", 32, default)


def u64(offset: int, *, default: int = 0) -> Any:
    """An 8-byte unsigned big-endian field at ``offset``."""
    return _int_field(offset, "Q", 64, default)


def u64_array(offset: int, count: int) -> Any:
    """``count`` consecutive u64 at ``offset``, held as a tuple (zeros by default)."""
    meta = {META: UvcbField(name="", offset=offset, code="Q", count=count)}
    return field(default=(0,) * count, converter=_int_tuple, validator=_UintTuple(64, count), metadata=meta)


def big_uint(offset: int, size: int) -> Any:
    """A ``size``-byte unsigned big-endian integer at ``offset`` (a bitmap, say)."""
    meta = {META: UvcbField(name="", offset=offset, code=f"{size}s", as_int=True)}
    return field(default=0, validator=UintValidator(8 * size), metadata=meta)


def raw(offset: int, size: int, *, pad: bool = False) -> Any:
    """A byte string of exactly ``size`` at ``offset`` (zeros by default).

    With ``pad`` a shorter value is right-padded with zeros at construction
    (for ``user_data``-style buffers whose meaningful length travels apart).
    """
    meta = {META: UvcbField(name="", offset=offset, code=f"{size}s")}
    conv = _padded_to(size) if pad else _to_bytes
    return field(default=bytes(size), converter=conv, validator=_Bytes(size), metadata=meta)


def raw_array(offset: int, size: int, count: int) -> Any:
    """``count`` consecutive byte strings of ``size`` each, held as a tuple."""
    meta = {META: UvcbField(name="", offset=offset, code=f"{size}s", count=count)}
    return field(
        default=(bytes(size),) * count,
        converter=_bytes_tuple,
        validator=_Bytes(size, count),
        metadata=meta,
    )
