"""``smtptls manpage`` and ``smtptls completion``: built from the argparse tree, and usable.

The man page must name every command and option ``--help`` knows, render without a
warning in groff and in man(1); the bash completion script must complete real
sub-commands and options when bash runs it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys

import pytest

from smtptls.cli import manpage
from smtptls.cli.main import build_parser, main

GROFF = shutil.which("groff")
MAN = shutil.which("man")
BASH = shutil.which("bash")
ZSH = shutil.which("zsh")


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return build_parser()


@pytest.fixture(scope="module")
def page(parser) -> str:
    return manpage.render(parser)


def _options(p: argparse.ArgumentParser) -> list[str]:
    return [s for a in p._actions if a.help != argparse.SUPPRESS
            and not isinstance(a, argparse._HelpAction) for s in a.option_strings]


def test_manpage_has_every_command_and_option(parser, page):
    cmds = list(manpage.commands(parser))
    names = {c.name for c in cmds}
    # the nested ones too, and the two commands of this module
    assert {"smtptls reports serve", "smtptls tlsrpt collect", "smtptls config check",
            "smtptls manpage", "smtptls completion"} <= names
    for cmd in cmds:
        assert f'.SS "{manpage._esc(cmd.name)}"' in page, cmd.name
        for opt in _options(cmd.parser):
            assert manpage._esc(opt) in page, f"{cmd.name} {opt}"
    for opt in _options(parser):
        assert manpage._esc(opt) in page
    for section in ("NAME", "SYNOPSIS", "OPTIONS", "COMMANDS", "ENVIRONMENT", "FILES",
                    "EXIT STATUS"):
        assert f"\n.SH {section}\n" in page


def test_manpage_is_the_same_on_every_build(parser, page):
    assert manpage.render(build_parser()) == page
    assert page.startswith('.TH SMTPTLS 1 "" "smtptls ')


@pytest.mark.parametrize("text, expected", [
    pytest.param("--listen", "\\-\\-listen", id="dashes"),
    pytest.param("a\\b", "a\\eb", id="backslash"),
    pytest.param(".not a request", "\\&.not a request", id="leading-dot"),
    pytest.param("'not a request", "\\&'not a request", id="leading-quote"),
])
def test_roff_text_is_escaped(text, expected):
    assert manpage._lines(text) == expected


@pytest.mark.skipif(GROFF is None, reason="groff not installed (Debian groff-base)")
def test_manpage_renders_in_groff_without_warnings(tmp_path, page):
    src = tmp_path / "smtptls.1"
    src.write_text(page)
    done = subprocess.run([GROFF, "-man", "-Tutf8", "-ww", str(src)], capture_output=True,
                          timeout=60)
    assert done.returncode == 0 and done.stderr == b""
    text = done.stdout.decode()
    plain = "".join(c for i, c in enumerate(text) if c != "\b"
                    and (i + 1 >= len(text) or text[i + 1] != "\b"))
    assert "smtptls reports serve" in plain and "SMTPTLS_STATE_DIR" in plain


@pytest.mark.skipif(MAN is None, reason="man not installed (Debian man-db)")
def test_manpage_opens_with_man_l(tmp_path, page):
    src = tmp_path / "smtptls.1"
    src.write_text(page)
    done = subprocess.run([MAN, "-l", str(src)], capture_output=True, timeout=60,
                          env={"MANPAGER": "cat", "PAGER": "cat", "MANWIDTH": "100",
                               "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    assert done.returncode == 0, done.stderr
    assert b"smtptls policyd" in done.stdout and done.stderr == b""


def test_manpage_command_prints_the_page(capsys, page):
    assert main(["manpage"]) == 0
    assert capsys.readouterr().out == page


def _bash_complete(script: str, words: list[str]) -> list[str]:
    line = " ".join(words)
    program = (f"source /dev/stdin <<'EOF'\n{script}\nEOF\n"
               f"COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; COMP_LINE='{line}'; "
               f"COMP_POINT={len(line)}; _shtab_smtptls; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    done = subprocess.run([BASH, "--norc", "--noprofile", "-c", program], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [w for w in done.stdout.split() if w]


@pytest.fixture(scope="module")
def bash_script(parser) -> str:
    pytest.importorskip("shtab", reason="shtab not installed (pip install 'smtptls[completion]')")
    from smtptls.cli.completion import completion_script

    return completion_script(parser, "bash")


@pytest.mark.skipif(BASH is None, reason="bash not installed")
@pytest.mark.parametrize("words, expected", [
    pytest.param(["smtptls", "pol"], {"policyd", "policy-server"}, id="command"),
    pytest.param(["smtptls", "reports", "se"], {"serve"}, id="nested-command"),
    pytest.param(["smtptls", "policyd", "--lis"], {"--listen"}, id="option"),
    pytest.param(["smtptls", "completion", ""], {"bash", "zsh", "tcsh"}, id="choices"),
    pytest.param(["smtptls", "--log-format", ""], {"text", "json"}, id="global-choices"),
])
def test_bash_completion_completes(bash_script, words, expected):
    done = subprocess.run([BASH, "-n"], input=bash_script, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    if words[-1] == "":
        words = [*words[:-1], "''"]
    assert set(_bash_complete(bash_script, words)) == expected


def test_zsh_completion_is_built(parser):
    pytest.importorskip("shtab", reason="shtab not installed (pip install 'smtptls[completion]')")
    from smtptls.cli.completion import completion_script

    script = completion_script(parser, "zsh")
    assert script.startswith("#compdef smtptls") and "policy-server" in script
    if ZSH is not None:
        done = subprocess.run([ZSH, "-n"], input=script, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr


def test_completion_without_shtab_is_a_one_line_error():
    code = ("import sys; sys.modules['shtab'] = None\n"
            "from smtptls.cli.main import main\n"
            "sys.exit(main(['completion', 'bash']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "install smtptls[completion]" in done.stderr
