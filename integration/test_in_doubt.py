"""Prepared transactions whose coordinator died (or was deposed) are resolved everywhere.

A real coordinator (the Python client in its own process, writing rows that span the
three servers in one transaction) is killed with SIGKILL at a chosen step of its
two-phase commit. The servers must then agree on one outcome by themselves
(``docs/in-doubt.md``): every server ends with the same decision, the key locks are
released (a later write of the same keys succeeds), and the data is exactly the
committed state (all of the statement or none of it).

The cluster runs with short timeouts (``--txn-timeout``, ``--indoubt-timeout``) so that
the presumed-abort path is reached in seconds.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from integration.cluster import Cluster, wait_until
from spark_ext.client.client import StoreClient
from spark_ext.exceptions import BadArgumentError, ConflictError
from spark_ext.wire.kinds import Kind

#: Long enough for the checks made while a transaction is in doubt (a few requests and
#: one CLI run), short enough to reach the presumed-abort path within the test.
INDOUBT_TIMEOUT_S = 10.0
RESOLVE_WAIT_S = 60.0

#: The coordinator: the real client's multi-server put, killed at a chosen step. The
#: hook only counts the client's requests and stops the process (SIGKILL, no clean-up)
#: before the chosen one is sent; ``pause_before_commit`` waits for a file first (the
#: test kills a server meanwhile).
COORDINATOR = r'''
import os, signal, time
from spark_ext.client import connection as C
from spark_ext.wire.kinds import Kind
seen = {"prepare": 0, "commit": 0}
orig = C.ConnectionPool.request
def request(self, kind, meta, *a, **k):
    if kind == Kind.TXN_PREPARE and "parts" in meta:
        open(PARAMS["txn_file"], "w").write(meta["txn"])
        if seen["prepare"] == PARAMS.get("die_before_prepare"):
            os.kill(os.getpid(), signal.SIGKILL)
        seen["prepare"] += 1
    if kind == Kind.TXN_COMMIT:
        if seen["commit"] == PARAMS.get("pause_before_commit"):
            open(PARAMS["txn_file"] + ".paused", "w").write("1")
            while not os.path.exists(PARAMS["txn_file"] + ".go"):
                time.sleep(0.02)
        if seen["commit"] == PARAMS.get("die_before_commit"):
            os.kill(os.getpid(), signal.SIGKILL)
        seen["commit"] += 1
    return orig(self, kind, meta, *a, **k)
C.ConnectionPool.request = request
c = cluster_client()
if PARAMS.get("fence"):
    c.fence = PARAMS["fence"]
try:
    c.put(PARAMS["table"], [tuple(r) for r in PARAMS["rows"]])
    emit("committed")
except Exception as e:
    emit(f"failed: {type(e).__name__}: {e}")
'''


@pytest.fixture(scope="module")
def cl(make_cluster: Any) -> Cluster:
    return make_cluster("indoubt", server_args=["--txn-timeout", str(INDOUBT_TIMEOUT_S),
                                                 "--indoubt-timeout", str(INDOUBT_TIMEOUT_S)])


def _table(cluster: Cluster, name: str) -> tuple[StoreClient, list[int]]:
    """A table with 2 keys on each of the 3 servers, holding the value "old"."""
    c = cluster.admin()
    c.create_table(name, [("id", "int64"), ("v", "string")], primary_key="id", num_buckets=6)
    info = c.table(name, refresh=True)
    per: dict[str, list[int]] = {}
    for k in range(1000):
        sid = info.placement[info.schema.bucket_of_key(info.schema.coerce_key(k))]
        if len(per.setdefault(sid, [])) < 2:
            per[sid].append(k)
    assert sorted(per) == ["s0", "s1", "s2"] and all(len(v) == 2 for v in per.values())
    keys = sorted(k for v in per.values() for k in v)
    c.put(name, [(k, "old") for k in keys])
    return c, keys


def _run_coordinator(cluster: Cluster, tmp: Path, name: str, keys: list[int], **steps: Any) -> tuple[Any, str]:
    txn_file = tmp / f"{name}.txn"
    app = cluster.spawn_app(COORDINATOR, table=name, rows=[[k, "new"] for k in keys], txn_file=str(txn_file),
                            **steps)
    return app, str(txn_file)


def _states(cluster: Cluster, txn: str) -> dict[str, str]:
    return {sid: cluster.request(sid, Kind.TXN_STATUS, {"txn": txn}).metadata["state"] for sid in cluster.server_ids}


def _wait_decided(cluster: Cluster, txn: str, want: str) -> dict[str, str]:
    def done() -> dict[str, str] | None:
        st = _states(cluster, txn)
        return st if all(s in ("committed", "aborted", "unknown") for s in st.values()) else None
    st = wait_until(done, RESOLVE_WAIT_S, f"every server to decide transaction {txn}")
    # A server that never prepared it answers "unknown" (it has nothing to decide); every
    # server that knew it reached the same decision.
    assert {s for s in st.values() if s != "unknown"} == {want}, st
    return st


def _values(c: StoreClient, name: str, keys: list[int]) -> set[str]:
    return {c.get(name, k)[1] for k in keys}


def _no_in_doubt(cluster: Cluster) -> None:
    for sid in cluster.server_ids:
        st = cluster.request(sid, Kind.STATUS, {}).metadata
        assert st["in_doubt"] == [] and st.get("in_doubt_txns", []) == [], (sid, st)


def _locks_free(c: StoreClient, name: str, keys: list[int]) -> None:
    """A later writer of the same keys is not blocked: the key locks are gone."""
    c.put(name, [(k, "after") for k in keys])
    assert _values(c, name, keys) == {"after"}


def _exited(app: Any) -> int:
    return app.popen.wait(60)


def test_coordinator_killed_after_preparing_on_two_of_three_lease_change(cl: Cluster, tmp_path: Path) -> None:
    """Phase 1 reached s0 and s1 only; the deposed leader's token is replaced: all abort at once."""
    name = "default.indoubt_fenced"
    c, keys = _table(cl, name)
    group = "indoubt-group"
    app, txn_file = _run_coordinator(cl, tmp_path, name, keys, die_before_prepare=2,
                                     fence={"group": group, "token": 1})
    assert _exited(app) == -signal.SIGKILL
    txn = Path(txn_file).read_text()
    assert _states(cl, txn) == {"s0": "prepared", "s1": "prepared", "s2": "open"}
    new_leader = cl.client()
    new_leader.fence = {"group": group, "token": 2}
    assert new_leader.announce() == []
    _wait_decided(cl, txn, "aborted")
    assert _values(c, name, keys) == {"old"}
    _no_in_doubt(cl)
    _locks_free(c, name, keys)


def test_coordinator_killed_after_preparing_on_two_of_three_no_lease(cl: Cluster, tmp_path: Path) -> None:
    """Without a lease the in-doubt timeout of the deciding server aborts it (presumed abort)."""
    name = "default.indoubt_timeout"
    c, keys = _table(cl, name)
    app, txn_file = _run_coordinator(cl, tmp_path, name, keys, die_before_prepare=2)
    assert _exited(app) == -signal.SIGKILL
    txn = Path(txn_file).read_text()
    assert _states(cl, txn) == {"s0": "prepared", "s1": "prepared", "s2": "open"}
    # While in doubt the keys stay locked and the operator sees the transaction.
    listed = [t for t in cl.request("s1", Kind.STATUS, {}).metadata["in_doubt_txns"] if t["txn"] == txn]
    assert listed and listed[0]["decider"] == "s0" and listed[0]["participants"] == ["s0", "s1", "s2"]
    assert listed[0]["role"] == "participant"
    out = cl.cli("txns", "--locator", cl.locator_arg, "--secret-file", str(cl.secret_file))
    assert out.returncode == 0, out.stderr
    rows = [ln.split() for ln in out.stdout.splitlines() if ln.startswith(txn)]
    assert sorted((r[1], r[2], r[3], r[4]) for r in rows) == [
        ("s0", "decider", "s0", "s0,s1,s2"), ("s1", "participant", "s0", "s0,s1,s2")], out.stdout
    info = c.table(name)
    sid = info.placement[info.schema.bucket_of_key(keys[0])]
    body, flags = c._body(info, [(keys[0], "blocked")])
    with pytest.raises(ConflictError, match=f"locked by transaction {txn}"):  # a plain PUT, not retried
        cl.request(sid, Kind.PUT, {"table": info.full_name}, body, flags)
    _wait_decided(cl, txn, "aborted")
    assert _values(c, name, keys) == {"old"}
    _no_in_doubt(cl)
    _locks_free(c, name, keys)
    # The dead coordinator's commit, had it been sent late, is refused with a clear error.
    with pytest.raises(Exception, match="abort"):
        cl.request("s0", Kind.TXN_COMMIT, {"txn": txn})


def test_coordinator_killed_after_committing_on_one_of_three(cl: Cluster, tmp_path: Path) -> None:
    """The decider committed: the others learn it from the decider and commit too."""
    name = "default.indoubt_commit1"
    c, keys = _table(cl, name)
    app, txn_file = _run_coordinator(cl, tmp_path, name, keys, die_before_commit=1)
    assert _exited(app) == -signal.SIGKILL
    txn = Path(txn_file).read_text()
    assert _states(cl, txn) == {"s0": "committed", "s1": "prepared", "s2": "prepared"}
    _wait_decided(cl, txn, "committed")
    assert _values(c, name, keys) == {"new"}
    _no_in_doubt(cl)
    _locks_free(c, name, keys)


def test_server_killed_while_prepared_and_restarted(cl: Cluster, tmp_path: Path) -> None:
    """s2 dies holding the prepared transaction; the decider committed meanwhile. After
    the restart s2 recovers it in doubt from its log, asks s0, and commits it."""
    name = "default.indoubt_restart"
    c, keys = _table(cl, name)
    app, txn_file = _run_coordinator(cl, tmp_path, name, keys, pause_before_commit=2)
    wait_until(lambda: os.path.exists(txn_file + ".paused"), 60, "the coordinator to reach phase 2")
    txn = Path(txn_file).read_text()
    assert _states(cl, txn) == {"s0": "committed", "s1": "committed", "s2": "prepared"}
    cl.kill_server("s2")
    Path(txn_file + ".go").write_text("1")
    out = app.result(60)
    assert out.startswith("failed:"), out  # its commit on s2 could not be sent
    cl.restart_server("s2")
    _wait_decided(cl, txn, "committed")
    assert _values(c, name, keys) == {"new"}
    _no_in_doubt(cl)
    _locks_free(c, name, keys)


def test_server_killed_while_prepared_nobody_committed(cl: Cluster, tmp_path: Path) -> None:
    """Every server prepared, none committed, the coordinator and one server die: after
    the restart all of them abort (presumed abort at the decider)."""
    name = "default.indoubt_restart_abort"
    c, keys = _table(cl, name)
    app, txn_file = _run_coordinator(cl, tmp_path, name, keys, die_before_commit=0)
    assert _exited(app) == -signal.SIGKILL
    txn = Path(txn_file).read_text()
    assert _states(cl, txn) == {"s0": "prepared", "s1": "prepared", "s2": "prepared"}
    cl.kill_server("s1")
    cl.restart_server("s1")
    assert cl.request("s1", Kind.STATUS, {}).metadata["in_doubt"] in ([txn], [])
    _wait_decided(cl, txn, "aborted")
    assert _values(c, name, keys) == {"old"}
    _no_in_doubt(cl)
    _locks_free(c, name, keys)


def test_participants_are_checked(cl: Cluster) -> None:
    """A malformed participant list is refused before anything is logged; the part stays prepared."""
    name = "default.indoubt_bad"
    c, keys = _table(cl, name)
    info = c.table(name)
    sid = info.placement[info.schema.bucket_of_key(keys[0])]
    conn = cl.connection(sid)
    try:
        body, flags = c._body(info, [(keys[0], "x")])
        conn.request(Kind.TXN_STAGE, {"txn": "bad-p", "table": info.full_name, "op": "upsert"}, body, flags)
        conn.request(Kind.TXN_PREPARE, {"txn": "bad-p", "part": ""})
        for ps, msg in [([], "distinct server ids"), (["s9", "s9"], "distinct server ids"), ([3], "distinct"),
                        (["s9"], f"does not name this server \\('{sid}'\\)")]:
            with pytest.raises(BadArgumentError, match=msg):
                conn.request(Kind.TXN_PREPARE, {"txn": "bad-p", "parts": [""], "participants": ps})
        assert conn.request(Kind.TXN_STATUS, {"txn": "bad-p"}).metadata["state"] == "open"
        assert conn.request(Kind.TXN_ABORT, {"txn": "bad-p"}).metadata["state"] == "aborted"
    finally:
        conn.close()


def test_decider_killed_after_committing_and_restarted(cl: Cluster, tmp_path: Path) -> None:
    """s0 (the decider) committed and died before the coordinator reached the others:
    they stay in doubt, holding their keys, while s0 is down (nobody else may decide),
    and commit once it is back (its commit survived in its log and ledger)."""
    name = "default.indoubt_decider_restart"
    c, keys = _table(cl, name)
    app, txn_file = _run_coordinator(cl, tmp_path, name, keys, pause_before_commit=1)
    wait_until(lambda: os.path.exists(txn_file + ".paused"), 60, "the coordinator to reach phase 2")
    txn = Path(txn_file).read_text()
    assert _states(cl, txn) == {"s0": "committed", "s1": "prepared", "s2": "prepared"}
    cl.kill_server("s0")
    app.popen.kill()  # the coordinator dies too
    app.popen.wait(30)
    st = cl.request("s1", Kind.STATUS, {}).metadata
    assert [t["txn"] for t in st["in_doubt_txns"]] == [txn]
    cl.restart_server("s0")
    _wait_decided(cl, txn, "committed")
    assert _values(c, name, keys) == {"new"}
    _no_in_doubt(cl)
    _locks_free(c, name, keys)
