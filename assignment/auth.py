"""Who may call what: three bearer-token roles, closed unless configured.

Readers read what the service knows (statistics, raw events with unit ids, snapshots, reports,
verdicts, specs), writers ingest events, admins change experiments and may do everything else.
A reader may not write, so a dashboard's token cannot forge the conversions that drive a
promotion; a writer may not read, so an app that sends events cannot read other users' events.
Assignment is not a role: it stays open, or takes the API key (`x-api-key`), as configured.

A role with no token configured is closed, not open: a deployment that forgets a Secret
answers 401 naming the variable to set instead of serving its data to anyone.  Opening
everything takes an explicit `--insecure` (ABMESH_INSECURE=1), for local use.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from enum import StrEnum


class Role(StrEnum):
    READER = "reader"
    WRITER = "writer"
    ADMIN = "admin"

    @property
    def variable(self) -> str:
        """The environment variable that holds the role's token (or, with _FILE, its path)."""
        return f"ABMESH_{self.name}_TOKEN"

    @property
    def holders(self) -> tuple[Role, ...]:
        """The roles whose token opens this role's routes: the role itself, and admin."""
        return (self,) if self is Role.ADMIN else (self, Role.ADMIN)


def same_secret(given: str, expected: str) -> bool:
    # Constant-time: the time taken does not tell how much of a guess was right.
    return hmac.compare_digest(given.encode(), expected.encode())


def role_of(token: str, tokens: Mapping[Role, str]) -> Role | None:
    """The role whose token this is.  Every configured token is compared, in constant time, so
    the time taken tells neither how much of a guess was right nor which role it was near."""
    matches = [role for role, expected in tokens.items() if same_secret(token, expected)]
    return matches[0] if matches else None
