"""The error families of sesim.

They live in the lowest layer so that every layer above can raise and catch
them without importing upwards. The split follows h11 and trio: who is at
fault decides the class.

* :class:`FormatError`: bytes or a file do not follow the documented format
  (truncated, wrong magic, wrong length, unknown version). The message names
  the problem in one line.
* :class:`VerificationError`: the format is fine but a cryptographic or
  policy check failed (GCM tag, digest, signature, revocation, validity).
  ``check`` names the check that fired, so callers can report *which* one.
* :class:`UsageError`: the user asked for something impossible (a 96th key
  slot, contradicting options).
* :class:`SesimInternalError`: a broken invariant inside sesim. This should
  never happen; if it does, it is a bug in sesim, not in the caller's input.

The command line turns every :class:`SesimError` into a one-line message and
exit status 1; an internal error keeps its traceback because it is a bug.
"""

from __future__ import annotations


class SesimError(Exception):
    """Base of every error sesim raises on purpose for bad input or state."""

    def __str__(self) -> str:  # one line, always
        return " ".join(super().__str__().split())


class FormatError(SesimError, ValueError):
    """Bytes or a file do not follow the format they claim to follow."""


class VerificationError(SesimError):
    """A cryptographic or policy check failed.

    Args:
        message: what failed, for a human.
        check: a short stable name of the check that fired (for example
            ``"header-tag"``, ``"pld"``, ``"hkd-revoked"``); tests and
            reports key on it.
    """

    def __init__(self, message: str, *, check: str) -> None:
        super().__init__(message)
        self.check = check


class UsageError(SesimError, ValueError):
    """The caller asked for something that cannot be done as asked."""


class SesimInternalError(Exception):
    """This should never happen! If you see it, please file a bug against sesim."""
