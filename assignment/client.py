"""Python client of the assignment service.

Two modes:
- remote (default): every `assign` is one HTTP call on a pooled connection with a short
  timeout; on any failure (timeout, refused connection, error status, bad body) it returns the
  control variant, flagged `fallback=True`, so an app never fails because abmesh is down.
- local (`local=True`): the client pulls the experiment configs (`GET /v1/configs`, revalidated
  with ETag every `refresh_interval` seconds; it needs the reader `token`, since specs hold
  their overrides) and hashes in-process with the same code as the server, so answers cost
  microseconds and survive a service outage.  Exposures are reported through
  `POST /v1/exposures` as what was served (unit, variant, and the generation of the spec that
  chose it), so a split changed since on the server does not change the arm recorded; that
  needs the `writer_token` (default: `token`, enough if it is the admin one).  They go in
  batches, at the latest `exposure_interval` seconds after the first of a batch (checked on each
  call: no thread); a failed report is kept for the next one (up to EXPOSURE_BACKLOG exposures
  per experiment).  Call `flush()` or `close()` before exiting.  Sticky specs are always asked
  of the server, which holds the records.

The fallback variant is the spec's control when the client knows the spec (local mode, or after
`refresh()`), else `fallback_variant` with no header.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from assignment.assign import assign as assign_local
from experiments.errors import AbmeshError
from experiments.loader import spec_from_mapping
from experiments.spec import ExperimentSpec

log = logging.getLogger("abmesh.client")
EXPOSURE_BATCH = 500
EXPOSURE_BACKLOG = 50_000


@dataclass(frozen=True, slots=True)
class Local:
    """A spec as local evaluation uses it: with the served weights, its state, its generation."""

    spec: ExperimentSpec
    running: bool
    generation: int


@dataclass(frozen=True, slots=True)
class Served:
    """An exposure to report: what the unit was served, by which generation, when."""

    unit: str
    variant: str
    generation: int
    at: float = field(default_factory=time.time)
    segments: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class ClientAssignment:
    experiment: str
    unit: str
    variant: str
    in_experiment: bool
    header_name: str | None
    header_value: str | None
    reason: str
    fallback: bool = False  # True: the service could not be asked; this is the control variant
    error: str | None = None


class AssignmentClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 0.25,
        api_key: str | None = None,
        token: str | None = None,
        writer_token: str | None = None,
        local: bool = False,
        refresh_interval: float = 30.0,
        exposure_interval: float = 5.0,
        fallback_variant: str = "control",
        max_connections: int = 32,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.local = local
        self.refresh_interval = refresh_interval
        self.exposure_interval = exposure_interval
        self.fallback_variant = fallback_variant
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers={
                **({"x-api-key": api_key} if api_key else {}),
                **({"Authorization": f"Bearer {token}"} if token else {}),
            },
            transport=transport,
        )
        writer = writer_token or token
        self._writer_headers = {"Authorization": f"Bearer {writer}"} if writer else {}
        self._specs: dict[str, Local] = {}
        self._etag: str | None = None
        self._checked_at = float("-inf")
        self._exposed: dict[str, list[Served]] = {}
        self._first_pending: float | None = None

    # remote

    def assign(
        self,
        experiment: str,
        unit: str,
        *,
        headers: Mapping[str, str] | None = None,
        segments: Mapping[str, str] | None = None,
    ) -> ClientAssignment:
        """The unit's variant; `segments` (the unit's values of the spec's declared segments)
        are recorded with its exposure."""
        if self.local:
            found = self._local_spec(experiment)
            if found is not None and not found.spec.sticky:
                return self._assign_here(found, unit, headers, segments)
        try:
            response = self._http.get(
                f"/v1/assign/{quote(experiment, safe='')}",
                params={"unit": unit, **{f"segment.{k}": v for k, v in (segments or {}).items()}},
                headers=dict(headers or {}),
            )
            response.raise_for_status()
            return _from_body(response.json())
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            return self._fallback(experiment, unit, _describe(exc))

    def assign_many(
        self, experiment: str, units: Sequence[str], *, headers: Mapping[str, str] | None = None
    ) -> list[ClientAssignment]:
        if self.local:
            found = self._local_spec(experiment)
            if found is not None and not found.spec.sticky:
                return [self._assign_here(found, u, headers) for u in units]
        try:
            response = self._http.post(
                "/v1/assign",
                json={
                    "units": list(units),
                    "experiments": [experiment],
                    "headers": dict(headers or {}),
                },
            )
            response.raise_for_status()
            return [_from_body(item) for item in response.json()["assignments"]]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            return [self._fallback(experiment, u, _describe(exc)) for u in units]

    def _fallback(self, experiment: str, unit: str, error: str) -> ClientAssignment:
        log.warning("abmesh assign failed, using control for %s: %s", experiment, error)
        known = self._specs.get(experiment)
        if known is None:
            return ClientAssignment(
                experiment,
                unit,
                self.fallback_variant,
                False,
                None,
                None,
                "fallback",
                fallback=True,
                error=error,
            )
        control = known.spec.control_variant
        return ClientAssignment(
            experiment,
            unit,
            control.key,
            False,
            known.spec.header,
            control.header_value,
            "fallback",
            fallback=True,
            error=error,
        )

    # local evaluation

    def refresh(self) -> None:
        """Fetch the configs unless unchanged (ETag); raises httpx.HTTPError on failure."""
        headers = {"If-None-Match": self._etag} if self._etag else {}
        response = self._http.get("/v1/configs", headers=headers)
        self._checked_at = time.monotonic()
        if response.status_code == 304:
            return
        response.raise_for_status()
        specs = {}
        for item in response.json()["experiments"]:
            status = item["status"]
            spec = spec_from_mapping(item["spec"]).with_weights(status["weights"])
            specs[item["name"]] = Local(spec, status["state"] == "running", item["generation"])
        self._specs, self._etag = specs, response.headers.get("ETag")

    def _local_spec(self, experiment: str) -> Local | None:
        if time.monotonic() - self._checked_at >= self.refresh_interval:
            try:
                self.refresh()
            except (httpx.HTTPError, ValueError, KeyError, TypeError, AbmeshError) as exc:
                log.warning("abmesh configs not refreshed, using the last ones: %s", exc)
                self._checked_at = time.monotonic()  # do not retry on every call
        return self._specs.get(experiment)

    def _assign_here(
        self,
        found: Local,
        unit: str,
        headers: Mapping[str, str] | None,
        segments: Mapping[str, str] | None = None,
    ) -> ClientAssignment:
        spec = found.spec
        try:
            a = assign_local(spec, unit, headers=headers, active=found.running)
        except AbmeshError as exc:
            return self._fallback(spec.name, unit, str(exc))
        full = False
        if a.in_experiment:
            pending = self._exposed.setdefault(spec.name, [])
            pending.append(Served(unit, a.variant, found.generation, segments=segments))
            full = len(pending) >= EXPOSURE_BATCH
            if self._first_pending is None:
                self._first_pending = time.monotonic()
        due = self._first_pending is not None and (
            time.monotonic() - self._first_pending >= self.exposure_interval
        )
        if full or due:
            self.flush()
        return ClientAssignment(
            spec.name,
            unit,
            a.variant,
            a.in_experiment,
            a.header_name,
            a.header_value,
            a.reason.value,
        )

    def flush(self) -> None:
        """Report the exposures of local assignments to the service; keep what fails."""
        pending, self._exposed, self._first_pending = self._exposed, {}, None
        for experiment, exposed in pending.items():
            first: dict[str, Served] = {}  # the service keeps a unit's first exposure
            for s in exposed:
                first.setdefault(s.unit, s)
            served = list(first.values())
            for start in range(0, len(served), EXPOSURE_BATCH):
                batch = [
                    {"experiment": experiment, "unit": s.unit, "variant": s.variant,
                     "generation": s.generation, "timestamp": s.at, "segments": s.segments}
                    for s in served[start : start + EXPOSURE_BATCH]
                ]  # fmt: skip
                try:
                    response = self._http.post(
                        "/v1/exposures", json={"exposures": batch}, headers=self._writer_headers
                    )
                    response.raise_for_status()
                except httpx.HTTPError as exc:
                    log.warning("abmesh exposures not reported for %s: %s", experiment, exc)
                    self._keep(experiment, served[start:])
                    break
                _warn_rejected(experiment, response)

    def _keep(self, experiment: str, served: list[Served]) -> None:
        backlog = self._exposed.setdefault(experiment, [])
        backlog.extend(served[: max(EXPOSURE_BACKLOG - len(backlog), 0)])
        if self._first_pending is None:
            self._first_pending = time.monotonic()

    # lifetime

    def close(self) -> None:
        if self.local:
            self.flush()
        self._http.close()

    def __enter__(self) -> AssignmentClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _from_body(body: Mapping[str, Any]) -> ClientAssignment:
    header = body["header"]
    return ClientAssignment(
        body["experiment"],
        body["unit"],
        body["variant"],
        bool(body["in_experiment"]),
        header["name"],
        header["value"],
        body["reason"],
    )


def _warn_rejected(experiment: str, response: httpx.Response) -> None:
    """Log exposures the service refused (the experiment stopped, say): not kept, since sending
    them again would not help."""
    try:
        rejected = response.json()["rejected"]
        if rejected:
            log.warning("abmesh refused %d exposures of %s, the first: %s",
                        len(rejected), experiment, rejected[0]["error"])  # fmt: skip
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        log.warning("abmesh exposures of %s: unexpected answer: %s", experiment, exc)


def _describe(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        try:
            return f"{exc.response.status_code}: {exc.response.json()['error']}"
        except (ValueError, KeyError, TypeError):
            return f"HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}"
