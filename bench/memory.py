"""Benchmark: secure memory round trips through the actors, against the bare cryptography.

Prints, measured side by side in one run:

* the bare work of one export and one import of a 4 KiB page: AES-256-XTS
  encryption and a SHA-512 of the ciphertext (export), SHA-512 and AES-XTS
  decryption (import), per second;
* export + import round trips through the actors: a host thread of a running
  system issues CONV_FROM_SEC_STOR (``uv_call``) and then the import the way
  KVM does it (``make_hva_secure``: PTE lock, page lock, frozen reference
  count, one UVC try) on a page of an idle secure guest, with every monitor
  and the trace recorder running (no trace file); per second, and the ratio
  of that rate to the bare one;
* the memory the simulation holds per touched guest page (tracemalloc: the
  difference between two runs whose guest touches a different number of
  pages, divided by that difference).

Usage: python bench/memory.py [--trips N] [--pages N] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives import serialization

from actors import Actor
from actors._system import System
from protocol import ConvFromSecStorRequest, ConvToSecStorRequest
from protocol._components import decrypt_page, encrypt_page, xts_algorithm
from sesim._simulation import GuestConfig, RunConfig, build_image, derived_host_key, run

PAGE = 4096


def bare_rate(trips: int) -> float:
    """Export + import crypto of one page, per second (the floor of any faithful model)."""
    alg = xts_algorithm(hashlib.sha512(b"bench key").digest())
    page = bytes(range(256)) * 16
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for i in range(trips):
            tweak = i.to_bytes(16, "big")
            cipher = encrypt_page(alg, tweak, page)
            digest = hashlib.sha512(cipher).digest()
            assert hashlib.sha512(cipher).digest() == digest
            decrypt_page(alg, tweak, cipher)
        best = min(best, time.perf_counter() - start)
    return trips / best


def _config(workload: tuple[str, ...], assets: Path) -> RunConfig:
    return RunConfig(
        memory_mib=3072,
        host_key_path=str(assets / "host.pem"),
        guests=(GuestConfig(name="a", secure=True, memory_mib=64, cpus=1, workload=workload,
                            image_path=str(assets / "a.img")),),
    )


def _assets() -> Path:
    base = Path(tempfile.mkdtemp(prefix="sesim-bench-"))
    key = derived_host_key(0, "z15-a")
    (base / "host.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (base / "a.img").write_bytes(build_image(seed=0, name="a", host_keys=[key.public_key()], kernel_size=0x11000))
    return base


class RoundTrips(Actor):
    """A host thread: export and import one guest page ``trips`` times, timed with the wall clock."""

    def __init__(self, system: System, trips: int) -> None:
        super().__init__(system.fabric, "bench")
        self.system, self.trips = system, trips
        self.seconds = 0.0
        self.ok = 0

    async def main(self) -> None:
        system = self.system
        while not system.vms or system.vms[0].guest is None or system.vms[0].guest.state != "running":
            await self.sleep(20_000)
        vm = system.vms[0]
        kvm = system.hypervisor.kvm
        while vm.space.pfn_of(0x100) is None or system.server.memory.state_of(vm.space.pfn_of(0x100)).value != "secure":
            await self.sleep(5_000)
        paddr = vm.space.pfn_of(0x100) * PAGE
        importing = ConvToSecStorRequest(guest_handle=vm.config_handle, gaddr=0x100000)
        start = time.perf_counter()
        for _ in range(self.trips):
            await kvm.uvc(self, vm, ConvFromSecStorRequest(paddr=paddr))
            while await kvm.make_secure(self, vm, importing) != "ok":
                pass
            self.ok += 1
        self.seconds = time.perf_counter() - start


def actor_rate(trips: int, assets: Path) -> float:
    best = float("inf")
    for _ in range(3):
        threads: list[RoundTrips] = []
        run(_config(("write 0x100000", "compute 1000000000"), assets), seed=0, trace=None,
            setup=lambda s, into=threads: into.append(RoundTrips(s, trips)))
        assert threads[0].ok == trips
        best = min(best, threads[0].seconds)
    return trips / best


class Meter(Actor):
    """A thread that reads tracemalloc once guest page ``last`` is secure (everything written, still held)."""

    def __init__(self, system: System, last: int) -> None:
        super().__init__(system.fabric, "meter")
        self.system, self.last = system, last
        self.traced = 0

    async def main(self) -> None:
        system = self.system
        while True:
            vms = system.vms
            pfn = vms[0].space.pfn_of(self.last) if vms else None
            if pfn is not None and system.server.memory.state_of(pfn).value == "secure":
                break
            await self.sleep(20_000)
        gc.collect()
        self.traced = tracemalloc.get_traced_memory()[0]


def held_bytes(pages: int, assets: Path) -> int:
    """Bytes tracemalloc sees allocated while a guest that wrote ``pages`` pages idles."""
    meters: list[Meter] = []
    workload = (
        *(f"write {0x100000 + i * 8 * PAGE:#x} pages=8" for i in range(pages // 8)),
        "compute 1000000000",
    )
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    last = (0x100000 >> 12) + pages - 1
    result = run(_config(workload, assets), seed=0, trace=None, setup=lambda s: meters.append(Meter(s, last)))
    assert result.vms[0].state.value == "halted" and meters[0].traced
    return meters[0].traced - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trips", type=int, default=2000, help="export + import round trips to time")
    parser.add_argument("--pages", type=int, default=1024, help="pages the larger memory run touches")
    parser.add_argument("--quick", action="store_true", help="a short run (smoke test)")
    args = parser.parse_args()
    trips, pages = (200, 256) if args.quick else (args.trips, max(128, args.pages // 8 * 8))
    assets = _assets()
    bare = bare_rate(trips)
    actors = actor_rate(trips, assets)
    print(f"bare AES-XTS + SHA-512 export+import of a page: {bare:12.0f} /s")
    print(f"export + import round trips through the actors:  {actors:12.0f} /s")
    print(f"ratio actors/bare: {actors / bare:.3f}")
    tracemalloc.start()
    small, large = held_bytes(64, assets), held_bytes(pages, assets)
    tracemalloc.stop()
    per_page = (large - small) / (pages - 64)
    print(f"memory held per touched guest page: {per_page:.0f} bytes ({pages - 64} pages more: {large - small} bytes)")


if __name__ == "__main__":
    main()
