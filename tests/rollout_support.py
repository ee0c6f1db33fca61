"""What the end-to-end rollout tests share: a spec with a rollout section, traffic through
Envoy, the controller as its own process, the experiment's moves from its audit log."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from controlplane.lifecycle import Action, apply_spec, change_state
from experiments import load_spec
from experiments.errors import AbmeshError
from experiments.localstack import RolloutStack
from experiments.store import Store, open_store
from tests.servers import Process, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent


def spec_doc(phases: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "name": "ranker-v2",
        "variants": [
            {"key": "control", "header_value": "group-a", "weight": 100,
             "destination": {"host": "model", "subset": "v1"}},
            {"key": "treatment", "header_value": "group-b", "weight": 0,
             "destination": {"host": "model", "subset": "v2"}},
        ],
        "metrics": {"primary": {"name": "click", "kind": "conversion"}},
        "rollout": {"phases": phases},
        **extra,
    }  # fmt: skip


class Traffic:
    """Requests without a group header through Envoy, as fast as one client goes, each one
    distinct (a toy model's prediction depends on the request); each answer's model is kept
    with the time the request was sent."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                sent = time.time()  # when routed: a slow answer arrives after a route change
                try:
                    reply = client.get(self.url, params={"request": len(self.seen)})
                    self.seen.append((sent, reply.headers.get("x-model", "?")))
                except httpx.HTTPError:
                    self.seen.append((sent, "error"))
                time.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def share(self, model: str, start: float, end: float) -> tuple[int, int]:
        window = [m for t, m in self.seen if start <= t < end]
        return sum(m == model for m in window), len(window)


class RouteWatch:
    """Every time the controller confirmed routes live (status.routes.applied_at), polled from
    a store of its own: a step's traffic is judged from then on, not from a guessed delay."""

    def __init__(self, store_url: str, name: str = "ranker-v2") -> None:
        self.applied: list[float] = []
        self._store, self._name = open_store(store_url), name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            with contextlib.suppress(AbmeshError):
                routes = self._store.get_experiment(self._name).status.routes or {}
                at = routes.get("applied_at")
                if at is not None and at not in self.applied:
                    self.applied.append(at)

    def live_after(self, decided: float) -> float:
        """When the first routes confirmed after a decision taken at `decided` went live."""
        return min(at for at in self.applied if at >= decided)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._store.close()


def controller(
    url: str, stack: RolloutStack, workdir: Path, name: str = "ctl", *extra: str
) -> Process:
    """`abmesh controller` as its own process, with its own id and health port."""
    log = workdir / f"{name}.log"
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "experiments.cli", "controller", "--router", "envoy",
             "--envoy-routes", str(stack.routes_file), "--envoy-admin", stack.admin,
             "--cluster", "control=v1", "--cluster", "treatment=v2",
             "--prometheus", stack.prometheus_url, "--window", "3s", "--interval", "1",
             "--id", name, "--metrics-port", str(port), *extra, "--store", url],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
    return Process(proc, log, port)


def start(store: Store, doc: dict[str, Any]) -> None:
    apply_spec(store, load_spec(doc))
    change_state(store, doc["name"], Action.START)


def moves(store: Store, name: str = "ranker-v2") -> list[dict[str, Any]]:
    """The rollout's audit entries (lifecycle commands left out)."""
    entries = store.audit(store.get_experiment(name).uid)
    return [e for e in entries if e["action"] != "lifecycle"]


def wait_for(
    store: Store, action: str, timeout: float = 90, name: str = "ranker-v2"
) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def seen() -> bool:
        found[:] = [e for e in moves(store, name) if e["action"] == action]
        return bool(found)

    wait_until(seen, f"audit entry {action!r} of {name}", timeout=timeout)
    return found[0]


def routes_live(store: Store, since: float, name: str = "ranker-v2") -> float:
    """When the controller confirmed the routes it applied at or after `since` live in Envoy.
    Requests sent from then on follow them; earlier ones, on a busy machine, may not yet."""
    applied: list[float] = []

    def confirmed() -> bool:
        at = (store.get_experiment(name).status.routes or {}).get("applied_at", 0.0)
        applied[:] = [at]
        return bool(at >= since)

    wait_until(confirmed, f"routes of {name} confirmed live after {since}", timeout=60)
    return applied[0]


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "experiments.cli", *args, "--store", url],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip
