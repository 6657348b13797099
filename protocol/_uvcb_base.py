"""The machinery shared by every UVCB class: header, field layouts, pack/parse.

A UVCB is a big-endian block that starts with the 8-byte header
``len u16 @0, cmd u16 @2, rc u16 @4, rrc u16 @6`` (uv-interface.md §1). Each
request or response class declares only its own fields, each with its offset
and width (``u64(0x18)``, see ``_uvcb_fields.py``), and the :func:`uvcb_layout`
class decorator turns those declarations into one precompiled
:class:`struct.Struct` per class, so that packing and parsing cost one C call
plus the attrs constructor.

Conventions, the same for all commands:

* A **request** holds the UVCB input fields plus ``length``, the header
  ``len``. ``length`` defaults to the command's architected length and may be
  set to anything in u16 range so that tests can send a wrong one.
  :meth:`UvcRequest.pack` always produces the architected size (QUI: see
  ``_qui.py``) with ``len`` = ``length``; rc and rrc are zero.
* A **response** holds ``cc`` (the instruction's condition code, not part of
  the bytes), ``rc``, ``rrc`` and the UVCB *output* fields. Its
  :meth:`UvcResponse.pack` gives the block as the firmware leaves it with
  the input fields zero; :meth:`UvcResponse.write_back` writes rc, rrc and
  the outputs into a caller's block and leaves every other byte alone.
* Parsers read at least the architected size, ignore bytes beyond it and
  reserved bytes, and check that ``cmd`` names their command. They raise only
  :class:`FormatError`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from operator import attrgetter
from typing import Any, ClassVar, Self, TypeVar

from attrs import evolve, field, fields, frozen

from ._errors import FormatError, UsageError
from ._uvc_codes import Cc, Rc, UvcCommand
from ._uvcb_fields import META, UintValidator, UvcbField

Buffer = bytes | bytearray | memoryview
"""What the parsers accept: any contiguous byte buffer."""

HEADER_LEN = 8
_HEADER = struct.Struct(">HHHH")
_T = TypeVar("_T")
_setattr = object.__setattr__
_RC_RRC = struct.Struct(">HH")


# -- compiled layout ------------------------------------------------------------


class _Layout:
    """The compiled form of one class's fields: a single Struct plus helpers."""

    def __init__(self, command: UvcCommand, size: int, flds: tuple[UvcbField, ...]) -> None:
        self.command = int(command)
        self.size = size
        self.fields = flds
        fmt, pos = [">HHHH"], HEADER_LEN
        for f in flds:
            if f.offset < pos:
                raise TypeError(f"UVCB field {f.name} at {f.offset:#x} overlaps the previous one")
            fmt.append(f"{f.offset - pos}x" if f.offset > pos else "")
            fmt.append(f.code * f.count)
            pos = f.offset + f.size
        if pos > size:
            raise TypeError(f"UVCB fields end at {pos:#x}, beyond the block size {size:#x}")
        fmt.append(f"{size - pos}x" if size > pos else "")
        self.struct = struct.Struct("".join(fmt))
        names = [f.name for f in flds]
        self.names = tuple(names)
        self.flat = all(f.count == 1 and not f.as_int for f in flds)
        self._get = attrgetter(*names) if names else None
        # Per-field (offset, Struct, field) for write_back.
        self.slots = tuple((f.offset, struct.Struct(">" + f.code * f.count), f) for f in flds)

    def values(self, obj: Any) -> tuple[Any, ...]:
        """Field values of ``obj`` flattened in struct order."""
        if self._get is None:
            return ()
        got = self._get(obj)
        if len(self.names) == 1:
            got = (got,)
        if self.flat:
            return tuple(got)
        out: list[Any] = []
        for f, v in zip(self.fields, got, strict=True):
            if f.as_int:
                out.append(v.to_bytes(f.size, "big"))
            elif f.count == 1:
                out.append(v)
            else:
                out.extend(v)
        return tuple(out)

    def kwargs(self, vals: tuple[Any, ...]) -> dict[str, Any]:
        """Constructor arguments from the unpacked values after the header."""
        if self.flat:
            return dict(zip(self.names, vals, strict=True))
        out: dict[str, Any] = {}
        i = 0
        for f in self.fields:
            if f.as_int:
                out[f.name] = int.from_bytes(vals[i], "big")
            elif f.count == 1:
                out[f.name] = vals[i]
            else:
                out[f.name] = tuple(vals[i : i + f.count])
            i += f.count
        return out

    def build(self, cls: type[_T], head: dict[str, Any], vals: tuple[Any, ...]) -> _T:
        """An instance of ``cls`` from ``head`` plus the unpacked field values.

        This skips ``__init__`` and so the validators: every value came out
        of this layout's Struct, so it already has the declared width. It
        makes parsing about three times faster, and parsing is on the
        simulator's hot path. The round-trip tests check that the result
        equals what the validating constructor would build.
        """
        inst = object.__new__(cls)
        for name, value in head.items():
            _setattr(inst, name, value)
        items = zip(self.names, vals, strict=True) if self.flat else self.kwargs(vals).items()
        for name, value in items:
            _setattr(inst, name, value)
        return inst

    def check(self, data: Buffer, what: str, need: int | None = None) -> None:
        """Raise FormatError unless ``data`` is long enough and names the command."""
        need = self.size if need is None else need
        if len(data) < need:
            raise FormatError(f"{what}: UVCB has {len(data)} bytes, needs {need:#x}")
        self.check_cmd((data[2] << 8) | data[3], what)

    def unpack(self, data: Buffer, what: str) -> tuple[Any, ...]:
        """All values of a block of at least ``size`` bytes of this command."""
        if len(data) < self.size:
            raise FormatError(f"{what}: UVCB has {len(data)} bytes, needs {self.size:#x}")
        vals = self.struct.unpack_from(data)
        if vals[1] != self.command:
            self.check_cmd(vals[1], what)
        return vals

    def check_cmd(self, cmd: int, what: str) -> None:
        """Raise FormatError unless ``cmd`` is this layout's command."""
        if cmd != self.command:
            raise FormatError(f"{what}: UVCB command is {cmd:#06x}, expected {self.command:#06x}")


def uvcb_layout(command: UvcCommand, *, size: int | None = None) -> Callable[[type[_T]], type[_T]]:
    """Class decorator (put above ``@frozen``): compile the UVCB layout of the class.

    Args:
        command: the command the class belongs to; becomes ``COMMAND``.
        size: block size the fields live in; defaults to the architected
            length ``command.uvcb_length``.
    """

    def apply(cls: type[_T]) -> type[_T]:
        flds = []
        for a in fields(cls):  # type: ignore[arg-type]
            slot = a.metadata.get(META)
            if slot is not None:
                flds.append(evolve(slot, name=a.name))
        flds.sort(key=lambda f: f.offset)
        layout = _Layout(command, command.uvcb_length if size is None else size, tuple(flds))
        cls.COMMAND = command  # type: ignore[attr-defined]
        cls.FIELDS = layout.fields  # type: ignore[attr-defined]
        cls._LAYOUT = layout  # type: ignore[attr-defined]
        return cls

    return apply


# -- header and base classes ------------------------------------------------------


@frozen(kw_only=True)
class UvcbHeader:
    """The 8-byte header every UVCB starts with (uv-interface.md §1).

    ``cmd`` is a plain int: the ultravisor must read the header of a block
    whose command it does not know, to answer it with rc 0x0002.
    """

    length: int = field(validator=UintValidator(16))
    cmd: int = field(validator=UintValidator(16))
    rc: int = field(default=0, validator=UintValidator(16))
    rrc: int = field(default=0, validator=UintValidator(16))

    @classmethod
    def parse(cls, data: Buffer) -> Self:
        """Read the header of any UVCB.

        Raises:
            FormatError: fewer than 8 bytes.
        """
        if len(data) < HEADER_LEN:
            raise FormatError(f"UVCB header needs {HEADER_LEN} bytes, got {len(data)}")
        length, cmd, rc, rrc = _HEADER.unpack_from(data)
        return cls(length=length, cmd=cmd, rc=rc, rrc=rrc)

    def pack(self) -> bytes:
        """The 8 header bytes."""
        return _HEADER.pack(self.length, self.cmd, self.rc, self.rrc)

    @property
    def command(self) -> UvcCommand | None:
        """The command, or None when ``cmd`` is not a known command code."""
        try:
            return UvcCommand(self.cmd)
        except ValueError:
            return None


def write_rc(uvcb: Buffer, rc: int, rrc: int = 0) -> bytes:
    """Return ``uvcb`` with only rc and rrc overwritten.

    For answers that come before any command-specific handling (unknown
    command, wrong state or length; uv-interface.md §1), where no response
    class applies.

    Raises:
        FormatError: the block is shorter than its header.
    """
    if len(uvcb) < HEADER_LEN:
        raise FormatError(f"UVCB header needs {HEADER_LEN} bytes, got {len(uvcb)}")
    buf = bytearray(uvcb)
    _RC_RRC.pack_into(buf, 4, rc, rrc)
    return bytes(buf)


@frozen(kw_only=True)
class UvcRequest:
    """Base of every request: the header ``length`` plus the command's inputs."""

    COMMAND: ClassVar[UvcCommand]
    FIELDS: ClassVar[tuple[UvcbField, ...]]
    _LAYOUT: ClassVar[_Layout]

    length: int = field(validator=UintValidator(16))

    @length.default
    def _architected_length(self) -> int:
        return self.COMMAND.uvcb_length

    def pack(self) -> bytes:
        """The UVCB bytes: architected size, header ``len`` = ``length``, rc = rrc = 0."""
        lay = self._LAYOUT
        return lay.struct.pack(self.length, lay.command, 0, 0, *lay.values(self))

    @classmethod
    def parse(cls, data: Buffer) -> Self:
        """Read a request from a UVCB (header ``len`` becomes ``length``, unchecked).

        Raises:
            FormatError: shorter than the architected size, or another command.
        """
        lay = cls._LAYOUT
        vals = lay.unpack(data, cls.__name__)
        return lay.build(cls, {"length": vals[0]}, vals[4:])


@frozen(kw_only=True)
class UvcResponse:
    """Base of every response: cc, rc, rrc plus the command's outputs.

    Defaults describe success (cc 0, rc 0x0001), so a handler writes only
    what differs.
    """

    COMMAND: ClassVar[UvcCommand]
    FIELDS: ClassVar[tuple[UvcbField, ...]]
    _LAYOUT: ClassVar[_Layout]

    cc: Cc = field(default=Cc.OK, converter=Cc)
    rc: int = field(default=int(Rc.EXECUTED), validator=UintValidator(16))
    rrc: int = field(default=0, validator=UintValidator(16))

    def pack(self) -> bytes:
        """The UVCB as the firmware leaves it: len architected, rc/rrc/outputs set, inputs zero."""
        lay = self._LAYOUT
        return lay.struct.pack(lay.size, lay.command, self.rc, self.rrc, *lay.values(self))

    @classmethod
    def parse(cls, data: Buffer, *, cc: int) -> Self:
        """Read rc, rrc and the outputs from a UVCB the firmware answered with ``cc``.

        Raises:
            FormatError: shorter than the architected size, or another command.
        """
        lay = cls._LAYOUT
        vals = lay.unpack(data, cls.__name__)
        return lay.build(cls, {"cc": Cc(cc), "rc": vals[2], "rrc": vals[3]}, vals[4:])

    def write_back(self, uvcb: Buffer) -> bytes:
        """Return the caller's ``uvcb`` with rc, rrc and the outputs written in.

        Every other byte (header len and cmd, inputs, reserved) is kept. An
        output field that does not fit entirely inside ``uvcb`` is skipped:
        the firmware writes only into the block it was given (QUI with a
        short block, uv-interface.md §3).

        Raises:
            FormatError: ``uvcb`` is shorter than its header.
            UsageError: ``uvcb`` is a block of another command.
        """
        if len(uvcb) < HEADER_LEN:
            raise FormatError(f"UVCB header needs {HEADER_LEN} bytes, got {len(uvcb)}")
        buf = bytearray(uvcb)
        lay = self._LAYOUT
        cmd = (buf[2] << 8) | buf[3]
        if cmd != lay.command:
            raise UsageError(f"{type(self).__name__} cannot answer a UVCB of command {cmd:#06x}")
        _RC_RRC.pack_into(buf, 4, self.rc, self.rrc)
        end = len(buf)
        for offset, st, f in lay.slots:
            if offset + st.size <= end:
                value = getattr(self, f.name)
                if f.as_int:
                    st.pack_into(buf, offset, value.to_bytes(f.size, "big"))
                elif f.count == 1:
                    st.pack_into(buf, offset, value)
                else:
                    st.pack_into(buf, offset, *value)
        return bytes(buf)
