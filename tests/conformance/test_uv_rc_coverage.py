"""Every rc of uv-interface.md §2 and §4 is produced by at least one test of this suite.

Tests claim what they observe with ``@produces(command, rc, rrc)``; the claim
is checked when the test runs (uvc_conformance.produces). This test reads
the claims of every test module here and compares them with the table of the
reference below. It does not depend on the other tests having run.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from uvc_conformance import Produces

from machine._uv_conf import RC_CPUS_REMAIN
from machine._uv_dump import RC_DUMP_AREA, RC_DUMP_GADDR, RC_DUMP_NOT_ALLOWED, RC_DUMP_STATE
from machine._uv_image import RC_HEADER_CORRUPT, RC_WRONG_PHASE, RRC_HEADER_TAG
from protocol import NEED_DESTROY, AddSecretRrc
from protocol import UvcCommand as C

G = None  # a generic rc: any command may show it

DOCUMENTED: tuple[tuple[C | None, int, int | None, str], ...] = (
    # §2 generic return codes
    (G, 0x0001, None, "executed"),
    (G, 0x0002, None, "invalid command"),
    (G, 0x0003, None, "invalid state"),
    (G, 0x0005, None, "invalid length"),
    (G, 0x0007, None, "no resume (sesim: a configuration whose destroy is partial)"),
    (G, 0x0020, None, "invalid configuration handle"),
    (G, 0x0021, None, "invalid CPU handle"),
    (C.QUI, 0x0100, None, "QUI more data"),
    (C.CREATE_SEC_CONF, NEED_DESTROY, None, "0x8000: a handle returned with the error"),
    # §4 INIT_UV
    (C.INIT_UV, 0x0101, None, "already initialised"),
    (C.INIT_UV, 0x0102, None, "more than one CPU operating"),
    (C.INIT_UV, 0x0103, None, "storage length too small"),
    (C.INIT_UV, 0x0104, None, "storage origin outside memory"),
    (C.INIT_UV, 0x0105, None, "storage end beyond memory"),
    (C.INIT_UV, 0x0108, None, "storage below 2 GiB"),
    # §4 CREATE_SEC_CONF (compared without 0x8000)
    (C.CREATE_SEC_CONF, 0x0101, None, "MSO above max_guest_stor_addr"),
    (C.CREATE_SEC_CONF, 0x0102, None, "MSO+MSL beyond max_guest_stor_addr"),
    (C.CREATE_SEC_CONF, 0x0104, None, "storage or ASCE in use"),
    (C.CREATE_SEC_CONF, 0x0105, None, "ASCE invalid"),
    (C.CREATE_SEC_CONF, 0x0108, None, "base storage outside memory"),
    (C.CREATE_SEC_CONF, 0x0109, None, "base storage overlaps the lowcore"),
    (C.CREATE_SEC_CONF, 0x010C, None, "SCA origin 0"),
    (C.CREATE_SEC_CONF, 0x010D, None, "SCA outside memory"),
    # §4 CREATE_SEC_CPU
    (C.CREATE_SEC_CPU, 0x0020, None, "bad guest handle"),
    (C.CREATE_SEC_CPU, 0x0103, None, "CPU number too high"),
    (C.CREATE_SEC_CPU, 0x0104, None, "CPU number already defined"),
    (C.CREATE_SEC_CPU, 0x0105, None, "storage outside memory"),
    (C.CREATE_SEC_CPU, 0x0106, None, "storage overlaps the lowcore"),
    (C.CREATE_SEC_CPU, 0x0107, None, "SIE block not accessible"),
    # §4 SET_SEC_CONF_PARAMS
    (C.SET_SEC_CONF_PARAMS, 0x0020, None, "bad handle"),
    (C.SET_SEC_CONF_PARAMS, 0x0103, None, "header not readable"),
    (C.SET_SEC_CONF_PARAMS, 0x0108, None, "no key slot for this host"),
    (C.SET_SEC_CONF_PARAMS, 0x010A, 0x0031, "header length mismatch"),
    (C.SET_SEC_CONF_PARAMS, RC_HEADER_CORRUPT, RRC_HEADER_TAG, "integrity failure (UV-chosen rc)"),
    # §4 UNPACK_IMG / VERIFY_IMG
    (C.UNPACK_IMG, RC_WRONG_PHASE, None, "unpack outside SET_SEC_CONF_PARAMS..VERIFY_IMG (sesim's rc)"),
    (C.VERIFY_IMG, 0x0102, 0x001A, "ALD differs"),
    (C.VERIFY_IMG, 0x0102, 0x001B, "PLD differs"),
    (C.VERIFY_IMG, 0x0102, 0x001C, "TLD differs"),
    (C.VERIFY_IMG, 0x0102, 0x001D, "page count differs"),
    # §4 destroys
    (C.DESTROY_SEC_CPU, 0x0021, None, "bad CPU handle"),
    (C.DESTROY_SEC_CONF, 0x0020, None, "bad handle"),
    (C.DESTROY_SEC_CONF, RC_CPUS_REMAIN, None, "secure CPUs remain (sesim's rc)"),
    # §4 SET/REMOVE_SHARED_ACCESS
    (C.SET_SHARED_ACCESS, 0x0005, None, "bad length"),
    (C.SET_SHARED_ACCESS, 0x0101, None, "address outside guest memory"),
    (C.REMOVE_SHARED_ACCESS, 0x0005, None, "bad length"),
    (C.REMOVE_SHARED_ACCESS, 0x0101, None, "address outside guest memory"),
    # §4 legacy
    (C.DESTR_SEC_STOR, 0x0107, 0x000D, "legacy: page not secure"),
    # §4 RETR_ATTEST, in the order the UV checks them
    (C.RETR_ATTEST, 0x0101, None, "bad continuation token"),
    (C.RETR_ATTEST, 0x0102, None, "user data longer than 256"),
    (C.RETR_ATTEST, 0x0103, None, "ARCB not accessible"),
    (C.RETR_ATTEST, 0x0106, None, "ARCB version unsupported"),
    (C.RETR_ATTEST, 0x0107, None, "ARCB length wrong"),
    (C.RETR_ATTEST, 0x0108, None, "no key slot (nks 0)"),
    (C.RETR_ATTEST, 0x0109, None, "encrypted-area size wrong"),
    (C.RETR_ATTEST, 0x010A, None, "unsupported plaintext flags"),
    (C.RETR_ATTEST, 0x010B, None, "unsupported measurement algorithm"),
    (C.RETR_ATTEST, 0x010D, None, "measurement length too small"),
    (C.RETR_ATTEST, 0x010E, None, "additional-data length too small"),
    (C.RETR_ATTEST, 0x0104, None, "measurement buffer not accessible (s390-tools' code)"),
    (C.RETR_ATTEST, 0x0105, None, "additional-data buffer not accessible (s390-tools' code)"),
    (C.RETR_ATTEST, 0x010C, None, "cannot be unsealed with this host's key"),
    # §4 secrets
    (C.ADD_SECRET, 0x0102, None, "store locked"),
    (C.LOCK_SECRETS, 0x0102, None, "store already locked"),
    (C.RETR_SECRET, 0x0109, None, "buffer too small"),
    (C.RETR_SECRET, 0x010F, None, "store empty"),
    (C.RETR_SECRET, 0x0110, None, "bad index"),
    (C.RETR_SECRET, 0x0111, None, "secret not retrievable"),
    (C.RETR_SECRET, 0x0102, None, "buffer not accessible (s390-tools' code)"),
    (C.LIST_SECRETS, 0x0100, None, "more secrets to list (uv-semantics.md §1.2)"),
    (C.LIST_SECRETS, 0x0102, None, "list page not accessible (sesim's code)"),
    # ADD_SECRET codes that s390-tools names (AddCmd::rc_fmt); rrc of 0x010c is sesim's
    (C.ADD_SECRET, 0x0103, None, "request not accessible"),
    (C.ADD_SECRET, 0x0104, None, "unsupported version"),
    (C.ADD_SECRET, 0x0105, None, "invalid request size"),
    (C.ADD_SECRET, 0x0106, None, "invalid number of host keys"),
    (C.ADD_SECRET, 0x0107, None, "unsupported flags"),
    (C.ADD_SECRET, 0x0108, None, "unable to decrypt"),
    (C.ADD_SECRET, 0x0109, None, "unsupported secret"),
    (C.ADD_SECRET, 0x010A, None, "invalid secret length"),
    (C.ADD_SECRET, 0x010B, None, "store full"),
    (C.ADD_SECRET, 0x010C, AddSecretRrc.HEADER_TAGS_MISMATCH, "bound to another SE header"),
    (C.ADD_SECRET, 0x010C, AddSecretRrc.CUID_MISMATCH, "bound to another configuration"),
    (C.ADD_SECRET, 0x010C, AddSecretRrc.EXTENSION_SECRET_MISMATCH, "wrong extension secret"),
    (C.ADD_SECRET, 0x010C, AddSecretRrc.DUPLICATE_ID, "secret ID already stored"),
    (C.ADD_SECRET, 0x010D, None, "dump in progress"),
    # dumps (uv-semantics.md §7; every code is sesim's: machine._uv_dump)
    (C.DUMP_INIT, RC_DUMP_NOT_ALLOWED, None, "the SE header does not allow dumping"),
    (C.DUMP_INIT, RC_DUMP_STATE, None, "a dump is already in progress"),
    (C.DUMP_CONF_STOR_STATE, RC_DUMP_STATE, None, "no dump in progress"),
    (C.DUMP_CONF_STOR_STATE, RC_DUMP_GADDR, None, "gaddr not 1 MiB aligned or beyond guest memory"),
    (C.DUMP_CONF_STOR_STATE, RC_DUMP_AREA, None, "dump area not writable"),
    (C.DUMP_CPU, RC_DUMP_STATE, None, "no dump in progress"),
    (C.DUMP_CPU, RC_DUMP_AREA, None, "dump area not writable"),
    (C.DUMP_COMPLETE, RC_DUMP_STATE, None, "no dump in progress"),
    (C.DUMP_COMPLETE, RC_DUMP_AREA, None, "dump area not writable"),
)
"""The codes this suite must produce.

The attestation and secret codes beyond §4 are those s390-tools prints for
each call (``protocol.AddSecretRc`` and friends); where neither names a code,
it is sesim's choice and the row says so. ADD_SECRET/LOCK_SECRETS 0x0101 ("not
allowed to modify the secret store") is never answered by sesim.
"""


def _claims() -> list[Produces]:
    here = Path(__file__).parent
    found: list[Produces] = []
    for path in sorted(here.glob("test_*.py")):
        if path.stem == Path(__file__).stem:
            continue
        module = importlib.import_module(path.stem)
        for name in dir(module):
            if name.startswith("test_"):
                found.extend(getattr(getattr(module, name), "produces", ()))
    return found


def test_every_documented_rc_is_claimed_by_a_test() -> None:
    claims = _claims()
    missing = [
        f"{'any' if command is None else command.name} {rc:#06x}{'' if rrc is None else f'/{rrc:#06x}'} ({what})"
        for command, rc, rrc, what in DOCUMENTED
        if not any(c.rc == rc and (rrc is None or c.rrc == rrc) and command in (None, c.command) for c in claims)
    ]
    assert not missing, "no test produces: " + "; ".join(missing)


def test_generic_claims_are_generic_codes() -> None:
    """A claim without a command may only name a code of §2 (the others mean something per command)."""
    for claim in _claims():
        if claim.command is None:
            assert claim.rc in (0x0001, 0x0002, 0x0003, 0x0005, 0x0007, 0x0020, 0x0021), claim
