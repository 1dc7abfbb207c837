"""Text and JSON reading that names the file, the encoding and the position of any problem.

The released InstructionGPT-4 files mix UTF-8 and GB18030 (the GPT-4 reply files are GB18030).
Decoding is strict and never guesses silently:

1. UTF-8 first (a byte-order mark is allowed and dropped);
2. GB18030 only when UTF-8 fails, or when the UTF-8 reading is detectable mojibake and the
   GB18030 reading is clean (a GB18030 file can happen to be valid UTF-8: ``图片`` reads ``ͼƬ``);
   one stderr note names every file read as GB18030. When both readings are plausible (as UTF-8
   only characters genuine text rarely holds, as GB18030 clean CJK) the file is refused and
   ``--encoding`` decides: a guess would be a silent misread half the time;
3. a reading that is detectable mojibake is refused with one line naming the file and the line
   and column: replacement characters U+FFFD (an earlier lossy decoding), C1 control characters,
   private-use characters, UTF-8 read as Latin-1/Windows-1252 and saved again (``Ã©``, ``â€™``),
   letters of two scripts glued into one word (GB18030 read as UTF-8), GB18030 characters whose
   second byte is an ASCII letter glued into a Latin word (Latin-1 read as GB18030: ``Müller``
   reads ``M黮ler``), and a file that is UTF-8 except at a few bytes (damaged UTF-8, which
   GB18030 would turn into CJK garbage).

``--encoding ENC`` (:func:`text_encoding`) forces one codec for the text files a command reads:
strict decoding in that codec and none of the heuristics above (the escape hatch for a file they
misjudge). Unpaired surrogates (``"\\ud800"`` in JSON) are refused always: no writer can store them.
"""
from __future__ import annotations

import codecs
import contextlib
import json
import os
import re
import stat
import sys
import unicodedata
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional, Set, Tuple, Union

from selector.core.errors import InputError

PathLike = Union[str, "os.PathLike[str]"]

#: the codec forced by ``--encoding`` for the command running now (None: detect)
_FORCED: "ContextVar[Optional[str]]" = ContextVar("igpt4_text_encoding", default=None)
_NOTED: Set[str] = set()  # files already named in a "read as GB18030" note (one note per file)

_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_HINT = "pass --encoding ENC if you know the file's encoding"
_ANY_TIME = re.compile(  # signals that are mojibake wherever they appear
    "[\ufffd\u0080-\u009f\ue000-\uf8ff\U000f0000-\U0010ffff]"
    "|[\u00c2\u00c3][\u00a0-\u00bf]"  # UTF-8 read as Latin-1 and saved again: Ã© Â°
    "|\u00e2\u20ac")  # the same for Windows-1252: â€™ â€œ â€"
_NON_ASCII_RUN = re.compile("[^\x00-\x7f]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_ASCII_LETTER = re.compile("[A-Za-z]")
_WORD = re.compile(r"\w+")
_CJK_FAMILY = {"CJK", "HIRAGANA", "KATAKANA", "HANGUL", "BOPOMOFO", "IDEOGRAPHIC", "YI"}


def canonical_encoding(name: str) -> str:
    """The codec's canonical name (``latin1`` -> ``iso8859-1``); one line for an unknown one."""
    try:
        info = codecs.lookup(name)
        try:
            b"a".decode(info.name)  # refuses bytes-to-bytes codecs such as base64
        except UnicodeDecodeError:  # a text codec that needs more bytes (utf-16)
            pass
    except LookupError:
        raise InputError(f"--encoding {name!r}: unknown text encoding (e.g. utf-8, gb18030, "
                         "latin-1, cp1252)") from None
    return info.name


@contextlib.contextmanager
def text_encoding(name: Optional[str]) -> Iterator[None]:
    """Inside the block every text file is decoded with ``name`` (``--encoding``), or detected
    when ``name`` is None. A context variable rather than a parameter: the files a command reads
    are opened many calls deep (data, clusters, replies, the original repository's layout)."""
    token = _FORCED.set(None if name is None else canonical_encoding(name))
    try:
        yield
    finally:
        _FORCED.reset(token)


def _where(text: Union[str, bytes], offset: int) -> str:
    newline = "\n" if isinstance(text, str) else b"\n"
    line = text.count(newline, 0, offset) + 1  # type: ignore[arg-type]
    column = offset - (text.rfind(newline, 0, offset) + 1) + 1  # type: ignore[arg-type]
    return f"line {line} column {column}"


def _script(char: str) -> str:
    name = unicodedata.name(char, "")
    family = name.split(" ", 1)[0]
    return "CJK" if family in _CJK_FAMILY else family


def _describe_char(char: str) -> str:
    return f"U+{ord(char):04X} {unicodedata.name(char, 'unnamed').lower()}"


def _describe_signal(found: str) -> str:
    if found == "\ufffd":
        return "replacement character U+FFFD (the text was damaged by an earlier lossy decoding)"
    if len(found) == 1 and ord(found) <= 0x9F:
        return f"C1 control character U+{ord(found):04X}"
    if len(found) == 1:
        return f"private-use character U+{ord(found):04X}"
    return f"{found!r} (UTF-8 read as Latin-1 or Windows-1252 and saved again)"


def _any_time_signal(text: str) -> Optional[Tuple[int, str]]:
    """(position, what) of the first character pattern that is mojibake wherever it appears."""
    match = _ANY_TIME.search(text)
    return None if match is None else (match.start(), _describe_signal(match.group()))


#: two-byte UTF-8 characters (U+0080-U+07FF: what GB18030 bytes read as UTF-8 mostly give) that
#: genuine text rarely holds: most of Latin Extended-B, IPA and the modifier letters, the combining
#: Latin letters, Greek and Cyrillic rarities, Syriac, Thaana, NKo. Pinyin tones, Romanian, the
#: African vowels, okina and the spacing accents stay plausible.
_RARE = re.compile("[\u0180-\u0185\u0187-\u018e\u0191\u0193-\u01bf\u01c4-\u01cc\u01dd-\u0217"
                   "\u021c-\u0253\u0255-\u0258\u025a\u025c-\u02ba\u02bd\u02c0-\u02c5"
                   "\u02de-\u02ff\u0363-\u036f\u0370-\u0373\u0376-\u037d\u037f-\u0383"
                   "\u03cf-\u03ff\u0460-\u048f\u0500-\u052f\u0700-\u07ff]")


@dataclass
class _Signals:
    """What one reading of a file looks like, counted per run of non-ASCII characters."""

    runs: int = 0
    any_time: Optional[Tuple[int, str]] = None  # mojibake wherever it appears
    strong: int = 0  # runs that only a misdecoding makes (letters of two scripts glued, ...)
    weak: int = 0  # runs of characters genuine text rarely holds
    sandwiched: int = 0  # a lone CJK character inside a Latin word (GB18030 readings)
    first: Optional[Tuple[int, str]] = None  # the first strong (else weak) signal

    def frequent(self, count: int) -> bool:
        """At least a quarter of the runs: a genuine text may hold one odd run by chance; a
        misread file holds them everywhere."""
        return count > 0 and count * 4 >= self.runs

    def add(self, kind: str, position: int, what: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if self.first is None or (kind == "strong" and self.strong == 1 and self.weak):
            self.first = (position, what)


def _strong(text: str, run: str, start: int, gb18030: bool) -> Optional[Tuple[int, str]]:
    """(position, why) when this run reads as misdecoded text in its context."""
    for i, char in enumerate(run):
        at = start + i
        before = text[at - 1] if at > 0 else ""
        category = unicodedata.category(char)
        if category == "Cn" and ord(char) < 0x800:
            return at, f"unassigned character U+{ord(char):04X}: GB18030 read as UTF-8?"
        if category.startswith("M"):  # GB18030 read as UTF-8: ֻè (a Hebrew point on nothing)
            mark = _script(char)
            base = at - 1
            while base >= 0 and unicodedata.category(text[base]).startswith("M"):
                base -= 1
            base_char = text[base] if base >= 0 else ""
            if mark == "COMBINING" and 0x300 <= ord(char) < 0x370:
                wrong = not base_char.isalpha() or _script(base_char) not in ("LATIN", "GREEK",
                                                                             "CYRILLIC")
            else:
                wrong = mark not in ("COMBINING", "VARIATION", "CJK") and _script(base_char) != mark
            if wrong:
                return at, (f"{_describe_char(char)} on {base_char!r}, not on a letter it "
                            "belongs to: GB18030 read as UTF-8?")
        elif i and before.isalpha() and (char.isalpha() or category[0] in "SN"):
            first, second = _script(before), _script(char)
            if char.isalpha() and first != second and "CJK" not in (first, second):
                return at - 1, (f"letters of two scripts in one word {before + char!r} "
                                f"({first.lower()}, {second.lower()}): GB18030 read as UTF-8?")
            if not char.isalpha() and 0xA0 <= ord(char) < 0x100 and first not in ("LATIN", "CJK"):
                return at - 1, (f"Latin-1 sign glued to a {first.lower()} letter "
                                f"{before + char!r}: GB18030 read as UTF-8?")
    end = start + len(run)
    if gb18030 and len(run) == 1 and run.isalpha() and end < len(text) \
            and _ASCII_LETTER.match(text[end]):
        encoded = run.encode("gb18030")
        if len(encoded) == 2 and _ASCII_LETTER.match(chr(encoded[1])):  # it ate an ASCII letter
            word_start = start
            while word_start > 0 and _ASCII_LETTER.match(text[word_start - 1]):
                word_start -= 1
            word = _WORD.match(text, word_start).group()[:30]  # type: ignore[union-attr]
            return start, (f"{run!r} glued into the Latin word {word!r} (its second byte is the "
                           f"letter {chr(encoded[1])!r}: Latin-1 or Windows-1252 read as GB18030?)")
    return None


def _analyse(text: str, gb18030: bool) -> _Signals:
    """One pass over the runs of non-ASCII characters (ASCII text costs nothing)."""
    signals = _Signals()
    if text.isascii():
        return signals
    for match in _NON_ASCII_RUN.finditer(text):
        signals.runs += 1
        run, start = match.group(), match.start()
        found = _ANY_TIME.search(run)
        if found is not None:
            signals.any_time = (start + found.start(), _describe_signal(found.group()))
            return signals
        strong = _strong(text, run, start, gb18030)
        if strong is not None:
            signals.add("strong", *strong)
            continue
        rare = _RARE.search(run)
        if rare is not None:
            signals.add("weak", start + rare.start(), f"{_describe_char(rare.group())}, which "
                        "genuine text rarely holds")
        end = match.end()
        if gb18030 and len(run) == 1 and unicodedata.category(run) == "Lo" and start > 0 \
                and end < len(text) and _ASCII_LETTER.match(text[start - 1]) \
                and _ASCII_LETTER.match(text[end]):
            signals.sandwiched += 1
    return signals


def _damaged_utf8(raw: bytes) -> Optional[str]:
    """For bytes that are not UTF-8: "mostly UTF-8" when most runs of non-ASCII bytes are valid
    UTF-8 sequences. Such a file is UTF-8 with a few damaged bytes; GB18030 would misread all of
    its other characters (``Württemberg`` reads ``W眉rttemberg``)."""
    runs = valid = 0
    for match in re.finditer(rb"[\x80-\xff]+", raw):
        runs += 1
        try:
            match.group().decode("utf-8")
            valid += 1
        except UnicodeDecodeError:
            pass
    if valid * 2 > runs:
        return f"{valid} of its {runs} runs of non-ASCII bytes are valid UTF-8"
    return None


def _note(path: Path, message: str) -> None:
    key = os.path.abspath(str(path))
    if key not in _NOTED:
        _NOTED.add(key)
        print(f"igpt4: note: {path}: {message}", file=sys.stderr, flush=True)


def decode_text(raw: bytes, path: PathLike, encoding: Optional[str] = None) -> Tuple[str, str]:
    """Decode one file's bytes as described in the module docstring; ``(text, encoding)``."""
    path = Path(path)
    forced = encoding or _FORCED.get()
    if forced is not None:
        codec = canonical_encoding(forced)
        try:
            text = raw.decode("utf-8-sig" if codec == "utf-8" else codec)
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not {codec} text: byte {exc.start} ({_where(raw, exc.start)})"
                             f" cannot be decoded ({exc.reason})") from None
        return text.lstrip("\ufeff") if codec != "utf-8" else text, codec
    for bom, name in _BOMS:
        if raw.startswith(bom):
            raise InputError(f"{path}: {name.upper()} text (byte-order mark); UTF-8 and GB18030 "
                             f"are detected, pass --encoding {name} to read it")
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise InputError(f"{path}: NUL byte at offset {nul} ({_where(raw, nul)}): not UTF-8 or "
                         f"GB18030 text (UTF-16 without a byte-order mark, or binary?); {_HINT}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return _decode_not_utf8(raw, path, exc.start)
    signals = _analyse(text, gb18030=False)
    if signals.any_time is not None:
        position, what = signals.any_time
        raise InputError(f"{path}: as UTF-8 it reads as mojibake at {_where(text, position)}: "
                         f"{what}; {_HINT}")
    frequent_strong = signals.frequent(signals.strong)
    if not signals.frequent(signals.strong + signals.weak):
        return text, "utf-8"
    # valid UTF-8 that reads as mojibake: a GB18030 file can happen to be valid UTF-8
    position, what = signals.first  # type: ignore[misc]
    try:
        other: Optional[str] = raw.decode("gb18030").lstrip("\ufeff")
    except UnicodeDecodeError:
        other = None
    clean = other is not None and _clean_gb18030(_analyse(other, gb18030=True))
    if frequent_strong and clean:
        _note(path, f"valid UTF-8, but as UTF-8 it reads as mojibake at {_where(text, position)} "
                    f"({what}); read as GB18030 instead (--encoding utf-8 forces UTF-8)")
        return other, "gb18030"  # type: ignore[return-value]
    if frequent_strong:
        raise InputError(f"{path}: as UTF-8 it reads as mojibake at {_where(text, position)}: "
                         f"{what}; {_HINT}")
    if clean:
        snippet = _NON_ASCII_RUN.search(other, 0).group()[:12]  # type: ignore[arg-type,union-attr]
        raise InputError(f"{path}: valid as UTF-8 and as GB18030, and neither reading is sure: as "
                         f"UTF-8 {_where(text, position)} holds {what}, as GB18030 it reads "
                         f"{snippet!r}...; pass --encoding utf-8 or --encoding gb18030")
    return text, "utf-8"


def _clean_gb18030(signals: _Signals) -> bool:
    return (signals.any_time is None and not signals.frequent(signals.strong)
            and not signals.frequent(signals.sandwiched))


def _decode_not_utf8(raw: bytes, path: Path, bad: int) -> Tuple[str, str]:
    """GB18030 for bytes that are not UTF-8 (``bad``: the first byte UTF-8 refuses)."""
    try:
        text = raw.decode("gb18030").lstrip("\ufeff")
    except UnicodeDecodeError:
        raise InputError(f"{path}: neither UTF-8 nor GB18030 text (first bad byte at offset {bad},"
                         f" {_where(raw, bad)}); {_HINT}") from None
    damaged = _damaged_utf8(raw)
    if damaged is not None:
        raise InputError(f"{path}: damaged UTF-8: byte {bad} ({_where(raw, bad)}) is not UTF-8 "
                         f"though {damaged}, and as GB18030 the rest would read as mojibake; "
                         f"repair the file or {_HINT}")
    signals = _analyse(text, gb18030=True)
    problem = signals.any_time or (signals.first if signals.frequent(signals.strong) else None)
    if problem is not None:
        position, what = problem
        raise InputError(f"{path}: not UTF-8 (byte {bad}, {_where(raw, bad)}), and as GB18030 it "
                         f"reads as mojibake at {_where(text, position)}: {what}; {_HINT}")
    _note(path, "not UTF-8: read as GB18030 (--encoding forces another)")
    return text, "gb18030"


#: how deeply a settings or data file may nest lists and mappings. Nothing this project reads
#: needs a tenth of it; a deeper file is a mistake or an attack, and parsers recurse per level
#: (Python's recursion limit, or the C stack: a YAML file nested 50 000 deep crashed the process)
MAX_NESTING = 64

_NOT_REGULAR = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def read_bytes(path: PathLike, label: Optional[str] = None) -> bytes:
    """The bytes of a regular file; anything else is one :class:`InputError` line naming it.

    The file is opened non-blocking and checked with ``fstat`` before it is read (not ``stat``
    then ``open``, which a swap between the two defeats): opening a named pipe blocks until a
    writer comes, and a device such as ``/dev/zero`` never ends, so either would hang the command
    forever instead of failing."""
    label = label or str(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(os.fspath(path), flags)
    except FileNotFoundError:
        raise InputError(f"{label}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{label}: is a folder, expected a file") from None
    except OSError as exc:
        raise InputError(f"{label}: cannot read ({exc.strerror or exc})") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise InputError(f"{label}: is a folder, expected a file")
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _NOT_REGULAR if test(mode)), "not a file")
            raise InputError(f"{label}: is {kind}, not a regular file (reading it could block "
                             "forever)")
        with os.fdopen(fd, "rb") as handle:
            fd = -1  # closed by the handle from here on
            return handle.read()
    except OSError as exc:
        raise InputError(f"{label}: cannot read ({exc.strerror or exc})") from None
    finally:
        if fd >= 0:
            os.close(fd)


def nesting_depth_exceeds(value: Any, limit: int = MAX_NESTING) -> bool:
    """Whether a parsed JSON/YAML value nests lists and mappings more than ``limit`` deep
    (checked without recursion, so that the check itself cannot overflow)."""
    if not isinstance(value, (dict, list)):
        return False
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, (dict, list)))
    return False


def read_text(path: PathLike, encoding: Optional[str] = None) -> Tuple[str, str]:
    """Return ``(text, encoding)`` of a text file: ``encoding`` is ``"utf-8"`` or ``"gb18030"``
    (or the codec forced by ``encoding`` / ``--encoding``). Only regular files are read
    (:func:`read_bytes`)."""
    path = Path(path)
    return decode_text(read_bytes(path), path, encoding)


def _first_bad_string(value: Any, where: str, checks: bool) -> Optional[Tuple[str, str]]:
    """(JSON path, problem) of the first string that a ``\\u`` escape made unusable."""
    if isinstance(value, str):
        surrogate = _SURROGATE.search(value)
        if surrogate is not None:
            return where, (f"unpaired surrogate \\u{ord(surrogate.group()):04x} (no writer can "
                           "store it)")
        signal = _any_time_signal(value) if checks else None
        if signal is not None:
            return where, signal[1]
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = (_first_bad_string(key, f"{where} (a key)", checks)
                     or _first_bad_string(item, f"{where}[{key!r}]", checks))
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _first_bad_string(item, f"{where}[{index}]", checks)
            if found:
                return found
    return None


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: List[Tuple[str, Any]]) -> dict:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: Set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))  # type: ignore
    return value


def read_json(path: PathLike, encoding: Optional[str] = None) -> Tuple[Any, str]:
    """Parse a JSON file; return ``(value, encoding)``. Strings that ``\\u`` escapes turned into
    mojibake or unpaired surrogates are refused like mojibake in the text itself."""
    text, used = read_text(path, encoding)
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except _DuplicateKey as exc:
        raise InputError(f"{path}: key {exc.key!r:.60} appears twice in one JSON object (JSON "
                         "readers silently keep only the last)") from None
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deeply to read") from None
    if nesting_depth_exceeds(value):
        raise InputError(f"{path}: JSON nested more than {MAX_NESTING} levels deep (no file this "
                         "command reads nests like that)")
    if "\\u" in text:  # otherwise every string is a slice of the text checked above
        forced = encoding or _FORCED.get()
        bad = _first_bad_string(value, "$", checks=forced is None)  # depth <= MAX_NESTING
        if bad is not None:
            raise InputError(f"{path}: string at {bad[0]}: {bad[1]}")
    return value, used


def write_json(path: PathLike, value: Any, indent: int = 2) -> None:
    """Write UTF-8 JSON atomically (a crash never leaves a half-written file behind), secrets
    masked (:func:`selector.redaction.redact`: no API key reaches a file)."""
    from selector.core.atomic import atomic_open
    from selector.core.redaction import redact

    with atomic_open(path) as handle:
        json.dump(redact(value), handle, indent=indent, ensure_ascii=False)
        handle.write("\n")
