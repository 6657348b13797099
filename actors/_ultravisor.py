"""The ultravisor actor: the firmware's rules from :mod:`machine`, plus time and locks.

A UVC is a :class:`~actors._messages.Uvc` call. The actor works out which
frames, configuration or CPU the call touches (its *footprint*). If another
UVC in flight holds any of them, the caller gets cc 2 (busy) at once, as the
real firmware answers a call on a frame that another call holds
(uv-semantics.md §1.1). Otherwise it takes the footprint, lets the call's
virtual duration pass (a timer message to itself) while other calls go on,
then runs the machine's decision and answers. Calls that touch nothing
shared, or that cost nothing, are answered at once.
"""

from __future__ import annotations

from typing import Any, Final, final

from attrs import frozen

from machine import HOST, Caller, NotificationIntercept, ProgramInterrupt, Ultravisor
from machine._costs import DEFAULT_UVC_COST, UVC_COST
from protocol import RESPONSE_TYPES, Cc, UvcCommand

from ._fabric import Actor, Envelope, Fabric
from ._messages import GuestException, Intercept108, Shutdown, Uvc

_FRAME_BY_PADDR: Final = frozenset(
    {UvcCommand.CONV_FROM_SEC_STOR, UvcCommand.DESTR_SEC_STOR, UvcCommand.PIN_PAGE_SHARED}
)
_FRAME_BY_GADDR: Final = frozenset({UvcCommand.CONV_TO_SEC_STOR, UvcCommand.UNPACK_IMG, UvcCommand.UNPIN_PAGE_SHARED})
_FRAME_BY_GUEST: Final = frozenset({UvcCommand.SET_SHARED_ACCESS, UvcCommand.REMOVE_SHARED_ACCESS})
_CONFIG_WIDE: Final = frozenset(
    {
        UvcCommand.SET_SEC_CONF_PARAMS,
        UvcCommand.VERIFY_IMG,
        UvcCommand.DESTROY_SEC_CONF,
        UvcCommand.DESTROY_SEC_CONF_FAST,
        UvcCommand.SET_UNSHARE_ALL,
        UvcCommand.PREPARE_RESET,
    }
)


BUSY_ANSWER_COST: Final = 200
"""Virtual ns a UVC takes to answer busy (cc 2) or partial (cc 3)."""


@frozen
class _Complete:
    """Timer message: the call ``env`` has used up its virtual time."""

    token: int


FIRMWARE_ERROR_RC = 0x0106
"""What an injected firmware error answers (``FaultPlan.fail_uvcs``): rc 0x0106, a
code no UVC gives for a well-formed call, so a hypervisor can only treat it as fatal."""


@final
class UltravisorActor(Actor):
    """Answers every UVC of one server.

    Args:
        uv: the machine-level ultravisor whose rules decide each call.
        busy_fault: a callable ``(command) -> bool`` deciding whether to
            answer busy anyway (a fault site of stress campaigns); ``None``
            for never. Returning ``Cc.PARTIAL`` answers cc 3 instead.
        failing: command -> the call numbers (from 1) of that UVC that fail
            with a firmware error (``FaultPlan.fail_uvcs``).
    """

    kind = "ultravisor"

    def __init__(self, fabric: Fabric, name: str, uv: Ultravisor) -> None:
        super().__init__(fabric, name)
        self.uv = uv
        self._held: dict[tuple[Any, ...], int] = {}
        self._inflight: dict[int, tuple[Envelope, tuple[tuple[Any, ...], ...]]] = {}
        self._token = 0
        self._answers: dict[int, Any] = {}
        self.busy_fault: Any = None
        self.failing: dict[UvcCommand, frozenset[int]] = {}
        self._executed: dict[UvcCommand, int] = {}
        self.calls = 0
        self.busy = 0

    # ----------------------------------------------------------- footprint
    def footprint(self, caller: Caller, request: Any) -> tuple[tuple[Any, ...], ...]:
        """The locks a call needs while it runs: frames, a configuration or a CPU."""
        command = request.COMMAND
        uv = self.uv
        if command in _FRAME_BY_PADDR:
            return (("frame", request.paddr >> 12),)
        if command in _FRAME_BY_GADDR or command in _FRAME_BY_GUEST:
            handle = caller.config_handle if command in _FRAME_BY_GUEST else request.guest_handle
            gaddr = request.paddr if command in _FRAME_BY_GUEST else request.gaddr
            conf = uv.configs.get(handle)
            space = None if conf is None else uv.server.address_spaces.get(conf.asce)
            pfn = None if space is None else space.pfn_of(gaddr >> 12)
            return (("config", handle),) if pfn is None else (("frame", pfn),)
        if command in _CONFIG_WIDE:
            handle = getattr(request, "handle", None) or getattr(request, "guest_handle", 0)
            return (("config", handle),)
        if command is UvcCommand.CPU_SET_STATE:
            return (("cpu", request.cpu_handle),)
        return ()

    # ---------------------------------------------------------------- loop
    async def main(self) -> None:
        while True:
            env = await self.receive()
            msg = env.msg
            if isinstance(msg, _Complete):
                self._complete(msg.token)
            elif isinstance(msg, Uvc):
                self._begin(env, msg)
            elif isinstance(msg, Shutdown):
                return

    def _begin(self, env: Envelope, call: Uvc) -> None:
        self.calls += 1
        request = call.request
        command = request.COMMAND
        keys = self.footprint(call.caller, request)
        held = self._held
        fault = any(key in held for key in keys) or (self.busy_fault is not None and self.busy_fault(command))
        if fault:
            self.busy += 1
            cc = Cc.PARTIAL if fault is Cc.PARTIAL else Cc.BUSY  # a fault hook may answer partial (cc 3)
            # Even a busy answer takes the instruction some time: a caller that loops on busy
            # (uv_call) must let virtual time go on, or a storm of busy answers would never end.
            self._token += 1
            self._inflight[self._token] = (env, ())
            self._answers[self._token] = RESPONSE_TYPES[command](cc=cc, rc=0, rrc=0)
            self.send_after(BUSY_ANSWER_COST, self, _Complete(self._token))
            return
        cost = UVC_COST.get(command, DEFAULT_UVC_COST)
        # A call that needs no lock (QUI, CREATE_SEC_CONF, ...) still takes its time.
        self._token += 1
        token = self._token
        for key in keys:
            held[key] = token
        self._inflight[token] = (env, keys)
        self.send_after(cost, self, _Complete(token))

    def _complete(self, token: int) -> None:
        env, keys = self._inflight.pop(token)
        answer = self._answers.pop(token, None)
        if answer is not None:
            self.reply(env, answer)
            return
        for key in keys:
            del self._held[key]
        self.reply(env, self._execute(env.msg))

    def _execute(self, call: Uvc) -> Any:
        command = call.request.COMMAND
        failing = self.failing.get(command)
        if failing is not None:
            n = self._executed[command] = self._executed.get(command, 0) + 1
            if n in failing:
                self.record("uvc-fault", command=command.name, rc=FIRMWARE_ERROR_RC, call=n)
                return RESPONSE_TYPES[command](cc=Cc.ERROR, rc=FIRMWARE_ERROR_RC, rrc=0)
        try:
            return self.uv.execute(call.caller, call.request)
        except NotificationIntercept as intercept:
            return Intercept108(reason=intercept.reason)
        except ProgramInterrupt as pgm:
            # A guest's UVC on a page it cannot access itself takes the access's
            # exception; the vCPU's exception handler fixes the page and the guest
            # executes the UVC again.
            if not call.caller.is_guest:
                raise
            return GuestException(code=int(pgm.code), address=pgm.address)


async def uvc(actor: Actor, uv_actor: Actor, request: Any, caller: Caller = HOST) -> Any:
    """Issue one UVC from ``actor`` and wait for the answer (a single try, like ``__uv_call``)."""
    return await actor.call(uv_actor, Uvc(caller=caller, request=request))


async def uvc_retry(actor: Actor, uv_actor: Actor, request: Any, caller: Caller = HOST) -> Any:
    """Issue a UVC and re-issue it while the UV answers busy or partial (Linux ``uv_call``)."""
    while True:
        response = await actor.call(uv_actor, Uvc(caller=caller, request=request))
        if isinstance(response, Intercept108) or response.cc < Cc.BUSY:
            return response
