"""One CLI language: the same flag for the same thing in every sub-command, and an
example in every sub-command's help."""

from __future__ import annotations

import argparse

import pytest

from caloforge.cli.main import COMMANDS, build_parser

#: flag -> the commands that have the concept (and so must spell it this way)
SHARED_FLAGS = {
    "-n": ("simulate", "generate"),
    "--n": ("simulate", "generate"),
    "--seed": ("simulate", "train", "generate", "run", "evaluate"),
    "--device": ("train", "generate", "run", "evaluate", "bench"),
    "--threads": ("simulate", "train", "generate", "run", "evaluate", "bench"),
    "--batch-size": ("generate", "bench"),
    "--no-progress": ("simulate", "train", "generate", "run", "evaluate"),
    "-o": ("simulate", "train", "generate", "run", "evaluate", "bench", "export"),
}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {o: a for a in parser._actions for o in a.option_strings}


@pytest.fixture(scope="module")
def commands():
    return _subparsers(build_parser())


def test_every_listed_command_is_built(commands):
    assert set(commands) == set(COMMANDS)


@pytest.mark.parametrize("flag", sorted(SHARED_FLAGS))
def test_shared_flags_exist_where_the_concept_does(commands, flag):
    missing = [c for c in SHARED_FLAGS[flag] if flag not in _options(commands[c])]
    assert not missing, f"{flag} missing from {missing}"


def test_output_flag_is_one_option_with_both_long_spellings(commands):
    # -o, --out and --output name the same option wherever -o exists
    for name in SHARED_FLAGS["-o"]:
        opts = _options(commands[name])
        if name == "bench":  # bench writes its JSON with -o/--json
            assert opts["-o"] is opts["--json"]
            continue
        assert opts["-o"] is opts["--output"], name
        # --out: an explicit alias, or argparse's unique prefix of --output
        assert "--out" in opts or name in ("simulate", "generate", "export"), name


def test_aliases_parse_to_the_same_destination(commands):
    parser = build_parser()
    a = parser.parse_args(["evaluate", "--reference", "r.h5", "--generated", "g.h5",
                           "-o", "ev", "--no-progress", "--threads", "1"])
    b = parser.parse_args(["evaluate", "--reference", "r.h5", "--generated", "g.h5",
                           "--out", "ev", "--quiet", "--threads", "1"])
    assert (a.out, a.quiet, a.threads) == (b.out, b.quiet, b.threads) == ("ev", True, 1)
    s = parser.parse_args(["simulate", "--n", "5", "-o", "x.h5", "--threads", "2"])
    g = parser.parse_args(["generate", "m", "-n", "5", "-o", "x.h5"])
    assert (s.n_showers, s.threads) == (5, 2) and g.n == 5 and g.threads is None
    assert parser.parse_args(["bench", "m", "--batch-size", "1,10"]).batch_sizes == [1, 10]
    assert parser.parse_args(["train", "p", "--output", "d"]).out == "d"


def test_bad_thread_counts_fail_cleanly(tmp_path, capsys):
    from caloforge.cli.main import main

    code = main(["simulate", "-n", "2", "-o", str(tmp_path / "s.h5"), "--threads", "0"])
    assert code == 2
    assert "--threads must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "s.h5").exists()


def test_unknown_device_fails_before_work(tmp_path, capsys):
    from caloforge.cli.main import main

    code = main(["evaluate", "--reference", str(tmp_path / "r.h5"), "--generated",
                 str(tmp_path / "g.h5"), "-o", str(tmp_path / "ev"), "--device", "tpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--device tpu" in err


def _all_parsers(parser, prefix=()):
    for name, sp in _subparsers(parser).items():
        yield prefix + (name,), sp
        yield from _all_parsers(sp, prefix + (name,))


def test_every_command_help_has_an_example():
    without = [" ".join(path) for path, sp in _all_parsers(build_parser())
               if not (sp.epilog and "example" in sp.epilog.lower()
                       and f"caloforge {path[0]}" in sp.epilog)]
    assert not without, f"no example in the help of: {without}"
