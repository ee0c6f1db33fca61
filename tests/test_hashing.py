"""The hashes against the language-neutral vectors in tests/cases.json (GrowthBook-style)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from assignment import assign, hashing
from experiments import load_spec

CASES: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parent / "cases.json").read_text(encoding="utf-8")
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # One test per vector, as GrowthBook's SDKs load their shared cases.json.
    for section in ("abmeshV1Bucket", "abmeshV1Assign", "growthbookHash", "growthbookBucketRange"):
        if section in metafunc.fixturenames:
            metafunc.parametrize(section, CASES[section])


def test_abmesh_v1_bucket(abmeshV1Bucket: list[str]) -> None:  # noqa: N803
    salt, purpose, unit, expected = abmeshV1Bucket
    assert hashing.abmesh_v1(salt, purpose, unit) == int(expected)
    assert hashing.bucket_of(hashing.hash_prefix(salt, purpose), unit) == int(expected)


def test_abmesh_v1_assign(abmeshV1Assign: list[Any]) -> None:  # noqa: N803
    spec_data, unit, (variant, in_experiment, reason) = abmeshV1Assign
    result = assign(load_spec(spec_data), unit)
    assert (result.variant, result.in_experiment, result.reason.value) == (
        variant,
        in_experiment,
        reason,
    )


def test_growthbook_hash(growthbookHash: list[Any]) -> None:  # noqa: N803
    seed, value, version, expected = growthbookHash
    assert hashing.growthbook_hash(seed, value, version) == expected


def test_growthbook_bucket_range(growthbookBucketRange: list[Any]) -> None:  # noqa: N803
    _, (count, coverage, weights), expected = growthbookBucketRange
    ranges = hashing.growthbook_ranges(coverage, weights or [1 / count] * count)
    # GrowthBook's SDK tests compare after rounding to 6 decimals (0.2 * 0.2 = 0.04000000000000001).
    assert [[round(a, 6), round(b, 6)] for a, b in ranges] == expected


def test_fnv1a32_reference_values() -> None:
    # FNV-1a 32 of the empty string is the offset basis; "a" and "foobar" are the published
    # test values of the FNV reference (isthe.com/chongo/tech/comp/fnv, test vectors).
    assert hashing.fnv1a32("") == 0x811C9DC5
    assert hashing.fnv1a32("a") == 0xE40C292C
    assert hashing.fnv1a32("foobar") == 0xBF9CF968


def test_thresholds_are_exact_integers() -> None:
    assert hashing.threshold(5000, 10_000) == 2**63
    assert hashing.threshold(10_000, 10_000) == 2**64
    assert hashing.threshold(1, 3) == (2**64) // 3
    assert hashing.cumulative_thresholds([9500, 500], 10_000) == [9500 * 2**64 // 10_000, 2**64]
    with pytest.raises(ValueError, match="part"):
        hashing.threshold(3, 2)


def test_choose_range_is_half_open() -> None:
    ranges = [(0.0, 0.5), (0.5, 1.0)]
    assert hashing.choose_range(0.0, ranges) == 0
    assert hashing.choose_range(0.5, ranges) == 1
    assert hashing.choose_range(1.0, ranges) == -1
