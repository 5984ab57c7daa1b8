"""`edge-runtime bench ...`: each benchmark is a module with `add_parser(subparsers)`.

The benchmarks live in edge_runtime/bench/ next to what they need; this module only gathers
them. To add one (e.g. `bench soak`), put `edge_runtime/bench/soak.py` with an `add_parser`
that registers its subparser and sets `func=`, and list it in BENCHES. A module that is
not present yet is simply not offered, like the top-level dispatcher does.
"""

from __future__ import annotations

BENCHES = [
    "edge_runtime.bench.decode",
    "edge_runtime.bench.soak",
    "edge_runtime.bench.photos",
    "edge_runtime.bench.line",
    "edge_runtime.bench.board",
]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="measure read rates and timings on synthetic frames")
    from edge_runtime.cli import add_subcommands

    add_subcommands(p.add_subparsers(dest="bench", metavar="BENCH"), BENCHES)

    def _help(args) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_help)
