"""The 48-byte generic header in front of every UV request control block.

Attestation (ARCB) and add-secret (ASRCB) requests share it; see
``reference/se-format.md`` §4.1 and ``rust/pv/src/req/header.rs``::

    0x00 magic[8] | 0x08 u32 version | 0x0C u32 rql | 0x10 IV[12] | 0x1C res[4]
    0x20 res[7]   | 0x27 u8 nks      | 0x28 res[4]  | 0x2C u32 sea

Unlike the SE header, ``nks`` is a single byte here and ``sea`` a u32
(se-format.md §7), so a request holds 1..255 key slots.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from attrs import field, frozen
from attrs.validators import ge, instance_of, le

from ._errors import FormatError, UsageError

_REQUEST_HEADER = struct.Struct(">8sII12s4s7sB4sI")
REQUEST_HEADER_LEN = _REQUEST_HEADER.size  # 48
REQUEST_IV_LEN = 12
_U32_MAX = 0xFFFF_FFFF


def _fixed_len(n: int) -> Callable[[object, object, bytes], None]:
    def check(_inst: object, attribute: object, value: bytes) -> None:
        if len(value) != n:
            name = getattr(attribute, "name", "value")
            raise UsageError(f"{name} must be {n} bytes, got {len(value)}")

    return check


@frozen(kw_only=True)
class RequestHeader:
    """The common header of a UV request (se-format.md §4.1).

    ``rql`` is the total request length including the 16-byte GCM tag and
    ``sea`` the size of the encrypted area. Reserved bytes are always zero
    when packed; :meth:`parse` rejects non-zero ones.
    """

    magic: bytes = field(validator=[instance_of(bytes), _fixed_len(8)])
    version: int = field(validator=[instance_of(int), ge(0), le(_U32_MAX)])
    rql: int = field(validator=[instance_of(int), ge(0), le(_U32_MAX)])
    iv: bytes = field(validator=[instance_of(bytes), _fixed_len(REQUEST_IV_LEN)])
    nks: int = field(validator=[instance_of(int), ge(0), le(0xFF)])
    sea: int = field(validator=[instance_of(int), ge(0), le(_U32_MAX)])

    def pack(self) -> bytes:
        """The 48 big-endian bytes of this header."""
        zero4, zero7 = bytes(4), bytes(7)
        return _REQUEST_HEADER.pack(
            self.magic, self.version, self.rql, self.iv, zero4, zero7, self.nks, zero4, self.sea
        )

    @classmethod
    def parse(cls, data: bytes) -> RequestHeader:
        """Read a header from the first 48 bytes of ``data``.

        Raises:
            FormatError: fewer than 48 bytes, or a reserved byte is not zero.
        """
        if len(data) < REQUEST_HEADER_LEN:
            raise FormatError(
                f"request header needs {REQUEST_HEADER_LEN} bytes, got {len(data)}"
            )
        magic, version, rql, iv, res1, res2, nks, res3, sea = _REQUEST_HEADER.unpack_from(data)
        if any(res1) or any(res2) or any(res3):
            raise FormatError("request header has non-zero reserved bytes")
        return cls(magic=magic, version=version, rql=rql, iv=iv, nks=nks, sea=sea)
