"""numpy, or an error that names the extra to install (the timetable engine needs it; the
package itself, the parser and input checks do not)."""

from modelq.errors import MissingDependency

try:
    import numpy as np
except ImportError as exc:  # pragma: no cover - depends on the install
    raise MissingDependency("numpy", "timetable") from exc

__all__ = ["np"]
