"""Which Experiment object each mirrored experiment came from, kept in the store (one control
document) so every controller reads the same answer: name -> the object's namespace/name, its
uid, and the highest `metadata.generation` any controller has mirrored.

Every change is its own compare-and-set on the document, read again and retried on a conflict:
two controllers claiming two new objects in the same tick both land.  A claim comes before the
experiment is stored, so a controller killed in between leaves a claim (taken up at the next
tick) rather than an experiment no object owns.  The generation stops a controller whose watch
is behind from applying an older spec over a newer one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from experiments.errors import ConflictError
from experiments.store import Store

DOCUMENT = "kube#objects"
RETRIES = 20


@dataclass(frozen=True)
class Origin:
    key: str  # namespace/name of the object
    uid: str  # the object's metadata.uid: a new one for an object deleted and created again
    generation: int = 0

    def same_object(self, other: Origin) -> bool:
        return (self.key, self.uid) == (other.key, other.uid)


class Origins:
    def __init__(self, store: Store) -> None:
        self.store = store

    def all(self) -> dict[str, Origin]:
        doc, _ = self.store.get_control(DOCUMENT)
        return {n: Origin(**o) for n, o in ((doc or {}).get("experiments") or {}).items()}

    def get(self, name: str) -> Origin | None:
        return self.all().get(name)

    def claim(self, name: str, origin: Origin) -> Origin:
        """Record `origin` for `name` unless another object holds the name; raise its
        generation if `origin`'s is higher.  Returns the origin that holds the name now."""

        def change(held: Origin | None) -> Origin | None:
            if held is None:
                return origin
            if held.same_object(origin) and origin.generation > held.generation:
                return origin
            return held

        result = self._change(name, change)
        assert result is not None
        return result

    def forget(self, name: str, origin: Origin) -> None:
        """Drop `name`'s entry if it is still `origin`'s object."""
        self._change(name, lambda held: None if held and held.same_object(origin) else held)

    def _change(self, name: str, change: Callable[[Origin | None], Origin | None]) -> Origin | None:
        for _ in range(RETRIES):
            doc, version = self.store.get_control(DOCUMENT)
            entries: dict[str, Any] = dict((doc or {}).get("experiments") or {})
            held = Origin(**entries[name]) if name in entries else None
            wanted = change(held)
            if wanted == held:
                return held
            if wanted is None:
                entries.pop(name, None)
            else:
                entries[name] = asdict(wanted)
            try:
                self.store.put_control(DOCUMENT, {"experiments": entries}, version)
            except ConflictError:  # another controller wrote it: read again
                continue
            return wanted
        raise ConflictError(f"the object index kept changing under {name!r}: try again")
