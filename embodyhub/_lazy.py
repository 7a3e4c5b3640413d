"""PEP 562 lazy attributes for package ``__init__`` files: a name is imported from its module on first use.

The command line imports ``embodyhub`` on every call; keeping torch and transformers out of the
package imports lets ``embodyhub --help``, ``robots list`` and ``urdf check`` answer at once."""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose public ``name`` lives in submodule ``exports[name]``.

    The value is stored on the package once loaded: importing a submodule of the same name (``retarget``)
    sets the package attribute to the submodule, which must not hide the function."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
