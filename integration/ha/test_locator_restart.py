"""The lock service survives a locator restart (same data directory) under contention.

Six contenders (see :mod:`integration.ha.checker`) take turns on one lease with the locator
backend; while one of them has just been granted it and others wait, the locator is
``kill -9``ed and started again on its port with its data directory. The checker's
properties must hold over the whole run (never two holders at once, at most one holder per
token, tokens increasing, fencing order, table contents), and the tokens granted after
the restart must all be newer than every token granted before it (never reused). Whether
the holder kept its lease across the restart is printed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from integration.cluster import Cluster
from integration.ha.checker import RunContext, run_and_check as run

# Long enough that the restarted locator is back (2-4 s on a busy 2-core machine) while the
# holder's lease still runs: a lock service that forgot its leases would then hand the
# lease to a waiter at once, and the checker would see two holders.
TTL = 6.0


@pytest.mark.slow
def test_locator_restart_during_contention(own_cluster: Cluster, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def restart_locator(ctx: RunContext) -> None:
        # restart under a holder that has just been granted the lease (it holds at least
        # 5 s, so it still wants it when the locator is back) and waiters queued behind it
        seen["holder"] = ctx.wait_holder(15.0, max_age=0.5)
        port = own_cluster.locator_address[1]
        assert own_cluster.locator is not None
        seen["t_kill"] = time.monotonic()
        own_cluster.locator.kill()  # kill -9: no goodbye
        own_cluster.start_locator(port)  # same port, same data directory
        seen["t_up"] = time.monotonic()
        seen["port"] = port

    h = run(own_cluster, tmp_path, "chk_restart", backend="locator", seed=21, ttl=TTL, quiet=4.0, duration=18.0, min_hold=5.0, max_hold=6.0,
            expect_fenced=False, min_grants=2,
            faults={0.4: restart_locator})
    assert seen.get("port") and seen.get("holder") is not None, seen
    t_kill, t_up = seen["t_kill"], seen["t_up"]
    grants = sorted((x for x in h.lines if x["ev"] == "grant"), key=lambda x: x["t"])
    before = [x["token"] for x in grants if x["t"] < t_kill]
    after = [x["token"] for x in grants if x["t"] > t_up]
    assert before and after, (before, after)
    assert min(after) > max(before), f"a token was reused after the restart: before {before}, after {after}"
    # the holder at the restart: did it keep its lease across it (renewed after the restart)?
    holder_grant = [x for x in grants if x["cid"] == seen["holder"] and x["t"] < t_kill][-1]
    kept = any(x["ev"] == "valid" and x["cid"] == seen["holder"] and x["token"] == holder_grant["token"]
               and x["until"] > t_up + 0.1 for x in h.lines)
    print(f"restart took {t_up - t_kill:.2f}s; holder c{seen['holder']} (token {holder_grant['token']}) "
          f"{'kept' if kept else 'lost'} its lease across it")
