"""The hot path: sticky hashing into variants (and, in later parts, the HTTP service)."""

from assignment.assign import Assignment, Reason, assign, assign_many

__all__ = ["Assignment", "Reason", "assign", "assign_many"]
