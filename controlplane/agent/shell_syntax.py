"""The emulated `sh`'s grammar: a script's text to a syntax tree, as busybox ash reads it.

Sans-IO: text in, a tree (or ShellSyntaxError with ash's words) out; `shell_run.py` runs the
tree. The lexer is driven by the parser, one token ahead, because the shell's tokens depend
on where they are: reserved words (`if`, `do`, `}`...) are only reserved where a command
starts, `$(...)` parses a script of its own up to its `)`, and a here-document's body starts
after the newline that ends its command.

What it reads: simple commands with assignments and redirections (`<`, `>`, `>>`, `>|`, `<>`,
`N>&M`, `N<&M`, `<<`, `<<-`); pipelines with `!`; `&&`, `||`, `;`, `&` and newlines; `{ ...; }`,
`( ... )`, `if`/`elif`/`else`, `while`, `until`, `for`, `case`, function definitions
`name() { ...; }`; words with single and double quotes, backslashes, `$name`, `${name}`,
`${name:-word}` and the other POSIX forms (`-`, `=`, `?`, `+`, with or without `:`, `#`,
`##`, `%`, `%%`, `${#name}`), `$((...))`, `$(...)` and backquotes; `#` comments.
A syntax error says what ash says: `syntax error: unexpected "done"`, `syntax error:
unexpected end of file (expecting "fi")`. Where a script only ends early (an open quote or
an `if` without its `fi`) the error is `ShellIncomplete`, so an interactive shell can ask
for the next line (`> `) instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

RESERVED = frozenset(
    ("!", "case", "do", "done", "elif", "else", "esac", "fi", "for", "if", "in", "then",
     "until", "while", "{", "}")
)  # fmt: skip
_CLOSERS = frozenset(("do", "done", "elif", "else", "esac", "fi", "then", "}"))
_OPERATORS = ("&&", "&>", "||", ";;", "<<-", "<<", ">>", "<&", ">&", "<>", ">|", ";", "&", "|", "(",
              ")", "<", ">")  # fmt: skip
_REDIRECTIONS = frozenset(("<<-", "<<", ">>", "<&", ">&", "<>", ">|", "<", ">", "&>"))
_METACHARACTERS = " \t\n;&|()<>"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=")
_DIGITS = re.compile(r"\d+")
_IO_NUMBER = re.compile(r"\d+(?=[<>])")
_SPECIAL_PARAMETERS = "@*#?-$!0123456789"
_PARAMETER_OPERATORS = (":-", ":=", ":?", ":+", "##", "%%", "//", "-", "=", "?", "+", "#", "%",
                        "/", ":")  # fmt: skip


class ShellSyntaxError(Exception):
    """A script the shell cannot read; the message is ash's (`syntax error: ...`)."""


class ShellIncomplete(ShellSyntaxError):
    """The script ended before what it opened was closed (more lines could complete it)."""


# Word parts. `quoted`: inside quotes (no field splitting, no pattern matching).
@dataclass(frozen=True)
class Literal:
    text: str
    quoted: bool


@dataclass(frozen=True)
class Parameter:
    """`$name`, `${name}`, `${name OP word}` (OP one of _PARAMETER_OPERATORS) or `${#name}`
    (OP `length`). ash's bash forms: `${name/pattern/replacement}` (`//`: every match) and
    `${name:offset[:length]}` (OP `:`, the argument `offset[:length]`)."""

    name: str
    quoted: bool
    op: str = ""
    argument: Word | None = None
    replacement: Word | None = None


@dataclass(frozen=True)
class Arithmetic:
    expression: Word
    quoted: bool


@dataclass(frozen=True)
class CommandSubstitution:
    body: CommandList
    quoted: bool


Part = Literal | Parameter | Arithmetic | CommandSubstitution


@dataclass(frozen=True)
class Word:
    parts: tuple[Part, ...]


@dataclass
class HereDocument:
    """A here-document's body, read once the line of its command ends."""

    delimiter: str
    strip_tabs: bool  # `<<-`
    expands: bool  # an unquoted delimiter: $... and backquotes in the body are expanded
    body: Word = field(default_factory=lambda: Word(()))


@dataclass(frozen=True)
class Redirect:
    fd: int
    op: str  # one of _REDIRECTIONS
    target: Word | HereDocument


@dataclass(frozen=True)
class SimpleCommand:
    assignments: tuple[tuple[str, Word], ...]
    words: tuple[Word, ...]
    redirects: tuple[Redirect, ...] = ()


@dataclass(frozen=True)
class Pipeline:
    commands: tuple[Command, ...]
    negated: bool = False


@dataclass(frozen=True)
class AndOr:
    first: Pipeline
    rest: tuple[tuple[str, Pipeline], ...] = ()  # ("&&" | "||", pipeline)


@dataclass(frozen=True)
class Item:
    command: AndOr
    background: bool = False


@dataclass(frozen=True)
class CommandList:
    items: tuple[Item, ...]


@dataclass(frozen=True)
class BraceGroup:
    body: CommandList


@dataclass(frozen=True)
class Subshell:
    body: CommandList


@dataclass(frozen=True)
class If:
    branches: tuple[tuple[CommandList, CommandList], ...]  # (condition, body)
    otherwise: CommandList | None = None


@dataclass(frozen=True)
class Loop:
    """`while` (or `until`, with `until` set) CONDITION; do BODY; done."""

    condition: CommandList
    body: CommandList
    until: bool = False


@dataclass(frozen=True)
class For:
    name: str
    words: tuple[Word, ...] | None  # None: `for NAME; do`, over "$@"
    body: CommandList


@dataclass(frozen=True)
class CaseItem:
    patterns: tuple[Word, ...]
    body: CommandList


@dataclass(frozen=True)
class Case:
    word: Word
    items: tuple[CaseItem, ...]


@dataclass(frozen=True)
class FunctionDefinition:
    name: str
    body: Command


@dataclass(frozen=True)
class Redirected:
    """A compound command with redirections (`while ...; done < file`)."""

    command: Command
    redirects: tuple[Redirect, ...]


Command = (
    SimpleCommand | BraceGroup | Subshell | If | Loop | For | Case | FunctionDefinition | Redirected
)


@dataclass(frozen=True)
class _Token:
    kind: str  # "word", "op", "newline", "eof"
    text: str  # the source text (an operator's characters)
    word: Word | None = None
    fd: int | None = None  # a redirection operator's IO number (`2>`)

    def is_reserved(self, *names: str) -> bool:
        return self.kind == "word" and self.text in names and self.text in RESERVED

    def is_op(self, *ops: str) -> bool:
        return self.kind == "op" and self.text in ops

    def describe(self) -> str:
        """As ash names a token in its errors."""
        if self.kind == "eof":
            return "end of file"
        if self.kind == "newline":
            return "newline"
        if self.kind == "op" and self.text in _REDIRECTIONS:
            return "redirection"
        if self.kind == "word" and self.text not in RESERVED:
            return "word"
        return f'"{self.text}"'


def parse(script: str) -> CommandList:
    """The script's syntax tree; ShellSyntaxError (ShellIncomplete if it only ends early)."""
    parser = _Parser(script, 0)
    body = parser.command_list(allow_empty=True)
    token = parser.peek()
    if token.kind != "eof":
        raise parser.unexpected(token)
    return body


class _Parser:
    def __init__(self, text: str, pos: int) -> None:
        self.text = text
        self.pos = pos
        self._peeked: _Token | None = None
        self._here_documents: list[HereDocument] = []

    # -- errors --------------------------------------------------------------------------

    def unexpected(self, token: _Token, expecting: str = "") -> ShellSyntaxError:
        message = f"syntax error: unexpected {token.describe()}"
        if expecting:
            message += f' (expecting "{expecting}")'
        return (ShellIncomplete if token.kind == "eof" else ShellSyntaxError)(message)

    # -- tokens --------------------------------------------------------------------------

    def peek(self) -> _Token:
        if self._peeked is None:
            self._peeked = self._lex()
        return self._peeked

    def take(self) -> _Token:
        token = self.peek()
        self._peeked = None
        return token

    def skip_newlines(self) -> None:
        while self.peek().kind == "newline":
            self.take()

    def expect_reserved(self, name: str) -> None:
        token = self.take()
        if not token.is_reserved(name):
            raise self.unexpected(token, name)

    def expect_op(self, op: str) -> None:
        token = self.take()
        if not token.is_op(op):
            raise self.unexpected(token, op)

    def _lex(self) -> _Token:
        text = self.text
        while True:
            while self.pos < len(text) and text[self.pos] in " \t":
                self.pos += 1
            if text.startswith("\\\n", self.pos):
                self.pos += 2
                continue
            if self.pos < len(text) and text[self.pos] == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            break
        if self.pos >= len(text):
            if self._here_documents:
                self._read_here_documents()
            return _Token("eof", "")
        ch = text[self.pos]
        if ch == "\n":
            self.pos += 1
            self._read_here_documents()
            return _Token("newline", "\n")
        fd = None
        number = _IO_NUMBER.match(text, self.pos)
        if number is not None:
            fd = int(number[0])
            self.pos = number.end()
        for op in _OPERATORS:
            if text.startswith(op, self.pos):
                self.pos += len(op)
                return _Token("op", op, fd=fd)
        start = self.pos
        word = self._word()
        return _Token("word", text[start : self.pos], word)

    # -- words ---------------------------------------------------------------------------

    def _word(self) -> Word:
        """An unquoted word, up to the next metacharacter."""
        return self._parts(lambda ch: ch in _METACHARACTERS, quoted=False)

    def _parts(self, ends: Callable[[str], bool], *, quoted: bool, double: bool = False) -> Word:
        """Parts from `pos` until `ends(ch)` holds for the character there (not consumed).
        `quoted`: inside double quotes or a here-document (literals are quoted, only `$`,
        backquotes and some backslashes are special); `double`: a `"` ends it."""
        parts: list[Part] = []
        literal: list[str] = []
        literal_quoted = quoted
        text = self.text

        def add_literal(chars: str, is_quoted: bool) -> None:
            nonlocal literal_quoted
            if literal and literal_quoted != is_quoted:
                flush()
            literal_quoted = is_quoted
            literal.append(chars)

        def flush() -> None:
            if literal:
                parts.append(Literal("".join(literal), literal_quoted))
                literal.clear()

        while self.pos < len(text) and not ends(text[self.pos]):
            ch = text[self.pos]
            if ch == "\\":
                following = text[self.pos + 1 : self.pos + 2]
                if following == "\n":
                    self.pos += 2
                elif not quoted or following in ("$", "`", "\\") or (double and following == '"'):
                    add_literal(following, True)
                    self.pos += 2
                else:
                    add_literal("\\", True)
                    self.pos += 1
            elif ch == "'" and not quoted:
                end = text.find("'", self.pos + 1)
                if end < 0:
                    raise ShellIncomplete("syntax error: unterminated quoted string")
                if end == self.pos + 1:
                    flush()
                    parts.append(Literal("", True))  # '' is still a word
                else:
                    add_literal(text[self.pos + 1 : end], True)
                self.pos = end + 1
            elif ch == '"' and not quoted:
                self.pos += 1
                inner = self._parts(lambda c: c == '"', quoted=True, double=True)
                if self.pos >= len(text):
                    raise ShellIncomplete("syntax error: unterminated quoted string")
                self.pos += 1
                flush()
                parts.extend(inner.parts or (Literal("", True),))
            elif ch == "$":
                part = self._dollar(quoted)
                if part is None:
                    add_literal("$", quoted)
                else:
                    flush()
                    parts.append(part)
            elif ch == "`":
                flush()
                parts.append(self._backquoted(quoted, double))
            else:
                add_literal(ch, quoted)
                self.pos += 1
        flush()
        return Word(tuple(parts))

    def _dollar(self, quoted: bool) -> Part | None:
        """The expansion at `$` (`pos` moves past it); None for a `$` that is just a `$`."""
        text, start = self.text, self.pos
        if text.startswith("$((", start):
            self.pos = start + 3
            expression = self._arithmetic_expression()
            return Arithmetic(expression, quoted)
        if text.startswith("$(", start):
            body, self.pos = _Parser(text, start + 2).substitution()
            return CommandSubstitution(body, quoted)
        if text.startswith("${", start):
            return self._braced_parameter(quoted)
        following = text[start + 1 : start + 2]
        if following and following in _SPECIAL_PARAMETERS:
            self.pos = start + 2
            return Parameter(following, quoted)
        name = _NAME.match(text, start + 1)
        if name is None:
            self.pos = start + 1
            return None
        self.pos = name.end()
        return Parameter(name[0], quoted)

    def _arithmetic_expression(self) -> Word:
        """The expression of `$((` up to its `))`; parentheses inside it nest."""
        depth = 0

        def ends(ch: str) -> bool:
            nonlocal depth
            if ch == "(":
                depth += 1
            elif ch == ")":
                if depth == 0:
                    return True
                depth -= 1
            return False

        expression = self._parts(ends, quoted=True)
        if not self.text.startswith("))", self.pos):
            if self.pos >= len(self.text):
                raise ShellIncomplete("syntax error: missing '))'")
            raise ShellSyntaxError("syntax error: missing '))'")
        self.pos += 2
        return expression

    def _braced_parameter(self, quoted: bool) -> Parameter:
        text = self.text
        self.pos += 2
        length = text.startswith("#", self.pos) and not text.startswith("#}", self.pos)
        if length:
            self.pos += 1
        name_match = _NAME.match(text, self.pos) or _DIGITS.match(text, self.pos)
        if name_match is not None:
            name = name_match[0]
        elif self.pos < len(text) and text[self.pos] in _SPECIAL_PARAMETERS:
            name = text[self.pos]
        else:
            raise self._bad_substitution()
        self.pos += len(name)
        if text.startswith("}", self.pos):
            self.pos += 1
            return Parameter(name, quoted, "length" if length else "")
        if length:
            raise self._bad_substitution()
        op = next((o for o in _PARAMETER_OPERATORS if text.startswith(o, self.pos)), None)
        if op is None:
            raise self._bad_substitution()
        self.pos += len(op)
        depth = 0
        slash_ends = op in ("/", "//")

        def ends(ch: str) -> bool:
            nonlocal depth
            if ch == "{":
                depth += 1
            elif ch == "}":
                if depth == 0:
                    return True
                depth -= 1
            return slash_ends and ch == "/" and depth == 0

        argument = self._parts(ends, quoted=quoted)
        replacement = None
        if slash_ends and text.startswith("/", self.pos):
            self.pos += 1
            slash_ends = False
            replacement = self._parts(ends, quoted=quoted)
        if self.pos >= len(text):
            raise ShellIncomplete("syntax error: missing '}'")
        self.pos += 1
        return Parameter(name, quoted, op, argument, replacement)

    def _bad_substitution(self) -> ShellSyntaxError:
        end = self.text.find("}", self.pos)
        if end < 0:
            return ShellIncomplete("syntax error: missing '}'")
        return ShellSyntaxError("syntax error: bad substitution")

    def _backquoted(self, quoted: bool, double: bool) -> CommandSubstitution:
        """`` `...` ``: its text without the backslashes that quote `$`, `` ` `` and `\\`
        (and `"` inside double quotes), parsed as a script of its own."""
        text = self.text
        i = self.pos + 1
        inner: list[str] = []
        while i < len(text) and text[i] != "`":
            if text[i] == "\\" and i + 1 < len(text):
                escaped = text[i + 1]
                if escaped in "$`\\" or (double and escaped == '"'):
                    inner.append(escaped)
                else:
                    inner.append(text[i : i + 2])
                i += 2
                continue
            inner.append(text[i])
            i += 1
        if i >= len(text):
            raise ShellIncomplete("syntax error: EOF in backquote substitution")
        self.pos = i + 1
        return CommandSubstitution(parse("".join(inner)), quoted)

    def _read_here_documents(self) -> None:
        """The bodies of the here-documents of the line just ended, one after the other."""
        pending, self._here_documents = self._here_documents, []
        for document in pending:
            lines: list[str] = []
            while True:
                if self.pos >= len(self.text):
                    break  # ash ends a here-document at the end of the script too
                end = self.text.find("\n", self.pos)
                end = len(self.text) if end < 0 else end
                line = self.text[self.pos : end]
                self.pos = min(end + 1, len(self.text))
                if document.strip_tabs:
                    line = line.lstrip("\t")
                if line == document.delimiter:
                    break
                lines.append(line + "\n")
            body = "".join(lines)
            if document.expands:
                document.body = _Parser(body, 0)._parts(lambda ch: False, quoted=True)
            else:
                document.body = Word((Literal(body, True),))

    # -- grammar -------------------------------------------------------------------------

    def substitution(self) -> tuple[CommandList, int]:
        """The script of a `$(`...`)` starting at `pos`, and where its `)` ends."""
        body = self.command_list(allow_empty=True)
        self.expect_op(")")
        return body, self.pos

    def command_list(self, *, allow_empty: bool = False) -> CommandList:
        """Commands separated by `;`, `&` or newlines. As in ash, a list ends at the end of
        input, or (once it has a command, or when it may be empty) at a reserved word that
        closes something, `)` or `;;`: what may come there is the caller's to check."""
        items: list[Item] = []
        self.skip_newlines()
        while True:
            token = self.peek()
            if token.kind == "eof" or (
                (items or allow_empty)
                and (token.is_op(")", ";;") or (token.kind == "word" and token.text in _CLOSERS))
            ):
                break
            command = self.and_or()
            token = self.peek()
            if token.is_op("&", ";"):
                self.take()
                items.append(Item(command, background=token.text == "&"))
            elif token.kind == "newline":
                items.append(Item(command))
            else:
                items.append(Item(command))
                break
            self.skip_newlines()
        if not items and not allow_empty:
            raise self.unexpected(self.peek())
        return CommandList(tuple(items))

    def and_or(self) -> AndOr:
        first = self.pipeline()
        rest: list[tuple[str, Pipeline]] = []
        while self.peek().is_op("&&", "||"):
            op = self.take().text
            self.skip_newlines()
            rest.append((op, self.pipeline()))
        return AndOr(first, tuple(rest))

    def pipeline(self) -> Pipeline:
        negated = False
        if self.peek().is_reserved("!"):
            self.take()
            negated = True
        commands = [self.command()]
        while self.peek().is_op("|"):
            self.take()
            self.skip_newlines()
            commands.append(self.command())
        return Pipeline(tuple(commands), negated)

    def command(self) -> Command:
        token = self.peek()
        if token.kind == "word" and token.text == "function":  # ash's bash form
            self.take()
            return self._function(self.take(), keyword=True)
        compound = self._compound(token)
        if compound is not None:
            redirects = self._redirects()
            return Redirected(compound, redirects) if redirects else compound
        if token.kind == "word" and token.text in _CLOSERS:
            raise self.unexpected(token)
        if token.kind == "word" and token.text not in RESERVED:
            self.take()
            if self.peek().is_op("("):
                return self._function(token, keyword=False)
            return self._simple(first=token)
        if token.kind == "op" and token.text in _REDIRECTIONS:
            return self._simple(first=None)
        raise self.unexpected(token)

    def _compound(self, token: _Token) -> Command | None:
        if token.is_op("("):
            self.take()
            body = self.command_list()
            self.expect_op(")")
            return Subshell(body)
        if token.kind != "word" or token.text not in RESERVED:
            return None
        keyword = token.text
        if keyword == "{":
            self.take()
            body = self.command_list()
            self.expect_reserved("}")
            return BraceGroup(body)
        if keyword == "if":
            return self._if()
        if keyword in ("while", "until"):
            self.take()
            condition = self.command_list()
            self.expect_reserved("do")
            body = self.command_list()
            self.expect_reserved("done")
            return Loop(condition, body, until=keyword == "until")
        if keyword == "for":
            return self._for()
        if keyword == "case":
            return self._case()
        return None

    def _if(self) -> If:
        self.take()
        branches: list[tuple[CommandList, CommandList]] = []
        otherwise = None
        while True:
            condition = self.command_list()
            self.expect_reserved("then")
            body = self.command_list()
            branches.append((condition, body))
            token = self.take()
            if token.is_reserved("elif"):
                continue
            if token.is_reserved("else"):
                otherwise = self.command_list()
                self.expect_reserved("fi")
            elif not token.is_reserved("fi"):
                raise self.unexpected(token, "fi")
            return If(tuple(branches), otherwise)

    def _for(self) -> For:
        self.take()
        name = self.take()
        if name.kind != "word" or _NAME.fullmatch(name.text) is None:
            if name.kind != "word":
                raise self.unexpected(name)
            raise ShellSyntaxError("syntax error: bad for loop variable")
        self.skip_newlines()
        words: tuple[Word, ...] | None = None
        if self.peek().is_reserved("in"):
            self.take()
            collected = []
            while self.peek().kind == "word":
                token = self.take()
                assert token.word is not None
                collected.append(token.word)
            words = tuple(collected)
            token = self.take()
            if not (token.is_op(";") or token.kind == "newline"):
                raise self.unexpected(token)
        elif self.peek().is_op(";"):
            self.take()
        self.skip_newlines()
        self.expect_reserved("do")
        body = self.command_list()
        self.expect_reserved("done")
        return For(name.text, words, body)

    def _case(self) -> Case:
        self.take()
        subject = self.take()
        if subject.kind != "word" or subject.word is None:
            raise self.unexpected(subject)
        self.skip_newlines()
        self.expect_reserved("in")
        self.skip_newlines()
        items: list[CaseItem] = []
        while not self.peek().is_reserved("esac"):
            if self.peek().is_op("("):
                self.take()
            patterns = [self._pattern()]
            while self.peek().is_op("|"):
                self.take()
                patterns.append(self._pattern())
            self.expect_op(")")
            body = self.command_list(allow_empty=True)
            items.append(CaseItem(tuple(patterns), body))
            if self.peek().is_op(";;"):
                self.take()
                self.skip_newlines()
            elif not self.peek().is_reserved("esac"):
                raise self.unexpected(self.peek(), "esac")
        self.take()
        return Case(subject.word, tuple(items))

    def _pattern(self) -> Word:
        token = self.take()
        if token.kind != "word" or token.word is None:
            raise self.unexpected(token, ")")
        return token.word

    def _function(self, name: _Token, *, keyword: bool) -> FunctionDefinition:
        """`NAME() BODY`, or `function NAME [()] BODY` (`keyword`)."""
        if name.kind != "word":
            raise self.unexpected(name)
        if not keyword or self.peek().is_op("("):
            self.take()  # (
            self.expect_op(")")
        if _NAME.fullmatch(name.text) is None:
            raise ShellSyntaxError("syntax error: bad function name")
        self.skip_newlines()
        token = self.peek()
        body = self._compound(token)
        if body is None:
            raise self.unexpected(token)
        redirects = self._redirects()
        return FunctionDefinition(name.text, Redirected(body, redirects) if redirects else body)

    def _simple(self, first: _Token | None) -> SimpleCommand:
        assignments: list[tuple[str, Word]] = []
        words: list[Word] = []
        redirects: list[Redirect] = []
        token = first
        while True:
            if token is None:
                token = self.peek()
                if token.kind == "op" and token.text in _REDIRECTIONS:
                    self.take()
                    redirects.append(self._redirect(token))
                    token = None
                    continue
                if token.kind != "word":
                    break
                self.take()
            assert token.word is not None
            assignment = _assignment(token.word) if not words else None
            if assignment is not None:
                assignments.append(assignment)
            else:
                words.append(token.word)
            token = None
        return SimpleCommand(tuple(assignments), tuple(words), tuple(redirects))

    def _redirects(self) -> tuple[Redirect, ...]:
        redirects = []
        while self.peek().kind == "op" and self.peek().text in _REDIRECTIONS:
            redirects.append(self._redirect(self.take()))
        return tuple(redirects)

    def _redirect(self, operator: _Token) -> Redirect:
        op = operator.text
        fd = operator.fd if operator.fd is not None else (0 if op[0] == "<" else 1)
        if op == "&>":  # ash's bash form of `>FILE 2>&1`
            fd = 1
        target = self.take()
        if target.kind != "word" or target.word is None:
            raise self.unexpected(target)
        if op in ("<<", "<<-"):
            document = HereDocument(
                _quote_removed(target.word),
                strip_tabs=op == "<<-",
                expands=all(isinstance(p, Literal) and not p.quoted for p in target.word.parts),
            )
            self._here_documents.append(document)
            return Redirect(fd, op, document)
        return Redirect(fd, op, target.word)


def _assignment(word: Word) -> tuple[str, Word] | None:
    """`NAME=value` (an unquoted name and `=` opening the word): the name and the value."""
    if not word.parts or not isinstance(word.parts[0], Literal) or word.parts[0].quoted:
        return None
    match = _ASSIGNMENT.match(word.parts[0].text)
    if match is None:
        return None
    rest = word.parts[0].text[match.end() :]
    value = ((Literal(rest, False),) if rest else ()) + word.parts[1:]
    return match[1], Word(value)


def _quote_removed(word: Word) -> str:
    """A here-document's delimiter: its text without quotes (expansions are not done)."""
    return "".join(
        p.text if isinstance(p, Literal) else f"${p.name}"
        for p in word.parts
        if isinstance(p, Literal | Parameter)
    )
