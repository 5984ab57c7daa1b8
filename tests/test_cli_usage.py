"""The command line refuses to guess (issue 16): no option abbreviations in any subcommand, and a
subcommand's unknown option is reported with that subcommand's usage, exit status 2."""

from __future__ import annotations

import argparse
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

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


# ---------------------------------------------------------------------- Ctrl-C, one behaviour

ROOT = Path(__file__).resolve().parent.parent


def _fake_venv(tmp_path: Path) -> Path:
    """A venv stand-in for `make run`: this interpreter, and an edge-runtime script like the console
    script pip writes, running this checkout (the Makefile's setup is not under test here)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/python").symlink_to(sys.executable)
    script = venv / "bin/edge-runtime"
    script.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                      "from edge_runtime.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    (venv / ".installed-run").touch()
    return venv


def _make_run_ctrl_c(tmp_path: Path, venv: Path, after: bytes, timeout: float = 120) -> tuple[str, str]:
    """`make run` on a terminal; once `after` is printed, Ctrl-C: SIGINT to the terminal's foreground
    process group (make and the service), as the terminal driver does. Returns (how make ended, output)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a new session whose controlling terminal is the pty
        try:
            os.chdir(ROOT)
            os.environ["TMPDIR"] = str(tmp_path)  # the demo's state_dir, kept out of the shared /tmp
            # As at a terminal: a test run started in the background (CI, nohup ... &) has
            # SIGINT ignored, and an ignored signal stays ignored across exec, so make would
            # never see the Ctrl-C the user's make sees.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.execvp("make", ["make", "--no-print-directory", f"VENV={venv}", "-o", f"{venv}/.installed-run", "run"])
        finally:
            os._exit(127)
    out, sent, deadline = b"", False, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sent and after in out:
                os.killpg(os.tcgetpgrp(fd), signal.SIGINT)
                sent = True
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: every process on the terminal has gone
                    break
                if not chunk:
                    break
                out += chunk
    finally:
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert sent, f"never saw {after!r}:\n{out.decode(errors='replace')}"
    how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"
    return how, out.decode(errors="replace")


def test_ctrl_c_ends_make_run_the_same_way_every_time(tmp_path):
    """README: the service drains its sinks and exits 0; make, which the terminal interrupts too,
    waits for it and then ends by that SIGINT, quietly. Pressed while results flow or at start-up."""
    venv = _fake_venv(tmp_path)
    endings = []
    for i, after in enumerate([b'"kind":"read"', b"running: source synthetic", b'"kind":"read"']):
        (tmp_path / str(i)).mkdir()
        how, out = _make_run_ctrl_c(tmp_path / str(i), venv, after)
        assert "SIGINT: stopping" in out and "stopped; results still queued: stdout0 0" in out, out
        assert "Traceback" not in out and "make: ***" not in out, out
        endings.append(how)
    assert endings == [f"signal {int(signal.SIGINT)}"] * 3


def test_ctrl_c_before_the_service_is_up_is_the_same_quiet_stop(monkeypatch):
    """A Ctrl-C while `run` is still loading (before the service's own handler is installed) is a
    KeyboardInterrupt: `run` ends with 0 as a drained stop does, other commands with 130."""
    from edge_runtime import cli
    from edge_runtime.cli import decode as decode_cli, run as service_cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(service_cli, "cmd_run", interrupted)
    monkeypatch.setattr(decode_cli, "run", interrupted)
    assert cli.main(["run"]) == 0
    assert cli.main([]) == 0  # no command: the demo, i.e. run
    assert cli.main(["decode", "x.png"]) == 130


def _first_demo_id(tmpdir: Path) -> int:
    p = subprocess.Popen([sys.executable, "-m", "edge_runtime", "run"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, env={**os.environ, "TMPDIR": str(tmpdir)})
    try:
        first = json.loads(p.stdout.readline())
        p.send_signal(signal.SIGINT)
        p.stdout.read()
        assert p.wait(timeout=60) == 0
    finally:
        if p.poll() is None:
            p.kill()
    return first["id"]


def test_demo_ids_start_at_1_then_continue_by_blocks_as_the_readme_says(tmp_path):
    """README: every demo shares one state folder in the temporary directory; ids are reserved in
    blocks of 1000 and never reused, so a fresh folder starts at 1 and the next demo at 1001."""
    assert [_first_demo_id(tmp_path), _first_demo_id(tmp_path)] == [1, 1001]
    assert [p.name for p in tmp_path.iterdir()] == [f"edge-runtime-demo-{os.getuid()}"]
    top = (ROOT / "README.md").read_text().split("## ", 1)[0]
    assert "edge-runtime-demo-<uid>" in top and "first demo starts at id 1, the next at 1001" in " ".join(top.split())
