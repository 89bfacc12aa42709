"""The single user-facing error type, and how a recipe turns it into a one-line message.

Bad input (a config key, a data file, a checkpoint) must cost seconds and say exactly what is wrong:
raise ``TandemError("<key or file>: <what was expected>")`` and the recipe entry point prints that one
line and exits with status 2, without a traceback and before anything is written.

Several ranks (``tune run --nproc_per_node N``): an error every rank reaches together (a config check, a
non-finite loss decided on the all-reduced loss, a refused checkpoint) is raised with ``every_rank=True``
and printed by rank 0 only: one line, not N. Whatever ends a recipe, the process group is torn down on
the way out (``destroy_process_group``), so no rank is left waiting in a collective for its timeout.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable, TypeVar

EXIT_USER_ERROR = 2

F = TypeVar("F", bound=Callable)


class TandemError(Exception):
    """An error caused by the user's input. The message is one line naming the culprit.

    ``every_rank``: every rank raises this same error at the same point (only rank 0 prints it)."""

    def __init__(self, message: str, *, every_rank: bool = False):
        super().__init__(" ".join(str(message).split()))
        self.every_rank = every_rank


def _launch_rank() -> int:
    """This process's rank as torchrun sets it (readable before or after the process group exists)."""
    return int(os.environ.get("RANK", "0"))


def exit_on_user_error(fn: F) -> F:
    """Wrap a recipe's ``recipe_main``: a ``TandemError`` prints one line and exits 2; on every exit path
    (success, error, ``sys.exit``) the default process group is destroyed."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TandemError as e:
            if not e.every_rank or _launch_rank() == 0:
                print(f"tandem: error: {e}", file=sys.stderr, flush=True)
            sys.exit(EXIT_USER_ERROR)
        finally:
            _destroy_process_group()

    return wrapper  # type: ignore[return-value]


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
