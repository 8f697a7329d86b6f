"""Zombie leader: a driver paused (SIGSTOP) past its lease is fenced when it resumes."""

from __future__ import annotations

import signal
import time

from integration.cluster import Cluster
from integration.ha.conftest import start_driver

TTL = 3.0


def test_paused_leader_is_fenced(ha_cluster: Cluster) -> None:
    prefix = "zb"
    primary = start_driver(ha_cluster, "zombie", "primary", "--ttl", str(TTL), "--prefix", prefix, "--zombie",
                           "--max-refused", "6")
    old = primary.wait_event("leader", 60)
    standby = start_driver(ha_cluster, "zombie", "standby", "--ttl", str(TTL), "--prefix", prefix)
    standby.wait_event("ready", 60)
    primary.wait_for(lambda ls: len([x for x in ls if x["ev"] == "ack"]) >= 30, 60, "primary commits")
    stopped_at = time.monotonic()
    primary.signal(signal.SIGSTOP)
    try:
        new = standby.wait_event("leader", 30)
        standby.wait_for(lambda ls: len([x for x in ls if x["ev"] == "ack"]) >= 20, 30, "new leader commits")
    finally:
        resumed_at = time.monotonic()
        primary.signal(signal.SIGCONT)
    assert new["token"] > old["token"]
    assert primary.wait(60) == 0, primary.log_tail()
    standby.wait_for(lambda ls: len([x for x in ls if x["ev"] == "ack"]) >= 30, 30, "new leader keeps committing")
    standby.kill()

    p_acks = primary.events("ack")
    fenced = primary.events("fenced")
    # Every statement the old leader sent after it was resumed was refused by fencing.
    assert all(x["sent"] < stopped_at for x in p_acks), [x for x in p_acks if x["sent"] >= stopped_at]
    assert len(fenced) == 6 and {x["kind"] for x in fenced} == {"events", "ledger"}
    # (a statement whose clock was read just before the SIGSTOP went out after the resume)
    assert min(x["sent"] for x in fenced) >= max(x["sent"] for x in p_acks)
    for x in fenced:
        assert x["token"] == old["token"]
        assert f"token {old['token']} is older than token {new['token']}" in x["error"], x["error"]
        assert x["leader"] is False  # its own clock already said the lease had run out
    ddl = primary.wait_event("ddl", 1)
    assert ddl["refused"] is True and "older than" in ddl["error"]
    ex = primary.wait_event("exit", 1)
    assert ex["lost"] is True and ex["leader"] is False, ex  # and it noticed the loss

    # Nothing the zombie sent became visible.
    c = ha_cluster.admin()
    assert f"{prefix}_zombie_ddl" not in c.list_tables("default")
    ev = {r["id"]: r for r in c.scan(f"default.{prefix}_events").to_pylist()}
    led = c.scan(f"default.{prefix}_ledger").to_pylist()
    p_holder = old["holder"]
    last_acked = max(x["seq"] for x in p_acks)
    for r in ev.values():
        if r["writer"] == p_holder:
            assert r["token"] == old["token"] and r["mono"] < stopped_at and r["id"] <= last_acked + 1, r
    for r in led:
        if r["writer"] == p_holder:
            assert r["token"] == old["token"] and r["seq"] <= last_acked + 1, r
    for x in fenced:  # the keys the zombie tried hold the new leader's rows, or nothing
        if x["kind"] == "events" and x["seq"] in ev:
            assert ev[x["seq"]]["writer"] == new["holder"], ev[x["seq"]]
    for r in led:
        if r["seq"] in {x["seq"] for x in fenced}:
            assert r["writer"] == new["holder"], r
    s_acked = {x["seq"] for x in standby.events("ack") if x["kind"] == "events"}
    assert s_acked <= set(ev) and all(ev[s]["writer"] == new["holder"] for s in s_acked)
    assert {x["seq"] for x in p_acks if x["kind"] == "events"} <= set(ev)
    print(f"\nzombie: paused {resumed_at - stopped_at:.1f}s; takeover token {old['token']} -> {new['token']}; "
          f"{len(fenced)} statements refused ({fenced[0]['error']!r}); loss noticed: {ex['lost_reason']!r}")
