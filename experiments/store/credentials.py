"""Store credentials: where the password comes from, and how it is kept out of every message.

A store URL may hold a password (`redis://:secret@host:6379/0`).  Every text that can leave
the process with a URL or a store error in it — error messages, `/readyz`, HTTP error bodies,
log lines, CLI output — goes through `redact`, so the password never does.  The password can
also stay out of the URL: `ABMESH_STORE_PASSWORD`, or `ABMESH_STORE_PASSWORD_FILE` (a mounted
Kubernetes Secret), is handed to the client when it connects.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from experiments.errors import StoreError

MASK = "***"
# scheme://userinfo@ anywhere in a text: the userinfo is where URLs carry a password.  Greedy
# up to the host's @, so a password with a raw @ in it is masked whole.
_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<userinfo>[^/?#\s]*)@", re.I)
# Query options that hold secrets in some clients' URLs (redis-py takes ?password=).
_SECRET_OPTION = re.compile(
    r"(?P<name>[?&][\w.\-]*(?:pass|secret|token|key)[\w.\-]*=)[^&#\s'\"]*", re.I
)


def redact(text: str, *secrets: str | None) -> str:
    """`text` — a store URL, an error message, a log line — with the passwords of the URLs in
    it, secret-looking query options, and every occurrence of `secrets` replaced by ***.  A
    user name stays: it tells which credentials were used."""
    text = _USERINFO.sub(_mask_userinfo, text)
    text = _SECRET_OPTION.sub(lambda m: f"{m['name']}{MASK}", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def _mask_userinfo(match: re.Match[str]) -> str:
    user, sep, _ = match["userinfo"].partition(":")
    # A lone field (`redis://secret@host`) may be a password to some clients: mask it too.
    return f"{match['scheme']}{user}:{MASK}@" if sep else f"{match['scheme']}{MASK}@"


def store_password(env: Mapping[str, str] | None = None) -> str | None:
    """The store password from ABMESH_STORE_PASSWORD or the file ABMESH_STORE_PASSWORD_FILE
    names (its content without the trailing newline), or None."""
    env = os.environ if env is None else env
    value, file = env.get("ABMESH_STORE_PASSWORD"), env.get("ABMESH_STORE_PASSWORD_FILE")
    if value and file:
        raise StoreError("set ABMESH_STORE_PASSWORD or ABMESH_STORE_PASSWORD_FILE, not both")
    if not file:
        return value or None
    try:
        text = Path(file).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise StoreError(f"ABMESH_STORE_PASSWORD_FILE {file!r}: {why}") from None
    if not text:
        raise StoreError(f"ABMESH_STORE_PASSWORD_FILE {file!r} is empty")
    return text
