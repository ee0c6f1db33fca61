"""Character sets for the names and tokens that end up in URLs, keys and HTTP headers.

Header names and values become Istio `match.headers` rules and response headers, so both are
limited to RFC 9110 `tchar` (no whitespace, no CR/LF, no separators): nothing in a spec can
inject a header or split a response.  Names that become store keys and URL path segments are
limited further.
"""

from __future__ import annotations

import re

# RFC 9110 section 5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
# "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}")
# Experiment, variant, metric and layer names: start alphanumeric, at most 63 characters
# (fits a Kubernetes label value and a DNS label).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
# DNS-1123 subdomain, as Kubernetes requires for Service hosts.
HOST_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")

# Headers abmesh must never set on a request or response: framing, connection management,
# routing to the host, credentials and cookies.  x-envoy-* headers are Envoy's own.
RESERVED_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "content-type",
        "cookie",
        "host",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "set-cookie",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "authorization",
        "www-authenticate",
        "location",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
    }
)

MAX_UNIT_BYTES = 256
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# What unit_problem accepts, for OpenAPI; a length in bytes has no JSON Schema keyword.
UNIT_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_UNIT_BYTES,
    "pattern": r"^[^\x00-\x1f\x7f-\x9f]+$",
    "description": f"A unit id: at most {MAX_UNIT_BYTES} bytes of UTF-8, no control characters.",
}


def check_name(value: str, what: str = "name") -> str:
    if not NAME_RE.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} must be 1-63 characters of letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return value


def check_token(value: str, what: str) -> str:
    if not TOKEN_RE.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not an HTTP token (RFC 9110 tchar: letters, digits and"
            " !#$%&'*+-.^_`|~, 1-128 characters; no spaces, separators or control characters)"
        )
    return value


def check_routing_header(name: str) -> str:
    """A header abmesh sets (on responses and, through ext_authz, on upstream requests)."""
    lowered = name.lower()
    if lowered in RESERVED_HEADERS or lowered.startswith(("x-envoy-", "proxy-", "sec-")):
        raise ValueError(
            f"header {name!r} is reserved (framing, connection, host, credentials, cookies or"
            " proxy headers): use a header of its own, such as x-user-group"
        )
    return name


def unit_problem(unit: object) -> str | None:
    """Why `unit` is not an acceptable unit id, or None when it is.

    A unit id is a non-empty string of at most MAX_UNIT_BYTES bytes of UTF-8 with no control
    characters (C0, DEL, C1).  Kept cheap for the assignment hot path: the common short
    printable id costs two C-level calls.
    """
    if not isinstance(unit, str):
        return f"unit must be a string, got {type(unit).__name__}"
    if not unit:
        return "unit must not be empty"
    if len(unit) <= MAX_UNIT_BYTES // 4 and unit.isprintable():
        return None
    if _CONTROL_RE.search(unit):
        return "unit must not contain control characters"
    try:
        size = len(unit.encode("utf-8"))
    except UnicodeEncodeError:
        return "unit must be valid UTF-8 (it holds a lone surrogate)"
    if size > MAX_UNIT_BYTES:
        return f"unit is {size} bytes of UTF-8; at most {MAX_UNIT_BYTES} are allowed"
    return None
