"""One exception family. The CLI prints these as one line; anything else is a bug."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping


class InfersimError(Exception):
    """Base of every error a user can cause and fix."""


class ConfigError(InfersimError):
    """A bad value in a config, a device file or a command-line option."""

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}: got {value!r}; {allowed}")


class UnknownNameError(InfersimError):
    """A name (device, model, scheduler, ...) that is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        known = sorted(set(known))
        near = difflib.get_close_matches(name.lower(), known, n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(near)}?" if near else f"known: {', '.join(known)}"
        self.kind, self.name, self.known = kind, name, known
        super().__init__(f"unknown {kind} {name!r}; {hint}")


class TraceFormatError(InfersimError):
    """A trace file whose row cannot be read."""

    def __init__(self, path: str, line: int, field: str, problem: str) -> None:
        self.path, self.line, self.field = path, line, field
        super().__init__(f"{path}:{line}: field {field!r}: {problem}")


class SolverError(InfersimError):
    """An optimisation problem that cannot be built or solved as asked."""


def config_error_from(exc: Exception, where: str = "",
                      tags: Mapping[str, Iterable[str]] | None = None) -> ConfigError:
    """Turn a pydantic ValidationError into a ConfigError naming the key path of the first
    problem (``where`` prefixes it, e.g. a file name). ``tags`` maps a key holding a tagged
    union to its tag values, which pydantic puts in the path and are dropped here (a problem
    in ``arrival: {process: gamma, cv: 0}`` is at ``arrival.cv``, not ``arrival.gamma.cv``)."""
    errors = exc.errors() if hasattr(exc, "errors") else []
    if not errors:
        return ConfigError(where or "input", None, str(exc))
    first = errors[0]
    loc = list(first.get("loc", ()))
    for i in range(len(loc) - 1, 0, -1):
        if loc[i] in (tags or {}).get(str(loc[i - 1]), ()):
            del loc[i]
    path = ".".join(str(p) for p in loc)
    field = f"{where}: {path}" if where and path else (where or path or "input")
    message = first.get("msg", str(exc)).removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        message = "unknown key; remove it or check its spelling"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    value = None if first.get("type") == "missing" or not loc else first.get("input")
    return ConfigError(field, value, message + more)
