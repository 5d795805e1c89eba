"""The emulated sh's parser (`shell_syntax.py`): scripts to trees, shown in a compact
notation, and syntax errors with busybox ash's words."""

from __future__ import annotations

import pytest

from controlplane.agent.shell_syntax import (
    AndOr,
    Arithmetic,
    BraceGroup,
    Case,
    Command,
    CommandList,
    CommandSubstitution,
    For,
    FunctionDefinition,
    HereDocument,
    If,
    Literal,
    Loop,
    Parameter,
    Pipeline,
    Redirect,
    Redirected,
    ShellIncomplete,
    ShellSyntaxError,
    SimpleCommand,
    Subshell,
    Word,
    parse,
)


def show(tree: CommandList) -> str:
    """Items joined by `;` (`&` for a background one)."""
    return " ; ".join(
        show_and_or(item.command) + (" &" if item.background else "") for item in tree.items
    )


def show_and_or(node: AndOr) -> str:
    text = show_pipeline(node.first)
    for op, pipeline in node.rest:
        text += f" {op} {show_pipeline(pipeline)}"
    return text


def show_pipeline(node: Pipeline) -> str:
    return ("! " if node.negated else "") + " | ".join(map(show_command, node.commands))


def show_command(node: Command) -> str:
    if isinstance(node, SimpleCommand):
        parts = [f"{name}={show_word(value)}" for name, value in node.assignments]
        parts += [show_word(word) for word in node.words]
        parts += [show_redirect(redirect) for redirect in node.redirects]
        return "[" + " ".join(parts) + "]"
    if isinstance(node, Redirected):
        return show_command(node.command) + "".join(" " + show_redirect(r) for r in node.redirects)
    if isinstance(node, BraceGroup):
        return "{" + show(node.body) + "}"
    if isinstance(node, Subshell):
        return "(" + show(node.body) + ")"
    if isinstance(node, If):
        text = " ".join(f"if<{show(c)}> then<{show(b)}>" for c, b in node.branches)
        return text + (f" else<{show(node.otherwise)}>" if node.otherwise else "")
    if isinstance(node, Loop):
        return f"{'until' if node.until else 'while'}<{show(node.condition)}> do<{show(node.body)}>"
    if isinstance(node, For):
        words = "@" if node.words is None else " ".join(map(show_word, node.words))
        return f"for {node.name} in<{words}> do<{show(node.body)}>"
    if isinstance(node, Case):
        items = " ".join(
            "|".join(map(show_word, item.patterns)) + f")<{show(item.body)}>" for item in node.items
        )
        return f"case {show_word(node.word)} {items}"
    assert isinstance(node, FunctionDefinition)
    return f"def {node.name} {show_command(node.body)}"


def show_redirect(node: Redirect) -> str:
    if isinstance(node.target, HereDocument):
        return f"{node.fd}{node.op}{show_word(node.target.body)}"
    return f"{node.fd}{node.op}{show_word(node.target)}"


def show_word(word: Word) -> str:
    """Quoted text in '', expansions as $name, ${name OP arg}, $((...)) and $(...)."""
    out = []
    for part in word.parts:
        if isinstance(part, Literal):
            out.append(f"'{part.text}'" if part.quoted else part.text)
        elif isinstance(part, Parameter):
            argument = show_word(part.argument) if part.argument is not None else ""
            quote = '"' if part.quoted else ""
            inner = f"#{part.name}" if part.op == "length" else f"{part.name}{part.op}{argument}"
            out.append(f"{quote}${{{inner}}}{quote}")
        elif isinstance(part, Arithmetic):
            out.append(f"$(({show_word(part.expression)}))")
        else:
            assert isinstance(part, CommandSubstitution)
            out.append(f"$({show(part.body)})")
    return "".join(out)


@pytest.mark.parametrize(
    ("script", "tree"),
    [
        ("echo hello world", "[echo hello world]"),
        ("", ""),
        ("  # only a comment", ""),
        ("a; b & c", "[a] ; [b] & ; [c]"),
        ("a && b || c", "[a] && [b] || [c]"),
        ("a &&\n b", "[a] && [b]"),
        ("! a | b | c", "! [a] | [b] | [c]"),
        ("a |\n b", "[a] | [b]"),
        ("X=1 Y=$X env", "[X=1 Y=${X} env]"),
        ("echo X=1", "[echo X=1]"),
        ("'X'=1 cmd", "['X'=1 cmd]"),
        ("echo 'a b' \"c $d\" e\\ f", "[echo 'a b' 'c '\"${d}\" e' 'f]"),
        ("echo '' \"\"", "[echo '' '']"),
        ("echo ${x:-a b} ${#y} ${z%%.*} ${1} $10", "[echo ${x:-a b} ${#y} ${z%%.*} ${1} ${1}0]"),
        ("echo ${#}", "[echo ${#}]"),
        ("echo $? $# $@ $* $$ $! $0 $", "[echo ${?} ${#} ${@} ${*} ${$} ${!} ${0} $]"),
        ("echo $((i + $j * 2))", "[echo $(('i + '\"${j}\"' * 2'))]"),
        ("echo $(hostname; echo x) `echo b`", "[echo $([hostname] ; [echo x]) $([echo b])]"),
        ('echo "$(echo "in")"', "[echo $([echo 'in'])]"),
        ("echo $(case x in x) echo y;; esac)", "[echo $(case x x)<[echo y]>)]"),
        ("echo a > f 2>&1 >> g < h 2>/dev/null", "[echo a 1>f 2>&1 1>>g 0<h 2>/dev/null]"),
        ("> f", "[1>f]"),
        ("cat <<EOF\nhi $x\nEOF\necho after", "[cat 0<<'hi '\"${x}\"'\n'] ; [echo after]"),
        ("cat <<'EOF'\nhi $x\nEOF", "[cat 0<<'hi $x\n']"),
        ("cat <<-EOF\n\thi\n\tEOF", "[cat 0<<-'hi\n']"),
        ("{ a; b; }", "{[a] ; [b]}"),
        ("{ a; } > f", "{[a]} 1>f"),
        ("(a; b) | c", "([a] ; [b]) | [c]"),
        ("if a; then b; fi", "if<[a]> then<[b]>"),
        (
            "if a; then b; elif c; then d; else e; fi",
            "if<[a]> then<[b]> if<[c]> then<[d]> else<[e]>",
        ),
        ("if a\nthen\n  b\nfi", "if<[a]> then<[b]>"),
        ("while true; do echo hello; sleep 1; done", "while<[true]> do<[echo hello] ; [sleep 1]>"),
        ("until [ $i -gt 3 ]; do :; done", "until<[[ ${i} -gt 3 ]]> do<[:]>"),
        ("while read l; do echo $l; done < f", "while<[read l]> do<[echo ${l}]> 0<f"),
        ("for i in 1 2 3; do echo $i; done", "for i in<1 2 3> do<[echo ${i}]>"),
        ("for i\ndo echo $i; done", "for i in<@> do<[echo ${i}]>"),
        ("for i in; do :; done", "for i in<> do<[:]>"),
        ("for done in a; do :; done", "for done in<a> do<[:]>"),
        ("echo done fi then", "[echo done fi then]"),
        ("case $x in a|b) echo ab;; (*) ;; esac", "case ${x} a|b)<[echo ab]> *)<>"),
        ("case x in\n a)\n  echo a\n  ;;\nesac", "case x a)<[echo a]>"),
        ("case x in a) echo a; esac", "case x a)<[echo a]>"),
        ("f() { echo $1; }; f a", "def f {[echo ${1}]} ; [f a]"),
        ("f()\n{\n echo\n}", "def f {[echo]}"),
        ("echo a\\\nb", "[echo ab]"),
        ("function f { :; }; function g() (:)", "def f {[:]} ; def g ([:])"),
        ("echo a &> f", "[echo a 1&>f]"),
        ("echo ${x/a*/b} ${x//a} ${x:1:2}", "[echo ${x/a*} ${x//a} ${x:1:2}]"),
        ("echo a # comment\necho b", "[echo a] ; [echo b]"),
        ("echo a#b", "[echo a#b]"),
    ],
)  # fmt: skip
def test_scripts_parse(script: str, tree: str) -> None:
    assert show(parse(script)) == tree


@pytest.mark.parametrize(
    ("script", "message", "incomplete"),
    [
        ("done", 'unexpected "done"', False),
        ("echo a; fi", 'unexpected "fi"', False),
        ("then", 'unexpected "then"', False),
        ("}", 'unexpected "}"', False),
        ("if true; then fi", 'unexpected "fi"', False),
        ("if true; fi", 'unexpected "fi" (expecting "then")', False),
        ("while true; done", 'unexpected "done" (expecting "do")', False),
        ("for i in 1 2; echo $i; done", 'unexpected word (expecting "do")', False),
        ("for 1 in a; do :; done", "bad for loop variable", False),
        ("case x in a b) ;; esac", 'unexpected word (expecting ")")', False),
        ("case x in a) echo; fi", 'unexpected "fi" (expecting "esac")', False),
        ("echo ;;", 'unexpected ";;"', False),
        ("; echo", 'unexpected ";"', False),
        ("& echo", 'unexpected "&"', False),
        ("| echo", 'unexpected "|"', False),
        ("echo a ||| b", 'unexpected "|"', False),
        ("echo )", 'unexpected ")"', False),
        ("( )", 'unexpected ")"', False),
        ("{ }", 'unexpected "}"', False),
        ("echo <", "unexpected end of file", True),
        ("echo > ;", 'unexpected ";"', False),
        ("echo <(true)", 'unexpected "("', False),
        ("[[ a == a ]] && echo a (x)", 'unexpected "("', False),
        ("echo (x)", 'unexpected word (expecting ")")', False),
        ("1f() { :; }", "bad function name", False),
        ("f() echo", "unexpected word", False),
        ("echo ${x^^}", "bad substitution", False),
        ("function", "unexpected end of file", True),
        ("echo ${}", "bad substitution", False),
        ("echo $((1 + 2)", "missing '))'", False),
        ("echo 'open", "unterminated quoted string", True),
        ('echo "open', "unterminated quoted string", True),
        ("echo `open", "EOF in backquote substitution", True),
        ("echo $(open", 'unexpected end of file (expecting ")")', True),
        ("echo ${open", "missing '}'", True),
        ("if true; then", "unexpected end of file", True),
        ("if true; then echo", 'unexpected end of file (expecting "fi")', True),
        ("while true; do :", 'unexpected end of file (expecting "done")', True),
        ("echo a &&", "unexpected end of file", True),
        ("echo a |", "unexpected end of file", True),
        ("{ echo", 'unexpected end of file (expecting "}")', True),
        ("case x in", 'unexpected end of file (expecting ")")', True),
    ],
)
def test_syntax_errors_say_what_ash_says(script: str, message: str, incomplete: bool) -> None:
    with pytest.raises(ShellSyntaxError) as raised:
        parse(script)
    assert str(raised.value) == f"syntax error: {message}"
    assert isinstance(raised.value, ShellIncomplete) == incomplete
