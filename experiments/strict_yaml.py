"""YAML loading that refuses a mapping with the same key twice.

PyYAML's SafeLoader keeps the last of repeated keys, so `coverage: 0.05` followed further down
by `coverage: 1` silently enrols everyone.  YAML 1.2 requires keys to be unique; this loader
says which key is repeated and on which lines.  Keys brought in by a merge (`<<: *base`) may
still be overridden: that is what merges are for.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode

MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(ConstructorError):
    """A mapping holds one key twice; the message names it and both lines (1-based)."""


class StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = first_line.get(key)
            except TypeError:  # an unhashable key: SafeLoader refuses it with its own message
                continue
            if first is not None:
                raise DuplicateKeyError(
                    problem=f"duplicate key {key!r} on line {line} (first on line {first})",
                    problem_mark=key_node.start_mark,
                )
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def load(text: str) -> Any:
    """The one document in `text`, like yaml.safe_load but refusing repeated keys."""
    return yaml.load(text, Loader=StrictLoader)  # a SafeLoader: plain data only


def load_all(text: str) -> list[Any]:
    """Every document in `text`, like yaml.safe_load_all but refusing repeated keys."""
    return list(yaml.load_all(text, Loader=StrictLoader))
