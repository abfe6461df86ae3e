"""The ``vna`` command: every subcommand opens the same archive from the same
options (``--data``, ``--storage``, ``--index``, ``--config``, or VNA_* env vars)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from typing import Any

from vna.errors import VnaError
from vna.settings import Settings, load_settings

Command = Callable[[Settings, argparse.Namespace], int]
COMMANDS: dict[str, Command] = {}


def command(name: str) -> Callable[[Command], Command]:
    def register(fn: Command) -> Command:
        COMMANDS[name] = fn
        return fn

    return register


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("archive (also VNA_DATA, VNA_STORAGE, VNA_INDEX, VNA_CONFIG)")
    g.add_argument("--config", help="TOML config file")
    g.add_argument("--data", help="data directory (default ./vna-data)")
    g.add_argument(
        "--storage", help="blob store URL: file:///path or s3://BUCKET/PREFIX?endpoint=URL"
    )
    g.add_argument("--index", help="index URL: sqlite:///path/index.db")
    g.add_argument("-v", "--verbose", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vna", description="vendor-neutral archive")
    sub = parser.add_subparsers(dest="command", required=True)
    from vna import cli_commands

    for name, (help_text, add_args) in cli_commands.PARSERS.items():
        p = sub.add_parser(name, help=help_text)
        _common(p)
        add_args(p)
    return parser


SETTING_ARGS = ("data", "storage", "index", "http", "dimse", "ae_title", "dev", "workers")


def settings_from(args: argparse.Namespace) -> Settings:
    cli: dict[str, Any] = {k: getattr(args, k, None) for k in SETTING_ARGS}
    if cli.get("dev") is False:
        cli["dev"] = None  # a flag not given must not override the config file
    return load_settings(args.config, **cli)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format=LOG_FORMAT)
    try:
        settings = settings_from(args)
        return COMMANDS[args.command](settings, args)
    except VnaError as exc:
        print(f"vna {args.command}: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def run(coro: Any) -> Any:
    return asyncio.run(coro)


if __name__ == "__main__":
    sys.exit(main())
