"""The service's one settings object, read from the environment (12-factor, like Kubernetes
manifests set it).  A bad value stops start-up with a message that names the variable.

A token comes from ABMESH_<ROLE>_TOKEN or from the file named by ABMESH_<ROLE>_TOKEN_FILE (a
mounted Kubernetes Secret: not in the environment, where every child process and
/proc/PID/environ can read it); setting both is a mistake, refused rather than guessed at."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from assignment.auth import Role
from experiments.errors import AbmeshError
from experiments.names import check_name, check_token
from experiments.store import default_store_url


class SettingsError(AbmeshError):
    """An ABMESH_* environment variable holds a value the service cannot use."""


@dataclass(frozen=True, slots=True)
class Settings:
    store_url: str
    # The roles' bearer tokens (assignment/auth.py): a role without one is closed to all but
    # the admin token.  Secrets stay out of repr, so a logged Settings shows none.
    admin_token: str | None = field(default=None, repr=False)
    reader_token: str | None = field(default=None, repr=False)
    writer_token: str | None = field(default=None, repr=False)
    insecure: bool = False  # every role's routes open without a token: local use only
    api_key: str | None = field(default=None, repr=False)  # if set, /v1/assign needs `x-api-key`
    refresh_interval: float = 2.0  # seconds between config-change polls
    exposure_flush_interval: float = 1.0  # seconds: the most exposures a crash can lose
    # Bytes of exposures kept waiting while the store does not take them (some 250 bytes each)
    exposure_buffer_bytes: int = 64 * 1024 * 1024
    max_batch: int = 1000  # units x experiments in one POST /v1/assign
    max_events: int = 5000  # events in one POST /v1/events
    # Seconds a request waits for the store (see assignment.deadline): a sticky lookup, then
    # the unit is assigned by hash; an event batch (queue included), then 503 + Retry-After.
    sticky_timeout: float = 0.05
    events_timeout: float = 0.5
    # Seconds the admin, data, report and verdict routes wait (store, queue and analysis), then
    # 503 + Retry-After: under the 5 s webhook timeout Flagger users often set.
    api_timeout: float = 4.0
    # Import and exercise the analysis stack before /readyz turns ready (assignment.warmup);
    # off: ready at once, the first verdict or report pays for it (tests, one-off local runs).
    warmup: bool = True
    # Who folds the event log (experiments.store.logfold): `process`, a child folder process
    # of each service process; `thread`, a thread of it, behind its own appends; `off`, none
    # (then `abmesh fold` processes fold, and ingest workers do more).
    fold: str = "process"
    snapshot_interval: float = 300.0  # seconds between automatic snapshots; 0: none
    # Raw events (and their ids, against duplicates) kept this long once folded; export them
    # (`abmesh events export`) to keep them longer
    event_retention_days: float = 1.0
    max_body_bytes: int = 1_048_576
    extauthz_unit_header: str = "x-user-id"
    extauthz_unit_cookie: str | None = None
    extauthz_experiments: tuple[str, ...] = ()  # empty: every running experiment
    extauthz_unassigned: Literal["control", "none"] = "control"
    prometheus_url: str | None = None  # guardrail readings for /decision and Flagger hooks
    metrics_mesh: str = "istio"  # which query templates: istio or envoy

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls(store_url="")  # the defaults

        def text(name: str) -> str | None:
            return env.get(f"ABMESH_{name}") or None

        def number(name: str, default: float, low: float) -> float:
            raw = text(name)
            try:
                value = default if raw is None else float(raw)
            except ValueError:
                raise SettingsError(f"ABMESH_{name}={raw!r} is not a number") from None
            if not value >= low:
                raise SettingsError(f"ABMESH_{name}={raw!r} must be at least {low}")
            return value

        header = text("EXTAUTHZ_UNIT_HEADER") or d.extauthz_unit_header
        cookie = text("EXTAUTHZ_UNIT_COOKIE")
        names = tuple(n.strip() for n in (text("EXTAUTHZ_EXPERIMENTS") or "").split(",") if n)
        unassigned = text("EXTAUTHZ_UNASSIGNED") or d.extauthz_unassigned
        try:
            check_token(header, "ABMESH_EXTAUTHZ_UNIT_HEADER")
            if cookie is not None:
                check_token(cookie, "ABMESH_EXTAUTHZ_UNIT_COOKIE")
            for name in names:
                check_name(name, "ABMESH_EXTAUTHZ_EXPERIMENTS entry")
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        if unassigned not in ("control", "none"):
            raise SettingsError(
                f"ABMESH_EXTAUTHZ_UNASSIGNED={unassigned!r} must be 'control' or 'none'"
            )
        tokens = {role: _token(env, role) for role in Role}
        given = [(role, token) for role, token in tokens.items() if token is not None]
        for i, (role, token) in enumerate(given):
            for other, same in given[i + 1 :]:
                if token == same:
                    raise SettingsError(
                        f"{role.variable} and {other.variable} hold the same token: give each"
                        " role its own, or a request could not say which role it has"
                    )
        return cls(
            store_url=text("STORE") or default_store_url(),
            admin_token=tokens[Role.ADMIN],
            reader_token=tokens[Role.READER],
            writer_token=tokens[Role.WRITER],
            insecure=_flag("ABMESH_INSECURE", text("INSECURE")),
            warmup=text("WARMUP") is None or _flag("ABMESH_WARMUP", text("WARMUP")),
            fold=_fold(text("FOLD")),
            api_key=text("API_KEY"),
            refresh_interval=number("REFRESH_INTERVAL", d.refresh_interval, 0.05),
            exposure_flush_interval=number(
                "EXPOSURE_FLUSH_INTERVAL", d.exposure_flush_interval, 0.01
            ),
            exposure_buffer_bytes=int(
                number("EXPOSURE_BUFFER_BYTES", d.exposure_buffer_bytes, 1024)
            ),
            max_batch=int(number("MAX_BATCH", d.max_batch, 1)),
            max_events=int(number("MAX_EVENTS", d.max_events, 1)),
            sticky_timeout=number("STICKY_TIMEOUT", d.sticky_timeout, 0.001),
            events_timeout=number("EVENTS_TIMEOUT", d.events_timeout, 0.001),
            api_timeout=number("API_TIMEOUT", d.api_timeout, 0.001),
            snapshot_interval=number("SNAPSHOT_INTERVAL", d.snapshot_interval, 0),
            event_retention_days=number("EVENT_RETENTION_DAYS", d.event_retention_days, 0.001),
            max_body_bytes=int(number("MAX_BODY_BYTES", d.max_body_bytes, 1024)),
            extauthz_unit_header=header.lower(),
            extauthz_unit_cookie=cookie,
            extauthz_experiments=names,
            extauthz_unassigned="none" if unassigned == "none" else "control",
            prometheus_url=text("PROMETHEUS_URL"),
            metrics_mesh=_mesh(text("METRICS_MESH") or d.metrics_mesh),
        )

    @property
    def tokens(self) -> dict[Role, str]:
        """The configured tokens by role."""
        tokens = {
            Role.ADMIN: self.admin_token,
            Role.READER: self.reader_token,
            Role.WRITER: self.writer_token,
        }
        return {role: token for role, token in tokens.items() if token is not None}


# What an HTTP client can send in `Authorization: Bearer ...`: visible ASCII, no spaces.
_TOKEN = re.compile(r"[\x21-\x7e]+")


def _token(env: Mapping[str, str], role: Role) -> str | None:
    name = role.variable
    value, path = env.get(name) or None, env.get(f"{name}_FILE") or None
    if value is not None and path is not None:
        raise SettingsError(f"set {name} or {name}_FILE, not both")
    if path is not None:
        name = f"{name}_FILE={path!r}"
        try:
            value = Path(path).read_text()
        except (OSError, UnicodeError) as exc:
            raise SettingsError(f"{name}: cannot read the token: {exc}") from None
    if value is None:
        return None
    value = value.strip()  # a file written by `echo` ends in a newline
    if not value:
        raise SettingsError(f"{name}: the token is empty")
    if not _TOKEN.fullmatch(value):
        raise SettingsError(f"{name}: a token is visible ASCII without spaces")
    return value


def _flag(name: str, value: str | None) -> bool:
    if value is None or value.lower() in ("0", "false", "no", "off"):
        return False
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name}={value!r} must be 1 or 0 (true or false)")


def _fold(value: str | None) -> str:
    """process, thread or off; the flags of old (1/0, true/false) mean process and off."""
    if value is None or value.lower() in ("process", "1", "true", "yes", "on"):
        return "process"
    if value.lower() in ("thread", "off"):
        return value.lower()
    if value.lower() in ("0", "false", "no"):
        return "off"
    raise SettingsError(f"ABMESH_FOLD={value!r} must be process, thread or off")


def _mesh(value: str) -> str:
    if value not in ("istio", "envoy"):
        raise SettingsError(f"ABMESH_METRICS_MESH={value!r} must be 'istio' or 'envoy'")
    return value
