"""What crosses a boundary: UVC codes and typed messages, UVCB bytes, the SE
header, host-key documents, boot images, attestation and secret requests.

No state, no trio, and no import of any other sesim layer.
"""

from ._errors import FormatError as FormatError
from ._errors import SesimError as SesimError
from ._errors import SesimInternalError as SesimInternalError
from ._errors import UsageError as UsageError
from ._errors import VerificationError as VerificationError
