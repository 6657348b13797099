"""Verifying an attestation response, and saying why a wrong one is wrong.

``pvattest verify`` (``rust/pvattest/src/cmd/verify.rs``, se-format.md §4.2)
opens the ARCB of the response with the ARPK, recomputes the HMAC over the
SE header's tags, the CUID, the user data, the nonce and the additional
data, and compares in constant time; on a mismatch it can only say
"measurement does not match". An HMAC cannot tell which input differs, but
several mistakes show before the HMAC is computed, and are named here:

1. ``"arcb"``: the response's request is not a well-formed ARCB;
2. ``"request"``: it is not the request the caller created (``--request``);
3. ``"arpk"``: the ARPK does not open it: the wrong key file, or the
   request was altered;
4. ``"measurement-size"``: the measurement is not the 64 bytes of HMAC-SHA512;
5. ``"additional-size"``: the additional data is not what the flags ask for;
6. ``"attestation-phkh"``: the additional data names a host key that has
   no slot in the request: the additional data was altered;
7. ``"image-phkh"``: the guest was booted from an image for a host key
   that has no slot in the given header: the header belongs to another
   image;
8. ``"measurement"``: the HMAC differs; the message names what can still
   differ.
"""

from __future__ import annotations

from attrs import field, frozen

from ._arcb import Arcb
from ._attest import (
    MEASUREMENT_LEN,
    AdditionalData,
    BootHdrTags,
    additional_data_size,
    compute_measurement,
    measurement_items,
    measurement_matches,
)
from ._errors import FormatError, VerificationError
from ._exchange import ExchangeResponse


@frozen(kw_only=True)
class AttestationResult:
    """A verified response: what the measurement vouches for."""

    cuid: bytes = field(repr=lambda v: v.hex())
    flags: int
    additional: AdditionalData | None
    user_data: bytes | None = field(repr=False)


def verify_attestation(
    response: ExchangeResponse,
    *,
    header_phkhs: tuple[bytes, ...],
    tags: BootHdrTags,
    arpk: bytes,
    request_arcb: bytes | None = None,
) -> AttestationResult:
    """Check ``response`` against the image header (its tags and key-slot phkhs) and the ARPK.

    Args:
        response: the exchange-format response of ``perform``.
        header_phkhs: the phkh of every key slot of the guest's SE header.
        tags: PLD, ALD, TLD and tag of that header.
        arpk: the attestation request protection key ``create`` wrote.
        request_arcb: the ARCB of the request the caller created, if known.

    Raises:
        VerificationError: the first failed check of the module docstring
            (``check`` names it).
    """
    try:
        arcb = Arcb.parse(response.arcb)
    except FormatError as exc:
        raise VerificationError(f"the response's attestation request is malformed: {exc}", check="arcb") from None
    if request_arcb is not None and bytes(request_arcb) != response.arcb:
        raise VerificationError(
            "the response answers another attestation request than the one given", check="request"
        )
    try:
        secrets = arcb.open(arpk)
    except VerificationError:
        raise VerificationError(
            "the ARPK does not open the response's attestation request: it is not the key that request was "
            "created with, or the request was altered",
            check="arpk",
        ) from None
    if len(response.measurement) != MEASUREMENT_LEN:
        raise VerificationError(
            f"the measurement is {len(response.measurement)} bytes; HMAC-SHA512 gives {MEASUREMENT_LEN}",
            check="measurement-size",
        )
    want = additional_data_size(arcb.flags)
    got = len(response.additional or b"")
    if got != want:
        raise VerificationError(
            f"the response carries {got} bytes of additional data; its request asked for {want}",
            check="additional-size",
        )
    additional = AdditionalData.parse(response.additional, arcb.flags) if response.additional else None
    if additional is not None and additional.attestation_phkh is not None:
        if additional.attestation_phkh not in arcb.phkhs:
            raise VerificationError(
                f"the additional data names host key {additional.attestation_phkh.hex()[:16]}…, which has no "
                "slot in the request: the additional data was altered",
                check="attestation-phkh",
            )
    if additional is not None and additional.image_phkh is not None:
        if additional.image_phkh not in header_phkhs:
            raise VerificationError(
                f"the guest was booted from an image for host key {additional.image_phkh.hex()[:16]}…, which has "
                "no key slot in the given SE header: the header belongs to another image",
                check="image-phkh",
            )
    items = measurement_items(
        tags=tags, cuid=response.cuid, user_data=response.user_data, nonce=secrets.nonce,
        additional=response.additional,
    )  # fmt: skip
    if not measurement_matches(compute_measurement(secrets.measurement_key, items), response.measurement):
        raise VerificationError(
            "measurement does not match: the guest did not boot from the image of the given SE header, or the "
            "measurement, configuration UID, user data or additional data were changed after the ultravisor "
            "produced them",
            check="measurement",
        )
    return AttestationResult(cuid=response.cuid, flags=arcb.flags, additional=additional,
                             user_data=response.user_data)  # fmt: skip
