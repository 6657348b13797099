"""The hypervisor's virtio devices: a block device and a network device (uv-semantics.md §4).

A secure guest's private memory is out of the devices' reach, so all I/O
goes through pages the guest shares: its virtio rings (one page per queue)
and a pool of bounce buffers (swiotlb, forced on for secure guests). The
guest copies (and encrypts, as dm-crypt or TLS would) its data into bounce
buffers, writes a descriptor into its ring and notifies the device with
DIAG 0x500; the device reads the descriptor, serves the request and marks
the slot done; the guest copies the results back.

The device reaches every guest page with ``pin_user_pages`` (FOLL_PIN,
:meth:`Kvm.gup_pin`): a shared page is pinned in the UV (PIN_PAGE_SHARED)
the first time, so that the guest cannot make it private while the host
uses it (its REMOVE_SHARED gives intercept 108 and KVM unpins first); a page
that is not shared is exported, and the device sees only ciphertext. Every
page the device reads is a ``host-read`` event for the canary monitor.

Layout at the top of guest memory (:func:`io_layout`): the ring of queue 0
(block) in the last page, the ring of queue 1 (network) below it, then
:data:`POOL_PAGES` bounce buffers. A ring page holds :data:`MAX_SLOTS`
descriptor slots of :data:`SLOT_SIZE` bytes::

    +0  state (0 free, 1 available, 2 done, 3 I/O error)
    +1  op    (1 block write, 2 block read, 3 network send)
    +2  count of pages
    +4  block number, or packet number (BE u32)
    +16 guest addresses of the bounce buffers (BE u64 each)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, final

from attrs import frozen

from machine._costs import VIRTIO_BLOCK_IO, VIRTIO_NET_IO

from ._fabric import Actor, Envelope, Fabric
from ._messages import Ack, Shutdown
from ._reclaim import record_host_read

if TYPE_CHECKING:
    from ._kvm import Kvm
    from ._vm import VirtualMachine

PAGE: Final = 4096
QUEUE_BLOCK: Final = 0
QUEUE_NET: Final = 1
QUEUES: Final = (QUEUE_BLOCK, QUEUE_NET)
POOL_PAGES: Final = 8
SLOT_SIZE: Final = 192
MAX_SLOTS: Final = 16
MAX_DESC_PAGES: Final = 16
SLOT_FREE, SLOT_AVAIL, SLOT_DONE, SLOT_ERROR = 0, 1, 2, 3
OP_WRITE, OP_READ, OP_SEND = 1, 2, 3
_OP_NAMES: Final = {OP_WRITE: "write", OP_READ: "read", OP_SEND: "send"}


@frozen(kw_only=True)
class IoLayout:
    """Where a guest keeps its rings and bounce buffers."""

    rings: tuple[int, ...]
    pool: tuple[int, ...]

    @property
    def shared(self) -> tuple[int, ...]:
        """Every page the guest shares at boot."""
        return (*self.rings, *self.pool)


def io_layout(memory: int) -> IoLayout:
    """The I/O pages of a guest with ``memory`` bytes (at its top)."""
    rings = tuple(memory - (q + 1) * PAGE for q in QUEUES)
    pool = tuple(memory - (len(QUEUES) + 1 + i) * PAGE for i in range(POOL_PAGES))
    return IoLayout(rings=rings, pool=pool)


@frozen(kw_only=True)
class Descriptor:
    """One request in a ring slot."""

    op: int
    block: int
    gaddrs: tuple[int, ...]

    def pack(self, state: int = SLOT_AVAIL) -> bytes:
        head = bytes([state, self.op, len(self.gaddrs), 0]) + self.block.to_bytes(4, "big") + bytes(8)
        body = b"".join(g.to_bytes(8, "big") for g in self.gaddrs)
        return (head + body).ljust(SLOT_SIZE, b"\0")

    @classmethod
    def parse(cls, raw: bytes) -> tuple[int, Descriptor | None]:
        """(state, descriptor) of a slot; a malformed slot gives no descriptor."""
        state, op, count = raw[0], raw[1], raw[2]
        if op not in _OP_NAMES or not 0 < count <= MAX_DESC_PAGES:
            return state, None
        block = int.from_bytes(raw[4:8], "big")
        gaddrs = tuple(int.from_bytes(raw[16 + 8 * i : 24 + 8 * i], "big") for i in range(count))
        return state, cls(op=op, block=block, gaddrs=gaddrs)


def slot_offset(slot: int) -> int:
    return slot * SLOT_SIZE


@frozen(kw_only=True)
class VirtioKick:
    """The device has a notification to serve (an ioeventfd firing)."""

    guest: str
    queue: int


@final
class VirtioActor(Actor):
    """QEMU's virtio-blk and virtio-net backends for every guest of one server."""

    kind = "virtio"

    def __init__(self, fabric: Fabric, name: str, hypervisor: Any) -> None:
        super().__init__(fabric, name)
        self.hv = hypervisor
        self._pending: deque[Envelope] = deque()
        self.disk: dict[tuple[str, int], bytes] = {}
        self.packets: list[tuple[str, int, str]] = []
        self.requests = 0

    @property
    def kvm(self) -> Kvm:
        return self.hv.kvm  # type: ignore[no-any-return]

    def submit(self, env: Envelope) -> None:
        """Take a vCPU's VirtioNotify (from the hypervisor); the vCPU waits for the answer."""
        self._pending.append(env)
        self.send(self, VirtioKick(guest=env.msg.guest, queue=env.msg.queue))

    async def main(self) -> None:
        while True:
            env = await self.receive()
            if isinstance(env.msg, Shutdown):
                return
            if isinstance(env.msg, VirtioKick) and self._pending:
                await self._notify(self._pending.popleft())

    def _vm(self, name: str) -> VirtualMachine | None:
        return next((vm for vm in self.kvm.vms if vm.name == name), None)

    async def _notify(self, env: Envelope) -> None:
        """Serve every available slot of the notified queue, then let the vCPU go on."""
        msg = env.msg
        vm = self._vm(msg.guest)
        if vm is None or not vm.virtio_ready or msg.queue not in QUEUES:
            self.reply(env, Ack(detail="notified"))
            return
        kvm = self.kvm
        self.record("virtio-kick", guest=vm.name, queue=msg.queue)
        ring_gaddr = io_layout(vm.spec.memory).rings[msg.queue]
        ring = await kvm.gup_pin(self, vm, ring_gaddr >> 12)
        if ring is None:
            self.reply(env, Ack(detail="ring not accessible"))
            return
        base = ring.pfn * PAGE
        raw = await kvm.kernel_access(self, ring, lambda: kvm.memory.host_read(base, PAGE))
        served = 0
        for slot in range(MAX_SLOTS):
            if raw is None:
                break
            state, desc = Descriptor.parse(raw[slot_offset(slot) : slot_offset(slot) + SLOT_SIZE])
            if state != SLOT_AVAIL:
                continue
            status = SLOT_ERROR if desc is None else await self._serve(vm, msg.queue, desc)
            where = base + slot_offset(slot)
            await kvm.kernel_access(self, ring, lambda at=where, st=status: kvm.memory.host_write(at, bytes([st])))
            served += 1
        kvm.gup_unpin(self, ring)
        self.reply(env, Ack(detail=f"served {served}"))

    async def _serve(self, vm: VirtualMachine, queue: int, desc: Descriptor) -> int:
        kvm = self.kvm
        memory = kvm.memory
        op = _OP_NAMES[desc.op]
        faults = kvm.faults
        if faults.io_error and faults.fires(self, "io-error", faults.io_error):
            vm.stats.io_errors += 1
            self.record("virtio", guest=vm.name, queue=queue, op=op, block=desc.block, pages=0, status="error")
            return SLOT_ERROR
        reader = "virtio-blk" if queue == QUEUE_BLOCK else "virtio-net"
        for i, gaddr in enumerate(desc.gaddrs):
            page = await kvm.gup_pin(self, vm, gaddr >> 12)
            if page is None:
                self.record("virtio", guest=vm.name, queue=queue, op=op, block=desc.block, pages=i, status="fault")
                return SLOT_ERROR
            vm.stats.bounce_pins += 1
            addr = page.pfn * PAGE
            if desc.op == OP_READ:
                data = self.disk.get((vm.name, desc.block + i), bytes(PAGE))
                await kvm.kernel_access(self, page, lambda at=addr, d=data: memory.host_write(at, d))
            else:
                read = await kvm.kernel_access(self, page, lambda at=addr: memory.host_read(at, PAGE))
                data = read if read is not None else bytes(PAGE)
                record_host_read(self, kvm, vm, gaddr >> 12, page.pfn, data, reader=reader)
                if desc.op == OP_WRITE:
                    self.disk[(vm.name, desc.block + i)] = data
                else:
                    self.packets.append((vm.name, desc.block + i, data[:16].hex()))
            await self.sleep(VIRTIO_BLOCK_IO if queue == QUEUE_BLOCK else VIRTIO_NET_IO)
            kvm.gup_unpin(self, page)
        self.requests += 1
        vm.stats.io_requests += 1
        vm.stats.io_pages += len(desc.gaddrs)
        self.record("virtio", guest=vm.name, queue=queue, op=op, block=desc.block, pages=len(desc.gaddrs), status="ok")
        return SLOT_DONE


def chunks(count: int, size: int) -> Sequence[tuple[int, int]]:
    """(first, length) pieces of ``count`` pages, ``size`` at a time."""
    return [(i, min(size, count - i)) for i in range(0, count, size)]
