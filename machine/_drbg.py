"""The ultravisor's deterministic random source.

Real firmware draws handles, keys and tweaks from a hardware generator.
sesim draws them from HMAC-SHA-256 in counter mode keyed by the run's seed,
so that a run stays a function of (configuration, seed, code) while every
value still looks random and differs per server and per purpose.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import final


@final
class Drbg:
    """HMAC-SHA-256 counter-mode generator.

    Args:
        seed: the run's seed.
        label: separates independent streams (for example the server name).
    """

    def __init__(self, seed: int, label: str) -> None:
        self._key = hashlib.sha256(f"sesim-drbg:{seed}:{label}".encode()).digest()
        self._counter = 0

    def bytes(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            self._counter += 1
            out += hmac.digest(self._key, self._counter.to_bytes(8, "big"), "sha256")
        return bytes(out[:n])

    def u64(self) -> int:
        return int.from_bytes(self.bytes(8), "big")
