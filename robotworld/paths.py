"""Where commands write: output paths checked before the work starts.

Every command that writes calls ``writable_dir`` or ``writable_file`` on its output first, so
that a path it cannot write (no permission, a read-only place, a file where a folder should be)
is one clear error before minutes of work, not a traceback after them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def writable_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Create the directory (and its parents) if needed and prove it writable. Raises
    ValueError naming the path and what is wrong."""
    p = Path(path)
    for parent in (p, *p.parents):
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"{what} '{p}': '{parent}' is a file, not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".robotworld-probe-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"{what} '{p}' cannot be written: {e.strerror or e}") from None
    return p


def writable_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Check that a file can be written at path (its directory is created if needed); an
    existing directory there is refused. Raises ValueError naming the path."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{what} '{p}' is a directory; expected a file path")
    writable_dir(p.parent if str(p.parent) else ".", f"{what}'s directory")
    return p
