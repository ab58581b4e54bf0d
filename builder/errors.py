"""The error types that reach users; the CLI turns them into a message and an exit code."""

from __future__ import annotations


class BuildError(Exception):
    """A failure the user can act on: a message, an optional hint, and an exit code."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class RecipeError(BuildError):
    """One or more problems in recipe files; every problem is listed at once."""

    exit_code = 2

    def __init__(self, problems: list[str], hint: str | None = None) -> None:
        super().__init__("\n".join(problems), hint)
        self.problems = problems


class MissingToolError(BuildError):
    """A host tool that a step needs is not installed."""

    exit_code = 3
