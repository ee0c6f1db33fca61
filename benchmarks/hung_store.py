"""Latency of the request paths while the store hangs: a private redis-server stopped with
SIGSTOP (it accepts connections and never answers), against the same routes with it running.

    python benchmarks/hung_store.py [--rounds 200] [--clients 4]

Routes: GET /v1/assign of a hash-assigned and of a sticky experiment, the ext_authz check (both
experiments), POST /v1/events (one event) and GET /v1/experiments/NAME/stats (standing for the
admin, data, report and verdict routes).  Each client thread sends every route in turn
with a new unit each time.  One uvicorn worker with the default settings (sticky lookups wait
50 ms, event batches 500 ms, the other routes 4 s); clients share this machine's cores with
the server and Redis.
Times are printed, never asserted (tests/test_store_deadlines.py checks the answers).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The service runs in its own process: let it import this checkout, not an installed copy.
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])

from tests.hung_store import hung, prepare, sample, table  # noqa: E402
from tests.servers import start_redis, start_service  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="rounds per client")
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        redis_server = start_redis(workdir / "redis")
        service = None
        try:
            url = f"redis://127.0.0.1:{redis_server.port}/0"
            prepare(url)
            # The default deadlines (tests.servers gives services generous ones).
            service = start_service(url, workdir, events_timeout=0.5, api_timeout=4.0)
            sample(service.url, rounds=5, tag="warm")  # connections, compiled specs
            print(f"{args.clients} clients x {args.rounds} rounds of each route\n")
            print(table(sample(service.url, args.rounds, args.clients, "up"), "Redis answering"))
            with hung(redis_server):
                stopped = sample(service.url, args.rounds, args.clients, "down")
            print("\n" + table(stopped, "Redis stopped (SIGSTOP)"))
            print("\n" + table(sample(service.url, args.rounds, args.clients, "back"), "SIGCONT"))
        finally:
            if service is not None:
                service.stop()
            redis_server.stop()


if __name__ == "__main__":
    main()
