"""The error types that reach users; the CLI turns them into a message and an exit code."""

from __future__ import annotations

import re

# ``file:line[:column]: ...``: how a recipe problem starts, so problems sort by file and line.
WHERE_RE = re.compile(r"^(?P<file>[^:\n]*):(?P<line>\d+)(?::(?P<column>\d+))?: ")

class BuildError(Exception):
    """A failure the user can act on: a message, an optional hint, and an exit code."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class RecipeError(BuildError):
    """One or more problems in recipe files; every problem is listed at once, sorted by file,
    line and column (a problem without a line sorts first in its file), duplicates dropped."""

    exit_code = 2

    def __init__(self, problems: list[str], hint: str | None = None) -> None:
        ordered = sorted(dict.fromkeys(problems), key=problem_order)
        super().__init__("\n".join(ordered), hint)
        self.problems = ordered


def problem_order(problem: str) -> tuple[str, int, int, str]:
    """The sort key of ``file:line[:column]: message``: file, then line and column as numbers."""
    if (found := WHERE_RE.match(problem)) is None:
        return (problem.split(":", 1)[0], 0, 0, problem)
    return (found["file"], int(found["line"]), int(found["column"] or 0), problem)


class MissingToolError(BuildError):
    """A host tool that a step needs is not installed."""

    exit_code = 3


class MissingPackage(BuildError):
    """A Debian package the recipe names that the archive's index (or the lock) does not hold,
    or whose Depends nothing satisfies: the recipe's to fix, unlike an unreachable mirror."""
