"""User-facing errors.

Anything wrong with a user's input raises :class:`InputError`; the CLI prints its message as one
line (what, which file, which sample) and exits with status 2. Tracebacks are for our bugs only.
"""
from __future__ import annotations

import sys
from typing import Callable

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class InputError(Exception):
    """Bad user input: the message names what is wrong, the file and the sample."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # always one line


def run_reporting_errors(work: Callable[[], int], debug: bool = False, prog: str = "igpt4") -> int:
    """Run a command's work: bad input becomes one stderr line and exit status 2 (the traceback
    only with ``debug``), Ctrl-C one line and 130. Every entry point goes through here."""
    try:
        return work()
    except InputError as exc:
        if debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
