"""Every command's --help shows what each option defaults to (the house rule: `--help` shows defaults)."""
from __future__ import annotations

import argparse
import importlib

import pytest

COMMANDS = ["bench.__main__", "bench.folder", "bench.lofo", "bench.wild", "digitpipe.export.bundle",
            "digitpipe.export.check", "digitpipe.export.cli", "digitpipe.export.detector", "digitpipe.export.sequence",
            "digitpipe.runtime.cli", "digitpipe.train.cli", "digitpipe.train.detector", "digitpipe.train.real_photos",
            "digitpipe.train.sequence"]


class _Caught(Exception):
    pass


def parser_of(module: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser a command's main() builds, caught where it parses (nothing runs)."""
    caught = []

    def parse_args(self, args=None, namespace=None):
        caught.append(self)
        raise _Caught

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
    with pytest.raises(_Caught):
        importlib.import_module(module).main([])
    return caught[0]


def undocumented_defaults(parser: argparse.ArgumentParser, name: str) -> list[str]:
    """Options with a default that --help would not show: no help text, or a formatter that
    does not print defaults."""
    missing = []
    shows = issubclass(parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                missing += undocumented_defaults(subparser, f"{name} {sub}")
            continue
        # identity, not ==: a default of 0 or 0.0 is a value --help must show, unlike a flag's False
        if not action.option_strings or action.default is None or action.default is False \
                or action.default == argparse.SUPPRESS:
            continue
        if not action.help or not (shows or "%(default)" in action.help):
            missing.append(f"{name} {action.option_strings[-1]}")
    return missing


@pytest.mark.parametrize("module", COMMANDS)
def test_every_option_with_a_default_shows_it_in_help(module, monkeypatch):
    parser = parser_of(module, monkeypatch)
    assert undocumented_defaults(parser, module) == []


def test_the_check_sees_an_option_without_help():
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--shown", default=3, help="documented")
    p.add_argument("--hidden", default="x")
    p.add_argument("--zero", type=int, default=0)
    p.add_argument("--flag", action="store_true")
    assert undocumented_defaults(p, "demo") == ["demo --hidden", "demo --zero"]
    plain = argparse.ArgumentParser()
    plain.add_argument("--plain", default=1, help="no default printed")
    assert undocumented_defaults(plain, "demo") == ["demo --plain"]
