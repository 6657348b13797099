"""A guest's I/O through shared bounce buffers (uv-semantics.md §4).

The guest OS side of :mod:`actors._virtio`. At boot a guest whose workload
does I/O shares its rings and its bounce-buffer pool page by page
(SET_SHARED_ACCESS; a failing share stops the guest: Linux panics rather
than expose private data). Each workload I/O operation then becomes a
chain of small steps that one vCPU executes in SIE, in order:

``io-write BLOCK ADDR pages=N``
    per chunk: copy each private page into a bounce buffer, encrypted with
    the guest's disk key and the block number as tweak (as dm-crypt does);
    write the descriptor into the ring; DIAG 0x500; read the slot's status.
``io-read BLOCK ADDR pages=N``
    per chunk: descriptor, DIAG 0x500, status, then copy each bounce buffer
    back into private memory, decrypted; the guest checks every page
    against what it wrote to that block.
``net-send ADDR pages=N``
    as a write, on the network queue, with the network key.

A status of "I/O error" (the ``io_error`` fault site) makes the guest retry
the chunk. The host only ever sees ciphertext of the guest's disk and
network key in the bounce buffers; the canary monitor checks that.
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import TYPE_CHECKING, Any, Final, final

from attrs import frozen

from machine import guest_frame
from machine._costs import GUEST_BOUNCE_COPY
from protocol._components import decrypt_page, encrypt_page, xts_algorithm

from ._virtio import (
    MAX_SLOTS,
    OP_READ,
    OP_SEND,
    OP_WRITE,
    QUEUE_BLOCK,
    QUEUE_NET,
    QUEUES,
    SLOT_DONE,
    SLOT_SIZE,
    Descriptor,
    chunks,
    io_layout,
    slot_offset,
)
from ._workload import Diag500, IoRead, IoWrite, NetSend, Share, check_page

if TYPE_CHECKING:
    from ._guest import GuestActor
    from ._vcpu import VcpuActor

PAGE: Final = 4096
CHUNK: Final = 4
"""Pages per request (and bounce buffers one operation holds)."""
MAX_RETRIES: Final = 64
"""A chunk that keeps failing after this many tries fails its operation."""
_ZERO: Final = bytes(PAGE)


def digest(data: bytes) -> str:
    """A short digest of page contents, for the trace (the nothing-lost monitor compares them)."""
    return hashlib.sha256(data).digest()[:8].hex()


# ------------------------------------------------------------ vCPU steps
@frozen(kw_only=True)
class BounceOut:
    """Copy private page ``src`` into bounce buffer ``dst``, encrypted (``stream`` key, ``tweak``)."""

    src: int
    dst: int
    stream: str
    tweak: int


@frozen(kw_only=True)
class BounceIn:
    """Copy bounce buffer ``src`` into private page ``dst``, decrypted (unless the block was never written)."""

    src: int
    dst: int
    stream: str
    tweak: int
    written: bool


@frozen(kw_only=True)
class IoDescriptor:
    """Write a request into slot ``slot`` of the ring of ``queue``."""

    queue: int
    slot: int
    op: int
    block: int
    gaddrs: tuple[int, ...]


@frozen(kw_only=True)
class IoStatus:
    """Read (and free) slot ``slot`` of the ring of ``queue``: the request's status."""

    queue: int
    slot: int


IO_STEPS: Final = (BounceOut, BounceIn, IoDescriptor, IoStatus)


def _key(vm: Any, stream: str) -> Any:
    keys = vm.guest.io.keys
    alg = keys.get(stream)
    if alg is None:
        material = hashlib.sha512(f"sesim-guest-{stream}-key:{vm.name}".encode()).digest()
        alg = keys[stream] = xts_algorithm(material)
    return alg


async def execute_io(vcpu: VcpuActor, op: Any) -> Any:
    """One I/O step inside SIE (memory accesses may take 0x3e/0x3d/DAT exits; the step is then re-executed)."""
    vm = vcpu.vm
    memory = vcpu.kvm.memory
    config = vm.config_handle
    if isinstance(op, BounceOut):
        src = guest_frame(memory, vm.space, config, op.src)
        dst = guest_frame(memory, vm.space, config, op.dst)
        plain = src.read()
        dst.fill(encrypt_page(_key(vm, op.stream), op.tweak.to_bytes(16, "big"), plain))
        await vcpu.sleep(GUEST_BOUNCE_COPY)
        return digest(plain)
    if isinstance(op, BounceIn):
        src = guest_frame(memory, vm.space, config, op.src)
        dst = guest_frame(memory, vm.space, config, op.dst)
        data = src.read()
        plain = decrypt_page(_key(vm, op.stream), op.tweak.to_bytes(16, "big"), data) if op.written else data
        dst.fill(plain)
        await vcpu.sleep(GUEST_BOUNCE_COPY)
        return plain
    ring = guest_frame(memory, vm.space, config, io_layout(vm.spec.memory).rings[op.queue])
    if isinstance(op, IoDescriptor):
        ring.write(slot_offset(op.slot), Descriptor(op=op.op, block=op.block, gaddrs=op.gaddrs).pack())
        return None
    state = ring.read(slot_offset(op.slot), 1)[0]
    ring.write(slot_offset(op.slot), bytes(SLOT_SIZE))
    return state


# ------------------------------------------------------------ guest side
@final
class IoTask:
    """One workload I/O operation in flight: its buffers, its slot, its remaining steps."""

    __slots__ = ("bounce", "chunks", "current", "digests", "op", "queue", "retries", "seq0", "slot", "steps")

    def __init__(self, op: Any, queue: int, slot: int, bounce: list[int]) -> None:
        self.op = op
        self.queue = queue
        self.slot = slot
        self.bounce = bounce
        self.chunks: deque[tuple[int, int]] = deque()
        self.steps: deque[Any] = deque()
        self.current: Any = None
        self.retries = 0
        self.digests: dict[int, str] = {}
        self.seq0 = 0


@final
class GuestIo:
    """The guest OS's I/O state: free bounce buffers and slots, keys, what it wrote to each block."""

    def __init__(self, guest: GuestActor) -> None:
        self.guest = guest
        self.layout = io_layout(guest.vm.spec.memory)
        self.free_bounce: deque[int] = deque(self.layout.pool)
        self.free_slots: dict[int, deque[int]] = {q: deque(range(MAX_SLOTS)) for q in QUEUES}
        self.blocks: dict[int, tuple[int, int, str]] = {}  # block -> (origin gaddr, version, digest)
        self.busy_blocks: set[int] = set()  # blocks of requests in flight (the block layer orders them)
        self.net_seq = 0
        self.keys: dict[str, Any] = {}

    # ------------------------------------------------------------ boot
    async def share_pool(self) -> bool:
        """Share the rings and the bounce buffers, one SET_SHARED_ACCESS a page (vCPU 0)."""
        guest = self.guest
        vcpu = guest.vm.vcpus[0]
        for gaddr in self.layout.shared:
            done = await guest._run_one(vcpu, Share(addr=gaddr))
            if not done.ok:
                guest.state = "stopped"
                guest.reason = f"bounce buffer {gaddr:#x} not shared: {done.error}"
                return False
        guest.vm.virtio_ready = True
        guest.record("io-ready", guest=guest.vm.name, shared=len(self.layout.shared))
        return True

    # ----------------------------------------------------------- requests
    def plan(self, op: Any) -> IoTask | None:
        """Reserve buffers and a slot for ``op``; ``None`` while too few are free (try later)."""
        need = min(op.pages, CHUNK)
        queue = QUEUE_NET if isinstance(op, NetSend) else QUEUE_BLOCK
        if len(self.free_bounce) < need or not self.free_slots[queue]:
            return None
        blocks = set() if isinstance(op, NetSend) else set(range(op.block, op.block + op.pages))
        if blocks & self.busy_blocks:
            return None  # a request on these blocks is in flight: this one waits for it
        self.busy_blocks |= blocks
        task = IoTask(op, queue, self.free_slots[queue].popleft(), [self.free_bounce.popleft() for _ in range(need)])
        if isinstance(op, NetSend):
            task.seq0 = self.net_seq
            self.net_seq += op.pages
        task.chunks = deque(chunks(op.pages, need))
        self._load_chunk(task)
        return task

    def release(self, task: IoTask) -> None:
        self.free_bounce.extend(task.bounce)
        self.free_slots[task.queue].append(task.slot)
        if not isinstance(task.op, NetSend):
            self.busy_blocks -= set(range(task.op.block, task.op.block + task.op.pages))

    def next_step(self, task: IoTask) -> Any:
        task.current = task.steps.popleft()
        return task.current

    def _load_chunk(self, task: IoTask) -> None:
        first, count = task.chunks[0]
        op, bounce = task.op, task.bounce[:count]
        steps: list[Any] = []
        if isinstance(op, IoRead):
            blocks = [op.block + first + j for j in range(count)]
            steps += self._request(task, OP_READ, blocks[0], bounce)
            steps += [
                BounceIn(src=bounce[j], dst=op.addr + (first + j) * PAGE, stream="disk", tweak=b, written=b in self.blocks)
                for j, b in enumerate(blocks)
            ]
        else:
            stream, base, code = ("net", task.seq0, OP_SEND) if isinstance(op, NetSend) else ("disk", op.block, OP_WRITE)
            steps += [
                BounceOut(src=op.addr + (first + j) * PAGE, dst=bounce[j], stream=stream, tweak=base + first + j)
                for j in range(count)
            ]
            steps += self._request(task, code, base + first, bounce)
        task.steps = deque(steps)

    @staticmethod
    def _request(task: IoTask, code: int, block: int, bounce: list[int]) -> list[Any]:
        return [
            IoDescriptor(queue=task.queue, slot=task.slot, op=code, block=block, gaddrs=tuple(bounce)),
            Diag500(queue=task.queue),
            IoStatus(queue=task.queue, slot=task.slot),
        ]

    def on_done(self, task: IoTask, value: Any) -> tuple[Any, str]:
        """The current step finished with ``value``: the next step (or ``None``) and an error text."""
        step = task.current
        guest = self.guest
        name = guest.vm.name
        if isinstance(step, BounceOut):
            task.digests[step.tweak] = value
        elif isinstance(step, IoStatus):
            if value != SLOT_DONE:
                task.retries += 1
                guest.vm.stats.io_retries += 1
                if task.retries > MAX_RETRIES:
                    return None, f"I/O error on {type(task.op).__name__} after {MAX_RETRIES} tries"
                self._load_chunk(task)
                return self.next_step(task), ""
            if isinstance(task.op, IoWrite):
                first, count = task.chunks[0]
                for j in range(count):
                    block = task.op.block + first + j
                    src = task.op.addr + (first + j) * PAGE
                    origin = guest.origin.get(src, src)
                    self.blocks[block] = (origin, guest.versions.get(src, 0), task.digests[block])
                    guest.record("io-write", guest=name, block=block, digest=task.digests[block])
        elif isinstance(step, BounceIn):
            self._arrived(step, value)
        if task.steps:
            return self.next_step(task), ""
        task.chunks.popleft()
        if task.chunks:
            self._load_chunk(task)
            return self.next_step(task), ""
        return None, ""

    def _arrived(self, step: BounceIn, plain: bytes) -> None:
        """A block read back into ``step.dst``: check it, and remember what the page holds now."""
        guest = self.guest
        name = guest.vm.name
        block = step.tweak
        guest.record("io-read", guest=name, block=block, digest=digest(plain))
        known = self.blocks.get(block)
        if known is None:
            why = "" if plain == _ZERO else "a block never written does not read as zeros"
            guest.versions.pop(step.dst, None)
            guest.origin.pop(step.dst, None)
        else:
            origin, version, _ = known
            why = check_page(name, origin, version, plain)
            guest.versions[step.dst] = version
            guest.origin[step.dst] = origin
            guest.record("guest-write", guest=name, gaddr=step.dst, version=version, digest=digest(plain))
        if why:
            guest.corruptions.append(f"block {block}: {why}")
            guest.record("corruption", guest=name, block=block, why=why)


IO_OPS: Final = (IoWrite, IoRead, NetSend)
