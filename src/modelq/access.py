"""Who may use the API: API keys (kept only as hashes), their owners, and the loopback rule.

A key is a random token (``mq_...``) that only its holder ever sees; the configuration keeps
its SHA-256 (``sha256:<hex>``) under its owner's name (``api_keys: {alice: [sha256:...]}``).
A slow password hash would add nothing: the keys are 256-bit random, so nobody can guess one
from its hash, and a fast hash keeps every request cheap.

Each job belongs to the owner of the key that submitted it; other owners get 404 for it, its
events and its artifacts. With no key configured there are no owners, and the API must only
listen on a loopback address (:func:`check_api_address`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import socket
from collections.abc import Mapping

from modelq.errors import InsecureApi

KEY_PREFIX = "mq_"
HASH_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")
OWNER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,199}$")


def new_key() -> str:
    """A fresh API key: ``mq_`` and 43 URL-safe characters (256 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The form a key is configured in: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """The configured keys: finds the owner of a presented key.

    Args:
        hashes: owner -> that owner's key hashes (``Settings.api_keys``).
    """

    def __init__(self, hashes: Mapping[str, list[str]]) -> None:
        self._owners = {digest: owner for owner, digests in hashes.items() for digest in digests}

    def __bool__(self) -> bool:
        return bool(self._owners)

    @property
    def owners(self) -> list[str]:
        return sorted(set(self._owners.values()))

    def owner_of(self, key: str) -> str | None:
        """The owner of ``key``, or None when it is not a configured key."""
        digest = hash_key(key)
        owner = None
        for known, name in self._owners.items():
            if hmac.compare_digest(known, digest):  # every entry compared: the time says nothing
                owner = name
        return owner


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and names that resolve only to them (``localhost``)."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(address, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def check_api_address(host: str, keys: KeyRing) -> str:
    """Refuse to serve the API beyond this machine without keys; returns the access line to print.

    Raises:
        InsecureApi: no key is configured and ``host`` is not a loopback address.
    """
    if keys:
        return f"access: API keys required ({len(keys.owners)} owner(s): {', '.join(keys.owners)})"
    if not is_loopback(host):
        raise InsecureApi(
            f"refusing to serve the API on {host} with no API keys configured: anyone who can reach it could use "
            "it. Make a key with `modelq keys new OWNER` and set api_keys (MODELQ_API_KEYS), or listen on 127.0.0.1"
        )
    return f"access: no API keys configured, so the API listens on {host} (loopback) only; anyone on this machine can use it"
