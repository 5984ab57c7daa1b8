"""`edge-runtime` command line: decode, run, check-config, bench, models (and collect, fleet).

One module per command in this package (run.py: run and check-config; decode.py; models.py;
bench.py), each registering itself through `add_parser(subparsers)`. Commands of an optional
part (edge_runtime.fleet.cli) register the same way from their own package, so the list below
is the one place that says which commands exist. Expected errors end as one line on stderr
with exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from edge_runtime import __version__

# (module, present in every install). A module not yet present is simply not offered.
SUBCOMMANDS = [
    "edge_runtime.cli.decode",
    "edge_runtime.cli.run",
    "edge_runtime.cli.bench",
    "edge_runtime.cli.models",
    "edge_runtime.fleet.cli",
]


class UserError(Exception):
    """An error the user can fix; printed as one line, no traceback."""


class Parser(argparse.ArgumentParser):
    """argparse without abbreviations: a typo (`run --conf FILE`) is an error, never guessed to
    be the option it abbreviates (`--config`), so a later option cannot change what it means."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


class SubcommandParser(Parser):
    """A subcommand's parser reports the arguments it does not know itself, with its own usage
    (`edge-runtime decode: error: unrecognized arguments: --jsn`), instead of passing them up to
    the top-level parser, which would print the top-level usage. Nested subcommands (`bench
    decode`) get this class too: add_subparsers makes children of the parent's class."""

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201 - argparse's signature
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="edge-runtime", description="Read QR codes on a line and deliver every result.")
    p.add_argument("--version", action="version", version=f"edge-runtime {__version__}")
    add_subcommands(p.add_subparsers(dest="command", metavar="COMMAND", parser_class=SubcommandParser), SUBCOMMANDS)
    return p


def add_subcommands(sub, modules: list[str]) -> None:
    """Let each module register its subparser (`add_parser(sub)`); a module that is not
    installed is simply not offered (used here and by `edge-runtime bench`)."""
    for mod in modules:
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name == mod:
                continue
            raise
        m.add_parser(sub)


def _is_run(argv: list[str]) -> bool:
    """`run`, or no command at all (the demo): the first word that is not an option."""
    words = [a for a in argv if not a.startswith("-")]
    return not words or words[0] == "run"


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            # `edge-runtime` alone runs the embedded demo, like `edge-runtime run`.
            args = parser.parse_args(["run", *(argv or [])])
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"edge-runtime: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C while the service runs drains the sinks and returns 0 (service.loop). One that
        # comes while `run` is still loading models has nothing to drain: the same stop, so the
        # same quiet 0, whenever it is pressed. Other commands were interrupted: 130.
        return 0 if _is_run(sys.argv[1:] if argv is None else argv) else 130


if __name__ == "__main__":
    sys.exit(main())
