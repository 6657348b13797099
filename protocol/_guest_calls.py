"""Pure helpers for a guest that attests itself or uses the secret store.

What a guest's ``/dev/uv`` driver does around the UVC, minus the memory
accesses (uv-semantics.md §6, Linux ``drivers/s390/char/uvdevice.c``): where
the request and the output buffers go, the UVCB that names them, and the
exchange-format response built from what the ultravisor wrote back. The
caller (a testbed guest, or an actor's workload) copies the bytes in and out
of guest memory and issues the UVC.
"""

from __future__ import annotations

from attrs import frozen

from ._errors import UsageError
from ._exchange import ExchangeRequest, ExchangeResponse
from ._secrets import LIST_PAGE_LEN
from ._uvcb_guest import (
    RETR_ATTEST_USER_DATA_LEN,
    AddSecretRequest,
    ListSecretsRequest,
    RetrAttestRequest,
    RetrSecretRequest,
)

PAGE = 4096


def _pages(n: int) -> int:
    return (n + PAGE - 1) // PAGE * PAGE


@frozen(kw_only=True)
class AttestationLayout:
    """Guest addresses of one RETR_ATTEST: the UVCB, the ARCB and the two output buffers.

    Every part starts on its own page, so a part never shares a page with
    another (what uvdevice's separate kernel buffers give, too).
    """

    uvcb: int
    arcb: int
    measurement: int
    additional: int
    end: int

    @classmethod
    def at(cls, base: int, request: ExchangeRequest) -> AttestationLayout:
        """Lay out ``request`` from the page-aligned guest address ``base`` upwards."""
        arcb = _pages(base) + PAGE
        meas = arcb + _pages(len(request.arcb))
        add = meas + _pages(request.measurement_size)
        end = add + _pages(request.additional_size)
        return cls(uvcb=_pages(base), arcb=arcb, measurement=meas, additional=add, end=end)

    @staticmethod
    def size_for(request: ExchangeRequest) -> int:
        """Bytes of guest memory :meth:`at` uses."""
        return PAGE + _pages(len(request.arcb)) + _pages(request.measurement_size) + _pages(request.additional_size)

    def uvcb_request(self, request: ExchangeRequest, user_data: bytes | None = None) -> RetrAttestRequest:
        """The RETR_ATTEST UVCB for ``request`` laid out here (uvdevice ``uvio_build_uvcb_attest``)."""
        user = bytes(user_data or b"")
        if len(user) > RETR_ATTEST_USER_DATA_LEN:
            raise UsageError(f"user data is at most {RETR_ATTEST_USER_DATA_LEN} bytes, got {len(user)}")
        return RetrAttestRequest(
            arcb_addr=self.arcb, cont_token=0, user_data_len=len(user), user_data=user,
            meas_len=request.measurement_size, meas_addr=self.measurement,
            add_data_len=request.additional_size, add_data_addr=self.additional if request.additional_size else 0,
        )  # fmt: skip


def attestation_response(
    request: ExchangeRequest,
    *,
    measurement: bytes,
    additional: bytes,
    cuid: bytes,
    user_data: bytes | None = None,
) -> ExchangeResponse:
    """The exchange-format response ``pvattest perform`` writes (``perform.rs``)."""
    return ExchangeResponse(
        arcb=request.arcb, measurement=bytes(measurement), additional=bytes(additional) or None,
        user_data=bytes(user_data) if user_data else None, cuid=bytes(cuid),
    )  # fmt: skip


def add_secret_uvcb(asrcb_addr: int) -> AddSecretRequest:
    return AddSecretRequest(addr=asrcb_addr)


def list_secrets_uvcb(list_addr: int, start_idx: int = 0) -> ListSecretsRequest:
    return ListSecretsRequest(start_idx=start_idx, list_addr=list_addr)


def retr_secret_uvcb(index: int, buf_addr: int, buf_size: int) -> RetrSecretRequest:
    return RetrSecretRequest(secret_idx=index, buf_size=buf_size, buf_addr=buf_addr)


assert LIST_PAGE_LEN == PAGE
