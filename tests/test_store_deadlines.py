"""A sick store never stalls a request: a cold start without configs answers 503, not 404."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.hung_store import PLAIN, hung, prepare
from tests.servers import start_redis, start_service, wait_until

GENEROUS = 5.0  # seconds


def test_a_cold_start_without_the_store_answers_503_until_configs_load(tmp_path: Path) -> None:
    redis_server = start_redis(tmp_path / "redis")
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    prepare(url)
    with hung(redis_server):
        svc = start_service(url, tmp_path)  # the port opens although no config can load
        try:
            with httpx.Client(base_url=svc.url, timeout=GENEROUS) as http:
                for r in (
                    http.get(f"/v1/assign/{PLAIN}", params={"unit": "u1"}),
                    http.post("/v1/assign", json={"units": ["u1"]}),
                    http.get("/v1/configs"),
                ):
                    assert (r.status_code, r.headers["Retry-After"]) == (503, "1")
                    assert "not loaded yet" in r.json()["error"]
                ready = http.get("/readyz")
                assert ready.status_code == 503
                assert "configs not loaded yet" in ready.json()["reasons"]
                check = http.get("/v1/extauthz/p", headers={"x-user-id": "u1"})
                assert check.status_code == 200  # never a denial: no header, the stable route
                assert "x-user-group" not in check.headers
        except BaseException:
            svc.stop()
            raise
    try:
        with httpx.Client(base_url=svc.url, timeout=GENEROUS) as http:
            wait_until(lambda: http.get("/readyz").status_code == 200, "configs to load")
            assert http.get(f"/v1/assign/{PLAIN}", params={"unit": "u1"}).status_code == 200
            unknown = http.get("/v1/assign/no-such-exp", params={"unit": "u1"})
            assert unknown.status_code == 404  # now it is known not to exist
    finally:
        svc.stop()
        redis_server.stop()
