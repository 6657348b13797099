"""Add-secret requests and the secret store (se-format.md §4.3).

Every ``exp/asrcb/*`` vector rebuilt from the KAT inputs, the secret-store
hash and secret-ID KATs, the retrievable secret types and their sizes,
signed user data (verified by signature: signatures are randomised), the
secret list page, and a testbed guest that receives a secret and uses it.
"""

from __future__ import annotations

import json

import pytest
from conftest import CERTS, EXP, KEYS, VECTORS
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    ASRCB_FLAG_DISABLE_DUMP,
    ATTEST_FLAG_NONCE,
    ATTEST_FLAG_SECRET_STORE_HASH,
    AdditionalData,
    Asrcb,
    BootHdrTags,
    ExchangeRequest,
    FormatError,
    GuestSecret,
    SecretEntry,
    SecretList,
    SecretType,
    UsageError,
    UserDataType,
    VerificationError,
    build_arcb,
    build_asrcb,
    derive_extension_secret,
    find_secret,
    plaintext_payload,
    plaintext_value,
    read_host_key_document,
    read_host_private_key,
    secret_id,
    secret_store_hash,
)
from protocol._crypto import ec_private_from_scalar
from protocol._secrets import retrievable_value
from sesim._guest_ops import GuestCallFailed, add_secret, attest, list_secrets, lock_secrets, retrieve_secret
from sesim.testbed import open_testbed

KATS = {k["name"]: k for k in json.loads((VECTORS / "derived" / "kats.json").read_text())["kats"]}
ASRCB_DIR = EXP / "asrcb"
CUST = ec_private_from_scalar((KEYS / "private_cust.bin").read_bytes())
HOST_PUB = read_host_key_document(KEYS / "host.pem.crt").public_key
TEST_HOST = read_host_private_key(CERTS / "host.key")
PROT = b"\x17" * 32
TAGS = BootHdrTags(pld=b"\1" * 64, ald=b"\2" * 64, tld=b"\3" * 64, tag=b"\4" * 16)


def _kat_request(name: str) -> bytes:
    """Build ``exp/asrcb/<name>`` from the inputs of ``add_secret_request.rs``."""
    secret, ext, flags, cuid, hosts = name.split("_")
    guest = GuestSecret.null() if secret == "null" else GuestSecret.association("add_secret_request", b"\x11" * 32)
    extension = {"none": None, "simple": b"\x17" * 32, "derived": derive_extension_secret(bytes(32), TAGS.tag)}[ext]
    return build_asrcb(
        secret=guest, tags=TAGS, host_keys=[HOST_PUB] * (7 if hosts == "seven" else 1), cust_private_key=CUST,
        prot_key=PROT, iv=b"\x55" * 12, flags=ASRCB_FLAG_DISABLE_DUMP if flags == "dump" else 0,
        cuid=b"\x42" * 16 if cuid == "cuid" else None, extension_secret=extension,
    )  # fmt: skip


ASRCB_NAMES = sorted(p.name for p in ASRCB_DIR.iterdir())


@pytest.mark.parametrize("name", ASRCB_NAMES)
def test_every_asrcb_vector_is_rebuilt_byte_for_byte(name: str) -> None:
    assert _kat_request(name) == (ASRCB_DIR / name).read_bytes()


@pytest.mark.parametrize("name", ASRCB_NAMES)
def test_every_asrcb_vector_parses_and_opens(name: str) -> None:
    request = Asrcb.parse((ASRCB_DIR / name).read_bytes())
    assert request.tags == TAGS and request.user_data_type is UserDataType.NULL
    assert request.cuid == (b"\x42" * 16 if "_cuid_" in name else bytes(16))
    assert request.flags == (ASRCB_FLAG_DISABLE_DUMP if "_dump_" in name else 0)
    assert request.sealed.header.nks == (7 if name.endswith("seven") else 1)
    opened = request.open(PROT)
    if name.startswith("assoc"):
        assert request.secret_type is SecretType.ASSOCIATION and request.secret_id == secret_id("add_secret_request")
        assert opened.value == b"\x11" * 32
    else:
        assert request.secret_type is SecretType.NULL and request.secret_id is None and opened.value == b""


def test_asrcb_sizes_are_those_of_se_format() -> None:
    sizes = {name: len((ASRCB_DIR / name).read_bytes()) for name in ASRCB_NAMES}
    assert sizes["null_none_default_cuid_one"] == 1352
    assert sizes["assoc_none_default_cuid_one"] == 1416
    assert sizes["null_none_default_cuid_seven"] == 1832


@pytest.mark.parametrize("which", ["locked", "unlocked", "empty_locked", "empty_unlocked"])
def test_secret_store_hash_kat(which: str) -> None:
    kat = KATS["secret_store_hash"]
    tags = [] if which.startswith("empty") else [
        Asrcb.parse((ASRCB_DIR / n).read_bytes()).tag for n in kat["inputs"]["asrcb_order"]
    ]  # fmt: skip
    locked = which in ("locked", "empty_locked")
    assert secret_store_hash(tags, locked=locked).hex() == kat["expected"][which]


@pytest.mark.parametrize("name", list(KATS["secret_ids"]["expected"]))
def test_secret_id_kat(name: str) -> None:
    assert secret_id(name).hex() == KATS["secret_ids"]["expected"][name]


def test_use_name_takes_the_first_31_bytes_and_a_nul() -> None:
    # pv_core secret_list.rs::secret_id_hex, secret_id_long_name
    assert secret_id("Nice Test 123", use_name=True) == b"Nice Test 123".ljust(32, b"\0")
    long = secret_id("the most fanciest secret ID you ever seen in the time the universe exists", use_name=True)
    assert long.hex() == "746865206d6f73742066616e63696573742073656372657420494420796f7500"


def test_secret_headers_of_each_form() -> None:
    assert GuestSecret.null().header() == bytes.fromhex("00000001000000000000000000000000")
    assert GuestSecret.update_cck(b"\2" * 32).header() == bytes.fromhex("0000001600000020") + bytes(40)
    assoc = GuestSecret(type=SecretType.ASSOCIATION, value=b"\2" * 32, id=b"\1" * 32)
    assert assoc.header() == bytes.fromhex("00000002000000200000000000000000") + b"\1" * 32


# -- retrievable secrets --------------------------------------------------------------------------


def _pem(key: object) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kind", "data", "stype", "size"),
    [
        ("aes", b"\x11" * 16, SecretType.AES_128, 16),
        ("aes", b"\x11" * 24, SecretType.AES_192, 24),
        ("aes", b"\x11" * 32, SecretType.AES_256, 32),
        ("aes-xts", b"\x11" * 32, SecretType.AES_XTS_128, 32),
        ("aes-xts", b"\x11" * 64, SecretType.AES_XTS_256, 64),
        ("hmac-sha", b"\x11" * 64, SecretType.HMAC_SHA_256, 64),
        ("hmac-sha", b"\x11" * 128, SecretType.HMAC_SHA_512, 128),
        ("ec", _pem(ec.generate_private_key(ec.SECP256R1())), SecretType.ECDSA_P256, 32),
        ("ec", _pem(ec.generate_private_key(ec.SECP384R1())), SecretType.ECDSA_P384, 48),
        ("ec", _pem(ec.generate_private_key(ec.SECP521R1())), SecretType.ECDSA_P521, 80),
        ("ec", _pem(ed25519.Ed25519PrivateKey.generate()), SecretType.ED25519, 32),
        ("ec", _pem(ed448.Ed448PrivateKey.generate()), SecretType.ED448, 64),
        ("plain", b"\7" * 14, SecretType.PLAINTEXT, 16),
        ("plain", b"\7" * 8190, SecretType.PLAINTEXT, 8192),
    ],
)
def test_retrievable_types_and_sizes(kind: str, data: bytes, stype: SecretType, size: int) -> None:
    secret = GuestSecret.retrievable(kind, "test retr secret", data)
    assert (secret.type, len(secret.value)) == (stype, size)
    assert secret.id == secret_id("test retr secret")


def test_ec_private_keys_are_left_padded() -> None:
    # guest_secret.rs::retr_ec_pad: Ed448 keys (57 bytes) padded to 64, P-521 scalars (66) to 80.
    _t, value = retrievable_value("ec", _pem(ed448.Ed448PrivateKey.generate()))
    assert value[:7] == bytes(7)
    _t, value = retrievable_value("ec", _pem(ec.generate_private_key(ec.SECP521R1())))
    assert value[:14] == bytes(14)


def test_plaintext_is_length_prefixed_and_padded_to_16() -> None:
    # guest_secret.rs::plaintext_pad / plaintext_no_pad
    assert plaintext_value(b"\7" * 10) == bytes([0, 10]) + b"\7" * 10 + bytes(4)
    assert plaintext_value(b"\7" * 14) == bytes([0, 14]) + b"\7" * 14
    assert plaintext_payload(bytes([0, 10]) + b"\7" * 10 + bytes(4)) == b"\7" * 10
    assert plaintext_payload(b"\x20" * 32) == b"\x20" * 32  # not a plaintext value: kept (retr_secret.rs)


@pytest.mark.parametrize(
    ("kind", "data", "error"),
    [
        ("aes", b"\1" * 20, UsageError),
        ("aes-xts", b"\1" * 48, UsageError),
        ("hmac-sha", b"\1" * 32, UsageError),
        ("plain", b"\1" * 8191, UsageError),
        ("ec", (KEYS / "ecsecp256k1.pem").read_bytes(), FormatError),
        ("ec", (KEYS / "rsa2048key.pem").read_bytes(), FormatError),
        ("ec", b"not a key", FormatError),
        ("rsa", b"\1" * 32, UsageError),
    ],
)
def test_secrets_of_the_wrong_size_or_kind_are_refused(kind: str, data: bytes, error: type) -> None:
    with pytest.raises(error):
        GuestSecret.retrievable(kind, "x", data)


# -- signed user data -----------------------------------------------------------------------------


def _signing(name: str) -> object:
    if name == "ec":
        return TEST_HOST  # any secp521r1 key
    return load_pem_private_key((KEYS / f"{name}key.pem").read_bytes(), None)


@pytest.mark.parametrize(
    ("name", "kind", "room"),
    [("ec", UserDataType.ECDSA_P521, 256), ("rsa2048", UserDataType.RSA_2048, 256),
     ("rsa3072", UserDataType.RSA_3072, 128)],
)  # fmt: skip
def test_signed_user_data_verifies_with_the_signers_key(name: str, kind: UserDataType, room: int) -> None:
    key = _signing(name)
    data = b"\x11" * room
    request = Asrcb.parse(build_asrcb(secret=GuestSecret.null(), tags=TAGS, host_keys=[HOST_PUB],
                                      cust_private_key=CUST, prot_key=PROT, iv=b"\x55" * 12, user_data=data,
                                      user_sign_key=key))  # type: ignore[arg-type]  # fmt: skip
    assert request.user_data_type is kind
    assert request.verified_user_data(key.public_key()) == data  # type: ignore[attr-defined]
    assert request.open(PROT).value == b""  # the final tag covers the signature
    with pytest.raises(UsageError, match="at most"):
        build_asrcb(secret=GuestSecret.null(), tags=TAGS, host_keys=[HOST_PUB], cust_private_key=CUST,
                    prot_key=PROT, iv=b"\x55" * 12, user_data=data + b"!", user_sign_key=key)  # type: ignore[arg-type]


def _signed_rsa2048() -> bytes:
    return build_asrcb(secret=GuestSecret.null(), tags=TAGS, host_keys=[HOST_PUB], cust_private_key=CUST,
                       prot_key=PROT, iv=b"\x55" * 12, user_data=b"msg",
                       user_sign_key=_signing("rsa2048"))  # type: ignore[arg-type]  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "key", "check"),
    [
        (lambda r: r, None, "user-key-missing"),
        (lambda r: r, "rsa3072", "user-key-mismatch"),
        (lambda r: r, "ec", "user-key-mismatch"),
        (lambda r: r[:0x218 + 0x120] + bytes([r[0x218 + 0x120] ^ 1]) + r[0x218 + 0x121 :], "rsa2048", "user-signature"),
        (lambda r: r[:0x218] + b"MSG" + r[0x218 + 3 :], "rsa2048", "user-signature"),
    ],
    ids=["no-key", "other-rsa", "ec-key", "signature-flipped", "data-changed"],
)  # fmt: skip
def test_user_data_verification_fails_as_pvsecret_does(mutate: object, key: str | None, check: str) -> None:
    request = Asrcb.parse(mutate(_signed_rsa2048()))  # type: ignore[operator]
    public = None if key is None else _signing(key).public_key()  # type: ignore[attr-defined]
    with pytest.raises(VerificationError) as err:
        request.verified_user_data(public)
    assert err.value.check == check


@pytest.mark.parametrize("name", ["rsa4096key.pem", "ecsecp256k1.pem"])
def test_unsupported_signing_keys_are_refused(name: str) -> None:
    key = load_pem_private_key((KEYS / name).read_bytes(), None)
    with pytest.raises(UsageError, match="unsupported user-signing key"):
        build_asrcb(secret=GuestSecret.null(), tags=TAGS, host_keys=[HOST_PUB], cust_private_key=CUST,
                    prot_key=PROT, iv=b"\x55" * 12, user_sign_key=key)  # type: ignore[arg-type]


def test_unsigned_user_data_holds_512_bytes() -> None:
    request = Asrcb.parse(build_asrcb(secret=GuestSecret.null(), tags=TAGS, host_keys=[HOST_PUB],
                                      cust_private_key=CUST, prot_key=PROT, iv=b"\x55" * 12,
                                      user_data=b"\x33" * 512))  # fmt: skip
    assert request.user_data_type is UserDataType.UNSIGNED and request.verified_user_data(None) == b"\x33" * 512


# -- the list page --------------------------------------------------------------------------------


def test_the_secret_list_page_is_uv_secret_list() -> None:
    # pv_core secret_list.rs::secret_list_enc
    page = SecretList(total=0x112, next_index=0x101, entries=[SecretEntry(index=1, type=2, length=32, id=bytes(32))])
    packed = page.pack()
    head = "00010112010100000000000000000000" + "00010002000000200000000000000000"
    assert packed[:0x40] == bytes.fromhex(head) + bytes(32)
    assert len(packed) == 4096 and SecretList.parse(packed) == page
    assert find_secret(page.entries, bytes(32)) == page.entries[0] and find_secret(page.entries, b"\1" * 32) is None


def test_a_list_page_claiming_86_entries_is_refused() -> None:
    with pytest.raises(FormatError, match="at most 85"):
        SecretList.parse(bytes.fromhex("0056") + bytes(4094))


# -- the UV side, opened with a known host key ------------------------------------------------------


def test_a_request_opens_for_its_host_key_only() -> None:
    request = Asrcb.parse(build_asrcb(secret=GuestSecret.association("a", b"\5" * 32), tags=TAGS,
                                      host_keys=[HOST_PUB, TEST_HOST.public_key()], cust_private_key=CUST,
                                      prot_key=PROT, iv=b"\x55" * 12))  # fmt: skip
    opened, index = request.open_for_host(TEST_HOST)
    assert (opened.value, index) == (b"\5" * 32, 1)
    with pytest.raises(VerificationError, match="no key slot"):
        request.open_for_host(read_host_private_key(CERTS / "host2.key"))


SEEDS = [(ASRCB_DIR / n).read_bytes() for n in ASRCB_NAMES]


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))]) if draw(st.booleans()) else bytes(data)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_mutated(), st.binary(max_size=2000)))
def test_secret_parsers_raise_only_format_errors(data: bytes) -> None:
    for parse in (Asrcb.parse, SecretList.parse):
        try:
            parse(data)
        except FormatError:
            pass


# -- a guest receives a secret and uses it ----------------------------------------------------------


async def test_a_guest_receives_a_disk_key_and_opens_its_encrypted_disk() -> None:
    """The owner encrypts a disk sector with an XTS key and sends the key only as a secret for this guest."""
    disk_key = b"\x61" * 32 + b"\x62" * 32
    sector = b"the root file system superblock".ljust(512, b".")
    tweak = (7).to_bytes(16, "little")
    enc = Cipher(algorithms.AES(disk_key), modes.XTS(tweak)).encryptor()
    on_disk = enc.update(sector) + enc.finalize()
    async with open_testbed() as tb:
        guest = await tb.secure_guest()
        tags = BootHdrTags.from_image_or_header(tb.build_image().data)
        request = build_asrcb(secret=GuestSecret.retrievable("plain", "luks-root", disk_key), tags=tags,
                              host_keys=[tb.host_public_key], cust_private_key=CUST, prot_key=PROT,
                              iv=b"\x55" * 12)  # fmt: skip
        await add_secret(guest, request)
        await lock_secrets(guest)
        entry = find_secret(await list_secrets(guest), secret_id("luks-root"))
        assert entry is not None
        key = plaintext_payload(await retrieve_secret(guest, entry.index, entry.length))
        dec = Cipher(algorithms.AES(key), modes.XTS(tweak)).decryptor()
        assert dec.update(on_disk) + dec.finalize() == sector
        with pytest.raises(GuestCallFailed) as refused:
            await add_secret(guest, request)
        assert refused.value.rc == 0x0102
        arcb = build_arcb(host_keys=[tb.host_public_key], cust_private_key=CUST, arpk=PROT, iv=b"\x55" * 12,
                          flags=ATTEST_FLAG_NONCE | ATTEST_FLAG_SECRET_STORE_HASH, measurement_key=b"\1" * 64,
                          nonce=b"\2" * 16)  # fmt: skip
        response = await attest(guest, ExchangeRequest.for_arcb(arcb))
        flags = ATTEST_FLAG_NONCE | ATTEST_FLAG_SECRET_STORE_HASH
        assert response.additional is not None
        stored = AdditionalData.parse(response.additional, flags).secret_store_hash
        assert stored == secret_store_hash([request[-16:]], locked=True)  # the owner can check what went in
