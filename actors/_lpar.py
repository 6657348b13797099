"""The LPAR: the host partition that owns the memory and brings the UV up.

At boot it queries the UV (QUI), donates ``uv_base_stor_len`` bytes above
2 GiB with INIT_UV (Linux ``setup_uv``), and starts the hypervisor. If
INIT_UV fails, secure guests cannot run on this host (``prot_virt_host=0``);
the hypervisor is started anyway and regular guests still run.
"""

from __future__ import annotations

from typing import final

from machine._alloc import FrameAllocator
from protocol import Cc, InitUvRequest, QuiRequest

from ._fabric import Actor, Fabric
from ._messages import Start
from ._ultravisor import uvc_retry


@final
class LparActor(Actor):
    kind = "lpar"

    def __init__(self, fabric: Fabric, name: str, uv_actor: Actor, hypervisor: Actor, allocator: FrameAllocator) -> None:
        super().__init__(fabric, name)
        self.uv_actor = uv_actor
        self.hypervisor = hypervisor
        self.allocator = allocator
        self.prot_virt_host = False

    async def main(self) -> None:
        qui = await uvc_retry(self, self.uv_actor, QuiRequest())
        length = qui.uv_base_stor_len
        origin = self.allocator.alloc_contiguous(length // 4096, 256) * 4096  # 1 MiB aligned, from the top
        response = await uvc_retry(self, self.uv_actor, InitUvRequest(stor_origin=origin, stor_len=length))
        self.prot_virt_host = response.cc == Cc.OK
        self.record("prot-virt-host", enabled=self.prot_virt_host, rc=response.rc)
        self.send(self.hypervisor, Start())
