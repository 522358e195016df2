"""What the user can fix, said as such: a `UserError` is printed as one line with the fix (exit 2); anything else
is a bug and keeps its traceback (exit 1). README.md lists the exit codes."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input, config or usage: the message says what was expected, what was found and how to fix it."""


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def user_error(exc: BaseException) -> UserError | None:
    """The UserError behind `exc`, None when it is a bug. An error raised inside a Ray task arrives as a
    RayTaskError that keeps it as `.cause` (and is an instance of its class, with the remote traceback as its
    text): the innermost UserError is the one-line message meant for the user. `__context__` is not followed: a
    bug raised while handling a UserError is still a bug."""
    found = None
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, UserError):
            found = exc
        cause = getattr(exc, "cause", None)
        exc = cause if isinstance(cause, BaseException) else exc.__cause__
    return found
