"""Run configurations: a TOML file describing one server and its guests.

Example::

    strategy = "random"          # or "pct" (then pct_depth = 3)
    bugs = []                    # optional: historical kernel bugs to re-create
                                 # (names as for --inject-bug)

    [faults]                     # optional fault sites, percent per chance, until heal_at ns
    uv_busy = 5                  # also: import_busy, uv_partial, sie_exit_delay, io_error,
                                 # reclaim_storm, heal_at, start_at (see actors/_faults.py)
    fail_uvcs = []               # one-shot firmware errors: "CREATE_SEC_CPU:2" fails the
                                 # second CREATE_SEC_CPU call (cc 1, rc 0x0106)

    [server]
    name = "z15-a"
    memory_mib = 4096
    cpus = 4
    host_key = "pki/z15-a.key"   # optional: the server's private host key (PEM);
                                 # default: a key derived from the seed
    guest_memory_limit_mib = 2   # optional: host memory for guest pages (or _kib);
                                 # beyond it the reclaim thread swaps pages out

    [[guest]]
    name = "alpha"
    secure = true
    memory_mib = 64
    cpus = 2
    image = "alpha.img"          # optional: an image from `sesim image create`;
                                 # default: one is built for `image_for` (this server)
    workload = ["write 0x100000 pages=4", "read 0x100000 pages=4", "reboot normal"]
    teardown = "sync"            # optional: "sync", "async" (guests over 2 GiB) or "exit"
    dump = false                 # optional: the hypervisor dumps it once while it runs
                                 # (a built image then allows dumping, PCF bit 34)
    # With teardown = "async" only: QEMU's cleanup thread waits cleanup_delay ns before
    # its PERFORM, and a fatal signal kills it after cleanup_killed_after pages.

    [[host_thread]]              # optional: a host thread racing with a guest (§8)
    kind = "reader"              # "reader" (QEMU reads guest pages: exports),
                                 # "ref-noise", "pinner" (pins a shared page), "tamperer"
    guest = "alpha"
    addresses = [0x100000]       # guest pages it works on (ref-noise: none needed)
    rounds = 6                   # optional: reads / reference rounds / swap polls

    [[guest]]
    name = "legacy"
    secure = false
    memory_mib = 32
    cpus = 1
    workload = ["write 0x0 pages=2", "read 0x0 pages=2"]

Every error names the file and the key that is wrong.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from actors._bugs import BUG_NAMES
from actors._faults import FaultPlan
from actors._guest_io import IO_OPS
from actors._host_threads import HostThread
from actors._virtio import io_layout
from actors._workload import parse_op
from protocol import SesimError, UsageError

from ._simulation import GuestConfig, RunConfig


class ConfigError(SesimError):
    """The run configuration is not valid."""


_TOP = {"strategy", "pct_depth", "server", "guest", "faults", "bugs", "host_thread"}
_FAULT_PERCENTS = {"uv_busy", "import_busy", "uv_partial", "sie_exit_delay", "io_error", "reclaim_storm"}
_FAULTS = {*_FAULT_PERCENTS, "heal_at", "start_at", "fail_uvcs"}
_SERVER = {"name", "memory_mib", "cpus", "host_key", "guest_memory_limit_mib", "guest_memory_limit_kib", "destroy_fast"}
_GUEST = {
    "name", "secure", "memory_mib", "cpus", "workload", "image", "image_for", "teardown", "dump", "cleanup_delay",
    "cleanup_killed_after",
}
_HOST_THREAD = {"kind", "guest", "addresses", "rounds"}
_TEARDOWNS = ("sync", "async", "exit")


def _check_keys(where: str, table: dict[str, Any], allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}: unknown key (allowed: {', '.join(sorted(allowed))})")


def _get(where: str, table: dict[str, Any], key: str, kind: type, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise ConfigError(f"{where}.{key}: missing")
        return default
    value = table[key]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}.{key}: must be an integer, got {value!r}")
    if kind is not int and not isinstance(value, kind):
        raise ConfigError(f"{where}.{key}: must be a {kind.__name__}, got {value!r}")
    return value


def _positive(where: str, key: str, value: int, low: int = 1, high: int | None = None) -> int:
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ConfigError(f"{where}.{key}: must be {bound}, got {value}")
    return value


def _check_io_region(where: str, workload: list[str], gmem: int) -> None:
    """A guest doing I/O keeps its rings and bounce buffers at the top of its memory: no other op there."""
    ops = [parse_op(line) for line in workload]
    if not any(isinstance(op, IO_OPS) for op in ops):
        return
    reserved = set(io_layout(gmem << 20).shared)
    for j, op in enumerate(ops):
        addr, pages = getattr(op, "addr", None), getattr(op, "pages", 1)
        if addr is not None and any(addr + i * 4096 in reserved for i in range(pages)):
            low = min(reserved)
            raise ConfigError(
                f"{where}.workload[{j}]: {workload[j]!r} touches the I/O rings and bounce buffers "
                f"(guest addresses {low:#x} and up are theirs)"
            )


def load_config(path: Path) -> RunConfig:
    """Read and validate a run configuration.

    Raises:
        ConfigError: naming the file and the bad key.
        OSError: the file cannot be read.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    return parse_config(data, source=str(path), base=path.parent)


def parse_config(
    data: dict[str, Any], *, source: str = "config", base: Path = Path("."), check_ranges: bool = True
) -> RunConfig:
    """Validate a configuration already read into a dict (see :func:`load_config`).

    ``check_ranges=False`` accepts workload addresses beyond a guest's memory:
    replay must re-run whatever was recorded, even a run built to fail that way.
    """
    _check_keys(source, data, _TOP)
    strategy = _get(source, data, "strategy", str, "random")
    if strategy not in ("random", "pct"):
        raise ConfigError(f"{source}.strategy: must be 'random' or 'pct', got {strategy!r}")
    depth = _positive(source, "pct_depth", _get(source, data, "pct_depth", int, 3))
    server = _get(source, data, "server", dict, {})
    where = f"{source}: server"
    _check_keys(where, server, _SERVER)
    name = _get(where, server, "name", str, "z15-a")
    memory = _positive(where, "memory_mib", _get(where, server, "memory_mib", int, 4096), 2304, 1 << 22)
    cpus = _positive(where, "cpus", _get(where, server, "cpus", int, 4), 1, 256)
    host_key = _get(where, server, "host_key", str, "")
    limit_kib = _positive(where, "guest_memory_limit_kib", _get(where, server, "guest_memory_limit_kib", int, 0), 0)
    if "guest_memory_limit_mib" in server:
        if limit_kib:
            raise ConfigError(f"{where}: give guest_memory_limit_mib or guest_memory_limit_kib, not both")
        limit_kib = _positive(where, "guest_memory_limit_mib", _get(where, server, "guest_memory_limit_mib", int), 0) * 1024
    if limit_kib and limit_kib < 16:
        raise ConfigError(f"{where}.guest_memory_limit_kib: at least 16 KiB (4 pages), got {limit_kib}")
    destroy_fast = _get(where, server, "destroy_fast", bool, True)
    bugs = _get(source, data, "bugs", list, [])
    for j, bug in enumerate(bugs):
        if not isinstance(bug, str) or bug not in BUG_NAMES:
            raise ConfigError(f"{source}.bugs[{j}]: {bug!r} is not one of {', '.join(BUG_NAMES)}")
    guests_raw = _get(source, data, "guest", list, [])
    if not guests_raw:
        raise ConfigError(f"{source}: no [[guest]] defined")
    guests = []
    names: set[str] = set()
    for i, g in enumerate(guests_raw):
        where = f"{source}: guest[{i}]"
        if not isinstance(g, dict):
            raise ConfigError(f"{where}: must be a table")
        _check_keys(where, g, _GUEST)
        gname = _get(where, g, "name", str)
        if not gname.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"{where}.name: use letters, digits, '-' and '_' only, got {gname!r}")
        if gname in names:
            raise ConfigError(f"{where}.name: {gname!r} is used twice")
        names.add(gname)
        secure = _get(where, g, "secure", bool, True)
        gmem = _positive(where, "memory_mib", _get(where, g, "memory_mib", int, 64), 1, 1 << 20)
        gcpus = _positive(where, "cpus", _get(where, g, "cpus", int, 1), 1, 248)
        workload = _get(where, g, "workload", list, [])
        for j, line in enumerate(workload):
            if not isinstance(line, str):
                raise ConfigError(f"{where}.workload[{j}]: must be a string")
            try:
                op = parse_op(line)
            except UsageError as exc:
                raise ConfigError(f"{where}.workload[{j}]: {exc}") from None
            top = getattr(op, "addr", 0) + getattr(op, "pages", 1) * 4096
            if check_ranges and hasattr(op, "addr") and top > gmem << 20:
                raise ConfigError(f"{where}.workload[{j}]: {line!r} reaches beyond the guest's {gmem} MiB")
        _check_io_region(where, workload, gmem)
        image = _get(where, g, "image", str, "")
        image_for = _get(where, g, "image_for", str, "")
        if not secure and (image or image_for):
            raise ConfigError(f"{where}: 'image' and 'image_for' need secure = true")
        if image and image_for:
            raise ConfigError(f"{where}: give either 'image' or 'image_for', not both")
        teardown = _get(where, g, "teardown", str, "sync")
        if teardown not in _TEARDOWNS:
            raise ConfigError(f"{where}.teardown: must be one of {', '.join(_TEARDOWNS)}, got {teardown!r}")
        dump = _get(where, g, "dump", bool, False)
        if dump and not secure:
            raise ConfigError(f"{where}.dump: only a secure guest is dumped")
        cleanup_delay = _positive(where, "cleanup_delay", _get(where, g, "cleanup_delay", int, 0), 0)
        killed = g.get("cleanup_killed_after")
        if killed is not None:
            killed = _positive(where, "cleanup_killed_after", _get(where, g, "cleanup_killed_after", int), 0)
        if (cleanup_delay or killed is not None) and teardown != "async":
            raise ConfigError(f"{where}: cleanup_delay and cleanup_killed_after need teardown = \"async\"")
        guests.append(
            GuestConfig(
                name=gname,
                secure=secure,
                memory_mib=gmem,
                cpus=gcpus,
                workload=tuple(workload),
                image_for=image_for,
                image_path=str(base / image) if image else "",
                teardown=teardown,
                dump=dump,
                cleanup_delay=cleanup_delay,
                cleanup_killed_after=killed,
            )
        )
    faults_raw = _get(source, data, "faults", dict, {})
    where = f"{source}: faults"
    _check_keys(where, faults_raw, _FAULTS)
    fault_values = {}
    for key in sorted(_FAULTS - {"fail_uvcs"}):
        if key in faults_raw:
            high = 100 if key in _FAULT_PERCENTS else None
            fault_values[key] = _positive(where, key, _get(where, faults_raw, key, int), 0, high)
    fail_uvcs = _get(where, faults_raw, "fail_uvcs", list, [])
    if not all(isinstance(entry, str) for entry in fail_uvcs):
        raise ConfigError(f"{where}.fail_uvcs: must be a list of strings \"COMMAND:N\"")
    try:
        plan = FaultPlan(**fault_values, fail_uvcs=tuple(fail_uvcs))
    except UsageError as exc:
        raise ConfigError(f"{where}.{exc}") from None
    return RunConfig(
        faults=plan,
        host_threads=_host_threads(source, data, names),
        server=name,
        memory_mib=memory,
        cpus=cpus,
        guests=tuple(guests),
        strategy=strategy,
        pct_depth=depth,
        host_key_path=str(base / host_key) if host_key else "",
        guest_memory_limit_kib=limit_kib,
        destroy_fast=destroy_fast,
        bugs=tuple(bugs),
    )


def _host_threads(source: str, data: dict[str, Any], guests: set[str]) -> tuple[HostThread, ...]:
    threads = []
    for i, t in enumerate(_get(source, data, "host_thread", list, [])):
        where = f"{source}: host_thread[{i}]"
        if not isinstance(t, dict):
            raise ConfigError(f"{where}: must be a table")
        _check_keys(where, t, _HOST_THREAD)
        guest = _get(where, t, "guest", str)
        if guest not in guests:
            raise ConfigError(f"{where}.guest: no guest named {guest!r}")
        addresses = _get(where, t, "addresses", list, [])
        for j, address in enumerate(addresses):
            if isinstance(address, bool) or not isinstance(address, int) or address < 0:
                raise ConfigError(f"{where}.addresses[{j}]: must be a guest address (an integer), got {address!r}")
        rounds = _positive(where, "rounds", _get(where, t, "rounds", int, 0), 0, 1 << 20)
        try:
            threads.append(
                HostThread(kind=_get(where, t, "kind", str), guest=guest, addresses=tuple(addresses), rounds=rounds)
            )
        except UsageError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return tuple(threads)
