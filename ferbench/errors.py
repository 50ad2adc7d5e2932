"""User-facing errors: one line that names the file or value and the problem."""

from __future__ import annotations

import difflib
from pathlib import Path


class FerbenchError(Exception):
    """A problem with the user's input; the CLI prints it as one line and exits with 2."""


class DataError(FerbenchError):
    """A dataset on disk is missing, malformed or inconsistent."""

    def __init__(self, path: str | Path, problem: str, line: int | None = None):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path, self.problem, self.line = Path(path), problem, line

    def __reduce__(self):  # so an error raised in a decoding worker reaches the parent intact
        return (DataError, (self.path, self.problem, self.line))


class ConfigError(FerbenchError):
    """A flag, override or config value that cannot be used."""


class PluginError(FerbenchError):
    """A plugin name that is unknown, or a plugin that broke its contract."""


def missing_file(path: str | Path, what: str) -> DataError:
    """The error for an input file that is not there, or is a folder where a file belongs."""
    path = Path(path)
    return DataError(path, f"is a folder, not a {what}" if path.is_dir()
                     else f"{what} does not exist")


def unknown_name(kind: str, name: str, choices) -> FerbenchError:
    """An error for an unknown name that suggests the closest valid one."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown {kind} {name!r}{hint} (choices: {', '.join(choices) or 'none'})")
