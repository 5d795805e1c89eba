"""What the emulated `sh` does to words once their expansions have values: field splitting
on IFS and shell patterns (`case`, `${name%pattern}`). Pure functions.

An expanded word is a list of `Chunk`s: text, and whether it came quoted (never split,
matched literally in a pattern) and whether it came from an expansion (only expansions are
split). Pathname expansion matches the paths the caller knows (the emulated container's
files and folders); a pattern that matches none stays as it is, as in ash.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_IFS = " \t\n"
_WHITESPACE = " \t\n"


@dataclass(frozen=True)
class Chunk:
    text: str
    quoted: bool
    expanded: bool = False  # the value of an expansion (field splitting applies)


class FieldBuilder:
    """Collects the fields of one or more words: `add` text to the current field, `split`
    an unquoted expansion's value into it on IFS, `end` a field."""

    def __init__(self, ifs: str) -> None:
        self.ifs = ifs
        self.fields: list[list[Chunk]] = []  # each field's text, with what was quoted
        self._current: list[Chunk] = []
        self._real = False  # the current field exists even if empty (it had quotes)

    def add(self, text: str, *, real: bool) -> None:
        """Add text to the current field; `real`: quoted (it makes the field even if empty,
        and it is matched literally by pathname expansion)."""
        self._current.append(Chunk(text, quoted=real))
        self._real = self._real or real or bool(text)

    def end(self) -> None:
        if self._real or any(chunk.text for chunk in self._current):
            self.fields.append(self._current)
        self._current, self._real = [], False

    def split(self, value: str) -> None:
        pieces = _split_ifs(value, self.ifs)
        self.add(pieces[0], real=False)
        for piece in pieces[1:]:
            self.end()
            self.add(piece, real=False)


def _split_ifs(value: str, ifs: str) -> list[str]:
    """`value` cut at IFS delimiters: an empty first (last) piece means `value` began
    (ended) with one. Whitespace in IFS folds into a single delimiter."""
    if not ifs:
        return [value]
    white = "".join(c for c in ifs if c in _WHITESPACE)
    other = "".join(c for c in ifs if c not in _WHITESPACE)
    alternatives = []
    if other:
        w = f"[{re.escape(white)}]*" if white else ""
        alternatives.append(f"{w}[{re.escape(other)}]{w}")
    if white:
        alternatives.append(f"[{re.escape(white)}]+")
    return re.split("|".join(alternatives), value)


def pattern_regex(chunks: list[Chunk], *, path: bool = False) -> str:
    """A regular expression for a shell pattern whose quoted chunks are literal: `*`, `?`,
    `[...]` and `[!...]` in the others (with `path`, none of them matches a `/`)."""
    any_char = "[^/]" if path else "."
    out: list[str] = []
    for chunk in chunks:
        if chunk.quoted:
            out.append(re.escape(chunk.text))
            continue
        text, i = chunk.text, 0
        while i < len(text):
            ch = text[i]
            if ch == "*":
                out.append(any_char + "*")
            elif ch == "?":
                out.append(any_char)
            elif ch == "[":
                end = text.find("]", i + 2 if text[i + 1 : i + 2] in ("!", "^") else i + 1)
                if end < 0:
                    out.append(re.escape(ch))
                else:
                    body = text[i + 1 : end]
                    negated = body[:1] in ("!", "^")
                    body = body[1:] if negated else body
                    body = body.replace("\\", "\\\\").replace("^", "\\^")
                    out.append(f"[{'^' if negated else ''}{body}]")
                    i = end
            else:
                out.append(re.escape(ch))
            i += 1
    return "".join(out)


def matches(chunks: list[Chunk], text: str) -> bool:
    """Whether `text` matches the pattern as a whole (`case`)."""
    return re.fullmatch(pattern_regex(chunks), text, re.DOTALL) is not None


def remove_affix(value: str, chunks: list[Chunk], op: str) -> str:
    """`${name#pattern}` (shortest prefix), `##` (longest), `%` (shortest suffix), `%%`."""
    regex = re.compile(pattern_regex(chunks), re.DOTALL)
    cuts = range(len(value) + 1)
    if op in ("#", "##"):
        order = cuts if op == "#" else reversed(cuts)
        for cut in order:
            if regex.fullmatch(value, 0, cut):
                return value[cut:]
        return value
    order = reversed(cuts) if op == "%" else cuts
    for cut in order:
        if regex.fullmatch(value, cut):
            return value[:cut]
    return value


def replace_pattern(value: str, chunks: list[Chunk], replacement: str, *, every: bool) -> str:
    """`${name/pattern/replacement}` (the longest match, leftmost), `//` every match; a
    pattern that begins with `#` (`%`) must match at the start (end)."""
    anchor = ""
    if chunks and not chunks[0].quoted and chunks[0].text[:1] in ("#", "%"):
        anchor = chunks[0].text[0]
        chunks = [Chunk(chunks[0].text[1:], False), *chunks[1:]]
    regex = pattern_regex(chunks)
    if not regex:
        return value
    if anchor == "#":
        regex = f"^(?:{regex})"
    elif anchor == "%":
        regex = f"(?:{regex})$"
    return re.sub(regex, lambda _: replacement, value, count=0 if every else 1, flags=re.DOTALL)


def is_pattern(chunks: list[Chunk]) -> bool:
    """Whether a field has an unquoted `*`, `?` or `[` (pathname expansion applies)."""
    return any(not c.quoted and any(ch in c.text for ch in "*?[") for c in chunks)


def expand_pathname(chunks: list[Chunk], paths: Iterable[str], cwd: str) -> list[str]:
    """The `paths` a pattern field matches, sorted (relative to `cwd` if the pattern is);
    none: the field as it is, as ash leaves a pattern that matches nothing. A name that
    begins with `.` is matched only by a pattern component that does."""
    text = "".join(c.text for c in chunks)
    relative = not text.startswith("/")
    prefix = cwd.rstrip("/") + "/" if relative else ""
    regex = re.compile(re.escape(prefix) + pattern_regex(chunks, path=True), re.DOTALL)
    dotted = {i for i, part in enumerate(text.split("/")) if part.startswith(".")}
    found = []
    for path in paths:
        if regex.fullmatch(path) is None:
            continue
        shown = path[len(prefix) :] if relative else path
        parts = shown.split("/")
        if any(part.startswith(".") and i not in dotted for i, part in enumerate(parts)):
            continue
        found.append(shown)
    return sorted(found) or [text]
