"""``modelq keys``: API keys (new, hash, list)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from modelq.cli import (
    _echo_json,
    cli,
    handle_errors,
    pass_settings,
)
from modelq.errors import InvalidInput


@cli.group()
def keys() -> None:
    """API keys: each has an owner, who alone sees its jobs; the configuration keeps only hashes."""


@keys.command("new")
@click.argument("owner")
@click.option("--json", "as_json", is_flag=True, help="print {owner, key, hash} as one JSON object")
@handle_errors
def keys_new(owner: str, as_json: bool) -> None:
    """Make a key for OWNER: prints the key (shown once, stored nowhere) and the hash to configure."""
    from modelq.access import OWNER_PATTERN, hash_key, new_key

    if not OWNER_PATTERN.match(owner):
        raise InvalidInput(f"owner {owner!r} must be 1-200 letters, digits, '.', '_', '@' or '-'", field="owner")
    key = new_key()
    digest = hash_key(key)
    if as_json:
        _echo_json({"owner": owner, "key": key, "hash": digest})
        return
    click.echo(f"key for {owner} (give it to them; it is shown only now): {key}")
    click.echo("configure its hash, in modelq.yml:")
    click.echo(f'  api_keys:\n    {owner}: ["{digest}"]')
    click.echo(f"or in the environment: MODELQ_API_KEYS='{json.dumps({owner: [digest]})}'")


@keys.command("hash")
@handle_errors
def keys_hash() -> None:
    """Print the hash of a key read from standard input (to configure a key you already hold)."""
    from modelq.access import hash_key

    key = sys.stdin.readline().strip()
    if not key:
        raise InvalidInput('no key on standard input: echo "$KEY" | modelq keys hash', field="key")
    click.echo(hash_key(key))


@keys.command("list")
@pass_settings
@handle_errors
def keys_list(settings: Any) -> None:
    """The owners that have keys in the configuration in force, and how many each."""
    if not settings.api_keys:
        click.echo("no API keys configured: the API listens on loopback only")
    for owner, digests in sorted(settings.api_keys.items()):
        click.echo(f"{owner}\t{len(digests)} key(s)")
