"""Which core is live: ``core`` is the C extension (``epolloop._core``) or None.

The C core is the default; EPOLLOOP_NO_EXTENSIONS=1 (the convention of aiohttp, yarl and
multidict) asks for the pure-Python one, and an install without a compiler has only that.
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType

core: ModuleType | None
if os.environ.get("EPOLLOOP_NO_EXTENSIONS"):
    core = None
else:
    try:
        from . import _core as core

        if getattr(core, "__file__", None) is None:
            # Not built: the import found the C sources' directory, a namespace package.
            raise ImportError("epolloop._core is not built")
    except ImportError as exc:
        core = None
        warnings.warn(
            f"epolloop runs on its pure-Python core: the C core is not available ({exc})",
            RuntimeWarning,
            stacklevel=2,
        )
