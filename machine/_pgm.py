"""Program interruptions: how the architecture says "no" to an access or an instruction."""

from __future__ import annotations

from typing import final

from protocol import PgmCode


@final
class ProgramInterrupt(Exception):
    """An access or instruction took a program interruption.

    Attributes:
        code: the program-interruption code (a :class:`protocol.PgmCode`).
        address: the failing address where the architecture reports one
            (the translation-exception identification), else ``None``.
    """

    def __init__(self, code: int, address: int | None = None) -> None:
        self.code = PgmCode(code)
        self.address = address
        where = "" if address is None else f" at {address:#x}"
        super().__init__(f"program interruption {self.code:#04x} ({self.code.name}){where}")


__all__ = ["PgmCode", "ProgramInterrupt"]
