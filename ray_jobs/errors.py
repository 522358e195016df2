"""What the user can fix, said as such: a `UserError` is printed as one line with the fix (exit 2); anything else
is a bug and keeps its traceback."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input, config or usage: the message says what was expected, what was found and how to fix it."""


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
