"""Dispatch over all UVCB classes: by command code, both directions.

The classes themselves live in ``_qui.py``, ``_uvcb_host.py``,
``_uvcb_storage.py`` and ``_uvcb_guest.py``; the shared machinery in
``_uvcb_base.py``.
"""

from __future__ import annotations

from types import MappingProxyType

from ._errors import FormatError
from ._qui import QuiRequest, QuiResponse
from ._uvc_codes import UvcCommand
from ._uvcb_base import HEADER_LEN, Buffer, UvcRequest, UvcResponse
from ._uvcb_guest import (
    AddSecretRequest,
    AddSecretResponse,
    ListSecretsRequest,
    ListSecretsResponse,
    LockSecretsRequest,
    LockSecretsResponse,
    RemoveSharedAccessRequest,
    RemoveSharedAccessResponse,
    RetrAttestRequest,
    RetrAttestResponse,
    RetrSecretRequest,
    RetrSecretResponse,
    SetSharedAccessRequest,
    SetSharedAccessResponse,
)
from ._uvcb_host import (
    CpuResetClearRequest,
    CpuResetClearResponse,
    CpuResetInitialRequest,
    CpuResetInitialResponse,
    CpuResetRequest,
    CpuResetResponse,
    CpuSetStateRequest,
    CpuSetStateResponse,
    CreateSecConfRequest,
    CreateSecConfResponse,
    CreateSecCpuRequest,
    CreateSecCpuResponse,
    DestroySecConfFastRequest,
    DestroySecConfFastResponse,
    DestroySecConfRequest,
    DestroySecConfResponse,
    DestroySecCpuRequest,
    DestroySecCpuResponse,
    InitUvRequest,
    InitUvResponse,
    PrepareResetRequest,
    PrepareResetResponse,
    QueryKeysRequest,
    QueryKeysResponse,
    SetSecConfParamsRequest,
    SetSecConfParamsResponse,
    SetUnshareAllRequest,
    SetUnshareAllResponse,
    UnpackImgRequest,
    UnpackImgResponse,
    VerifyImgRequest,
    VerifyImgResponse,
)
from ._uvcb_storage import (
    ConvFromSecStorRequest,
    ConvFromSecStorResponse,
    ConvToSecStorRequest,
    ConvToSecStorResponse,
    DestrSecStorRequest,
    DestrSecStorResponse,
    DumpCompleteRequest,
    DumpCompleteResponse,
    DumpConfStorStateRequest,
    DumpConfStorStateResponse,
    DumpCpuRequest,
    DumpCpuResponse,
    DumpInitRequest,
    DumpInitResponse,
    PinPageSharedRequest,
    PinPageSharedResponse,
    UnpinPageSharedRequest,
    UnpinPageSharedResponse,
)

_PAIRS: tuple[tuple[type[UvcRequest], type[UvcResponse]], ...] = (
    (QuiRequest, QuiResponse),
    (QueryKeysRequest, QueryKeysResponse),
    (InitUvRequest, InitUvResponse),
    (CreateSecConfRequest, CreateSecConfResponse),
    (DestroySecConfRequest, DestroySecConfResponse),
    (DestroySecConfFastRequest, DestroySecConfFastResponse),
    (CreateSecCpuRequest, CreateSecCpuResponse),
    (DestroySecCpuRequest, DestroySecCpuResponse),
    (ConvToSecStorRequest, ConvToSecStorResponse),
    (ConvFromSecStorRequest, ConvFromSecStorResponse),
    (DestrSecStorRequest, DestrSecStorResponse),
    (SetSecConfParamsRequest, SetSecConfParamsResponse),
    (UnpackImgRequest, UnpackImgResponse),
    (VerifyImgRequest, VerifyImgResponse),
    (CpuResetRequest, CpuResetResponse),
    (CpuResetInitialRequest, CpuResetInitialResponse),
    (PrepareResetRequest, PrepareResetResponse),
    (CpuResetClearRequest, CpuResetClearResponse),
    (CpuSetStateRequest, CpuSetStateResponse),
    (SetUnshareAllRequest, SetUnshareAllResponse),
    (PinPageSharedRequest, PinPageSharedResponse),
    (UnpinPageSharedRequest, UnpinPageSharedResponse),
    (DumpInitRequest, DumpInitResponse),
    (DumpConfStorStateRequest, DumpConfStorStateResponse),
    (DumpCpuRequest, DumpCpuResponse),
    (DumpCompleteRequest, DumpCompleteResponse),
    (SetSharedAccessRequest, SetSharedAccessResponse),
    (RemoveSharedAccessRequest, RemoveSharedAccessResponse),
    (RetrAttestRequest, RetrAttestResponse),
    (AddSecretRequest, AddSecretResponse),
    (ListSecretsRequest, ListSecretsResponse),
    (LockSecretsRequest, LockSecretsResponse),
    (RetrSecretRequest, RetrSecretResponse),
)

REQUEST_TYPES: MappingProxyType[UvcCommand, type[UvcRequest]] = MappingProxyType(
    {req.COMMAND: req for req, _ in _PAIRS}
)
"""The request class of every command."""
RESPONSE_TYPES: MappingProxyType[UvcCommand, type[UvcResponse]] = MappingProxyType(
    {resp.COMMAND: resp for _, resp in _PAIRS}
)
"""The response class of every command."""

# Keyed by the plain int too, so dispatch needs no enum lookup on the hot path.
_REQ_BY_CODE = {int(k): v for k, v in REQUEST_TYPES.items()}
_RESP_BY_CODE = {int(k): v for k, v in RESPONSE_TYPES.items()}


def _code(data: Buffer) -> int:
    if len(data) < HEADER_LEN:
        raise FormatError(f"UVCB header needs {HEADER_LEN} bytes, got {len(data)}")
    return (data[2] << 8) | data[3]


def parse_request(data: Buffer) -> UvcRequest:
    """Parse any request UVCB, choosing the class by ``cmd`` at offset 2.

    The header ``len`` is not checked here (that is the UV's rc 0x0005), but
    the data must cover the command's block.

    Raises:
        FormatError: fewer than 8 bytes, an unknown command, or too short.
    """
    code = _code(data)
    cls = _REQ_BY_CODE.get(code)
    if cls is None:
        raise FormatError(f"unknown UVC command {code:#06x}")
    return cls.parse(data)


def parse_response(data: Buffer, *, cc: int) -> UvcResponse:
    """Parse any answered UVCB, choosing the class by ``cmd`` at offset 2.

    Raises:
        FormatError: fewer than 8 bytes, an unknown command, or too short.
    """
    code = _code(data)
    cls = _RESP_BY_CODE.get(code)
    if cls is None:
        raise FormatError(f"unknown UVC command {code:#06x}")
    return cls.parse(data, cc=cc)
