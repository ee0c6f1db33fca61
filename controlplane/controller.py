"""The rollout controller: each tick moves every experiment it holds a lease on by one step.

Per experiment, a tick decides, then applies:
1. Decide.  Read the experiment (spec + status), its operational guardrails (the metrics
   provider) and, in an A/B phase, its statistics; compute the next rollout state, the status
   (effective weights, analysis phase, conditions, conclusion) and the audit entries.
2. Persist all of it in one compare-and-set write of the status (`Store.commit_status`: one
   SQLite transaction, one Redis MULTI/EXEC).  A conflict (another writer got in) writes
   nothing; the next tick decides again from what is stored, so every move is audited once.
   Then record the looks taken (experiments.looks_log): history, not state, so a look that
   cannot be recorded is logged and changes nothing decided.
3. Apply the routes of the stored state to the experiment's own target, idempotently, every
   tick until confirmed: a crash or a router error after step 2 is repaired by the next tick.

What step 1 decides is `controlplane.judge`'s; it also holds the rules for a spec changed
during a rollout.  The controller never writes the spec, so a GitOps tool re-applying the same
spec changes nothing.

Leases are per experiment (`<uid>#rollout`), so several controllers share the work and each
experiment is driven by exactly one; an owner id that survives restarts resumes its leases at
once, and a dead controller's leases lapse after `lease_s`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import replace
from typing import Any

from controlplane.judge import Judge, state_of
from controlplane.metrics import MetricsProvider
from controlplane.observability import ControllerTelemetry
from controlplane.rollout import RolloutState, phase_of, route_plan
from controlplane.routing.plan import RoutePlan
from controlplane.routing.routers import sticky
from controlplane.targets import Resolved, Routers, blocker, claimant, claims
from experiments.errors import AbmeshError, ConflictError, NotFoundError
from experiments.logs import log_context
from experiments.looks_log import record_look
from experiments.spec import ExperimentSpec
from experiments.status import State, Status
from experiments.store import ExperimentRecord, Store
from experiments.store.protocol import LeaseStore

log = logging.getLogger("abmesh.controller")


MEMBER = "controller#"  # the lease each live controller holds under its own id


def lease_name(uid: str) -> str:
    return f"{uid}#rollout"


def default_lease_s(interval: float) -> float:
    """A few intervals: a dead controller's experiments are taken over within this plus one
    interval.  A live one renews every tick and checks it still holds the lease before it
    writes, so a slow tick that outlives its lease writes nothing."""
    return max(3 * interval, 5.0)


class Controller:
    def __init__(
        self,
        store: Store,
        routers: Routers,
        provider: MetricsProvider,
        *,
        owner: str,
        interval: float = 10.0,
        settle_s: float = 0.0,
        lease_s: float | None = None,
        experiments: Collection[str] = (),
        clock: Callable[[], float] = time.time,
        telemetry: ControllerTelemetry | None = None,
        leases: LeaseStore | None = None,
    ) -> None:
        self.store, self.routers = store, routers
        self.leases: LeaseStore = leases or store  # Kubernetes Leases: controlplane.kube
        # The Kubernetes mirror (controlplane.kube.source): objects into the store before a
        # tick, status back after it.
        self.before_tick: Callable[[], None] | None = None
        self.after_tick: Callable[[], None] | None = None
        self.owner, self.interval, self.clock = owner, interval, clock
        self.judge = Judge(store, routers, provider, owner, settle_s, clock)
        self.lease_s = lease_s if lease_s is not None else default_lease_s(interval)
        self.experiments = set(experiments)  # empty: every experiment with a rollout
        self.telemetry = telemetry or ControllerTelemetry(clock=clock)
        self.held: set[str] = set()  # uids whose lease this controller holds
        self.closed = False  # its leases given up: it takes none any more
        self.store_ok: tuple[bool, str] = (False, "no tick yet")
        self._shown: set[str] = set()  # experiments with series in the telemetry
        self._free_since: dict[str, float] = {}  # uid -> when first seen held by nobody
        self._adopted: set[str] = set()  # taken beyond the fair share: nobody else would

    # the loop

    def run(self, stop: threading.Event) -> None:
        """Tick every `interval` seconds until `stop` is set; the caller releases the leases."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.tick()
            except Exception:  # a store that fails mid-tick: the next tick tries again
                log.exception("controller tick failed")
                self.telemetry.tick_done(time.monotonic() - started, ok=False)
            stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def release_leases(self) -> None:
        """Give every lease up, for good: a tick still in flight (the process is stopping)
        takes none again, or it would hold it for a lease period after the hand-over."""
        self.closed = True
        for uid in sorted(self.held):
            try:
                self.leases.release_lease(lease_name(uid), self.owner)
            except AbmeshError as exc:  # the lease lapses on its own
                log.warning("lease of %s not released: %s", uid, exc)
        self.held.clear()
        self.telemetry.leases(0)
        with contextlib.suppress(AbmeshError):  # it lapses on its own
            self.leases.release_lease(f"{MEMBER}{self.owner}", self.owner)

    def tick(self) -> None:
        """One step for every experiment this controller can hold; never raises."""
        started = time.monotonic()
        ok = self._hook(self.before_tick)
        try:
            records = self.store.list_experiments()
            self.store_ok = (True, "store reachable")
        except AbmeshError as exc:
            self.store_ok = (False, f"store: {exc}")
            log.warning("tick skipped: %s", exc)
            self.telemetry.tick_done(time.monotonic() - started, ok=False)
            return
        targets: dict[str, Resolved] = {}
        for record in records:
            if record.spec.rollout is not None:
                try:
                    targets[record.uid] = self.routers.resolve(record.spec)
                except AbmeshError as exc:  # say so where its owner looks: the status
                    if record.state is State.RUNNING:
                        status = record.status.with_condition(
                            "RouteTargetReady", False, "NoTarget", str(exc), self.clock()
                        )
                        self._note(record, status)
        holders = claims(
            (r, targets[r.uid])
            for r in records
            if r.uid in targets and claimant(r, self._settled(r, targets[r.uid]))
        )
        wanted = [r for r in records if r.uid in targets and self._wanted(r, targets[r.uid])]
        held: set[str] = set()
        try:
            ordered, fair, overdue = self._share(wanted)
        except AbmeshError as exc:  # the leases cannot be read: drive nothing this tick
            log.warning("tick skipped: leases: %s", exc)
            self.held = set()  # not renewed: they lapse, and another controller may take them
            self.telemetry.leases(0)
            self.telemetry.tick_done(time.monotonic() - started, ok=False)
            return
        for record in ordered:
            beyond = len(held - self._adopted) >= fair and record.uid not in self._adopted
            if (beyond and record.uid not in overdue) or not self._lease(record.uid):
                continue
            if beyond:  # nobody else took it: keep it, or it would bounce every lease period
                self._adopted.add(record.uid)
            held.add(record.uid)
            with log_context(experiment_name=record.name):
                try:
                    self.step(record, targets[record.uid], holders)
                except Exception:  # one broken experiment must not hold up the others' rollbacks
                    ok = False
                    log.exception("rollout of %s: this tick failed; the next one retries",
                                  record.name)  # fmt: skip
        for uid in self.held - held:  # concluded and settled, or deleted (or not renewed)
            with contextlib.suppress(AbmeshError):  # it lapses on its own
                self.leases.release_lease(lease_name(uid), self.owner)
        self.held = held
        names = {r.name for r in records}
        for gone in self._shown - names:
            self.telemetry.forget(gone)
        self._shown = names & self._shown
        self.telemetry.leases(len(held))
        ok = self._hook(self.after_tick) and ok
        self.telemetry.tick_done(time.monotonic() - started, ok=ok)

    @staticmethod
    def _hook(hook: Callable[[], None] | None) -> bool:
        try:
            if hook is not None:
                hook()
        except Exception:  # the mirror retries at the next tick; the rollouts go on
            log.exception("mirroring Experiment objects failed")
            return False
        return True

    def _share(
        self, wanted: list[ExperimentRecord]
    ) -> tuple[list[ExperimentRecord], int, set[str]]:
        """The order to try this tick's experiments in (those this controller holds first, then
        those nobody holds), its fair share of them, and the ones nobody has held for a lease
        period, which it takes whatever its share.  Controllers announce themselves with a lease
        of their own, so a newcomer gets its share as the others give up what they hold beyond
        theirs; a controller limited to some experiments (--experiment) still counts as a
        member, so what the others leave for it but it does not want is picked up once overdue."""
        if self.closed:
            return [], 0, set()
        self.leases.acquire_lease(f"{MEMBER}{self.owner}", self.owner, ttl_s=self.lease_s)
        leases = self.leases.lease_holders("")
        members = max(1, sum(name.startswith(MEMBER) for name in leases))
        fair = -(-len(wanted) // members)
        self._adopted &= {r.uid for r in wanted}
        mine = [r for r in wanted if leases.get(lease_name(r.uid)) == self.owner]
        adopted = [r for r in mine if r.uid in self._adopted]
        mine = [r for r in mine if r.uid not in self._adopted]
        for extra in mine[fair:]:
            self.leases.release_lease(lease_name(extra.uid), self.owner)
        free = [r for r in wanted if lease_name(r.uid) not in leases]
        now = time.monotonic()
        self._free_since = {r.uid: self._free_since.get(r.uid, now) for r in free}
        overdue = {uid for uid, since in self._free_since.items() if now - since >= self.lease_s}
        return adopted + mine[:fair] + free, fair, overdue

    def _wanted(self, record: ExperimentRecord, target: Resolved) -> bool:
        if self.experiments and record.name not in self.experiments:
            return False
        if record.state is State.DRAFT:
            return False
        # Concluded with its final routes confirmed: nothing left to do, the target is free.
        return not (record.state is State.CONCLUDED and self._settled(record, target))

    def _lease(self, uid: str) -> bool:
        """Take or renew the experiment's lease; a lease store that fails is "not held"."""
        if self.closed:
            return False
        try:
            return self.leases.acquire_lease(lease_name(uid), self.owner, ttl_s=self.lease_s)
        except AbmeshError as exc:
            log.warning("lease of %s: %s", uid, exc)
            return False

    def settled(self, record: ExperimentRecord) -> bool:
        """Concluded, with its final routes confirmed (or none to take back): what a deleted
        Experiment object waits for (controlplane.kube.mirror)."""
        if record.state is not State.CONCLUDED:
            return False
        if record.spec.rollout is None or record.status.rollout is None:
            return True
        try:
            target = self.routers.resolve(record.spec)
        except AbmeshError:  # no target: no routes of its own anywhere
            return True
        return self._settled(record, target)

    def _settled(self, record: ExperimentRecord, target: Resolved) -> bool:
        """The rollout ended and the target confirmed its final routes."""
        state = state_of(record.status)
        routes = record.status.routes or {}
        return (
            state is not None
            and state.status.final
            and routes.get("hash") == _route_hash(record, target, state)
        )

    # one experiment

    def step(
        self, record: ExperimentRecord, target: Resolved, holders: dict[Any, ExperimentRecord]
    ) -> None:
        now, status = self.clock(), record.status
        held_by = blocker(record, target, holders)
        if held_by is not None:
            why = (
                f"{target.where} is held by experiment {held_by.name!r} (uid {held_by.uid});"
                " this rollout waits until that one concludes"
            )
            # Its users get the control variant meanwhile: the routes are another's.
            waiting = replace(status, weights={record.spec.control_variant.key: 100.0})
            self._note(
                record, waiting.with_condition("RouteTargetReady", False, "TargetClaimed", why, now)
            )
            return
        decided = self.judge.decide(record, now)
        if decided is None:
            return
        state, status, audit, looks = decided
        if status != record.status:
            if not self._lease(record.uid):
                return
            try:
                record = self.store.commit_status(
                    record.name, status, expected_version=record.status.version, audit=audit
                )
            except (ConflictError, NotFoundError) as exc:
                log.warning("rollout of %s: %s; the next tick decides again", record.name, exc)
                return
            for entry in audit:
                self.telemetry.decision(entry["action"])
        for look in looks:
            record_look(self.store, record.uid, look)
        self._show(record, state)
        self._apply(record, target, state)

    def _apply(self, record: ExperimentRecord, target: Resolved, state: RolloutState) -> None:
        """Make the target route as the stored state says; note when it is confirmed."""
        if not self._lease(record.uid):
            return  # another controller took over since this tick read the state
        plan = _plan(record.spec, state)
        try:
            self.routers.router(target).set_routes(plan)
        except AbmeshError as exc:
            self.telemetry.router_error(target.router)
            log.warning("routes of %s not applied: %s", record.name, exc)
            now = self.clock()
            self._note(record, record.status.with_condition(
                "RouteTargetReady", False, "RouterError", str(exc), now))  # fmt: skip
            return
        digest = _route_hash(record, target, state)
        ready = record.status.condition("RouteTargetReady")
        now, status = self.clock(), record.status
        if (
            (record.status.routes or {}).get("hash") != digest
            or ready is None
            or (ready.status != "True")
        ):
            routes = {"hash": digest, "applied_at": now, "target": target.where}
            status = status.with_condition("RouteTargetReady", True, "Applied", target.where, now)
            status = replace(status, routes=routes)
        self._note(record, _with_stickiness(status, target, now))

    def _note(self, record: ExperimentRecord, status: Status) -> None:
        """Record an observation (a condition, confirmed routes); a conflict drops it: the
        next tick observes again."""
        if status == record.status:
            return
        with contextlib.suppress(ConflictError, NotFoundError):
            self.store.commit_status(record.name, status, expected_version=record.status.version)

    # helpers

    def _show(self, record: ExperimentRecord, state: RolloutState) -> None:
        phase = phase_of(record.spec, state)
        kind = "concluded" if state.status.final else (phase.kind if phase else "promote")
        share = state.weights.get(record.spec.candidate_variant.key, 0)
        self.telemetry.experiment(record.name, state.phase, kind, float(share))
        self._shown = self._shown | {record.name}


def _with_stickiness(status: Status, target: Resolved, now: float) -> Status:
    """Say whether the target keeps each unit on its arm (routers.refusal says what follows)."""
    if sticky(target.router):
        why = f"{target.where}: abmesh's header rules keep each unit on its assigned arm"
        return status.with_condition("StickyRouting", True, "HeaderRules", why, now)
    why = (
        f"{target.where}: router {target.router} splits by weight only, each request drawn"
        " afresh; no A/B phase, and business metrics mean something only where clients report"
        " the arm that served (POST /v1/exposures), not the one assigned"
    )
    return status.with_condition("StickyRouting", False, "WeightsOnly", why, now)


def _plan(spec: ExperimentSpec, state: RolloutState) -> RoutePlan:
    return route_plan(spec, state)


def _route_hash(record: ExperimentRecord, target: Resolved, state: RolloutState) -> str:
    text = repr((_plan(record.spec, state), target.router, target.where))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
