"""Writing boot images to files: atomically, as ``pvimg create`` does.

Shared by ``sesim image create`` and ``bench/image.py`` so that the benchmark
measures exactly the command's code path.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from protocol import ImageDescription, ImageSpec, UsageError, write_image


def write_image_file(
    output: Path, spec: ImageSpec, *, overwrite: bool, progress: Callable[[int], None] | None = None
) -> ImageDescription:
    """Write an image atomically: to a temporary file beside ``output``, then rename.

    A failed run never leaves a partial image. Like ``pvimg create``, an
    existing ``output`` is only replaced with ``overwrite``.
    """
    if output.exists() and not overwrite:
        raise UsageError(f"{output} exists; use --overwrite to replace it")
    fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as out:
            description = write_image(out, spec, progress=progress)
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it 0600
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return description
