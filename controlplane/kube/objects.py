"""Between an `Experiment` object and abmesh's own terms: the spec it carries, the state its
owner asks for, and the status the controller publishes (camelCase, times as RFC 3339, as
`kubectl` and `kubectl wait --for=condition=...` expect)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from controlplane.judge import state_of
from controlplane.kube.crd import API_VERSION, DESIRED_STATES, KIND, NOT_IN_SPEC
from controlplane.rollout import phase_of
from experiments.errors import InvalidInputError
from experiments.loader import spec_from_mapping
from experiments.spec import ExperimentSpec
from experiments.store import ExperimentRecord


def key_of(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def spec_of(obj: dict[str, Any]) -> ExperimentSpec:
    """The experiment spec an object carries; its name is the object's.  InvalidInputError
    (SpecError) names every field that is wrong."""
    if obj.get("apiVersion") != API_VERSION or obj.get("kind") != KIND:
        raise InvalidInputError(f"not an {API_VERSION} {KIND}: {obj.get('apiVersion')}")
    body = dict(obj.get("spec") or {})
    body.pop("desiredState", None)
    for field in NOT_IN_SPEC:
        if field in body:
            raise InvalidInputError(f"spec.{field}: not set in an Experiment (metadata says it)")
    return spec_from_mapping({**body, "name": obj["metadata"]["name"]})


def desired_state(obj: dict[str, Any]) -> str:
    wanted = (obj.get("spec") or {}).get("desiredState", "running")
    if wanted not in DESIRED_STATES:
        raise InvalidInputError(
            f"spec.desiredState: {wanted!r} is not one of {', '.join(DESIRED_STATES)}"
        )
    return str(wanted)


def rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    type_: str, ok: bool | None, reason: str, message: str, at: float, generation: int
) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "Unknown" if ok is None else str(ok),
        "reason": reason,
        "message": message,
        "lastTransitionTime": rfc3339(at),
        "observedGeneration": generation,
    }


def published_status(
    record: ExperimentRecord, generation: int, extra: tuple[dict[str, Any], ...] = ()
) -> dict[str, Any]:
    """The object's status for `record`, the store's experiment; `generation` is the object's
    metadata.generation the record mirrors, `extra` conditions only the watcher knows (the
    spec was refused, say)."""
    status, spec = record.status, record.spec
    state = state_of(status)
    phase = phase_of(spec, state) if state is not None else None
    weights = record.served_weights
    ours = tuple(
        condition(
            c.type,
            None if c.status == "Unknown" else c.status == "True",
            c.reason,
            c.message,
            c.last_transition_time,
            generation,
        )
        for c in status.conditions
    )
    published = {
        "observedGeneration": generation,
        "uid": status.uid,
        "state": status.state.value,
        "outcome": status.outcome.value if status.outcome else None,
        "phase": status.phase,
        "rolloutPhase": str(phase.kind)
        if phase is not None
        else "done"
        if state is not None and state.status.final
        else "",
        "candidateWeight": float(weights.get(spec.candidate_variant.key, 0.0)),
        "weights": {k: float(v) for k, v in weights.items()},
        "conditions": [*ours, *extra],
        "rollout": _summary(status.rollout),
        "routes": status.routes,
    }
    # A merge patch deletes what is null, so unset fields are left out rather than null.
    return {k: v for k, v in published.items() if v is not None}


def _summary(rollout: dict[str, Any] | None) -> dict[str, Any] | None:
    """What people read of the rollout state (the whole of it stays in the store: it holds
    every look of a shadow phase, more than an object's status should carry)."""
    if rollout is None:
        return None
    keys = ("status", "phase", "step", "winner", "reason")
    return {k: rollout[k] for k in keys if rollout.get(k) not in (None, "")}


def experiment_object(
    spec: ExperimentSpec, namespace: str, desired: str = "running"
) -> dict[str, Any]:
    """The custom resource for a spec (what `kubectl apply -f` takes)."""
    body = spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    for field in NOT_IN_SPEC:
        body.pop(field, None)
    if desired != "running":
        body["desiredState"] = desired
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": spec.name, "namespace": namespace},
        "spec": body,
    }
