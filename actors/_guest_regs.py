"""What a guest's program leaves in its CPU's registers: values only the guest knows.

A guest's program computes; its registers, PSW and control registers carry
what it computes. sesim makes those values distinctive 64-bit numbers drawn
from the guest's own name, so that a test can plant them and then search for
them everywhere the hypervisor can look (uv-interface.md §6: PSW, control
registers and the other registers stay in the ultravisor). They are produced
while the guest runs, by its CPU inside SIE, and appear in no configuration.

* ``scratch``: the working registers 6-13, new values for every operation;
* ``control``: control registers 1, 7 and 13, set once per boot per CPU
  (a kernel loads its address-space controls when it starts a CPU);
* ``code_address``: the instruction address the CPU is at (a kernel
  virtual address), new for every operation.

Every value handed out is remembered in :attr:`GuestRegisterFile.planted`
(the guest's own record, for tests; never read by the host).
"""

from __future__ import annotations

import hashlib
from typing import Final, final

from ._workload import owner_tag

SCRATCH_REGS: Final = range(6, 14)
CONTROL_REGS: Final = (1, 7, 13)
KERNEL_TEXT: Final = 0x000003FF_00000000


def register_value(guest: str, label: str, cpu: int, serial: int) -> int:
    """A 64-bit value of ``guest``'s program, never zero, with its top byte set."""
    digest = hashlib.sha256(f"sesim-register:{label}:{cpu}:{serial}".encode() + owner_tag(guest)).digest()
    return int.from_bytes(digest[:8], "big") | 0x8000_0000_0000_0000


@final
class GuestRegisterFile:
    """The register contents one guest's program produces."""

    def __init__(self, guest: str) -> None:
        self.guest = guest
        self._serial = 0
        self.planted: set[int] = set()

    def _next(self, label: str, cpu: int) -> int:
        self._serial += 1
        value = register_value(self.guest, label, cpu, self._serial)
        self.planted.add(value)
        return value

    def scratch(self, cpu: int) -> list[int]:
        """New contents for general registers 6-13 of ``cpu``."""
        return [self._next(f"gpr{r}", cpu) for r in SCRATCH_REGS]

    def control(self, cpu: int) -> list[int]:
        """Contents for control registers 1, 7 and 13 of ``cpu``."""
        return [self._next(f"cr{r}", cpu) for r in CONTROL_REGS]

    def code_address(self, cpu: int) -> int:
        """The next instruction address (a kernel text address, halfword aligned)."""
        value = KERNEL_TEXT | (self._next("psw", cpu) & 0xFFFF_FFFE)
        self.planted.add(value)
        return value
