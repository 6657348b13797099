"""Benchmark: boot-image creation against a bare per-page crypto loop.

Builds a synthetic kernel and ramdisk, writes a Secure Execution image
through the code path of ``sesim image create`` (``sesim._image_io.
write_image_file`` → ``protocol.write_image``), and in the same run times a
bare loop doing the same per-page work on the same pages: one AES-256-XTS
encryption (``cryptography``) and the PLD/ALD/TLD SHA-512 updates
(``hashlib``) per 4096-byte page, nothing else. Prints both throughputs and
their ratio (target ≥ 0.7).

The image goes to a new file each run (``--dir``, default the temp dir), so
page-cache writes are part of the measured path; on a busy disk they are
also its main source of noise.

Usage: ``python bench/image.py [--size-mib 64] [--ramdisk-mib 32] [--repeat 5] [--dir D] [--quick]``
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol import PAGE_SIZE, ComponentKind, ImageSpec, check_image, synthetic_kernel  # noqa: E402
from sesim._image_io import write_image_file  # noqa: E402

MIB = 1 << 20
PAGE = PAGE_SIZE


def bare_loop(components: list[tuple[bytes, int, bytes]], key: bytes) -> None:
    """The irreducible per-page work: XTS-encrypt, then three SHA-512 updates."""
    alg = algorithms.AES(key)
    pld, ald, tld = hashlib.sha512(), hashlib.sha512(), hashlib.sha512()
    for data, addr, prefix in components:
        view = memoryview(data)
        for off in range(0, len(data), PAGE):
            tweak = prefix + off.to_bytes(8, "big")
            page = view[off : off + PAGE]
            if len(page) < PAGE:
                page = bytes(page) + bytes(PAGE - len(page))
            ct = Cipher(alg, modes.XTS(tweak)).encryptor().update(page)
            pld.update(ct)
            ald.update((addr + off).to_bytes(8, "big"))
            tld.update(tweak)


def timed(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=64, help="kernel size in MiB")
    parser.add_argument("--ramdisk-mib", type=int, default=32, help="ramdisk size in MiB")
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (best counts)")
    parser.add_argument("--dir", default=None, help="where to write the image (default: temp dir)")
    parser.add_argument("--quick", action="store_true", help="4 MiB kernel, 2 MiB ramdisk, 1 run")
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mib, args.ramdisk_mib, args.repeat = 4, 2, 1

    kernel = synthetic_kernel(args.size_mib * MIB, seed=1)
    ramdisk = synthetic_kernel(args.ramdisk_mib * MIB, seed=2) if args.ramdisk_mib else b""
    host = ec.generate_private_key(ec.SECP521R1())
    spec = ImageSpec(
        kernel=kernel, ramdisk=ramdisk, cmdline=b"console=ttyS0", host_keys=[host.public_key()],
        cust_private_key=ec.generate_private_key(ec.SECP521R1()), prot_key=os.urandom(32),
        iv=os.urandom(12), cck=os.urandom(32), xts_key=os.urandom(64),
        tweak_randoms={kind: os.urandom(6) for kind in ComponentKind},
    )  # fmt: skip
    print(f"inputs: kernel {args.size_mib} MiB, ramdisk {args.ramdisk_mib} MiB, "
          f"cmdline, 1 host key; best of {args.repeat}")  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="sesim-bench-", dir=args.dir) as tmp:
        output = Path(tmp) / "image.se"
        desc = write_image_file(output, spec, overwrite=True)
        prefixes = {r.kind: (r.addr, r.tweak_prefix) for r in desc.secure_regions}
        big = (ComponentKind.KERNEL, ComponentKind.RAMDISK)  # the rest is 2 pages
        secure_mib = sum(r.length for r in desc.secure_regions if r.kind in big) / MIB
        comps = [
            (data, prefixes[kind][0], (prefixes[kind][1] or 0).to_bytes(8, "big"))
            for kind, data in zip(big, (kernel, ramdisk))
        ]
        # Alternate the two so that load from elsewhere hits both alike; the
        # best run of each counts. Each create writes a new file, as `sesim
        # image create` normally does (replacing an old image would add the
        # kernel's cost of freeing it).
        create_s = bare_s = float("inf")
        for _ in range(args.repeat):
            output.unlink()
            create_s = min(create_s, timed(lambda: write_image_file(output, spec, overwrite=False)))
            bare_s = min(bare_s, timed(lambda: bare_loop(comps, spec.xts_key)))
        image_bytes = output.read_bytes()
        verify_s = timed(lambda: check_image(image_bytes, host).raise_for_failure())

    create_rate, bare_rate = secure_mib / create_s, secure_mib / bare_s
    print(f"image create (sesim image create path): {create_rate:8.1f} MiB/s "
          f"({create_s:.3f} s for {secure_mib:.0f} MiB of components)")  # fmt: skip
    print(f"bare per-page loop (XTS + SHA-512):     {bare_rate:8.1f} MiB/s ({bare_s:.3f} s)")
    print(f"image verify (UV checks, decrypt all):  {secure_mib / verify_s:8.1f} MiB/s "
          f"({verify_s:.3f} s)")  # fmt: skip
    print(f"ratio create/bare: {create_rate / bare_rate:.2f} (target >= 0.7)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
