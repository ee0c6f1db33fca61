"""Versioned bucketing hashes.  The exact algorithms are specified in HASHING.md beside this file.

Never change a version in place: a changed hash moves users between arms mid-experiment.  Add a
new version instead and keep the old one byte-for-byte.

- `abmesh-v1` (default): SHA-256 of `"{salt}:{purpose}:{unit}"`, first 8 bytes as a big-endian
  unsigned integer.  Purposes ("layer", "coverage", "arm") give independent hashes, so being
  enrolled does not correlate with the arm, unlike Unleash before its second seed.  Thresholds
  are integers derived exactly from basis points, so no floating point is involved.
- `growthbook-v2`: GrowthBook's FNV-1a 32-bit hash, version 2, with its float bucket ranges,
  kept bit-compatible so a team migrating from GrowthBook keeps every user in the same arm.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

HASH_BITS = 64
HASH_SPACE = 1 << HASH_BITS

PURPOSE_LAYER = "layer"
PURPOSE_COVERAGE = "coverage"
PURPOSE_ARM = "arm"

_sha256 = hashlib.sha256
_first_u64 = struct.Struct(">Q").unpack_from


def hash_prefix(salt: str, purpose: str) -> str:
    """The fixed part of the hashed string; the unit id is appended to it."""
    return f"{salt}:{purpose}:"


def abmesh_v1(salt: str, purpose: str, unit: str) -> int:
    """abmesh-v1 bucket of `unit`: an integer in [0, 2**64)."""
    digest = _sha256(f"{salt}:{purpose}:{unit}".encode()).digest()
    value: int = _first_u64(digest)[0]
    return value


def bucket_of(prefix: str, unit: str) -> int:
    """abmesh-v1 bucket for a precomputed `hash_prefix` (the hot-path form of `abmesh_v1`)."""
    value: int = _first_u64(_sha256((prefix + unit).encode()).digest())[0]
    return value


def threshold(part: int, whole: int) -> int:
    """The bucket boundary for the fraction part/whole: floor(part * 2**64 / whole), exact."""
    if not 0 <= part <= whole:
        raise ValueError(f"part {part} must lie in [0, {whole}]")
    return part * HASH_SPACE // whole


def cumulative_thresholds(weights: Sequence[int], whole: int) -> list[int]:
    """Upper boundaries of consecutive arms with integer `weights` summing to `whole`."""
    bounds: list[int] = []
    running = 0
    for w in weights:
        running += w
        bounds.append(threshold(running, whole))
    return bounds


def fnv1a32(text: str) -> int:
    """FNV-1a 32-bit over UTF-16 code units, as GrowthBook's reference JS SDK iterates strings."""
    value = 0x811C9DC5
    if text.isascii():
        units: Sequence[int] = text.encode("ascii")
    else:
        raw = text.encode("utf-16-le", "surrogatepass")
        units = struct.unpack(f"<{len(raw) // 2}H", raw)
    for unit in units:
        value = ((value ^ unit) * 0x01000193) & 0xFFFFFFFF
    return value


def growthbook_hash(seed: str, value: str, version: int) -> float | None:
    """GrowthBook's `hash(seed, value, version)`: a float in [0, 1), or None for other versions."""
    if version == 2:
        return (fnv1a32(str(fnv1a32(seed + value))) % 10000) / 10000
    if version == 1:
        return (fnv1a32(value + seed) % 1000) / 1000
    return None


def growthbook_ranges(coverage: float, weights: Sequence[float]) -> list[tuple[float, float]]:
    """GrowthBook's `getBucketRanges`: each arm starts at its cumulative weight, and coverage
    shrinks every range from its start, so raising coverage only adds units.  The float
    operations are done in GrowthBook's order so the boundaries are bit-identical."""
    coverage = min(max(coverage, 0.0), 1.0)
    if not 0.99 <= sum(weights) <= 1.01:
        weights = [1 / len(weights)] * len(weights)
    cumulative = 0.0
    ranges = []
    for w in weights:
        start = cumulative
        cumulative += w
        ranges.append((start, start + coverage * w))
    return ranges


def choose_range(n: float, ranges: Sequence[tuple[float, float]]) -> int:
    """Index of the first half-open range holding `n`, or -1."""
    for i, (low, high) in enumerate(ranges):
        if low <= n < high:
            return i
    return -1
