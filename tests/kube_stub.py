"""A loopback stand-in for the parts of the Kubernetes API abmesh uses (no API server can run
here), speaking the real protocol to the real `kubernetes` client:

- namespaced objects of any group (custom objects, `coordination.k8s.io` Leases): GET, POST
  (create: 201, 409 AlreadyExists), PUT (replace), PATCH with JSON merge patch (RFC 7386),
  DELETE (with `preconditions.resourceVersion`); `metadata.resourceVersion` checked on every
  write (409 on a mismatch), 404 for a missing object, answers shaped as the API server's;
- collections, in one namespace or all: list (with `labelSelector` k=v), and watch from a
  resourceVersion as a stream of JSON lines; a resourceVersion older than what the stub still
  remembers (`compact()`) gets the ERROR event with code 410 a real server sends;
- the status subresource (`…/NAME/status`): writes there change only `status`, writes to the
  object ignore `status`; `metadata.generation` moves when `spec` does;
- finalizers: a DELETE of an object that has some only sets `deletionTimestamp`; it goes once
  a write empties them.

`conflicts = n` makes the next n writes meet a concurrent writer, as a real cluster can."""

from __future__ import annotations

import contextlib
import copy
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null deletes, anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class RefusedError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.body = _status(code, reason, message)


def _split(path: str) -> tuple[str, str | None, str | None]:
    """(collection, name, subresource) of an object path; collection paths name no object.
    `/apis/G/V/namespaces/NS/PLURAL[/NAME[/status]]`, or `/apis/G/V/PLURAL` (every namespace)."""
    parts = path.strip("/").split("/")
    if len(parts) >= 5 and parts[3] == "namespaces":
        base = "/" + "/".join(parts[:6])
        name = parts[6] if len(parts) > 6 else None
        return base, name, parts[7] if len(parts) > 7 else None
    return "/" + "/".join(parts), None, None


def _plural(collection: str) -> str:
    """The group/version/plural of a collection path, whatever its namespace."""
    parts = collection.strip("/").split("/")
    return "/".join(parts[1:3] + parts[-1:])


class KubeStub:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}  # object path -> object
        self.patches: list[dict[str, Any]] = []  # every PATCH body and its content type
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []  # rv, type, path, object
        self.requests: list[tuple[str, str]] = []  # method, path (with query)
        self.conflicts = 0
        self.hang = threading.Event()  # set: requests get no answer until it is cleared
        self.oldest = 0  # watches from a resourceVersion below this get 410 Gone
        self._changed = threading.Condition()
        self._version = 100
        self._stopped = False
        self._epoch = 0  # moves when the stub "restarts": open watches end
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # chunked watches; other answers carry a length
            # A kept-alive connection otherwise waits out delayed ACKs between the headers
            # and the body (~40 ms an answer).
            disable_nagle_algorithm = True

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # it gave up
                    self.wfile.write(data)

            def _body(self) -> dict[str, Any]:
                length = int(self.headers.get("content-length") or 0)
                return json.loads(self.rfile.read(length)) if length else {}

            def _serve(self, method: str) -> None:
                url = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                stub.requests.append((method, self.path))
                while stub.hang.is_set() and not stub._stopped:
                    time.sleep(0.05)
                try:
                    if method == "GET" and query.get("watch") in ("true", "True", "1"):
                        return self._watch(url.path, query)
                    code, body = stub.handle(
                        method, url.path, query, self._body(), self.headers.get("content-type", "")
                    )
                except RefusedError as exc:
                    code, body = exc.body["code"], exc.body
                self._send(code, body)

            def _watch(self, path: str, query: dict[str, str]) -> None:
                since = int(query.get("resourceVersion") or 0)
                deadline = time.monotonic() + float(query.get("timeoutSeconds") or 3600)
                # Chunked, as the API server sends a watch: a client reads each event as its
                # chunk arrives (without chunks it would wait for its read size or the end).
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("transfer-encoding", "chunked")
                self.send_header("connection", "close")
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # it left
                    for event in stub.stream(path, since, query.get("labelSelector"), deadline):
                        line = json.dumps(event).encode() + b"\n"
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def do_PATCH(self) -> None:
                self._serve("PATCH")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    # the protocol

    def handle(
        self, method: str, path: str, query: dict[str, str], body: dict[str, Any], kind: str
    ) -> tuple[int, dict[str, Any]]:
        collection, name, sub = _split(path)
        with self._changed:
            if name is None:
                if method == "POST":
                    return 201, self._create(collection, body)
                return 200, self._list(collection, query.get("labelSelector"))
            at = f"{collection}/{name}"
            obj = self.objects.get(at)
            if obj is None:
                raise RefusedError(404, "NotFound", f"{at} not found")
            if method == "GET":
                return 200, obj
            if method == "DELETE":
                return 200, self._delete(at, obj, body)
            if method == "PATCH":
                self.patches.append({"content_type": kind, "body": body})
                if kind != "application/merge-patch+json":
                    raise RefusedError(415, "UnsupportedMediaType", kind)
                wanted = merge_patch(obj, body)
            elif method == "PUT":
                wanted = body
            else:
                raise RefusedError(405, "MethodNotAllowed", method)
            return 200, self._write(at, obj, wanted, sub)

    def _create(self, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        meta = body.setdefault("metadata", {})
        at = f"{collection}/{meta.get('name')}"
        if at in self.objects:
            raise RefusedError(409, "AlreadyExists", f"{at} already exists")
        meta.update(
            uid=str(uuid.uuid4()),
            generation=1,
            creationTimestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        body.pop("status", None)  # the status subresource's to write
        _check_times(body)
        self._commit(at, copy.deepcopy(body), "ADDED")
        return self.objects[at]

    def _write(
        self, at: str, obj: dict[str, Any], wanted: dict[str, Any], sub: str | None
    ) -> dict[str, Any]:
        if self.conflicts > 0:  # another writer got there first
            self.conflicts -= 1
            self._bump(obj)
        version = wanted.get("metadata", {}).get("resourceVersion")
        if version is not None and version != obj["metadata"]["resourceVersion"]:
            raise RefusedError(
                409,
                "Conflict",
                "the object has been modified; please apply your"
                " changes to the latest version and try again",
            )
        updated = copy.deepcopy(obj)
        if sub == "status":
            updated["status"] = copy.deepcopy(wanted.get("status"))
        else:
            keep = {
                k: obj["metadata"][k]
                for k in ("uid", "creationTimestamp", "generation", "deletionTimestamp")
                if k in obj["metadata"]
            }
            updated = {**copy.deepcopy(wanted), "metadata": {**wanted.get("metadata", {}), **keep}}
            if "status" in obj:  # the status subresource's to write
                updated["status"] = copy.deepcopy(obj["status"])
            if updated.get("spec") != obj.get("spec"):
                updated["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
            _check_times(updated)
        added = set(updated["metadata"].get("finalizers") or ()) - set(
            obj["metadata"].get("finalizers") or ()
        )
        if obj["metadata"].get("deletionTimestamp") and added:
            raise RefusedError(
                422,
                "Invalid",
                "metadata.finalizers: Forbidden: no new"
                " finalizers can be added if the object is being deleted",
            )
        if _unversioned(updated) == _unversioned(obj):  # a write that changes nothing
            return obj
        if updated["metadata"].get("deletionTimestamp") and not updated["metadata"].get(
            "finalizers"
        ):
            self._bump(updated)
            del self.objects[at]
            self._event("DELETED", at, updated)
            return updated
        self._commit(at, updated, "MODIFIED")
        return updated

    def _delete(self, at: str, obj: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        wanted = (body.get("preconditions") or {}).get("resourceVersion")
        if wanted is not None and wanted != obj["metadata"]["resourceVersion"]:
            raise RefusedError(409, "Conflict", "precondition failed: resourceVersion")
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                marked = copy.deepcopy(obj)
                marked["metadata"]["deletionTimestamp"] = time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime()
                )
                self._commit(at, marked, "MODIFIED")
            return self.objects[at]
        del self.objects[at]
        self._bump(obj)
        self._event("DELETED", at, obj)
        return _status(200, "", "deleted") | {"status": "Success"}

    def _list(self, collection: str, selector: str | None) -> dict[str, Any]:
        items = [
            copy.deepcopy(o)
            for p, o in sorted(self.objects.items())
            if self._in(collection, p) and _selected(o, selector)
        ]
        return {
            "kind": "List",
            "apiVersion": "v1",
            "items": items,
            "metadata": {"resourceVersion": str(self._version)},
        }

    @staticmethod
    def _in(collection: str, path: str) -> bool:
        parent = path.rsplit("/", 1)[0]
        if "/namespaces/" in collection:
            return parent == collection
        return _plural(parent) == _plural(collection)

    def stream(self, path: str, since: int, selector: str | None, deadline: float) -> Any:
        """The events of a collection after `since`, as they happen, until `deadline`."""
        collection, _, _ = _split(path)
        with self._changed:
            if since and since < self.oldest:
                yield {
                    "type": "ERROR",
                    "object": _status(
                        410, "Expired", f"too old resource version: {since} ({self.oldest})"
                    ),
                }
                return
        sent, epoch = since, self._epoch
        while not self._stopped and self._epoch == epoch and time.monotonic() < deadline:
            with self._changed:
                fresh = [e for e in self.events if e[0] > sent and self._in(collection, e[2])]
                if not fresh:
                    self._changed.wait(min(0.2, max(0.0, deadline - time.monotonic())))
                    continue
            for version, type_, _, obj in fresh:
                sent = version
                if _selected(obj, selector):
                    yield {"type": type_, "object": obj}

    # bookkeeping

    def _bump(self, obj: dict[str, Any]) -> None:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)

    def _commit(self, at: str, obj: dict[str, Any], type_: str) -> None:
        self._bump(obj)
        self.objects[at] = obj
        self._event(type_, at, obj)

    def _event(self, type_: str, at: str, obj: dict[str, Any]) -> None:
        self.events.append((self._version, type_, at, copy.deepcopy(obj)))
        self._changed.notify_all()

    def compact(self) -> None:
        """Restart, forgetting every event so far: open watches end, and one resumed from an
        older resourceVersion gets 410 Gone."""
        with self._changed:
            self.oldest = self._version + 1
            self.events.clear()
            self._epoch += 1
            self._changed.notify_all()

    def put(self, group: str, version: str, plural: str, obj: dict[str, Any]) -> str:
        meta = obj["metadata"]
        path = f"/apis/{group}/{version}/namespaces/{meta['namespace']}/{plural}/{meta['name']}"
        with self._changed:
            stored = copy.deepcopy(obj)
            stored["metadata"].setdefault("generation", 1)
            self._commit(path, stored, "MODIFIED" if path in self.objects else "ADDED")
        return path

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
        self.server.shutdown()
        self.server.server_close()


# Go's RFC3339Micro, which the API server parses MicroTime with: six fraction digits, always.
MICRO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)")


def _check_times(obj: dict[str, Any]) -> None:
    """A Lease's times are MicroTime: the server refuses any other spelling (400)."""
    if obj.get("kind") != "Lease":
        return
    for field in ("acquireTime", "renewTime"):
        value = (obj.get("spec") or {}).get(field)
        if value is not None and not MICRO_TIME.fullmatch(str(value)):
            raise RefusedError(400, "BadRequest", f"spec.{field}: {value!r} is not a MicroTime")


def _unversioned(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
    return {**obj, "metadata": meta}


def _selected(obj: dict[str, Any], selector: str | None) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    pairs = [p.split("=", 1) for p in (selector or "").split(",") if "=" in p]
    return all(labels.get(k) == v for k, v in pairs)
