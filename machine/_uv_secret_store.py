"""The per-configuration secret store the ultravisor keeps (uv-semantics.md §6, se-format.md §4.3).

What the UV remembers for one secure configuration:

* every listed secret (association and retrievable) with its index, type,
  ID and value; indices count from 0 in the order the secrets were added
  (sesim's choice: uv.h only says LIST_SECRETS starts at ``start_idx``);
* the GCM tag of every accepted request, null ("meta") requests included,
  in order: they make the attestation secret-store hash (§4.3);
* whether the store is locked (one-way), whether a request disabled dumps,
  the extension secret the first request set, and a CCK an update-CCK
  secret installed.

Retrievable keys are handed out as *protected keys*, never in the clear:
the value encrypted under a wrapping key only this configuration's UV
state knows, followed by a 32-byte wrapping-key verification pattern, the
shape of a CPACF protected key (sesim's rendering: AES-256-CTR with the
secret's index as counter block, WKVP = SHA-256 of the wrapping key).
Plaintext secrets are handed out as stored (BE16 length ‖ data ‖ padding).
The listed length is the length RETR_SECRET writes, so a guest can size its
buffer from the list as s390-tools does (``RetrieveCmd::from_entry``).
"""

from __future__ import annotations

import hashlib
import hmac

from attrs import define, field, frozen
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from protocol._secrets import SecretEntry, SecretType, secret_store_hash

MAX_ASSOC_SECRETS = 64
"""Association secrets one configuration may hold (sesim's choice; QUI ``max_assoc_secrets``)."""
MAX_RETR_SECRETS = 256
"""Retrievable secrets one configuration may hold (sesim's choice; QUI ``max_retr_secrets``)."""
WKVP_LEN = 32


@frozen(kw_only=True)
class StoredSecret:
    """One listed secret as the UV keeps it."""

    index: int
    type: SecretType
    id: bytes
    value: bytes = field(repr=False)

    @property
    def handed_out_length(self) -> int:
        """Bytes RETR_SECRET writes for it (and LIST_SECRETS reports)."""
        return len(self.value) + (0 if self.type is SecretType.PLAINTEXT else WKVP_LEN)

    def entry(self) -> SecretEntry:
        return SecretEntry(index=self.index, type=self.type, length=self.handed_out_length, id=self.id)


@define(kw_only=True, eq=False)
class SecretStore:
    """The secret store of one configuration (created on its first secret call)."""

    wrapping_key: bytes = field(repr=False)
    secrets: list[StoredSecret] = field(factory=list)
    tags: list[bytes] = field(factory=list)
    locked: bool = False
    dump_disabled: bool = False
    extension_secret: bytes | None = field(default=None, repr=False)
    cck: bytes | None = field(default=None, repr=False)

    @classmethod
    def for_config(cls, export_key: bytes) -> SecretStore:
        """A fresh store whose wrapping key derives from the configuration's own key.

        Deriving it (instead of drawing UV randomness) keeps the UV's random
        stream, and so every later handle, the same whether or not a guest
        uses secrets.
        """
        return cls(wrapping_key=hmac.new(export_key, b"sesim protected-key wrapping", hashlib.sha256).digest())

    # ---------------------------------------------------------------- reading
    def hash(self) -> bytes:
        """The secret-store hash of attestation (se-format.md §4.3)."""
        return secret_store_hash(self.tags, locked=self.locked)

    def find(self, sid: bytes) -> StoredSecret | None:
        return next((s for s in self.secrets if s.id == sid), None)

    def by_index(self, index: int) -> StoredSecret | None:
        return next((s for s in self.secrets if s.index == index), None)

    def count(self, *, association: bool) -> int:
        return sum((s.type is SecretType.ASSOCIATION) == association for s in self.secrets)

    def full_for(self, stype: SecretType) -> bool:
        if stype is SecretType.ASSOCIATION:
            return self.count(association=True) >= MAX_ASSOC_SECRETS
        return stype.listable and self.count(association=False) >= MAX_RETR_SECRETS

    def handed_out(self, secret: StoredSecret) -> bytes:
        """What RETR_SECRET writes: the plaintext value, or a protected key."""
        if secret.type is SecretType.PLAINTEXT:
            return secret.value
        counter = secret.index.to_bytes(16, "big")
        enc = Cipher(algorithms.AES(self.wrapping_key), modes.CTR(counter)).encryptor()
        wkvp = hashlib.sha256(b"wkvp" + self.wrapping_key).digest()
        return enc.update(secret.value) + enc.finalize() + wkvp

    # ---------------------------------------------------------------- changing
    def add(self, *, stype: SecretType, sid: bytes | None, value: bytes, tag: bytes) -> None:
        """Record an accepted request (the caller has checked everything)."""
        if stype.listable and sid is not None:
            index = self.secrets[-1].index + 1 if self.secrets else 0
            self.secrets.append(StoredSecret(index=index, type=stype, id=sid, value=value))
        self.tags.append(bytes(tag))
