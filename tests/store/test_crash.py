"""Crash test: a child process mutating a durable store is killed with SIGKILL.

The child (``crash_child.py``) opens ``Store(dir, flush="commit")`` and runs point
upserts and deletes, bulk Arrow inserts and upserts, updates by predicate, multi-table
change sets (some two-phase) and checkpoints, printing each operation before it starts
and acknowledging it after it returns. The parent kills it at a moment chosen by a fixed
seed (after some number of acknowledgements, plus a short random delay, or right as a
checkpoint starts), recovers the store in-process and checks:

* every acknowledged operation is present: the recovered tables equal the model built
  from the acknowledged lines, except that the one operation in flight may be present
  (whole) or absent (whole);
* no change set is half applied: each change set's marker row in ``acct`` says how many
  ``item`` rows carry its tag, and exactly that many are there (or none and no marker);
* a change set killed between prepare and commit comes back in doubt, invisible and
  holding its keys, and can then be committed or aborted;
* the engine's invariants hold (``Table._check``) and its indexes answer like the data;
* recovery is repeatable (reopening again gives the same state), a torn record appended
  to the log tail is cut, and the child can go on writing into the recovered store
  (some seeds run several rounds of child, kill, recovery on the same directory).
"""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from spark_ext.store import Store, col
from tests.store.crash_child import MARKER_BASE, apply_op

CHILD = Path(__file__).with_name("crash_child.py")
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Round:
    """What the parent learned from one child run."""

    acked: list[tuple[dict[str, Any], Any]] = field(default_factory=list)  # (op, result)
    in_flight: dict[str, Any] | None = None
    done: bool = False
    ckpt_intents: int = 0


def parse(output: str) -> Round:
    """Acknowledged operations and the one in flight, from the child's complete lines."""
    rnd = Round()
    intents: list[dict[str, Any]] = []
    lines = output.split("\n")
    if not output.endswith("\n"):
        lines = lines[:-1]  # a torn last line: never acknowledged, never an intent
    for line in lines:
        if not line or line == "R" or line.startswith("P "):
            continue
        if line == "DONE":
            rnd.done = True
        elif line.startswith("I "):
            intents.append(json.loads(line[2:]))
        elif line.startswith("A "):
            _, seq, result = line.split(" ", 2)
            assert int(seq) == len(rnd.acked) == len(intents) - 1, f"out of order ack {line!r}"
            rnd.acked.append((intents[-1], json.loads(result)))
        else:
            raise AssertionError(f"unexpected child output {line!r}")
    if len(intents) > len(rnd.acked):
        assert len(intents) == len(rnd.acked) + 1
        rnd.in_flight = intents[-1]
    rnd.ckpt_intents = sum(1 for i in intents if i["op"] == "ckpt")
    return rnd


def run_child(data_dir: Path, seed: int, rnd: int, rng: random.Random, case: "Case", err_path: Path) -> Round:
    """Start the child, kill it at a seeded moment, and return what it acknowledged."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    target_acks = rng.randint(3, 160)
    # Most kills land inside an operation (each takes a few ms with an fsync per commit).
    delay = rng.choice([0.0, rng.uniform(0, 0.003), rng.uniform(0, 0.003), rng.uniform(0, 0.012)])
    with open(err_path, "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(data_dir), str(seed), str(rnd), str(case.ckpt_every),
             str(case.auto_ckpt), str(case.kill_on_prepare)],
            stdout=subprocess.PIPE, stderr=err, env=env, cwd=str(ROOT),
        )
    assert proc.stdout is not None
    seen: list[bytes] = []
    acks = ckpts = prepares = 0
    killed = False
    try:
        while True:
            line = proc.stdout.readline()
            if not line:
                break  # the child ended by itself (DONE, or a failure: checked below)
            seen.append(line)
            if line.startswith(b"A "):
                acks += 1
            elif line.startswith(b'I {"op": "ckpt"'):
                ckpts += 1
            elif line.startswith(b"P "):
                prepares += 1
            if case.kill_on_ckpt:
                trigger = ckpts >= case.kill_on_ckpt
            elif case.kill_on_prepare:
                trigger = prepares >= case.kill_on_prepare
                delay = 0.0
            else:
                trigger = acks >= target_acks
            if trigger:
                if delay:
                    time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
        seen.append(proc.stdout.read())  # lines written before the kill landed
    finally:
        if proc.poll() is None and not killed:
            proc.kill()
        proc.wait()
    output = b"".join(seen).decode()
    if not killed or proc.returncode != -signal.SIGKILL:
        # The child may finish all its work before the trigger; anything else is a failure.
        assert output.rstrip().endswith("DONE") and proc.returncode == 0, (
            f"child exited with {proc.returncode}; stderr:\n{err_path.read_text()[-3000:]}"
        )
    return parse(output)


def read_state(store: Store) -> tuple[dict[Any, tuple[Any, ...]], dict[Any, tuple[Any, ...]]]:
    acct = {r[0]: r for r in rows(store.table("acct"))}
    item = {(r[0], r[1]): r for r in rows(store.table("item"))}
    return acct, item


def rows(table: Any, **kw: Any) -> list[tuple[Any, ...]]:
    tbl = table.scan(**kw).to_table()
    return list(zip(*[c.to_pylist() for c in tbl.columns]))


def describe(got: dict[Any, Any], want: dict[Any, Any]) -> str:
    missing = [k for k in want if k not in got][:5]
    extra = [k for k in got if k not in want][:5]
    changed = [(k, got[k], want[k]) for k in want if k in got and got[k] != want[k]][:3]
    return f"{len(got)} rows vs {len(want)} expected; missing {missing}; extra {extra}; changed {changed}"


def check_change_sets_whole(acct: dict[Any, tuple[Any, ...]], item: dict[Any, tuple[Any, ...]]) -> None:
    """Every change set is all there or not at all: marker v == number of its items."""
    per_tag = Counter(r[0] for r in item.values() if "-c" in r[0])
    markers = {r[1]: r for k, r in acct.items() if k >= MARKER_BASE}
    for tag, m in markers.items():
        assert per_tag.get(tag, 0) == m[2], f"change set {tag}: marker says {m[2]} items, found {per_tag.get(tag, 0)}"
    for tag in per_tag:
        assert tag in markers, f"change set {tag}: {per_tag[tag]} items but no marker (half applied)"


def verify(store: Store, model: tuple[dict, dict], rnd: Round, rng: random.Random, ctx: str) -> tuple[dict, dict]:
    """Check the recovered store against the model; return the model of what is there."""
    acct_m, item_m = model
    for name in ("acct", "item"):
        store.table(name)._check()
    acct, item = read_state(store)
    check_change_sets_whole(acct, item)
    op = rnd.in_flight if rnd.in_flight is not None and rnd.in_flight["op"] != "ckpt" else None
    with_op: tuple[dict, dict] | None = None
    if op is not None:
        with_op = (dict(acct_m), dict(item_m))
        apply_op(with_op[0], with_op[1], op)
    in_doubt = store.in_doubt()
    if (acct, item) == (acct_m, item_m):
        state = "absent"
    elif with_op is not None and (acct, item) == with_op:
        state = "present"
    else:
        raise AssertionError(
            f"{ctx}: recovered state matches neither the acknowledged operations nor them plus the one in "
            f"flight ({op}); acct: {describe(acct, acct_m)}; item: {describe(item, item_m)}"
        )
    if in_doubt:
        # Only the in-flight change set, prepared but not committed, may be in doubt.
        assert op is not None and op["op"] == "cs" and op["prepare"] and in_doubt == [op["txn"]], (
            f"{ctx}: unexpected transactions in doubt {in_doubt} (in flight: {op})"
        )
        assert state == "absent", f"{ctx}: in-doubt change set {op['txn']} is visible"
        # It holds its keys: other writers are refused.
        from spark_ext.exceptions import ConflictError

        with pytest.raises(ConflictError):
            store.table("acct").upsert([(op["id"], "x", 0, None)])
        if rng.random() < 0.5:
            store.transaction(op["txn"]).commit()
            state = "present (after commit of the in-doubt set)"
        else:
            store.transaction(op["txn"]).abort()
        assert store.in_doubt() == []
        acct, item = read_state(store)
        want = with_op if with_op is not None and state.startswith("present") else (acct_m, item_m)
        assert (acct, item) == want, f"{ctx}: after resolving the in-doubt set: {describe(acct, want[0])}"
    # Indexes agree with the data after recovery.
    a, i = store.table("acct"), store.table("item")
    tags = sorted({r[1] for r in acct.values()})
    for tag in tags[:3] + tags[-3:]:
        s = a.scan(where=col("tag") == tag)
        assert s.access_path == "index:acct_tag"
        assert sorted(rows_of_scan(s)) == sorted(r for r in acct.values() if r[1] == tag)
    if item:
        v0 = sorted(r[2] for r in item.values())[len(item) // 2]
        s = i.scan(where=col("v") >= v0)
        assert s.access_path == "index:item_v"
        assert len(rows_of_scan(s)) == sum(1 for r in item.values() if r[2] >= v0)
    return acct, item


def rows_of_scan(scan: Any) -> list[tuple[Any, ...]]:
    tbl = scan.to_table()
    return list(zip(*[c.to_pylist() for c in tbl.columns]))


def tear_log_tail(data_dir: Path, rng: random.Random) -> None:
    """Append a torn record (a header promising more bytes than follow) to the newest log
    segment, as a write cut short by the crash would leave it."""
    segs = sorted((data_dir / "wal").glob("wal-*.log"))
    if not segs:
        return
    junk = struct.pack("<HI", 0x4C57, 5000) + rng.randbytes(rng.randint(0, 40))
    with open(segs[-1], "ab") as f:
        f.write(junk)


@dataclass(frozen=True)
class Case:
    rounds: int = 1  # child runs (kill, recovery) on one directory
    kill_on_ckpt: int = 0  # kill as the n-th checkpoint starts (0: after some acks)
    kill_on_prepare: int = 0  # kill right after the n-th prepare (the set is in doubt)
    ckpt_every: int = 0  # every n-th operation is a checkpoint
    auto_ckpt: int = 0  # background upkeep, checkpoint every n log bytes
    tear: bool = False  # append a torn record to the log after the kill


CASES: dict[int, Case] = {
    1: Case(),
    2: Case(),
    3: Case(ckpt_every=12),
    4: Case(ckpt_every=12, tear=True),
    5: Case(tear=True),
    6: Case(ckpt_every=20),
    7: Case(auto_ckpt=150_000),
    8: Case(auto_ckpt=150_000, tear=True),
    9: Case(ckpt_every=7),
    10: Case(),
    11: Case(ckpt_every=9),
    12: Case(),
    13: Case(ckpt_every=15, tear=True),
    14: Case(),
    15: Case(ckpt_every=10),
    16: Case(auto_ckpt=60_000),
    # killed while a checkpoint is being written
    21: Case(kill_on_ckpt=1, ckpt_every=6),
    22: Case(kill_on_ckpt=2, ckpt_every=8),
    23: Case(kill_on_ckpt=3, ckpt_every=5),
    24: Case(kill_on_ckpt=1, ckpt_every=10, tear=True),
    25: Case(kill_on_ckpt=2, ckpt_every=4),
    # killed between prepare and commit: the change set comes back in doubt
    26: Case(kill_on_prepare=1),
    27: Case(kill_on_prepare=3, ckpt_every=8),
    28: Case(kill_on_prepare=2, tear=True),
    # several rounds of child, kill and recovery on one directory
    31: Case(rounds=3, ckpt_every=10),
    32: Case(rounds=3, auto_ckpt=100_000, tear=True),
    33: Case(rounds=2, kill_on_ckpt=2, ckpt_every=6),
    34: Case(rounds=2, kill_on_prepare=1, ckpt_every=9),
}


@pytest.mark.parametrize("seed", sorted(CASES))
def test_crash_recovery(seed: int, tmp_path: Path) -> None:
    case = CASES[seed]
    rng = random.Random(seed)
    data_dir = tmp_path / "data"
    model: tuple[dict, dict] = ({}, {})
    for r in range(1, case.rounds + 1):
        ctx = f"seed {seed}, round {r}"
        rnd = run_child(data_dir, seed, r, rng, case, err_path=tmp_path / "child.err")
        assert rnd.acked or rnd.in_flight is not None or r > 1, f"{ctx}: the child did nothing"
        if case.kill_on_ckpt:
            assert rnd.ckpt_intents >= case.kill_on_ckpt or rnd.done
        if case.kill_on_prepare:
            assert rnd.in_flight is not None and rnd.in_flight["op"] == "cs" and rnd.in_flight["prepare"]
        acct_m, item_m = model
        for op, result in rnd.acked:
            expected = apply_op(acct_m, item_m, op)
            assert result == expected, f"{ctx}: {op} returned {result}, the model says {expected}"
        if case.tear:
            tear_log_tail(data_dir, rng)
        store = Store(data_dir, flush="commit", background=False)
        try:
            in_doubt = store.in_doubt()
            if case.kill_on_prepare and rnd.in_flight is not None:
                assert in_doubt == [rnd.in_flight["txn"]], f"{ctx}: in doubt: {in_doubt}"
            model = verify(store, (acct_m, item_m), rnd, rng, ctx)
        finally:
            store.close()
        # Recovery is repeatable: a second open sees the same state (and nothing in doubt).
        store = Store(data_dir, flush="commit", background=False)
        try:
            assert store.in_doubt() == []
            assert read_state(store) == model, f"{ctx}: a second recovery differs"
            for name in ("acct", "item"):
                store.table(name)._check()
        finally:
            store.close()
