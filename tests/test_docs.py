"""The README documents every command-line option, and ``--version`` works."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from zc_proxies import __version__
from zc_proxies.cli import build_parser, main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _options(parser: argparse.ArgumentParser, path: str = "zcbench") -> list[tuple[str, str]]:
    out = []
    for action in parser._actions:  # argparse keeps no public list of a parser's options
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _options(sub, f"{path} {name}")
        elif action.option_strings and action.dest != "help":
            out.append((path, max(action.option_strings, key=len)))
    return out


def test_every_option_is_in_the_readme():
    missing = sorted({f"{cmd}: {opt}" for cmd, opt in _options(build_parser())
                      if not re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", README)})
    assert not missing, "options the README does not document: " + ", ".join(missing)


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"zcbench {__version__}"
