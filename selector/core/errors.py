"""User-facing errors.

Anything wrong with a user's input raises :class:`InputError`; the CLI prints its message as one
line (what, which file, which sample) and exits with status 2. Tracebacks are for our bugs only.
"""
from __future__ import annotations

import contextlib
import errno
import os
import sys
from typing import Any, Callable, Iterator, Optional

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class InputError(Exception):
    """Bad user input: the message names what is wrong, the file and the sample."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # always one line


@contextlib.contextmanager
def interrupts_propagate() -> Iterator[None]:
    """Ctrl-C is never dropped. A KeyboardInterrupt raised while Python runs code whose exceptions
    it cannot propagate (an at-fork hook such as logging's while DataLoader workers are forked,
    a ``__del__`` such as the DataLoader iterator's worker shutdown) is printed as "Exception
    ignored" and lost, and the command would run on to exit 0. Inside this block such an
    interrupt is not printed but delivered again, as a new SIGINT to the main thread a moment
    later, from a helper thread: raised at once it would land in the same place and be dropped
    again (an unraisable one that is dropped again is redelivered again)."""
    import _thread
    import signal
    import threading

    previous = sys.unraisablehook
    active = True
    main = threading.main_thread()

    def redeliver() -> None:
        if not active:  # the command is over: nothing left to interrupt
            return
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.pthread_kill(main.ident, signal.SIGINT)  # also ends a blocking system call
        else:
            _thread.interrupt_main()

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            previous(unraisable)
            return
        try:
            timer = threading.Timer(0.05, redeliver)
            timer.daemon = True
            timer.start()
        except RuntimeError:  # no new threads (interpreter shutting down)
            _thread.interrupt_main()

    sys.unraisablehook = hook
    try:
        yield
    finally:
        active = False
        sys.unraisablehook = previous


#: errors of the machine, not of our code: a full or read-only disk, a missing permission, a
#: folder where a file should be (or the reverse), a name too long
ENVIRONMENT_ERRNOS = frozenset(getattr(errno, name) for name in (
    "ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EISDIR", "ENOTDIR", "ENOENT", "EEXIST",
    "ENAMETOOLONG", "ELOOP", "EFBIG", "ENOTEMPTY", "EMFILE", "ENFILE", "EIO", "EXDEV", "EBUSY",
    "ETXTBSY") if hasattr(errno, name))
#: of those, the ones that are the machine's even when the error names no file (a write to an
#: open file on a full disk)
_WITHOUT_PATH = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS", "EIO",
                                                             "EFBIG") if hasattr(errno, name))


def os_reason(exc: OSError) -> str:
    """The system's words for an OS error (its errno's name when it has no text)."""
    return exc.strerror or errno.errorcode.get(exc.errno or 0, "") or str(exc)


def environment_error_line(exc: OSError) -> Optional[str]:
    """One line for an OS error caused by the machine (naming the path when the error has one),
    or None for anything else (a bug: its traceback is kept)."""
    if exc.errno not in ENVIRONMENT_ERRNOS:
        return None
    path = exc.filename if exc.filename is not None else exc.filename2
    reason = os_reason(exc)
    if path is None:
        return f"{reason} (errno {errno.errorcode.get(exc.errno, exc.errno)})" \
            if exc.errno in _WITHOUT_PATH else None
    target = f" -> {exc.filename2}" if exc.filename is not None and exc.filename2 else ""
    name = os.fsdecode(path) if isinstance(path, (str, bytes)) else str(path)
    return f"{name}{target}: {reason}"


def run_reporting_errors(work: Callable[[], int], debug: bool = False, prog: str = "igpt4") -> int:
    """Run a command's work: bad input becomes one stderr line and exit status 2 (the traceback
    only with ``debug``), Ctrl-C one line and 130. Every entry point goes through here."""
    from selector.core.redaction import install_redacting_streams

    install_redacting_streams()  # no secret is ever printed, whatever prints it
    try:
        with interrupts_propagate():
            return work()
    except InputError as exc:
        if debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ModuleNotFoundError as exc:  # an optional dependency: name the extra that brings it
        from selector.core.extras import missing_extra_line

        line = missing_extra_line(exc)
        if debug or line is None:
            raise
        print(f"{prog}: error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # the last resort for a path error no command turned into a line
        line = environment_error_line(exc)
        if debug or line is None:
            raise
        print(f"{prog}: error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        # on a terminal a progress bar may hold the line: start a new one
        start = "\n" if getattr(sys.stderr, "isatty", lambda: False)() else ""
        print(f"{start}{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
