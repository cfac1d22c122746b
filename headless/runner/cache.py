"""Output caches keyed by content, ComfyUI-style, with policies sharing one base.

A node's key is its input signature: class, IS_CHANGED value, and its inputs sorted by
name, each link replaced by the key of the node it comes from (so the key covers the
node's whole ancestry), plus the node id for NOT_IDEMPOTENT nodes. A value that cannot
be compared (IS_CHANGED returning NaN, an unhashable input) becomes `NEVER`, which equals
nothing, so that node and everything downstream runs again.

Policies (chosen in config, `make_cache(name)`):
- `classic`: the latest result per node id (ComfyUI's default);
- `lru`: up to `max_size` results by key, least recently used dropped first;
- `none`: nothing kept (every needed node runs every time).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any


class _Never:
    """A key part that equals nothing, not even itself (ComfyUI's `Unhashable` idea)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return False

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return "NEVER"


def never() -> _Never:
    return _Never()


def to_hashable(value: Any) -> Any:
    """A hashable stand-in for an input value, or a fresh NEVER if it has none."""
    if isinstance(value, float) and math.isnan(value):
        return never()
    if value is None or isinstance(value, (str, int, float, bool, bytes)):
        return value
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(to_hashable(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted(((str(k), to_hashable(v)) for k, v in value.items()), key=lambda kv: kv[0])))
    try:
        hash(value)
    except TypeError:
        return never()
    return value


class OutputCache:
    """Base of every policy: `get(node_id, key)` → outputs or None; `put(node_id, key, outputs)`."""

    name = "base"

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def get(self, node_id: str, key: Any) -> tuple | None:
        with self._lock:
            return self._get(node_id, key)

    def put(self, node_id: str, key: Any, outputs: tuple) -> None:
        with self._lock:
            self._put(node_id, key, outputs)

    def clear(self) -> None:
        with self._lock:
            self._clear()

    def __len__(self) -> int:
        with self._lock:
            return self._size()

    # Policies implement these (called with the lock held).
    def _get(self, node_id: str, key: Any) -> tuple | None:
        raise NotImplementedError

    def _put(self, node_id: str, key: Any, outputs: tuple) -> None:
        raise NotImplementedError

    def _clear(self) -> None:
        raise NotImplementedError

    def _size(self) -> int:
        raise NotImplementedError


class ClassicCache(OutputCache):
    """One entry per node: a hit only if the node's key is unchanged since it last ran."""

    name = "classic"

    def __init__(self) -> None:
        super().__init__()
        self._entries: dict[str, tuple[Any, tuple]] = {}

    def _get(self, node_id, key):
        entry = self._entries.get(node_id)
        return entry[1] if entry is not None and entry[0] == key else None

    def _put(self, node_id, key, outputs):
        self._entries[node_id] = (key, outputs)

    def _clear(self):
        self._entries.clear()

    def _size(self):
        return len(self._entries)


class LRUCache(OutputCache):
    """Results by key regardless of node id: switching back to earlier inputs hits too."""

    name = "lru"

    def __init__(self, max_size: int = 64) -> None:
        super().__init__()
        if max_size < 0:
            raise ValueError("max_size must be >= 0")
        self.max_size = max_size
        self._entries: OrderedDict[Any, tuple] = OrderedDict()

    def _get(self, node_id, key):
        try:
            outputs = self._entries[key]
        except (KeyError, TypeError):
            return None
        self._entries.move_to_end(key)
        return outputs

    def _put(self, node_id, key, outputs):
        if self.max_size == 0:
            return
        self._entries[key] = outputs
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def _clear(self):
        self._entries.clear()

    def _size(self):
        return len(self._entries)


class NullCache(OutputCache):
    """Keeps nothing."""

    name = "none"

    def _get(self, node_id, key):
        return None

    def _put(self, node_id, key, outputs):
        pass

    def _clear(self):
        pass

    def _size(self):
        return 0


CACHE_POLICIES: dict[str, type[OutputCache]] = {cls.name: cls for cls in (ClassicCache, LRUCache, NullCache)}


def make_cache(policy: str = "classic", **options: Any) -> OutputCache:
    """The cache for `policy`; unknown names raise with the known ones listed."""
    try:
        cls = CACHE_POLICIES[policy]
    except KeyError:
        raise ValueError(f"unknown cache policy {policy!r}; known: {', '.join(CACHE_POLICIES)}") from None
    return cls(**options)
