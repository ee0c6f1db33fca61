"""The storage contract every backend fulfils, checked by one contract test suite.

The protocol is split by concern so that later parts (events and stats, snapshots, rollout
state, the leader lock) add protocols of their own next to these, and `Store` grows by
inheritance, without touching the ones here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from experiments.errors import ConflictError
from experiments.spec import ExperimentSpec


class ExperimentStatus(StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class ExperimentRecord:
    """An experiment as stored: its current spec with the revision that introduced it."""

    spec: ExperimentSpec
    revision: int
    status: ExperimentStatus
    created_at: float
    updated_at: float

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, slots=True)
class PutResult:
    record: ExperimentRecord
    changed: bool  # False when the spec was identical to the stored one (no new revision)


@runtime_checkable
class ExperimentStore(Protocol):
    def put_experiment(self, spec: ExperimentSpec) -> PutResult:
        """Create the experiment, or store `spec` as its next revision if it differs.

        Raises ConflictError if its layer slice overlaps another experiment's."""

    def get_experiment(self, name: str, revision: int | None = None) -> ExperimentRecord:
        """The current record, or the spec of an older revision; NotFoundError if absent."""

    def list_experiments(self) -> list[ExperimentRecord]:
        """All experiments, sorted by name."""

    def experiment_history(self, name: str) -> list[ExperimentRecord]:
        """Every revision, oldest first; NotFoundError if the experiment does not exist."""

    def set_status(
        self, name: str, status: ExperimentStatus, *, expected: ExperimentStatus | None = None
    ) -> ExperimentRecord:
        """Set the status; with `expected`, only if the status is still that (else ConflictError),
        so two concurrent transitions cannot both succeed."""

    def delete_experiment(self, name: str) -> None:
        """Remove the experiment, its revisions, sticky records and exposures."""

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


@runtime_checkable
class ExposureStore(Protocol):
    """Which units saw which variant: the first exposure of a unit counts, later ones do not."""

    def record_exposures(self, experiment: str, exposures: Mapping[str, tuple[str, float]]) -> int:
        """Record each unit's first exposure, given as (variant, unix time); a unit recorded
        before keeps its first record.  Returns how many units were new."""

    def exposure_counts(self, experiment: str) -> dict[str, int]:
        """Exposed units per variant."""


@runtime_checkable
class Store(ExperimentStore, StickyStore, ExposureStore, Protocol):
    url: str

    def ping(self) -> None:
        """Raise StoreError if the store cannot be reached."""

    def close(self) -> None: ...


def check_status(name: str, current: ExperimentStatus, expected: ExperimentStatus | None) -> None:
    if expected is not None and current is not expected:
        raise ConflictError(
            f"experiment {name!r} is {current.value}, not {expected.value}: it changed meanwhile"
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
