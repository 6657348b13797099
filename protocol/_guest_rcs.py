"""Return codes of the guest's attestation and secret calls beyond uv-interface.md §4.

uv-interface.md §4 documents the RETR_ATTEST order, ADD_SECRET/LOCK_SECRETS
0x0102 after a lock, and RETR_SECRET 0x0109/0x010f/0x0110/0x0111 (those live
in ``_uvc_codes.py``). The remaining codes here are the ones s390-tools
prints for each call (``pv_core/src/uvdevice/{secret.rs,attest.rs}``,
``rc_fmt``), so a tool reading sesim's answers sees the meaning it expects.
Where neither source names a code, the value is **sesim's choice** and says
so.
"""

from __future__ import annotations

import enum


class AddSecretRc(enum.IntEnum):
    """ADD_SECRET (s390-tools ``AddCmd::rc_fmt``)."""

    NOT_ALLOWED = 0x0101
    """"not allowed to modify the secret store" (sesim never answers it)."""
    LOCKED = 0x0102
    ASRCB_INACCESSIBLE = 0x0103
    VERSION_UNSUPPORTED = 0x0104
    """Also a wrong magic, an unknown user-data type or non-zero reserved bytes (sesim's choice)."""
    SIZE_INVALID = 0x0105
    NKS_INVALID = 0x0106
    FLAGS_UNSUPPORTED = 0x0107
    UNSEAL_FAILED = 0x0108
    """"unable to decrypt the request": no key slot for this host, or the tag fails."""
    SECRET_UNSUPPORTED = 0x0109
    SECRET_LEN_INVALID = 0x010A
    STORE_FULL = 0x010B
    NOT_ADDED = 0x010C
    """"unable to add secret": the request is authentic but does not fit this configuration (rrc says why)."""
    DUMP_IN_PROGRESS = 0x010D


class AddSecretRrc(enum.IntEnum):
    """Why ADD_SECRET answered :attr:`AddSecretRc.NOT_ADDED` (sesim's choice of reason codes)."""

    HEADER_TAGS_MISMATCH = 0x0001
    """PLD, ALD, TLD or the header tag are not those of this configuration's SE header."""
    CUID_MISMATCH = 0x0002
    """The request names a configuration unique ID other than this configuration's."""
    EXTENSION_SECRET_MISMATCH = 0x0003
    """Not the CCK-derived extension secret the image demands (SCF bit 1), or not the one the
    first accepted request set."""
    DUPLICATE_ID = 0x0004
    """A secret with this ID is already stored."""
    CCK_UPDATE_NOT_ALLOWED = 0x0005
    """An update-CCK secret for an image whose SCF does not allow CCK updates (bit 2)."""


class RetrAttestAccessRc(enum.IntEnum):
    """RETR_ATTEST output areas the UV cannot write (s390-tools ``AttestationCmd::rc_fmt``).

    sesim checks them after 0x010e and before unsealing (§4 leaves their place open).
    """

    MEAS_INACCESSIBLE = 0x0104
    ADD_DATA_INACCESSIBLE = 0x0105


class LockSecretsRc(enum.IntEnum):
    """LOCK_SECRETS (s390-tools ``LockCmd::rc_fmt``)."""

    NOT_ALLOWED = 0x0101
    """"not allowed to modify the secret store" (sesim never answers it)."""
    ALREADY_LOCKED = 0x0102


class ListSecretsRc(enum.IntEnum):
    """LIST_SECRETS (uv.h: 0x0100 more data; s390-tools names no other code)."""

    PAGE_INACCESSIBLE = 0x0102
    """The list page is not (wholly) in guest memory (sesim's choice, the code RETR_SECRET uses)."""


class RetrSecretAccessRc(enum.IntEnum):
    """RETR_SECRET's buffer is not in guest memory (s390-tools ``RetrieveCmd::rc_fmt``)."""

    BUF_INACCESSIBLE = 0x0102


_ATTEST = {
    0x0101: "invalid continuation token",
    0x0102: "user data longer than 256 bytes",
    0x0103: "the attestation request is not accessible",
    0x0104: "the measurement buffer is not accessible",
    0x0105: "the additional-data buffer is not accessible",
    0x0106: "unsupported attestation request version",
    0x0107: "invalid attestation request length",
    0x0108: "the attestation request has no key slot",
    0x0109: "the encrypted area does not fit the measurement key and nonce",
    0x010A: "unsupported plaintext attestation flags",
    0x010B: "unsupported measurement algorithm",
    0x010C: "the attestation request cannot be decrypted with this host key: made for another host, or altered",
    0x010D: "the measurement buffer is too small",
    0x010E: "the additional-data buffer is too small for the requested additional data",
}
_ADD = {
    0x0101: "not allowed to modify the secret store",
    0x0102: "the secret store is locked",
    0x0103: "the add-secret request is not accessible",
    0x0104: "unsupported add-secret request version",
    0x0105: "invalid add-secret request size",
    0x0106: "invalid number of host keys",
    0x0107: "unsupported add-secret flags",
    0x0108: "the add-secret request cannot be decrypted with this host key: made for another host, or altered",
    0x0109: "unsupported secret",
    0x010A: "invalid length for the secret type",
    0x010B: "the secret store is full",
    0x010C: "unable to add the secret",
    0x010D: "a dump is in progress; try again later",
}
_ADD_RRC = {
    AddSecretRrc.HEADER_TAGS_MISMATCH: "the request is bound to another SE header (image)",
    AddSecretRrc.CUID_MISMATCH: "the request is bound to another configuration (CUID)",
    AddSecretRrc.EXTENSION_SECRET_MISMATCH: "wrong extension secret",
    AddSecretRrc.DUPLICATE_ID: "a secret with this ID is already stored",
    AddSecretRrc.CCK_UPDATE_NOT_ALLOWED: "the image does not allow CCK updates",
}
_RC_TEXT: dict[int, dict[int, str]] = {
    0x1020: _ATTEST,
    0x1031: _ADD,
    0x1033: {0x0100: "more secrets to list", 0x0102: "the list page is not accessible"},
    0x1034: {0x0101: "not allowed to modify the secret store", 0x0102: "the secret store is already locked"},
    0x1035: {
        0x0102: "the secret buffer is not accessible",
        0x0109: "the buffer is too small for the secret",
        0x010F: "the secret store is empty",
        0x0110: "no secret with this index",
        0x0111: "the secret is not retrievable",
    },
}


def guest_rc_text(command: int, rc: int, rrc: int = 0) -> str | None:
    """What an rc of a guest attestation/secret call means (s390-tools' wording), or None."""
    text = _RC_TEXT.get(command, {}).get(rc)
    if text is not None and command == 0x1031 and rc == AddSecretRc.NOT_ADDED and rrc in _ADD_RRC:
        text = f"{text}: {_ADD_RRC[AddSecretRrc(rrc)]}"
    return text
