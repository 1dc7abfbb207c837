"""User-facing errors.

Anything wrong with a user's input raises :class:`InputError`; the CLI prints its message as one
line (what, which file, which sample) and exits with status 2. Tracebacks are for our bugs only.
"""
from __future__ import annotations

EXIT_BAD_INPUT = 2


class InputError(Exception):
    """Bad user input: the message names what is wrong, the file and the sample."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # always one line
