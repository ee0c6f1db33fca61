"""The storage contract every backend fulfils, checked by one contract test suite.

The protocol is split by concern so that later parts (events and stats, snapshots, rollout
state, the leader lock) add protocols of their own next to these, and `Store` grows by
inheritance, without touching the ones here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol, runtime_checkable

from experiments.errors import ConflictError, InvalidInputError
from experiments.foldbatch import Exposure
from experiments.folding import Event, FoldPlan
from experiments.names import check_name
from experiments.predictions import Prediction, Recorded
from experiments.shadow_sums import ShadowSums
from experiments.spec import ExperimentSpec
from experiments.status import State, Status


@dataclass(frozen=True)
class ExperimentRecord:
    """An experiment as stored: its current spec (the revision is its generation, bumped only
    when the spec changes) and its status (experiments.status)."""

    spec: ExperimentSpec
    revision: int
    status: Status
    created_at: float
    updated_at: float

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def uid(self) -> str:
        return self.status.uid

    @property
    def generation(self) -> int:
        return self.revision

    @property
    def state(self) -> State:
        return self.status.state

    @property
    def phase(self) -> str:
        return self.status.phase

    @cached_property
    def effective_spec(self) -> ExperimentSpec:
        """The spec with the weights assignment uses: the status's once a rollout (or a
        controller that holds it back) set them, else the spec's own.  Status weights that name
        a variant the spec no longer has (its arms changed; the controller restarts the
        rollout at its next tick) give everyone the control variant meanwhile."""
        weights = self.status.weights
        if weights is None:
            return self.spec
        if not set(weights) <= {v.key for v in self.spec.variants}:
            weights = {self.spec.control_variant.key: 100.0}
        return self.spec.with_weights(weights)

    @property
    def served_weights(self) -> dict[str, float]:
        """What assignment hands out now: the effective weights while running; otherwise
        everyone (but overrides) gets the variant at 100 % (a promoted winner), else the
        control."""
        variants = self.effective_spec.variants
        if self.state is State.RUNNING:
            return {v.key: v.weight for v in variants}
        serving = next((v.key for v in variants if v.weight == 100), self.spec.control_variant.key)
        return {v.key: 100.0 if v.key == serving else 0.0 for v in variants}


Reaction = Callable[[ExperimentSpec | None, Status, int], Status]
"""How the status follows a new spec, written with it atomically: given the previous spec (None
for a create), the current status and the new generation, the status to keep."""


@dataclass(frozen=True, slots=True)
class PutResult:
    record: ExperimentRecord
    changed: bool  # False when the spec was identical to the stored one (no new revision)


@runtime_checkable
class ExperimentStore(Protocol):
    def put_experiment(self, spec: ExperimentSpec, *, react: Reaction | None = None) -> PutResult:
        """Create the experiment (a new uid, state draft), or store `spec` as its next revision
        if it differs, with the status `react` makes of it; an identical spec changes nothing.

        Raises ConflictError if its layer slice overlaps another experiment's."""

    def get_experiment(self, name: str, revision: int | None = None) -> ExperimentRecord:
        """The current record, or the spec of an older revision; NotFoundError if absent."""

    def list_experiments(self) -> list[ExperimentRecord]:
        """All experiments, sorted by name."""

    def experiment_history(self, name: str) -> list[ExperimentRecord]:
        """Every revision, oldest first; NotFoundError if the experiment does not exist."""

    def commit_status(
        self,
        name: str,
        status: Status,
        *,
        expected_version: int,
        audit: Sequence[dict[str, Any]] = (),
    ) -> ExperimentRecord:
        """Write `status` (its version becomes `expected_version` + 1) and append the audit
        entries under its uid, in one atomic write, if the stored status is still at
        `expected_version` and of the same uid; else ConflictError (NotFoundError if the
        experiment is gone).  The config epoch moves only when what assignment reads moved."""

    def delete_experiment(self, name: str, *, keep_history: bool = False) -> str:
        """Remove the experiment, its revisions, sticky records, exposures, events, stats and
        everything kept under its uid (state documents, leases, and the audit log and recorded
        looks unless `keep_history`).  Returns the uid."""

    def config_epoch(self) -> int:
        """A counter that grows on every experiment write: a cheap poll for config caches."""


@runtime_checkable
class StickyStore(Protocol):
    """Recorded assignments, keyed by experiment, salt and unit (a new salt re-randomises)."""

    def get_sticky(self, experiment: str, salt: str, units: Sequence[str]) -> dict[str, str]:
        """The recorded variant of each unit that has one."""

    def put_sticky(
        self,
        experiment: str,
        salt: str,
        variants: Mapping[str, str],
        *,
        current: Collection[str] | None = None,
    ) -> dict[str, str]:
        """Record each unit's variant unless one is recorded already (the first writer wins,
        also across replicas); returns the recorded variant of every unit given.  With
        `current` (the spec's variant keys), a record naming a variant no longer in the spec is
        replaced instead of kept."""


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int
    duplicates: list[int]  # positions in the batch of events whose event_id was seen before


@dataclass(frozen=True, slots=True)
class FoldState:
    """How far the statistics are behind the log: entries appended but not folded yet, and the
    append time of the oldest of them (None when none is pending)."""

    pending: int
    oldest_pending: float | None

    def lag_s(self, now: float | None = None) -> float:
        if self.oldest_pending is None:
            return 0.0
        return max((time.time() if now is None else now) - self.oldest_pending, 0.0)

    def to_dict(self) -> dict[str, Any]:
        """For answers: everything appended before `folded_through` (unix s) is counted."""
        now = time.time()
        through = now if self.oldest_pending is None else self.oldest_pending
        return {"pending": self.pending, "lag_s": self.lag_s(now), "folded_through": through}


@dataclass(frozen=True, slots=True)
class Snapshot:
    experiment: str
    phase: str
    at: float
    stats: dict[str, Any]  # as `folding.export` makes it


@runtime_checkable
class StatsStore(Protocol):
    """Exposures and events, appended to a durable log, and the per-arm statistics folded from
    it behind, per experiment and phase (a new phase starts from zero); see `logfold`.  Every
    call is one atomic, idempotent step."""

    def append_exposures(
        self, experiment: str, phase: str, plan: FoldPlan, exposures: Sequence[Exposure]
    ) -> int:
        """Log each unit's first exposure in the phase (the variant served, when, by which spec
        generation); a unit exposed before keeps its first.  Returns how many units were new.
        Durable when it returns; folded later."""

    def append_events(
        self, experiment: str, phase: str, plan: FoldPlan, events: Sequence[Event]
    ) -> IngestResult:
        """Log the events whose event_id the experiment has not seen (the others are
        duplicates); durable when it returns, folded later, kept raw for the retention."""

    def fold(self, experiment: str, *, limit: int = ...) -> int:
        """Fold up to `limit` log entries per partition that no other folder holds; returns
        how many were folded."""

    def fold_state(self, experiment: str) -> FoldState: ...

    def log_length(self, experiment: str) -> int:
        """Entries kept in the experiment's log, folded or not."""

    def settle(self, experiment: str, *, timeout: float = ...) -> FoldState:
        """Fold until what was appended before the call is folded, or `timeout` passes."""

    def record_exposures(
        self,
        experiment: str,
        phase: str,
        plan: FoldPlan,
        exposures: Mapping[str, Sequence[Any]],
    ) -> int:
        """`append_exposures` of `unit -> (variant, time[, generation])`, then `settle`."""

    def ingest_events(
        self, experiment: str, phase: str, plan: FoldPlan, events: Sequence[Event]
    ) -> IngestResult:
        """`append_events`, then `settle`."""

    def phase_stats(
        self, experiment: str, phase: str, *, settle: float = ...
    ) -> tuple[dict[str, float], dict[str, float]]:
        """The folded statistics and series shifts of a phase (see `folding`), after settling
        for up to `settle` seconds (0: as folded now): the partitions' partial sums added
        (`foldbatch.merge_partials`)."""

    def unit_exposures(self, experiment: str, phase: str, units: Sequence[str]) -> dict[str, Any]:
        """The logged first exposure of each unit that has one: `{"variant", "at",
        "generation"}`."""

    def phases(self, experiment: str) -> list[str]:
        """Phases with any exposure or event, oldest first."""

    def phase_plan(self, experiment: str, phase: str) -> FoldPlan | None:
        """The fold plan a phase's statistics were built with (None: no data yet)."""

    def save_snapshot(self, snapshot: Snapshot) -> None: ...

    def snapshots(self, experiment: str, phase: str | None = None) -> list[Snapshot]:
        """Snapshots, oldest first."""

    def raw_events(
        self,
        experiment: str,
        *,
        since: float = 0.0,
        after: str | None = None,
        limit: int = 100_000,
    ) -> list[dict[str, Any]]:
        """Kept events in (received_at, event_id) order, from `since` on; with `after` (an
        event id received at `since`), from just after it: a cursor for paging, since a whole
        batch shares one receive time."""

    def raw_exposures(
        self, experiment: str, phase: str, *, after: str = "", limit: int = 100_000
    ) -> list[dict[str, Any]]:
        """The phase's logged first exposures (unit, variant, at, generation, segments), in
        unit order from just after the unit `after`: a cursor for paging."""

    def purge_events(self, received_before: float) -> int:
        """Forget folded raw events received before the time (and their ids: a retry older
        than this counts again); events not folded yet are kept."""


@runtime_checkable
class LeaseStore(Protocol):
    """Leases: one controller drives an experiment at a time (the store's, or Kubernetes'
    Leases: controlplane.kube.leases)."""

    def acquire_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take or renew the lease `name` for `owner` if it is free, expired or already
        `owner`'s; False if another owner holds it."""

    def release_lease(self, name: str, owner: str) -> None:
        """Give the lease up if `owner` holds it."""

    def lease_holders(self, prefix: str) -> dict[str, str]:
        """The unexpired leases whose names start with `prefix`: name -> owner."""


@runtime_checkable
class ControlStore(LeaseStore, Protocol):
    """What the control plane keeps beside the status, under keys that start with the
    experiment's uid: state documents (the verdict endpoints' always-valid state, written with
    a compare-and-set on their version), an append-only audit log, and leases (one controller
    drives an experiment at a time)."""

    def get_control(self, key: str) -> tuple[dict[str, Any] | None, int]:
        """The state document and its version (None and 0 if there is none)."""

    def put_control(self, key: str, doc: dict[str, Any], expected_version: int) -> int:
        """Replace the document if its version is still `expected_version`; returns the new
        version, or raises ConflictError."""

    def append_audit(self, uid: str, entry: dict[str, Any]) -> None: ...

    def audit(self, uid: str) -> list[dict[str, Any]]:
        """The audit entries of the experiment with this uid, oldest first."""


@runtime_checkable
class LookStore(Protocol):
    """Every look a decision took (experiments.looks_log), appended under the experiment's uid
    per analysis phase: what the report draws over time.  Deleted with the experiment unless
    its history is kept, like the audit log."""

    def append_look(self, uid: str, look: dict[str, Any], *, fingerprint: str, cap: int) -> bool:
        """Append `look` (JSON; its `phase` names the analysis phase) unless the phase's last
        recorded look has the same `fingerprint` (the same data seen again) or the phase holds
        `cap` looks already.  True if appended.  One atomic step: concurrent writers never
        interleave the check and the append."""

    def looks(self, uid: str, phase: str | None = None) -> list[dict[str, Any]]:
        """The recorded looks, oldest first: of one phase, or of every phase."""

    def last_look(self, uid: str, phase: str) -> dict[str, Any] | None:
        """The phase's last recorded look (None if none), without reading the others: what
        a concluded experiment's report is told from (the index reads it for every one)."""


@runtime_checkable
class PredictionStore(Protocol):
    """The shadow phase's predictions, paired by request id (experiments.predictions)."""

    def add_predictions(
        self,
        experiment: str,
        phase: str,
        predictions: Sequence[Prediction],
        *,
        score_range: tuple[float, float],
        window_s: float,
        now: float | None = None,
    ) -> Recorded:
        """Pair, fold and keep the rest waiting; a prediction already paired or already
        waiting (a retried batch) is a duplicate and changes nothing."""

    def shadow_sums(
        self,
        experiment: str,
        phase: str,
        *,
        score_range: tuple[float, float],
        window_s: float,
        now: float | None = None,
    ) -> ShadowSums:
        """The phase's sums; predictions alone for longer than `window_s` count as unpaired."""


class Store(
    ExperimentStore, StickyStore, StatsStore, PredictionStore, ControlStore, LookStore, Protocol
):
    url: str

    def ping(self) -> None:
        """Raise StoreError if the store cannot be reached."""

    def close(self) -> None: ...


def check_phase(phase: str) -> str:
    try:
        return check_name(phase, "phase")
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


def check_commit(name: str, stored: Status, status: Status, expected_version: int) -> None:
    if stored.uid != status.uid:
        raise ConflictError(
            f"experiment {name!r} was deleted and created again (uid {stored.uid}, not"
            f" {status.uid}): the change was meant for the earlier one"
        )
    if stored.version != expected_version:
        raise ConflictError(
            f"the status of {name!r} is at version {stored.version}, not {expected_version}:"
            " it changed meanwhile"
        )


def check_layer_conflicts(spec: ExperimentSpec, others: Iterable[ExperimentSpec]) -> None:
    """Refuse a spec whose layer slice overlaps that of another experiment in the same layer."""
    layer = spec.layer
    if layer is None:
        return
    clashes = sorted(
        (o.name, o.layer)
        for o in others
        if o.name != spec.name and o.layer is not None and layer.overlaps(o.layer)
    )
    if clashes:
        taken = " and ".join(f"[{lay.start:g}, {lay.end:g}) of {name!r}" for name, lay in clashes)
        raise ConflictError(
            f"layer {layer.name!r}: slice [{layer.start:g}, {layer.end:g}) of {spec.name!r}"
            f" overlaps {taken}; experiments in one layer need disjoint slices"
        )
