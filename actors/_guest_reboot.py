"""The guest's side of a reboot (``reboot clear|normal|reipl`` in a workload).

Like Linux, the guest reboots with nothing else running: the workload loop
waits until every other operation finished. The reboot runs on CPU 0:

* ``clear`` / ``normal`` (DIAG 308 subcode 0 / 1): the guest stores its
  restart PSW at absolute 0 and issues the DIAG; the hypervisor runs the
  reset sequence (:mod:`actors._reset`) and CPU 0 restarts at that PSW. The
  guest is still the same secure guest with the same memory, so its page
  checker keeps what it knows. It boots again: it starts its other CPUs
  with SIGP START, shares its bounce buffers again (the reset's
  SET_UNSHARE_ALL made them private) and goes on with the workload.
* ``reipl`` (subcode 3): the configuration is torn down and the image is
  IPLed again; a secure guest's loader asks for a new configuration (DIAG
  308 subcodes 8 and 10, stage3b). Its memory was destroyed with the old
  configuration, so the checker starts afresh.
"""

from __future__ import annotations

from typing import Any

from ._workload import Reboot, SigpStart


async def reboot(guest: Any, op: Reboot) -> bool:
    """Reboot ``guest`` (a :class:`actors._guest.GuestActor`); False if it could not go on."""
    vm = guest.vm
    cpu0 = vm.vcpus[0]
    guest.record("guest-reboot", guest=vm.name, how=op.kind)
    done = await guest._run_one(cpu0, op)
    vm.stats.ops_done += 1
    if not done.ok:
        guest.state = "stopped"
        guest.reason = f"reboot {op.kind}: {done.error}"
        return False
    if op.subcode == 3 and vm.secure and vm.spec.image is not None:
        guest.versions.clear()  # the old configuration's memory is gone
        guest.state = "booting"
        if not await guest._boot_secure(cpu0):
            return False
        guest.state = "running"
    else:
        for cpu in range(1, len(vm.vcpus)):
            started = await guest._run_one(cpu0, SigpStart(cpu=cpu))
            if not started.ok:
                guest.state = "stopped"
                guest.reason = f"SIGP START of CPU {cpu}: {started.error}"
                return False
        io = getattr(guest, "io", None)
        if io is not None and not await io.share_pool():  # SET_UNSHARE_ALL made the bounce buffers private
            return False
    guest.record("guest-rebooted", guest=vm.name, how=op.kind, detail=str(done.value))
    return True
