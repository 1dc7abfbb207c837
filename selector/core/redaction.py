"""The one redaction mechanism: secret values never reach a file or a terminal.

An API key reaches us in one place (the environment), but a server can send it back in any field:
an error body that quotes the request's ``Authorization`` header, a reply that echoes it, a batch
output row. Masking it where each message is built misses the field nobody thought of, so the
redaction happens at the boundaries instead: :func:`redact` is applied to everything the cache
stores (:class:`selector.store.Store`: values' problems and details, batch state files), to every
export and review file, and to every line printed (:class:`RedactingStream` wraps stdout and
stderr for the CLI; the log helpers call :func:`redact` too).

Which values are secret: every value :func:`register_secret` was given (the GPT client registers
the key it reads, whatever ``api_key_env`` names), plus the values of the environment variables
that look like credentials (:data:`SECRET_NAME`: ``*API_KEY*``, ``*TOKEN*``, ``*SECRET*``,
``*PASSWORD*``), read each time so that a variable set after import counts. Values shorter than
:data:`MIN_SECRET_LENGTH` characters are never secrets (``EMPTY``, the dummy key sent to local
servers, must not turn every "EMPTY" in a reply into ``***``).
"""
from __future__ import annotations

import os
import re
import sys
import threading
from typing import Any, Iterable, List, Set, TextIO

MASK = "***"
MIN_SECRET_LENGTH = 8
SECRET_NAME = re.compile(r"API_?KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)

_registered: Set[str] = set()
_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Treat ``value`` as secret from now on (in this process)."""
    value = str(value or "").strip()
    if len(value) >= MIN_SECRET_LENGTH:
        with _lock:
            _registered.add(value)


def known_secrets() -> List[str]:
    """The secret values known now, longest first (a key containing another is masked whole)."""
    found = {value.strip() for name, value in os.environ.items()
             if SECRET_NAME.search(name) and len(value.strip()) >= MIN_SECRET_LENGTH}
    with _lock:
        found |= _registered
    return sorted(found, key=len, reverse=True)


def redact_text(text: str, known: Iterable[str] = ()) -> str:
    for secret in (known or known_secrets()):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact(value: Any) -> Any:
    """``value`` with every secret masked in every string it holds: str, bytes, and dict keys
    and values, lists and tuples, recursively; anything else is returned as it is."""
    known = known_secrets()
    if not known:
        return value
    return _redact(value, known)


def _redact(value: Any, known: List[str]) -> Any:
    if isinstance(value, str):
        return redact_text(value, known)
    if isinstance(value, bytes):
        for secret in known:
            value = value.replace(secret.encode("utf-8"), MASK.encode("utf-8"))
        return value
    if isinstance(value, dict):
        return {_redact(k, known): _redact(v, known) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(item, known) for item in value]
    if isinstance(value, tuple):
        return tuple(_redact(item, known) for item in value)
    return value


class RedactingStream:
    """A text stream that masks secrets in what is written to it (stdout and stderr of the CLI:
    progress bars, log lines, error lines, a traceback under ``--debug``)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact_text(text) if isinstance(text, str) else text)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, buffer, ...
        return getattr(self._stream, name)


def install_redacting_streams() -> None:
    """From now on ``sys.stdout`` and ``sys.stderr`` mask secrets (every entry point calls this,
    through :func:`selector.errors.run_reporting_errors`). Installed for good, not for a block:
    a traceback printed after the work returned (``--debug``) is masked too."""
    if not isinstance(sys.stdout, RedactingStream):
        sys.stdout = RedactingStream(sys.stdout)  # type: ignore[assignment]
    if not isinstance(sys.stderr, RedactingStream):
        sys.stderr = RedactingStream(sys.stderr)  # type: ignore[assignment]
