"""One simulated IBM Z server: memory, CPUs, address spaces, and its host key.

The server's private host key is the secret that makes a boot image run only
where it was prepared to run. It is sealed inside :class:`HostKeySlot`: the
ultravisor takes it exactly once when it is built, and nothing else in sesim
holds a reference to it afterwards (``Server`` itself keeps only the public
half).
"""

from __future__ import annotations

from typing import final

from cryptography.hazmat.primitives.asymmetric import ec

from protocol import SesimInternalError
from protocol._crypto import phkh

from ._dat import AddressSpace
from ._memory import HostMemory


@final
class HostKeySlot:
    """Holds the private host key until the ultravisor takes it."""

    __slots__ = ("_key",)

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key: ec.EllipticCurvePrivateKey | None = key

    def take(self) -> ec.EllipticCurvePrivateKey:
        """Hand the key over, once; the slot is empty afterwards."""
        key = self._key
        if key is None:
            raise SesimInternalError("the host key was already handed to an ultravisor")
        self._key = None
        return key

    def __repr__(self) -> str:
        return "<HostKeySlot sealed>"


@final
class Server:
    """An IBM Z server (one LPAR of it): memory, host CPUs and identity.

    Args:
        name: the server's name in traces and reports.
        memory_size: bytes of host physical memory.
        cpus: number of host CPUs.
        host_key: the server's private host key (EC P-521).
    """

    def __init__(self, name: str, memory_size: int, cpus: int, host_key: ec.EllipticCurvePrivateKey) -> None:
        self.name = name
        self.memory = HostMemory(memory_size)
        self.cpus = cpus
        # Host CPU states for INIT_UV's "more than one CPU operating" check: CPU 0 always runs.
        self.cpu_operating = [i == 0 for i in range(cpus)]
        self.host_public_key = host_key.public_key()
        self.host_key_hash = phkh(self.host_public_key)
        self.host_key_slot = HostKeySlot(host_key)
        self.address_spaces: dict[int, AddressSpace] = {}

    def operating_cpus(self) -> int:
        return sum(self.cpu_operating)

    def add_address_space(self, space: AddressSpace) -> None:
        if space.asce in self.address_spaces:
            raise SesimInternalError(f"ASCE {space.asce:#x} already in use")
        self.address_spaces[space.asce] = space

    def remove_address_space(self, asce: int) -> None:
        self.address_spaces.pop(asce, None)
