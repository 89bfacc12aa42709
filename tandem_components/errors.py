"""The single user-facing error type, and how a recipe turns it into a one-line message.

Bad input (a config key, a data file, a checkpoint) must cost seconds and say exactly what is wrong:
raise ``TandemError("<key or file>: <what was expected>")`` and the recipe entry point prints that one
line and exits with status 2, without a traceback and before anything is written.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

EXIT_USER_ERROR = 2

F = TypeVar("F", bound=Callable)


class TandemError(Exception):
    """An error caused by the user's input. The message is one line naming the culprit."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def exit_on_user_error(fn: F) -> F:
    """Wrap a recipe's ``recipe_main`` so a ``TandemError`` prints one line and exits 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TandemError as e:
            print(f"tandem: error: {e}", file=sys.stderr, flush=True)
            sys.exit(EXIT_USER_ERROR)

    return wrapper  # type: ignore[return-value]
