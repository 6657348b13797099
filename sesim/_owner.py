"""What a guest's owner prepares before the run: an attestation request and add-secret requests.

The owner knows the image (its SE header) and the host-key document of the
server the guest runs on; nothing here is known to the hypervisor. Every
random value comes from (seed, guest name), so runs stay reproducible.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric import ec

from actors._guest_attest import OwnerMaterial, OwnerSecret
from actors._workload import Attest, ReceiveSecret
from protocol import BootHdrTags, ExchangeRequest, find_se_header, parse_se_header
from protocol._arcb import build_arcb
from protocol._asrcb import GuestSecret, build_asrcb
from protocol._crypto import ec_private_from_scalar
from protocol._secrets import retrievable_value

ARCB_FLAGS = 0x7000_0000_0000_0000
"""Nonce, image PHKH and attestation PHKH (what ``pvattest create`` asks for with ``--add-data phkh-img,phkh-att``)."""


def owner_material(
    *, seed: int, name: str, image: bytes, host_key: ec.EllipticCurvePublicKey, workload: tuple[object, ...]
) -> OwnerMaterial | None:
    """The owner's requests for the operations of ``workload`` (None if it has none)."""
    wants_attest = any(isinstance(op, Attest) for op in workload)
    secret_names = sorted({op.name for op in workload if isinstance(op, ReceiveSecret)})
    if not wants_attest and not secret_names:
        return None

    def rand(label: str, n: int) -> bytes:
        return hashlib.sha512(f"sesim-owner:{seed}:{name}:{label}".encode()).digest()[:n]

    offset = find_se_header(image)
    sehs = int.from_bytes(image[offset + 12 : offset + 16], "big")
    header = bytes(image[offset : offset + sehs])
    parse_se_header(header)
    request, arpk = None, b""
    if wants_attest:
        arpk = rand("arpk", 32)
        arcb = build_arcb(
            host_keys=[host_key], cust_private_key=ec_private_from_scalar(rand("arcb-customer", 64)), arpk=arpk,
            iv=rand("arcb-iv", 12), flags=ARCB_FLAGS, measurement_key=rand("measurement-key", 64),
            nonce=rand("nonce", 16),
        )  # fmt: skip
        request = ExchangeRequest.for_arcb(arcb)
    tags = BootHdrTags.from_image_or_header(header)
    secrets = []
    for secret_name in secret_names:
        data = b"disk key of " + name.encode() + b": " + rand(f"secret-{secret_name}", 24).hex().encode()
        _, stored = retrievable_value("plain", data)
        asrcb = build_asrcb(
            secret=GuestSecret.retrievable("plain", secret_name, data), tags=tags, host_keys=[host_key],
            cust_private_key=ec_private_from_scalar(rand(f"asrcb-customer-{secret_name}", 64)),
            prot_key=rand(f"asrcb-prot-{secret_name}", 32), iv=rand(f"asrcb-iv-{secret_name}", 12),
        )  # fmt: skip
        secrets.append(OwnerSecret(name=secret_name, asrcb=asrcb, value=stored))
    return OwnerMaterial(attest_request=request, arpk=arpk, header=header, secrets=tuple(secrets))
