"""``vna keys`` and ``vna users``: API keys and local users, straight in the index.

Each change is also written to the audit trail (who: the operating-system user
running the command).  A new key is printed once, alone on the last line: only
its hash is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from vna.auth.credentials import hash_password, new_api_key
from vna.auth.roles import ROLES, check_role
from vna.errors import BadRequest
from vna.index.factory import make_index
from vna.index.security import AuditRecord, UserRecord
from vna.settings import Settings


def _archive_options(*parsers: argparse.ArgumentParser) -> None:
    """The archive options also after the action (``vna keys list --data D``);
    SUPPRESS keeps a value given before the action from being reset."""
    for p in parsers:
        for flag in ("--config", "--data", "--storage", "--index"):
            p.add_argument(flag, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def add_keys_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="keys_command", required=True)
    create = sub.add_parser("create", help="make a new API key (printed once)")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--site", help="the site(s) it may see and stores into (a,b)")
    create.add_argument("--label", default="", help="a note: who or what uses it")
    listing = sub.add_parser("list", help="list API keys (never the secrets)")
    revoke = sub.add_parser("revoke", help="revoke an API key")
    revoke.add_argument("id")
    _archive_options(create, listing, revoke)


def add_users_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="users_command", required=True)
    add = sub.add_parser("add", help="add a user (password from stdin, or asked)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--site", help="the site(s) the user may see (a,b)")
    listing = sub.add_parser("list", help="list users")
    rm = sub.add_parser("rm", help="remove a user and end their sessions")
    rm.add_argument("name")
    passwd = sub.add_parser("passwd", help="set a user's password (ends their sessions)")
    passwd.add_argument("name")
    _archive_options(add, listing, rm, passwd)


async def _with_index(settings: Settings, fn: Callable[[Any], Awaitable[int]]) -> int:
    index = make_index(settings.index_url)
    await index.open()
    try:
        return await fn(index)
    finally:
        await index.close()


async def _audit(index: Any, detail: str) -> None:
    who = f"cli:{getpass.getuser()}"
    rec = AuditRecord(time.time(), who, "cli", "admin", "success", detail=detail)
    await index.append_audit([rec])


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M") if t else "-"


def keys_main(settings: Settings, args: argparse.Namespace) -> int:
    async def go(index: Any) -> int:
        if args.keys_command == "create":
            key, rec = new_api_key(check_role(args.role), args.site or None, args.label)
            await index.add_key(rec)
            await _audit(index, f"api key {rec.id} created: role {rec.role}, site {rec.site}")
            print(f"API key {rec.id}: role {rec.role}, site {rec.site or '(all)'}")
            print("Store it now: it is shown only once.")
            print(key, flush=True)
        elif args.keys_command == "list":
            print(f"{'ID':<14}{'ROLE':<13}{'SITE':<14}{'CREATED':<18}{'REVOKED':<18}LABEL")
            for k in await index.list_keys():
                print(
                    f"{k.id:<14}{k.role:<13}{k.site or '(all)':<14}{_when(k.created_at):<18}"
                    f"{_when(k.revoked_at):<18}{k.label}"
                )
        else:
            await index.revoke_key(args.id)
            await _audit(index, f"api key {args.id} revoked")
            print(f"revoked {args.id}")
        return 0

    return asyncio.run(_with_index(settings, go))


def read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise BadRequest("the passwords differ")
    return first


def users_main(settings: Settings, args: argparse.Namespace) -> int:
    async def go(index: Any) -> int:
        cmd = args.users_command
        if cmd == "add":
            if args.name.startswith("oidc:"):
                raise BadRequest("names starting with oidc: are kept for sign-in at the issuer")
            pw_hash = await asyncio.to_thread(hash_password, read_password())
            user = UserRecord(args.name, pw_hash, check_role(args.role), args.site, time.time())
            await index.add_user(user)
            await _audit(index, f"user {user.name} added: role {user.role}, site {user.site}")
            print(f"added {user.name} ({user.role}, site {user.site or '(all)'})")
        elif cmd == "list":
            for u in await index.list_users():
                print(f"{u.name:<24}{u.role:<13}{u.site or '(all)':<14}{_when(u.created_at)}")
        elif cmd == "rm":
            await index.remove_user(args.name)
            await _audit(index, f"user {args.name} removed")
            print(f"removed {args.name}")
        else:
            pw_hash = await asyncio.to_thread(hash_password, read_password())
            await index.set_password(args.name, pw_hash)
            await _audit(index, f"password of {args.name} changed")
            print(f"password changed for {args.name}")
        return 0

    return asyncio.run(_with_index(settings, go))


__all__ = ["add_keys_arguments", "add_users_arguments", "keys_main", "users_main"]
