"""The `ssmkit` command: one subcommand per module here."""

from __future__ import annotations

import argparse
import sys

from . import bench, compare, env


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssmkit", description="State space sequence models: tools and benchmarks")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (env, bench, compare):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, TypeError) as exc:
        print(f"ssmkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
