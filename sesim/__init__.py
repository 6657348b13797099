"""sesim: a simulation of IBM Secure Execution for Linux.

The front door: the command line (``sesim ...``), configuration and the
public API. It holds no logic of its own; every decision is made in
:mod:`protocol`, :mod:`machine` or :mod:`actors`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sesim")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
