"""The command line refuses to guess (issue 16): no option abbreviations in any subcommand, and a
subcommand's unknown option is reported with that subcommand's usage, exit status 2."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from edge_runtime.cli import build_parser


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_runtime", *args], capture_output=True, text=True, timeout=120)


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(subcommand path, parser) for the top level and every subcommand, nested ones included."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def _abbreviation_cases():
    cases = []
    for path, parser in _parsers(build_parser()):
        if not path:
            continue
        longs = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
        # Fill the required positionals, so the only thing wrong is the abbreviated option.
        positionals = ["x" for a in parser._actions
                       if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
                       and a.nargs not in ("?", "*")]
        for opt in sorted(longs):
            abbrev = opt[:-1]
            if len(abbrev) > 3 and not any(o != opt and o.startswith(abbrev) for o in longs):
                cases.append(pytest.param(path, positionals, opt, abbrev, id=" ".join((*path, abbrev))))
    return cases


CASES = _abbreviation_cases()


def test_every_subcommand_is_covered():
    covered = {c.values[0] for c in CASES}
    for path in [("decode",), ("run",), ("check-config",), ("models",), ("bench",), ("bench", "decode"),
                 ("bench", "soak"), ("bench", "photos")]:
        assert path in covered


@pytest.mark.parametrize("path,positionals,opt,abbrev", CASES)
def test_every_subcommand_refuses_abbreviated_options(capsys, path, positionals, opt, abbrev):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*path, *positionals, abbrev])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert f"usage: edge-runtime {' '.join(path)} " in err.splitlines()[0]
    assert f"unrecognized arguments: {abbrev}" in err


def test_decode_typo_prints_decode_usage_and_exits_2(tmp_path):
    p = run_cli("decode", "--jsn", str(tmp_path / "x.png"))
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith("usage: edge-runtime decode ")
    assert "edge-runtime decode: error: unrecognized arguments: --jsn" in p.stderr
    assert "COMMAND" not in p.stderr  # not the top-level usage


def test_run_conf_is_not_taken_for_config(tmp_path):
    p = run_cli("run", "--conf", str(tmp_path / "missing.toml"))
    assert p.returncode == 2
    assert p.stderr.startswith("usage: edge-runtime run ")
    assert "edge-runtime run: error: unrecognized arguments: --conf" in p.stderr


def test_check_config_conf_is_an_error(tmp_path):
    p = run_cli("check-config", "--conf", str(tmp_path / "x.toml"))
    assert p.returncode == 2
    assert "edge-runtime check-config: error: unrecognized arguments: --conf" in p.stderr


def test_full_options_and_top_level_errors_still_work(tmp_path):
    ns = build_parser().parse_args(["run", "--config", "a.toml"])
    assert ns.config == "a.toml" and ns.func.__name__ == "cmd_run"
    ns = build_parser().parse_args(["decode", "--json", "a.png"])
    assert ns.json is True and ns.paths == ["a.png"]
    p = run_cli("--vers")
    assert p.returncode == 2 and p.stderr.startswith("usage: edge-runtime [-h]")
