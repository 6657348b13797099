"""Traces for the analysis tests: a real demo run, and small hand-made ones in the real format.

The hand-made traces carry what the demo cannot be made to show on demand
(two UVCs overlapping on one frame, a monitor violation, kinds of event that
later issues add); every line follows ``traces/_writer.py``: a header, then
sorted-key events with ``step``, ``t``, ``actor``, ``kind``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from sesim._simulation import demo_config, run

HANDLE_A = 0x1111_0000_0000_0001
HANDLE_B = 0x2222_0000_0000_0002


def demo_trace(directory: Path, seed: int = 3) -> Path:
    """A real ``sesim demo`` trace."""
    path = directory / f"demo-{seed}.jsonl"
    run(demo_config(), seed=seed, trace=path)
    return path


def header(seed: int = 7) -> dict[str, Any]:
    return {
        "format": "sesim-trace",
        "format_version": 1,
        "sesim": "0.1.0",
        "seed": seed,
        "strategy": {"name": "random", "seed": seed},
        "config": {"server": "z15-a", "guests": []},
    }


def write_trace(path: Path, events: Iterable[dict[str, Any]], seed: int = 7) -> Path:
    lines = [orjson.dumps(header(seed), option=orjson.OPT_SORT_KEYS)]
    for step, event in enumerate(events, start=1):
        event.setdefault("step", step)
        lines.append(orjson.dumps(event, option=orjson.OPT_SORT_KEYS))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def request(
    corr: int, caller: str, t: int, req: dict[str, Any], *, context: str = "host", config: int = 0
) -> dict[str, Any]:
    """The ultravisor taking a UVC from its mailbox (sent and taken at ``t``)."""
    return {
        "actor": "uv",
        "kind": "recv",
        "corr": corr,
        "from": caller,
        "sent": t,
        "t": t,
        "msg": {
            "type": "Uvc",
            "caller": {"type": "Caller", "context": context, "config_handle": config, "cpu_handle": 0},
            "request": req,
        },
    }


def answer(corr: int, caller: str, t: int, response: str, cc: int, rc: int = 1, **fields: Any) -> dict[str, Any]:
    """The caller getting the answer of UVC ``corr`` at ``t``."""
    return {
        "actor": caller,
        "kind": "reply",
        "corr": corr,
        "from": "uv",
        "sent": t,
        "t": t,
        "msg": {"type": response, "cc": cc, "rc": rc, "rrc": 0, **fields},
    }


def vm_create(guest: str, secure: bool = True) -> dict[str, Any]:
    return {"actor": "kvm", "kind": "vm-create", "t": 0, "guest": guest, "secure": secure, "memory": 1 << 26, "cpus": 2}


def race_trace(path: Path) -> Path:
    """kvm's teardown destroys pfn 0x4242 while the reclaim thread is exporting it.

    The export is in flight from 100 to 130 µs; DESTR_SEC_STOR on the same
    frame is answered busy at 105 and 110 µs, retried, and succeeds at 134 µs.
    An import of another page by alpha's vCPU overlaps nothing.
    """
    export = {"type": "ConvFromSecStorRequest", "length": 32, "paddr": 0x4242000}
    destroy = {"type": "DestrSecStorRequest", "length": 32, "paddr": 0x4242000}
    return write_trace(
        path,
        [
            vm_create("alpha"),
            request(1, "kvm", 0, {"type": "CreateSecConfRequest", "length": 128}),
            answer(1, "kvm", 0, "CreateSecConfResponse", 0, guest_handle=HANDLE_A),
            {
                "actor": "machine",
                "kind": "frame",
                "t": 10_000,
                "pfn": 0x4242,
                "from": "host",
                "to": "secure",
                "owner": HANDLE_A,
            },  # fmt: skip
            request(2, "kvm.reclaim", 100_000, export),
            request(3, "kvm", 105_000, destroy),
            answer(3, "kvm", 105_000, "DestrSecStorResponse", 2, rc=0),
            request(4, "kvm", 110_000, destroy),
            answer(4, "kvm", 110_000, "DestrSecStorResponse", 2, rc=0),
            {
                "actor": "machine",
                "kind": "frame",
                "t": 130_000,
                "pfn": 0x4242,
                "from": "secure",
                "to": "exported",
                "owner": HANDLE_A,
            },  # fmt: skip
            answer(2, "kvm.reclaim", 130_000, "ConvFromSecStorResponse", 0),
            request(5, "kvm", 131_000, destroy),
            answer(5, "kvm", 134_000, "DestrSecStorResponse", 0),
            request(
                6,
                "alpha.cpu1",
                140_000,
                {"type": "ConvToSecStorRequest", "length": 40, "gaddr": 0x200000, "guest_handle": HANDLE_A},
            ),  # fmt: skip
            answer(6, "alpha.cpu1", 143_000, "ConvToSecStorResponse", 0),
            {
                "actor": "alpha.os",
                "kind": "guest-halt",
                "t": 150_000,
                "guest": "alpha",
                "state": "running",
                "reason": "",
            },  # fmt: skip
            {"actor": "kvm", "kind": "vm-destroy", "t": 160_000, "guest": "alpha", "state": "halted", "reason": "halt"},
        ],
    )


def future_trace(path: Path) -> Path:
    """Kinds and fields that later issues add: swaps, a monitor violation, unknown fields anywhere."""
    return write_trace(
        path,
        [
            vm_create("alpha"),
            request(1, "kvm", 0, {"type": "CreateSecConfRequest", "length": 128, "new_field": [1, 2]}),
            answer(1, "kvm", 0, "CreateSecConfResponse", 0, guest_handle=HANDLE_A),
            {"actor": "kvm.reclaim", "kind": "swap-out", "t": 5_000, "guest": "alpha", "gaddr": 0x1000, "slot": 3},
            {"actor": "kvm", "kind": "swap-in", "t": 6_000, "guest": "alpha", "gaddr": 0x1000, "slot": 3},
            {
                "actor": "monitor",
                "kind": "violation",
                "t": 7_000,
                "guest": "alpha",
                "monitor": "no-plaintext-read",
                "detail": "kvm read <secret> plaintext of gfn 0x1",
                "bytes": 16,
                "nested": {"a": [1, {"b": 2}]},
            },  # fmt: skip
            {"actor": "kvm", "kind": "brand-new-kind", "t": 8_000, "whatever": {"x": 1}, "reason": 42},
        ],
    )


def swap_race_trace(path: Path) -> Path:
    """kswapd exports the frame backing alpha's gfn 0x300 while alpha's vCPU imports that page.

    The export names pfn 0x99, the import names gaddr 0x300000; the reclaim
    event before them names both, so the two calls are on one frame. The
    import is answered busy once and succeeds on its retry.
    """
    conv_to = {"type": "ConvToSecStorRequest", "length": 40, "gaddr": 0x300000, "guest_handle": HANDLE_A}
    return write_trace(
        path,
        [
            vm_create("alpha"),
            request(1, "kvm", 0, {"type": "CreateSecConfRequest", "length": 128}),
            answer(1, "kvm", 0, "CreateSecConfResponse", 0, guest_handle=HANDLE_A),
            {"actor": "kswapd", "kind": "reclaim", "t": 9_000, "guest": "alpha", "gfn": 0x300, "pfn": 0x99},
            request(2, "kswapd", 10_000, {"type": "ConvFromSecStorRequest", "length": 32, "paddr": 0x99000}),
            request(3, "alpha.cpu0", 11_000, conv_to),
            answer(3, "alpha.cpu0", 11_000, "ConvToSecStorResponse", 2, rc=0),
            answer(2, "kswapd", 13_000, "ConvFromSecStorResponse", 0),
            request(4, "alpha.cpu0", 13_000, conv_to),
            answer(4, "alpha.cpu0", 16_000, "ConvToSecStorResponse", 0),
        ],
    )
