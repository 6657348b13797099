"""Attestation and secrets inside a running secure guest (uv-semantics.md §6).

The guest's owner prepares, outside the system, an attestation request for
this server's host key and an add-secret request bound to the guest's SE
header (:class:`OwnerMaterial`). The guest's ``/dev/uv`` driver copies a
request into guest memory and issues the guest UVC; the ultravisor reads and
writes only guest memory. The owner then checks the measurement against the
image's header and its ARPK; the guest uses the secret it received.

The work runs on a vCPU inside SIE, so every guest access may fault; the
steps are ordered so that a repeated attempt never repeats a UVC that changed
state (ADD_SECRET is issued once, then only the reads are retried).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from attrs import field, frozen

from machine import guest_frame
from protocol import AttestationLayout, ExchangeRequest, SecretList, attestation_response
from protocol._guest_calls import add_secret_uvcb, list_secrets_uvcb, retr_secret_uvcb
from protocol._secrets import LIST_PAGE_LEN, secret_id

if TYPE_CHECKING:
    from ._vcpu import VcpuActor

PAGE: Final = 4096
AREA_PAGES: Final = 48
"""Guest pages the driver uses for requests and answers, below the I/O pages at the top of memory."""


@frozen(kw_only=True)
class OwnerSecret:
    name: str
    asrcb: bytes = field(repr=False)
    value: bytes = field(repr=False)


@frozen(kw_only=True)
class OwnerMaterial:
    """What the guest's owner prepared: requests for this server and what to check the answers with."""

    attest_request: ExchangeRequest | None = field(default=None, repr=False)
    arpk: bytes = field(default=b"", repr=False)
    header: bytes = field(default=b"", repr=False)  # the guest's SE header (tags, key-slot phkhs)
    secrets: tuple[OwnerSecret, ...] = ()

    def secret(self, name: str) -> OwnerSecret | None:
        return next((s for s in self.secrets if s.name == name), None)


def area(memory: int) -> int:
    """First guest address of the driver's area."""
    return memory - (AREA_PAGES + 24) * PAGE


def _write(vcpu: VcpuActor, gaddr: int, data: bytes) -> None:
    vm = vcpu.vm
    for offset in range(0, len(data), PAGE):
        frame = guest_frame(vcpu.kvm.memory, vm.space, vm.config_handle, gaddr + offset)
        frame.write(0, data[offset : offset + PAGE])


def _read(vcpu: VcpuActor, gaddr: int, length: int) -> bytes:
    vm = vcpu.vm
    out = bytearray()
    for offset in range(0, length, PAGE):
        frame = guest_frame(vcpu.kvm.memory, vm.space, vm.config_handle, gaddr + offset)
        out += frame.read(0, min(PAGE, length - offset))
    return bytes(out)


def _touch(vcpu: VcpuActor, gaddr: int, length: int) -> None:
    _read(vcpu, gaddr, max(length, 1))


async def attest(vcpu: VcpuActor, user: bytes) -> Any:
    """RETR_ATTEST of the owner's request; the exchange-format response, or an error text."""
    owner: OwnerMaterial | None = vcpu.vm.spec.owner
    if owner is None or owner.attest_request is None:
        return "no attestation request from the owner"
    request = owner.attest_request
    layout = AttestationLayout.at(area(vcpu.vm.spec.memory), request)
    _write(vcpu, layout.arcb, request.arcb)
    _touch(vcpu, layout.measurement, request.measurement_size)
    if request.additional_size:
        _touch(vcpu, layout.additional, request.additional_size)
    response = await vcpu.guest_call(layout.uvcb_request(request, user or None))
    if response.cc != 0:
        return f"RETR_ATTEST rc {response.rc:#06x} rrc {response.rrc:#06x}"
    additional = _read(vcpu, layout.additional, response.add_data_len) if response.add_data_len else b""
    return attestation_response(
        request, measurement=_read(vcpu, layout.measurement, request.measurement_size),
        additional=additional, cuid=response.config_uid, user_data=user or None,
    )  # fmt: skip


async def receive_secret(vcpu: VcpuActor, name: str, added: set[str]) -> bytes | str:
    """ADD_SECRET of the owner's request for ``name``, then LIST_SECRETS and RETR_SECRET; the value."""
    owner: OwnerMaterial | None = vcpu.vm.spec.owner
    secret = None if owner is None else owner.secret(name)
    if secret is None:
        return f"no secret {name!r} from the owner"
    base = area(vcpu.vm.spec.memory) + AREA_PAGES // 2 * PAGE
    list_page, buffer, request_at = base, base + PAGE, base + 2 * PAGE
    # Touch every page first, so that no fault comes between the UVCs.
    _touch(vcpu, list_page, LIST_PAGE_LEN)
    _touch(vcpu, buffer, PAGE)
    if name not in added:
        _write(vcpu, request_at, secret.asrcb)
        added.add(name)  # before the call: another vCPU must not add the same secret meanwhile
        try:
            response = await vcpu.guest_call(add_secret_uvcb(request_at))
        except BaseException:
            added.discard(name)  # the call left SIE before it took effect: it is issued again
            raise
        if response.cc != 0:
            added.discard(name)
            return f"ADD_SECRET rc {response.rc:#06x} rrc {response.rrc:#06x}"
    response = await vcpu.guest_call(list_secrets_uvcb(list_page))
    if response.cc != 0 and response.rc != 0x0100:
        return f"LIST_SECRETS rc {response.rc:#06x}"
    wanted = secret_id(name)
    entry = next((e for e in SecretList.parse(_read(vcpu, list_page, LIST_PAGE_LEN)).entries if e.id == wanted), None)
    if entry is None:
        return f"secret {name!r} is not listed"
    response = await vcpu.guest_call(retr_secret_uvcb(entry.index, buffer, PAGE))
    if response.cc != 0:
        return f"RETR_SECRET rc {response.rc:#06x} rrc {response.rrc:#06x}"
    return _read(vcpu, buffer, entry.length)
