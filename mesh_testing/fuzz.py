"""The chaos suite's fuzzer: malformed entries in every table, key, hash, set, list and stream the mesh reads.

It learns the layout from what is there (SQLite's ``sqlite_master``; a Redis
``SCAN`` of the cluster's ``mesh:{name}:`` keys), so a new table or key is
fuzzed without a change here. Each entry is new (fresh ids, new fields, new
stream entries, sibling keys of the same family), never an overwrite of a real
record, so what the workload acknowledged stays intact and every failure is
the mesh's. ``garbage(rng, like)`` is the pure part: random bytes, truncated
or bit-flipped copies of a real value (broken msgpack, bad checksums and
signatures), wrong types, huge fields, out-of-range numbers.
"""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from typing import Any

HUGE = 256 * 1024  # bytes in a "huge field": large, but far under any frame limit's multiple


def garbage(rng: random.Random, like: Any = None) -> Any:
    """One malformed value, shaped after ``like`` (a real value of the same field) when given."""
    kinds = ["bytes", "text", "int", "float", "huge", "empty", "msgpack"]
    if isinstance(like, bytes | str) and like:
        kinds += ["truncated", "flipped", "truncated", "flipped"]
    kind = rng.choice(kinds)
    raw = like.encode() if isinstance(like, str) else like
    if kind == "truncated":
        return raw[: rng.randrange(len(raw))]
    if kind == "flipped":
        data = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)
    if kind == "bytes":
        return rng.randbytes(rng.randint(1, 64))
    if kind == "text":
        return rng.choice(["qq", "nan", "-inf", "null", "{", "[]", "\u00e9\u2603", "1e999", "true", " "])
    if kind == "int":
        return rng.choice([-1, 0, 2**63 - 1, -(2**63), 10**18, 2**31])
    if kind == "float":
        return rng.choice([-1.5, 1e308, -1e308, 3.5e9 * 1000])
    if kind == "huge":
        return rng.choice([b"\xff", b"x"]) * HUGE
    if kind == "msgpack":  # well-formed msgpack of the wrong shape: a map with nonsense in it
        return b"\x82\xa1a\xc0\xa1t\xcb" + rng.randbytes(8)
    return b""


def fresh_id(rng: random.Random) -> str:
    return f"fuzz{rng.getrandbits(48):012x}"


# -- SQLite ------------------------------------------------------------------------------------
def fuzz_sqlite(path: str, count: int, seed: int = 0) -> Counter[str]:
    """Insert about ``count`` malformed rows over every table of the SQLite file; returns rows stored per table."""
    rng = random.Random(seed)
    stored: Counter[str] = Counter()
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                           "AND name NOT LIKE 'sqlite_%'")]
        per_table = max(1, count // max(1, len(tables)))
        for table in tables:
            cols = list(db.execute(f'PRAGMA table_info("{table}")'))  # cid, name, type, notnull, default, pk
            samples = db.execute(f'SELECT * FROM "{table}" ORDER BY random() LIMIT 20').fetchall()
            names = ", ".join(f'"{c[1]}"' for c in cols)
            marks = ", ".join("?" for _ in cols)
            rows = []
            for _ in range(per_table):
                sample = rng.choice(samples) if samples else [None] * len(cols)
                row: list[Any] = []
                for col, real in zip(cols, sample, strict=True):
                    pk, ctype = col[5], (col[2] or "").upper()
                    if pk and ctype == "INTEGER" and len([c for c in cols if c[5]]) == 1:
                        row.append(None)  # the rowid: let SQLite number it
                    elif pk or col[1] in ("task_id", "node_id") and not samples:
                        row.append(fresh_id(rng))
                    elif rng.random() < 0.5 and real is not None:
                        row.append(real)  # a real value next to a broken one: the row still looks like a record
                    else:
                        row.append(garbage(rng, real))
                rows.append(row)
            db.execute("BEGIN IMMEDIATE")
            before = db.total_changes
            for row in rows:
                try:
                    db.execute(f'INSERT OR IGNORE INTO "{table}" ({names}) VALUES ({marks})', row)
                except sqlite3.Error:
                    pass  # a NOT NULL or CHECK refusal: SQLite kept this one out, so no entry to count
            db.execute("COMMIT")
            stored[table] += db.total_changes - before
    finally:
        db.close()
    return stored


# -- Redis -------------------------------------------------------------------------------------
def _family(key: bytes, rng: random.Random) -> bytes:
    """A sibling of ``key`` in the same family: its last ``:``-part replaced by a fresh id."""
    head, sep, _ = key.rpartition(b":")
    return head + sep + fresh_id(rng).encode() if sep else key + b":" + fresh_id(rng).encode()


def fuzz_redis(url: str, prefix: str, count: int, seed: int = 0) -> Counter[str]:
    """Write about ``count`` malformed entries over every key under ``prefix``; returns entries written per type."""
    import redis

    rng = random.Random(seed)
    written: Counter[str] = Counter()
    client = redis.Redis.from_url(url, socket_timeout=30)
    try:
        keys = sorted(client.scan_iter(match=prefix + "*", count=1000))
        if not keys:
            return written
        pipe = client.pipeline(transaction=False)
        for n in range(count):
            key = rng.choice(keys)
            kind = _as_bytes(client.type(key)).decode()
            target = key if rng.random() < 0.6 else _family(key, rng)
            if rng.random() < 0.1:  # the wrong type under a name the mesh reads
                pipe.set(_family(key, rng), _as_bytes(garbage(rng)))
                written["wrong_type"] += 1
            elif kind == "hash":
                fields = client.hkeys(key) or [b"f"]
                real_field = rng.choice(fields)
                like = client.hget(key, real_field)
                field = real_field if target != key else fresh_id(rng).encode()
                pipe.hset(target, field, _as_bytes(garbage(rng, like)))
                written["hash"] += 1
            elif kind == "stream":
                last = client.xrevrange(key, count=1)
                entry: dict[Any, Any] = dict(last[0][1] or {}) if last else {b"f": b"x"}
                pipe.xadd(key, {f: _as_bytes(garbage(rng, v)) if rng.random() < 0.5 else v
                                for f, v in entry.items()}, maxlen=None)
                written["stream"] += 1
            elif kind == "set":
                pipe.sadd(key, _as_bytes(garbage(rng, client.srandmember(key))))
                written["set"] += 1
            elif kind == "list":
                pipe.rpush(key, _as_bytes(garbage(rng, client.lindex(key, 0))))
                written["list"] += 1
            elif kind == "zset":
                pipe.zadd(key, {_as_bytes(garbage(rng)): rng.choice([0, -1, 1e18])})
                written["zset"] += 1
            else:
                pipe.set(target if target != key else _family(key, rng), _as_bytes(garbage(rng, client.get(key))))
                written["string"] += 1
            if n % 200 == 199:
                pipe.execute()
        pipe.execute()
    finally:
        client.close()
    return written


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
