"""The hardware and firmware state, synchronous and pure: memory frames and
their owners, CPU and SIE state, the ultravisor's decision logic, the host key.

Imports only :mod:`protocol`; never awaits.
"""

from ._cpu import CpuRunState as CpuRunState
from ._cpu import CpuState as CpuState
from ._cpu import Psw as Psw
from ._cpu import SecureCpuState as SecureCpuState
from ._cpu import SecureSieView as SecureSieView
from ._cpu import SieBlock as SieBlock
from ._cpu import SieFormat as SieFormat
from ._dat import AddressSpace as AddressSpace
from ._memory import PAGE_SIZE as PAGE_SIZE
from ._memory import Frame as Frame
from ._memory import FrameState as FrameState
from ._memory import HostMemory as HostMemory
from ._memory import MemoryStatistics as MemoryStatistics
from ._pgm import PgmCode as PgmCode
from ._pgm import ProgramInterrupt as ProgramInterrupt
from ._server import Server as Server
from ._sie import guest_frame as guest_frame
from ._sie import guest_read as guest_read
from ._sie import guest_write as guest_write
from ._uv_core import HOST as HOST
from ._uv_core import Caller as Caller
from ._uv_core import ConfigPhase as ConfigPhase
from ._uv_core import NotificationIntercept as NotificationIntercept
from ._uv_core import SecureConfig as SecureConfig
from ._uv_core import Ultravisor as Ultravisor
from ._uv_core import _register_handlers
from ._uv_sie import PrefixIntercept as PrefixIntercept
from ._uv_sie import SieExit as SieExit
from ._uv_sie import ValidityIntercept as ValidityIntercept
from ._uv_sie import ValidityReason as ValidityReason
from ._uv_sie import diag_intercept as diag_intercept
from ._uv_sie import sie_entry as sie_entry
from ._uv_sie import sie_exit as sie_exit
from ._uv_sie import sigp_intercept as sigp_intercept
from ._uv_sie import spx_intercept as spx_intercept
from ._uv_sie import uvc_intercept as uvc_intercept
from ._uv_limits import UvLimits as UvLimits

_register_handlers()
del _register_handlers
