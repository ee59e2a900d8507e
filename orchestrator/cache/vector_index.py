"""Nearest-neighbour search over semantic-cache entries, restricted to one context scope.

Every entry lives in Redis as a HASH under the semantic layer's key prefix (the store of record, with the
entry's TTL). Two indexes answer "which stored questions of this scope are closest to this vector":

- `RediSearchIndex`: RediSearch's own HNSW index over those hashes (FT.CREATE ... ON HASH PREFIX ...). Redis
  indexes a hash when it is written and drops it when it expires or is deleted, so the index can never hold
  an orphan, and every orchestrator replica sees every entry. Production default where the module exists.
- `FaissIndex`: an in-process faiss HNSW graph per scope, filled at start from the hashes in Redis
  (`rebuild`) and then by this process's stores. Each vector keeps its expiry time: expired or removed
  vectors are skipped at search time and swept out. Embedded default (plain Redis without the module).

Similarity is cosine similarity of unit-length embeddings (1 = same direction).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import faiss
import numpy as np
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from orchestrator.cache.scan import glob_escape, scan_batches
from orchestrator.config import HnswSettings

# faiss would otherwise start one OpenMP thread per core for every search; a lookup is tiny.
faiss.omp_set_num_threads(1)

#: Hash fields of one semantic entry.
F_TENANT, F_SCOPE, F_QUERY, F_ANSWER, F_VECTOR, F_EXPIRES = "tenant", "scope", "query", "answer", "vector", "expires_at"


@dataclass(frozen=True)
class Candidate:
    """A stored question near the query: its Redis key, similarity, text and (if the index has it) packed
    answer (orchestrator.cache.types.pack_answer)."""

    key: str
    similarity: float
    query: str
    answer: bytes | None = None


@dataclass(frozen=True)
class IndexedEntry:
    key: str
    tenant: str
    scope: str
    query: str
    vector: np.ndarray
    expires_at: float


class VectorIndex(Protocol):
    async def add(self, entry: IndexedEntry) -> None:
        """Make an entry whose hash is already in Redis searchable."""

    async def search(self, tenant: str, scope: str, vector: np.ndarray, k: int) -> list[Candidate]:
        """Up to k live entries of the tenant's `scope` (digest), most similar first."""

    async def has_scope(self, tenant: str, scope: str) -> bool:
        """Whether the tenant's `scope` may hold entries (a lookup in an empty one need not embed)."""

    async def remove(self, keys: Iterable[str]) -> None: ...

    async def remove_tenant(self, tenant: str) -> None: ...

    async def clear(self) -> None: ...


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)


class RediSearchIndex:
    """RediSearch HNSW over the entry hashes; the scope is a TAG filter inside the KNN query."""

    def __init__(self, redis: Redis, prefix: str, dim: int, name: str | None = None,
                 hnsw: HnswSettings | None = None) -> None:
        self.redis = redis
        self.prefix = prefix
        self.dim = dim
        self.name = name or f"{prefix.rstrip(':')}:idx"
        self.hnsw = hnsw or HnswSettings()

    async def ensure(self) -> None:
        """Create the index unless it exists (idempotent; replicas race safely)."""
        try:
            await self.redis.execute_command("FT.INFO", self.name)
            return
        except ResponseError:
            pass
        try:
            await self.redis.execute_command(
                "FT.CREATE", self.name, "ON", "HASH", "PREFIX", "1", self.prefix,
                "SCHEMA", F_TENANT, "TAG", F_SCOPE, "TAG",
                F_VECTOR, "VECTOR", "HNSW", "10", "TYPE", "FLOAT32", "DIM", str(self.dim),
                "DISTANCE_METRIC", "COSINE", "M", str(self.hnsw.m), "EF_CONSTRUCTION", str(self.hnsw.ef_construction),
            )
        except ResponseError as error:
            if "already exists" not in str(error).lower():
                raise

    async def add(self, entry: IndexedEntry) -> None:
        """Nothing to do: Redis indexed the hash when the semantic layer wrote it."""

    async def search(self, tenant: str, scope: str, vector: np.ndarray, k: int) -> list[Candidate]:
        query = (f"{self._scope_filter(tenant, scope)}"
                 f"=>[KNN {k} @{F_VECTOR} $vec EF_RUNTIME {self.hnsw.ef_runtime} AS distance]")
        reply = await self._search(query, "PARAMS", "2", "vec", np.asarray(vector, dtype=np.float32).tobytes(),
                                   "SORTBY", "distance", "RETURN", "3", F_QUERY, F_ANSWER, "distance",
                                   "LIMIT", "0", str(k))
        return [Candidate(_text(key), 1.0 - float(_text(fields["distance"])), _text(fields.get(F_QUERY)),
                          fields.get(F_ANSWER)) for key, fields in _search_rows(reply)]

    async def has_scope(self, tenant: str, scope: str) -> bool:
        """One FT.SEARCH for the count only (LIMIT 0 0): a fraction of a millisecond, no vectors compared."""
        return _search_total(await self._search(self._scope_filter(tenant, scope), "LIMIT", "0", "0")) > 0

    @staticmethod
    def _scope_filter(tenant: str, scope: str) -> str:
        return f"(@{F_SCOPE}:{{{tag_escape(scope)}}} @{F_TENANT}:{{{tag_escape(tenant)}}})"

    async def _search(self, query: str, *arguments: object) -> object:
        """FT.SEARCH's reply; an empty one when the index is gone (Redis restarted without its data: the
        index is created again and picks up the hashes written since)."""
        try:
            return await self.redis.execute_command("FT.SEARCH", self.name, query, *arguments, "DIALECT", "2")
        except ResponseError as error:
            if "no such index" not in str(error).lower():
                raise
            await self.ensure()
            return [0]

    async def remove(self, keys: Iterable[str]) -> None:
        """Nothing to do: deleting the hash removes it from the index."""

    async def remove_tenant(self, tenant: str) -> None:
        """Nothing to do: deleting the hashes removes them from the index."""

    async def clear(self) -> None:
        """Nothing to do: deleting the hashes removes them from the index."""

    async def drop(self) -> None:
        """Drop the index definition (not the hashes)."""
        try:
            await self.redis.execute_command("FT.DROPINDEX", self.name)
        except ResponseError:
            pass

    async def size(self) -> int:
        info = await self.redis.execute_command("FT.INFO", self.name)
        fields = info if isinstance(info, dict) else dict(zip(info[::2], info[1::2]))
        return int(float(_text({_text(k): v for k, v in fields.items()}["num_docs"])))


def _search_total(reply: object) -> int:
    """FT.SEARCH's count of matching documents, for both protocols."""
    if isinstance(reply, dict):
        return int(reply.get("total_results", reply.get(b"total_results", 0)))
    return int(list(reply)[0])  # type: ignore[call-overload]


def _search_rows(reply: object) -> list[tuple[object, dict[str, object]]]:
    """FT.SEARCH rows as (key, fields by name) for both protocols (RESP3 returns a map, RESP2 a flat array);
    values as Redis sent them (bytes: an answer is binary)."""
    if isinstance(reply, dict):
        return [(row.get("id", row.get(b"id")),
                 {_text(k): v for k, v in row.get("extra_attributes", row.get(b"extra_attributes", {})).items()})
                for row in reply.get("results", reply.get(b"results", []))]
    items = list(reply)[1:]  # type: ignore[call-overload]
    return [(key, {_text(k): v for k, v in zip(flat[::2], flat[1::2])}) for key, flat in zip(items[::2], items[1::2])]


@dataclass
class _Partition:
    """One scope's vectors in a faiss HNSW graph; faiss ids are positions in the lists below."""

    graph: faiss.IndexHNSWFlat
    keys: list[str] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    tenants: list[str] = field(default_factory=list)
    expires: list[float] = field(default_factory=list)
    dead: set[int] = field(default_factory=set)

    @property
    def live(self) -> int:
        return len(self.keys) - len(self.dead)


class FaissIndex:
    """In-process HNSW per scope. HNSW cannot delete, so removed and expired vectors are tombstoned,
    skipped at search time, and the partition is rebuilt once most of it is dead."""

    def __init__(self, dim: int, hnsw: HnswSettings | None = None, sweep_interval_s: float = 60.0,
                 clock=time.time) -> None:
        self.dim = dim
        self.hnsw = hnsw or HnswSettings()
        self.sweep_interval_s = sweep_interval_s
        self.clock = clock
        self._partitions: dict[str, _Partition] = {}
        self._where: dict[str, tuple[str, int]] = {}  # key -> (scope, faiss id)
        self._last_sweep = clock()

    def __len__(self) -> int:
        return sum(p.live for p in self._partitions.values())

    def _new_graph(self) -> faiss.IndexHNSWFlat:
        graph = faiss.IndexHNSWFlat(self.dim, self.hnsw.m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = self.hnsw.ef_construction
        graph.hnsw.efSearch = self.hnsw.ef_runtime
        return graph

    async def add(self, entry: IndexedEntry) -> None:
        self.add_many([entry])

    def add_many(self, entries: Sequence[IndexedEntry]) -> None:
        """Add entries (one faiss call per scope); an entry whose key is present replaces it."""
        self._forget([e.key for e in entries if e.key in self._where])
        by_scope: dict[str, list[IndexedEntry]] = {}
        for entry in entries:
            by_scope.setdefault(_partition_key(entry.tenant, entry.scope), []).append(entry)
        for scope, group in by_scope.items():
            partition = self._partitions.get(scope)
            if partition is None:
                partition = self._partitions[scope] = _Partition(self._new_graph())
            vectors = np.ascontiguousarray(np.stack([e.vector for e in group]), dtype=np.float32)
            start = len(partition.keys)
            partition.graph.add(vectors)
            for offset, entry in enumerate(group):
                partition.keys.append(entry.key)
                partition.queries.append(entry.query)
                partition.tenants.append(entry.tenant)
                partition.expires.append(entry.expires_at)
                self._where[entry.key] = (scope, start + offset)
        self._maybe_sweep()

    async def search(self, tenant: str, scope: str, vector: np.ndarray, k: int) -> list[Candidate]:
        partition = self._partitions.get(_partition_key(tenant, scope))
        if partition is None or partition.live == 0:
            return []
        now = self.clock()
        wanted = min(len(partition.keys), k + len(partition.dead))
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        similarities, ids = partition.graph.search(query, wanted)
        found = []
        for similarity, i in zip(similarities[0], ids[0]):
            if i < 0 or i in partition.dead:
                continue
            if partition.expires[i] <= now:
                self._bury(partition, int(i))
                continue
            found.append(Candidate(partition.keys[i], float(similarity), partition.queries[i]))
            if len(found) == k:
                break
        return found

    async def has_scope(self, tenant: str, scope: str) -> bool:
        partition = self._partitions.get(_partition_key(tenant, scope))
        return partition is not None and partition.live > 0

    async def remove(self, keys: Iterable[str]) -> None:
        self._forget(keys)

    async def remove_tenant(self, tenant: str) -> None:
        self._forget([key for key, (scope, i) in self._where.items()
                      if self._partitions[scope].tenants[i] == tenant])

    async def clear(self) -> None:
        self._partitions.clear()
        self._where.clear()

    def _forget(self, keys: Iterable[str]) -> None:
        for key in list(keys):
            place = self._where.get(key)
            if place is not None:
                self._bury(self._partitions[place[0]], place[1])

    def _bury(self, partition: _Partition, i: int) -> None:
        partition.dead.add(i)
        self._where.pop(partition.keys[i], None)

    def _maybe_sweep(self) -> None:
        now = self.clock()
        if now - self._last_sweep < self.sweep_interval_s:
            return
        self.sweep(now)

    def sweep(self, now: float | None = None) -> None:
        """Tombstone expired vectors; rebuild partitions that are mostly dead; drop empty ones."""
        now = self.clock() if now is None else now
        self._last_sweep = now
        for name, partition in list(self._partitions.items()):
            for i, expires in enumerate(partition.expires):
                if expires <= now and i not in partition.dead:
                    self._bury(partition, i)
            if partition.live == 0:
                del self._partitions[name]
            elif len(partition.dead) > partition.live:
                self._compact(name, partition)

    def _compact(self, name: str, partition: _Partition) -> None:
        alive = [i for i in range(len(partition.keys)) if i not in partition.dead]
        vectors = partition.graph.reconstruct_n(0, len(partition.keys))[alive]
        digest = name.split("\0", 1)[1]
        entries = [IndexedEntry(partition.keys[i], partition.tenants[i], digest, partition.queries[i], vectors[n],
                                partition.expires[i]) for n, i in enumerate(alive)]
        del self._partitions[name]
        for e in entries:
            del self._where[e.key]
        self.add_many(entries)

    async def rebuild(self, redis: Redis, prefix: str, batch: int = 500) -> int:
        """Replace the contents with every live entry hash under `prefix` in Redis; returns the count."""
        await self.clear()
        now = self.clock()
        return sum([await self._load(redis, keys, now)
                    async for keys in scan_batches(redis, f"{glob_escape(prefix)}*", batch)])

    async def _load(self, redis: Redis, keys: list[bytes | str], now: float) -> int:
        async with redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, F_TENANT, F_SCOPE, F_QUERY, F_VECTOR, F_EXPIRES)
            rows = await pipe.execute()
        entries = []
        for key, (tenant, scope, query, vector, expires) in zip(keys, rows):
            if vector is None or expires is None or float(_text(expires)) <= now:
                continue
            vector = np.frombuffer(vector, dtype=np.float32)
            if vector.shape != (self.dim,):
                continue  # not an entry of this layout
            entries.append(IndexedEntry(_text(key), _text(tenant), _text(scope), _text(query), vector,
                                        float(_text(expires))))
        if entries:
            self.add_many(entries)
        return len(entries)


def _partition_key(tenant: str, scope: str) -> str:
    return f"{tenant}\0{scope}"


def tag_escape(text: str) -> str:
    """Escape a value for a RediSearch TAG query: every character but letters, digits and '_'."""
    return "".join(c if c.isalnum() or c == "_" else "\\" + c for c in text)
