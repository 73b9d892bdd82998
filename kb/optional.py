"""Import heavy optional packages in one place, naming the extra that provides them."""

import importlib
from types import ModuleType

from kb.errors import MissingDependencyError


def require(module: str, extra: str) -> ModuleType:
    """Import `module` or raise an error that says `pip install 'kb[extra]'`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"the optional package {module!r} is not installed; install it with: pip install 'kb[{extra}]'"
        ) from exc
