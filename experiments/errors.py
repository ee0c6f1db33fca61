"""Errors abmesh raises on purpose.

Every error a user can cause is an `AbmeshError`: the CLI prints its message on one line and
the service turns it into a 4xx JSON body.  Anything else is a bug and is allowed to surface.
"""

from __future__ import annotations


class AbmeshError(Exception):
    """Base of every error caused by input or state rather than by a bug."""


class SpecError(AbmeshError, ValueError):
    """An experiment spec is invalid; `problems` holds one `field: message` line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid experiment spec: " + "; ".join(problems))


class InvalidInputError(AbmeshError, ValueError):
    """An argument (a phase name, an event field, a file's content) is not acceptable."""


class InvalidUnitError(InvalidInputError):
    """A unit id is empty, too long, not valid UTF-8 or holds control characters."""


class NotFoundError(AbmeshError, LookupError):
    """The named experiment (or revision) does not exist."""


class ConflictError(AbmeshError):
    """A write would break an invariant held across experiments (e.g. overlapping layer slices)."""


class StoreError(AbmeshError):
    """The store URL is malformed, or the store cannot be reached."""


class SourceError(StoreError):
    """A SQL metric source cannot be reached, or its query failed or timed out: the metrics
    are unreadable, as with a store that is down."""
