"""A new leader's token releases what the deposed leader left half done on a store server.

A leader killed in the middle of a statement leaves its transaction open on the servers,
holding its key locks; nobody could finish it (its token is refused from now on), so it
would block the new leader's writes of the same keys until the idle timeout (600 s).
When a server learns a newer token of a group it aborts that group's older open
transactions at once; durably prepared ones stay (the old leader may have decided to
commit them, and phase 2 is still accepted).
"""

from __future__ import annotations

import pytest

from integration.cluster import Cluster
from spark_ext.exceptions import FencedError
from spark_ext.wire.kinds import Kind

GROUP = "fence-aborts"


def _two_keys_on_one_server(info) -> tuple[str, int, int]:
    by_server: dict[str, list[int]] = {}
    for k in range(1000):
        sid = info.placement[info.schema.bucket_of_key(info.schema.coerce_key(k))]
        by_server.setdefault(sid, []).append(k)
        if len(by_server[sid]) == 2:
            return sid, by_server[sid][0], by_server[sid][1]
    raise AssertionError("no two keys on one server")


def test_newer_token_aborts_open_transactions_of_the_old_leader(ha_cluster: Cluster) -> None:
    c = ha_cluster.admin()
    name = "default.fence_aborts"
    c.create_table(name, [("id", "int64"), ("v", "string")], primary_key="id", num_buckets=6)
    info = c.table(name, refresh=True)
    sid, k_open, k_prepared = _two_keys_on_one_server(info)
    conn = ha_cluster.connection(sid)
    try:
        def fenced(token: int) -> dict:
            return {"fence": {"group": GROUP, "token": token}}

        def stage(txn: str, key: int, v: str, token: int) -> None:
            body, flags = c._body(info, [(key, v)])
            conn.request(Kind.TXN_STAGE, {"txn": txn, "part": "p0", "table": info.full_name, "op": "upsert",
                                          **fenced(token)}, body, flags)
            conn.request(Kind.TXN_PREPARE, {"txn": txn, "part": "p0", **fenced(token)})

        def state(txn: str) -> str:
            return conn.request(Kind.TXN_STATUS, {"txn": txn}).metadata["state"]

        stage("old-open", k_open, "old", 1)  # a task committed its part; the job never did
        stage("old-prepared", k_prepared, "old", 1)
        conn.request(Kind.TXN_PREPARE, {"txn": "old-prepared", "parts": ["p0"], **fenced(1)})  # job phase 1
        assert (state("old-open"), state("old-prepared")) == ("open", "prepared")

        conn.request(Kind.PING, fenced(2))  # the new leader announces itself

        assert state("old-open") == "aborted"  # its key lock is gone at once
        assert state("old-prepared") == "prepared"  # in doubt: kept for its coordinator's decision
        c.put(name, [(k_open, "new")])
        assert c.get(name, k_open)[1] == "new"
        with pytest.raises(FencedError, match=f"group '{GROUP}': token 1 is older than token 2"):
            stage("old-open", k_open, "again", 1)
        # Phase 2 of a commit the old leader decided before it lost the lease still lands.
        assert conn.request(Kind.TXN_COMMIT, {"txn": "old-prepared", "parts": ["p0"], **fenced(1)}).metadata["state"] \
            == "committed"
        assert c.get(name, k_prepared)[1] == "old"
        # The new leader's own transactions are not touched by its token.
        stage("new-open", k_open, "newer", 2)
        conn.request(Kind.PING, fenced(2))
        assert state("new-open") == "open"
        conn.request(Kind.TXN_COMMIT, {"txn": "new-open", "parts": ["p0"], **fenced(2)})
        assert c.get(name, k_open)[1] == "newer"
    finally:
        conn.close()
