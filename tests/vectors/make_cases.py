"""Writes tests/cases.json: language-neutral vectors for the bucketing hashes.

The abmesh-v1 values are computed here straight from the rules in assignment/HASHING.md, with
hashlib and integer arithmetic only — deliberately not through the `assignment` package, so the
vectors check the implementation instead of echoing it.  The GrowthBook vectors are quoted from
GrowthBook's cross-SDK file (growthbook/growthbook packages/sdk-js/test/cases.json, specVersion
0.8.0, sections "hash" and "getBucketRange"; the same values are in growthbook-python's
tests/cases.json), plus non-ASCII cases computed here with UTF-16 code units as the JS SDK does.

Run: python tests/vectors/make_cases.py  (rewrites tests/cases.json; the output is stable)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

SPACE = 2**64


def bucket(salt: str, purpose: str, unit: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}:{purpose}:{unit}".encode()).digest()[:8], "big")


def variant_of(spec: dict[str, Any], unit: str) -> list[Any]:
    """[variant, in_experiment, reason] by HASHING.md steps 3-5 (no overrides, no sticky)."""
    salt = spec.get("salt") or spec["name"]
    control = spec["variants"][0]["key"]
    layer = spec.get("layer")
    if layer:
        low = round(layer["start"] * 100) * SPACE // 10000
        high = round(layer["end"] * 100) * SPACE // 10000
        if not low <= bucket(layer["name"], "layer", unit) < high:
            return [control, False, "layer"]
    coverage_bp = round(spec.get("coverage", 1) * 10000)
    if coverage_bp < 10000 and bucket(salt, "coverage", unit) >= coverage_bp * SPACE // 10000:
        return [control, False, "coverage"]
    h, running = bucket(salt, "arm", unit), 0
    for v in spec["variants"]:
        running += round(v["weight"] * 100)
        if h < running * SPACE // 10000:
            return [v["key"], True, "hash"]
    raise AssertionError("weights must sum to 100")


def fnv1a32_utf16(text: str) -> int:
    h = 0x811C9DC5
    raw = text.encode("utf-16-le", "surrogatepass")
    for i in range(0, len(raw), 2):
        h = ((h ^ int.from_bytes(raw[i : i + 2], "little")) * 0x01000193) % 2**32
    return h


def gb_v2(seed: str, value: str) -> float:
    return (fnv1a32_utf16(str(fnv1a32_utf16(seed + value))) % 10000) / 10000


def _variants(*weights: float) -> list[dict[str, Any]]:
    return [
        {
            "key": f"v{i}",
            "header_value": f"group-{chr(97 + i)}",
            "weight": w,
            "destination": {"host": "model"},
        }
        for i, w in enumerate(weights)
    ]


SPECS: list[dict[str, Any]] = [
    {"name": "ranker-v2", "variants": _variants(50, 50)},
    {"name": "canary", "variants": _variants(95, 5)},
    {"name": "three-way", "salt": "s-2026", "variants": _variants(33.34, 33.33, 33.33)},
    {"name": "partial", "coverage": 0.25, "variants": _variants(20, 80)},
    {
        "name": "layered",
        "layer": {"name": "search", "start": 10, "end": 60},
        "variants": _variants(50, 50),
    },
]
UNITS = [
    "user-1",
    "user-2",
    "user-42",
    "qa-1",
    "42",
    "a:b:c",
    "é",
    "用户-7",
    "user-😀",
    "x" * 64,
    "alice@example.com",
    "00000000-0000-0000-0000-000000000001",
]

GROWTHBOOK_HASH = [  # quoted from GrowthBook's cases.json, "hash" section
    ["", "a", 1, 0.22],
    ["", "b", 1, 0.077],
    ["b", "a", 1, 0.946],
    ["ef", "d", 1, 0.652],
    ["asdf", "8952klfjas09ujk", 1, 0.549],
    ["", "123", 1, 0.011],
    ["", '___)((*":&', 1, 0.563],
    ["seed", "a", 2, 0.0505],
    ["seed", "b", 2, 0.2696],
    ["foo", "ab", 2, 0.2575],
    ["foo", "def", 2, 0.2019],
    ["89123klj", "8952klfjas09ujkasdf", 2, 0.124],
    ["90850943850283058242805", "123", 2, 0.7516],
    ["()**(%$##$%#$#", '___)((*":&', 2, 0.0128],
    ["abc", "def", 99, None],
]
GROWTHBOOK_RANGES = [  # quoted from GrowthBook's cases.json, "getBucketRange" section
    ["normal 50/50", [2, 1, None], [[0, 0.5], [0.5, 1]]],
    ["reduced coverage", [2, 0.5, None], [[0, 0.25], [0.5, 0.75]]],
    ["zero coverage", [2, 0, None], [[0, 0], [0.5, 0.5]]],
    [
        "uneven weights, reduced coverage, 3 variations",
        [3, 0.2, [0.2, 0.3, 0.5]],
        [[0, 0.04], [0.2, 0.26], [0.5, 0.6]],
    ],
    ["negative coverage", [2, -0.2, None], [[0, 0], [0.5, 0.5]]],
    ["weights sum below 1", [2, 1, [0.4, 0.1]], [[0, 0.5], [0.5, 1]]],
    ["weights sum almost equals 1", [2, 1, [0.4, 0.5999]], [[0, 0.4], [0.4, 0.9999]]],
]


def main() -> None:
    cases = {
        "specVersion": "abmesh-cases/1",
        "about": "Vectors for assignment/HASHING.md; uint64 buckets as decimal strings. Made by"
        " tests/vectors/make_cases.py; the GrowthBook sections quote GrowthBook's"
        " cross-SDK cases.json.",
        "abmeshV1Bucket": [
            [salt, purpose, unit, str(bucket(salt, purpose, unit))]
            for salt in ("ranker-v2", "s-2026", "search")
            for purpose in ("arm", "coverage", "layer")
            for unit in UNITS[:6]
        ],
        "abmeshV1Assign": [
            [spec, unit, variant_of(spec, unit)] for spec in SPECS for unit in UNITS
        ],
        "growthbookHash": GROWTHBOOK_HASH
        + [["exp1", unit, 2, gb_v2("exp1", unit)] for unit in ("user-é", "user-😀", "用户-7")],
        "growthbookBucketRange": GROWTHBOOK_RANGES,
    }
    path = Path(__file__).resolve().parent.parent / "cases.json"
    path.write_text(_one_case_a_line(cases), encoding="utf-8")


def _one_case_a_line(cases: dict[str, Any]) -> str:
    def dump(value: object) -> str:
        return json.dumps(value, ensure_ascii=False)

    sections = []
    for key, value in cases.items():
        if isinstance(value, list):
            body = ",\n".join(f"    {dump(item)}" for item in value)
            sections.append(f"  {dump(key)}: [\n{body}\n  ]")
        else:
            sections.append(f"  {dump(key)}: {dump(value)}")
    return "{\n" + ",\n".join(sections) + "\n}\n"


if __name__ == "__main__":
    main()
