"""A Jepsen-style checker for leases and fencing: contenders, a nemesis, a history, checks.

Three parts:

* **Contender** (``python -m integration.ha.checker contend ...``, one process each): in
  a loop with random pauses (its own fixed seed) it takes the lease of one group through
  :class:`spark_ext.ha.leadership.Leadership` (locator or ZooKeeper backend), announces its
  token to every store server (a fenced PING), and while it holds the lease sends fenced
  puts of ``(wid, token, holder, seq)`` to a table spread over three store servers; some
  writes skip the local lease check on purpose ("rogue" writes, as a paused driver would
  send them), and once it notices the loss it sends one more write anyway. Every step
  goes to its history file as one JSON line, written before the step is acted on where
  that matters (``w`` before a write is sent, ``grant`` after the lease is held):

      grant   token, holder, t, until     the lease is held (t < until, both monotonic)
      stale   token                       acquire returned a lease that had already run out
      valid   token, until                a renewal moved ``until``
      end     token, t, why               the holder stops acting on it (release/lost/stop)
      w       wid, token, holder, t, rogue   a write is about to be sent
      r       wid, ok|fenced|error, t, err   its outcome

  ``time.monotonic()`` is one clock for every process of the machine (Linux), so the
  histories of all processes can be merged.

* **Nemesis** (:func:`run_checker`): N contenders, and at random moments (fixed seed) the
  current holder or a random contender is SIGSTOPped past its lease and resumed, or
  SIGKILLed and replaced by a fresh contender; callers add their own faults (restart the
  locator, stop a ZooKeeper node) at a chosen moment.

* **Checks** (:func:`check_history`) on the merged history plus the table's final
  contents: at most one holder per token; tokens strictly increasing in grant order; no
  two holders at once (a holder's interval runs from its grant to the earliest of its
  last ``until``, its ``end``, its death); every acknowledged write is in the table, every
  refused one is not, every row comes from a write that was sent; no accepted write
  carries a token older than that of a write acknowledged before it was sent; every
  refusal is explained by a newer grant.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from integration.cluster import Cluster

COLUMNS = [("wid", "int64"), ("token", "int64"), ("holder", "string"), ("seq", "int64")]
WID_STRIDE = 1_000_000  # wid = contender id * stride + write sequence


# --- contender ---------------------------------------------------------------------------


class _History:
    def __init__(self, path: str) -> None:
        self.f = open(path, "a", buffering=1)

    def __call__(self, ev: str, **kw: Any) -> None:
        self.f.write(json.dumps({"ev": ev, **kw}) + "\n")  # line-buffered: one write() per line


class _LoggingBackend:
    """Delegates to a lease backend and logs every new validity horizon it hands out."""

    def __init__(self, inner: Any, log: _History) -> None:
        self.inner, self.log = inner, log

    def acquire(self, name: str, holder: str, ttl_s: float, wait_s: float) -> Any:
        return self.inner.acquire(name, holder, ttl_s, wait_s)

    def renew(self, held: Any, ttl_s: float) -> Any:
        h = self.inner.renew(held, ttl_s)
        self.log("valid", token=h.token, holder=h.holder, until=h.valid_until)
        return h

    def release(self, held: Any) -> None:
        self.inner.release(held)

    def status(self, name: str | None = None) -> Any:
        return self.inner.status(name)

    def watch_loss(self, held: Any, on_lost: Callable[[str], None]) -> None:
        self.inner.watch_loss(held, on_lost)

    def close(self) -> None:
        self.inner.close()


def contend(a: argparse.Namespace) -> int:
    import logging

    from integration.ha.driver import announce
    from spark_ext.client.client import StoreClient
    from spark_ext.exceptions import FencedError
    from spark_ext.ha.backends import LocatorLeases, ZooKeeperLeases
    from spark_ext.ha.leadership import Leadership

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    rng = random.Random(a.seed * 1009 + a.cid)
    log = _History(a.history)
    host, port = a.locator.rsplit(":", 1)
    locator = (host, int(port))
    secret = open(a.secret_file, "rb").read().strip() if a.secret_file else None
    holder = f"c{a.cid}:{os.getpid()}"
    client = StoreClient(locator, secret, timeout=10.0)
    client.table(a.table)
    inner: Any = None
    while inner is None:  # the lock service may be restarting
        try:
            inner = LocatorLeases(locator, secret) if a.backend == "locator" else ZooKeeperLeases(a.zk, ttl_s=a.ttl)
        except Exception as e:  # pragma: no cover - timing
            log("error", what="backend", err=str(e)[:200])
            time.sleep(0.3)
    backend = _LoggingBackend(inner, log)
    log("ready", holder=holder, pid=os.getpid(), t=time.monotonic())
    print("ready", flush=True)
    seq = 0

    hosting = set(client.table(a.table).placement)

    def announce_token(fence: dict[str, Any]) -> None:
        log("announced", token=fence["token"], servers=announce(client, fence, secret, hosting, timeout=10.0),
            t=time.monotonic())

    def write(lead: Leadership, rogue: bool) -> None:
        nonlocal seq
        token = lead.held.token if lead.held else -1
        wid = a.cid * WID_STRIDE + seq
        seq += 1
        log("w", wid=wid, token=token, holder=holder, t=time.monotonic(), rogue=rogue)
        try:
            client.put(a.table, [(wid, token, holder, seq)])
            log("r", wid=wid, out="ok", t=time.monotonic())
        except FencedError as e:
            log("r", wid=wid, out="fenced", t=time.monotonic(), err=str(e)[:200])
        except Exception as e:
            log("r", wid=wid, out="error", t=time.monotonic(), err=f"{type(e).__name__}: {e}"[:200])

    def running() -> bool:
        return time.monotonic() < a.until and not os.path.exists(a.stop_file)

    while running():
        time.sleep(rng.uniform(0.0, 0.4))
        lead = Leadership(a.group, ttl=a.ttl, backend=backend, holder=holder,
                          wait=max(0.3, min(rng.uniform(0.5, 3.0), a.until - time.monotonic())))
        try:
            lead.acquire()
        except FencedError:
            continue  # did not get it in time
        except Exception as e:
            log("error", what="acquire", err=f"{type(e).__name__}: {e}"[:200], t=time.monotonic())
            time.sleep(0.2)
            continue
        held = lead.held
        assert held is not None
        t = time.monotonic()
        if t >= held.valid_until:
            log("stale", token=held.token, t=t)
            lead.release()
            continue
        log("grant", token=held.token, holder=holder, t=t, until=held.valid_until)
        fence = lead.fence
        client.fence = fence
        try:
            announce_token(fence)
        except Exception as e:
            log("end", token=held.token, t=time.monotonic(), why=f"announce failed: {e}"[:200])
            lead.release()
            continue
        hold_until = t + rng.uniform(a.min_hold, max(a.min_hold, a.max_hold if a.max_hold else 2.5 * a.ttl))
        why = "release"
        while time.monotonic() < hold_until and running():
            if not lead.is_leader:
                why = f"lost: {lead.lost_reason or 'expired'}"
                break
            write(lead, rogue=False)
            time.sleep(rng.uniform(0.0, 0.08))
            if rng.random() < 0.15:
                write(lead, rogue=True)  # no check: what a driver paused right here would send
        if why == "release" and not lead.is_leader:  # e.g. paused past the lease while holding
            why = f"lost: {lead.lost_reason or 'expired'}"
        log("end", token=held.token, t=time.monotonic(), why=why)
        if why != "release":
            write(lead, rogue=True)  # a zombie's write: refused if a newer leader announced itself
        lead.release()
    log("exit", t=time.monotonic())
    backend.close()
    client.close()
    return 0


# --- nemesis and orchestration -----------------------------------------------------------


@dataclass
class History:
    """What one run recorded: every contender's lines, nemesis actions, final rows."""

    lines: list[dict[str, Any]] = field(default_factory=list)  # each with "cid"
    deaths: dict[int, float] = field(default_factory=dict)  # cid -> time of SIGKILL
    nemesis: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)


def read_histories(files: dict[int, Path]) -> list[dict[str, Any]]:
    out = []
    for cid, p in sorted(files.items()):
        if not p.exists():
            continue
        for raw in p.read_text().splitlines():
            try:
                d = json.loads(raw)
            except ValueError:
                continue  # a line cut short by SIGKILL
            d["cid"] = cid
            out.append(d)
    return out


def current_holder(files: dict[int, Path], live: set[int], max_age: float | None = None) -> int | None:
    """The live contender whose last grant is the newest and not yet ended (and, with
    ``max_age``, was made at most that many seconds ago)."""
    best: tuple[int, int] | None = None
    for cid in live:
        p = files[cid]
        try:
            lines = [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
        except (OSError, ValueError):
            continue
        grants = [x for x in lines if x["ev"] == "grant"]
        if not grants:
            continue
        g = grants[-1]
        ended = any(x["ev"] == "end" and x["token"] == g["token"] for x in lines)
        if max_age is not None and time.monotonic() - g["t"] > max_age:
            continue
        if not ended and (best is None or g["token"] > best[0]):
            best = (g["token"], cid)
    return best[1] if best else None


def run_checker(
    workdir: Path,
    env: dict[str, str],
    locator: str,
    secret_file: str | None,
    table: str,
    read_rows: Callable[[], list[dict[str, Any]]],
    backend: str = "locator",
    zk: str | None = None,
    group: str = "checker",
    n: int = 6,
    duration: float = 12.0,
    ttl: float = 1.5,
    seed: int = 1,
    faults: dict[float, Callable[["RunContext"], Any]] | None = None,
    max_kills: int = 3,
    quiet: float = 0.0,
    zombie_at: float | None = 0.7,
    max_hold: float = 0.0,
    min_hold: float = 0.2,
) -> History:
    """Run ``n`` contenders for ``duration`` seconds under the nemesis; return the history.

    ``faults`` maps a fraction of the run (0..1) to a callable run then (e.g. restart
    the locator); it gets a :class:`RunContext`. The nemesis holds still for ``quiet``
    seconds before and after each fault (so the fault meets a holder that is running).
    At ``zombie_at`` (a fraction of the run) the holder is paused for three TTLs, so that
    every run has a zombie.
    Every process started here is killed before returning.
    """
    from integration.ha.driver import Child

    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    files: dict[int, Path] = {}
    procs: dict[int, Child] = {}
    hist = History()
    next_cid = 0
    until = time.monotonic() + 60.0 + duration  # a backstop: the stop file ends the run
    stop_file = workdir / "STOP"

    def spawn() -> int:
        nonlocal next_cid
        cid = next_cid
        next_cid += 1
        files[cid] = workdir / f"c{cid}.jsonl"
        args = ["contend", "--cid", str(cid), "--seed", str(seed), "--backend", backend, "--locator", locator,
                "--group", group, "--table", table, "--ttl", str(ttl), "--until", repr(until),
                "--history", str(files[cid]), "--stop-file", str(stop_file), "--max-hold", str(max_hold),
                "--min-hold", str(min_hold)]
        if secret_file:
            args += ["--secret-file", secret_file]
        if zk:
            args += ["--zk", zk]
        procs[cid] = Child("integration.ha.checker", args, env, workdir / f"c{cid}.log")
        return cid

    try:
        for _ in range(n):
            spawn()
        _wait_ready(files, list(procs), 60.0)
        start = time.monotonic()
        end = start + duration
        def forced_zombie(ctx: RunContext) -> None:
            """Pause the holder well past its lease: the next holder announces itself, and
            the paused one, resumed, must be refused (at least one zombie per run)."""
            cid = ctx.wait_holder(5.0)
            if cid is not None:
                procs[cid].signal(signal.SIGSTOP)
                stopped[cid] = time.monotonic() + 3 * ttl
                hist.nemesis.append({"t": time.monotonic(), "action": "stop-holder (forced)", "cid": cid})

        pending_faults = sorted([*(faults or {}).items(), *([(zombie_at, forced_zombie)] if zombie_at else [])],
                                key=lambda kv: kv[0])
        stopped: dict[int, float] = {}  # cid -> when to SIGCONT
        kills = 0
        next_action = start + rng.uniform(0.5, 1.5)
        quiet_spans = [(start + f * duration - quiet, start + f * duration + quiet) for f in (faults or {})]
        ctx = RunContext(files, procs, stopped)
        while time.monotonic() < end:
            now = time.monotonic()
            for cid, at in list(stopped.items()):
                if now >= at:
                    procs[cid].signal(signal.SIGCONT)
                    hist.nemesis.append({"t": now, "action": "cont", "cid": cid})
                    del stopped[cid]
            while pending_faults and now >= start + pending_faults[0][0] * duration:
                frac, fn = pending_faults.pop(0)
                hist.nemesis.append({"t": time.monotonic(), "action": f"fault@{frac}"})
                fn(ctx)
                hist.nemesis.append({"t": time.monotonic(), "action": f"fault@{frac} done"})
            if now >= next_action and any(a <= now <= b for a, b in quiet_spans):
                next_action = now + 0.2
            elif now >= next_action:
                live = {c for c, p in procs.items() if p.popen.poll() is None and c not in stopped}
                action = rng.choice(["stop-holder", "stop-holder", "stop-holder", "kill-holder", "stop-random",
                                     "kill-random", "none"])
                target = current_holder(files, live) if action.endswith("holder") else None
                if target is None and live:
                    target = rng.choice(sorted(live))
                if action.startswith("kill") and kills >= max_kills:
                    action = "stop" + action[4:]
                if target is not None and action != "none":
                    t = time.monotonic()
                    if action.startswith("stop"):
                        procs[target].signal(signal.SIGSTOP)
                        stopped[target] = t + rng.uniform(1.2 * ttl, 3.0 * ttl)
                    else:
                        procs[target].signal(signal.SIGKILL)
                        hist.deaths[target] = t
                        kills += 1
                        spawn()
                    hist.nemesis.append({"t": t, "action": action, "cid": target})
                next_action = time.monotonic() + rng.uniform(0.6, 1.6)
            time.sleep(0.02)
        for cid in stopped:
            procs[cid].signal(signal.SIGCONT)
            hist.nemesis.append({"t": time.monotonic(), "action": "cont", "cid": cid})
        stop_file.write_text("stop")
        for cid, p in procs.items():  # they stop within one acquire wait
            try:
                p.wait(20.0)
            except Exception:
                p.kill()
                hist.deaths.setdefault(cid, time.monotonic())
    finally:
        for p in procs.values():
            p.kill()
    hist.lines = read_histories(files)
    hist.rows = read_rows()
    return hist


class RunContext:
    """What a fault callable may look at: the running contenders and their histories."""

    def __init__(self, files: dict[int, Path], procs: dict[int, Any], stopped: dict[int, float]) -> None:
        self.files, self.procs, self.stopped = files, procs, stopped

    def holder(self, max_age: float | None = None) -> int | None:
        """The running (not stopped, not dead) contender that holds the lease now, if any
        (with ``max_age``: one granted at most that many seconds ago)."""
        live = {c for c, p in self.procs.items() if p.popen.poll() is None and c not in self.stopped}
        return current_holder(self.files, live, max_age)

    def wait_holder(self, timeout: float, max_age: float | None = None) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            h = self.holder(max_age)
            if h is not None:
                return h
            time.sleep(0.05)
        return None


def _wait_ready(files: dict[int, Path], cids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(files[c].exists() and '"ready"' in files[c].read_text() for c in cids):
            return
        time.sleep(0.05)
    raise AssertionError(f"contenders not ready within {timeout}s")


# --- checks ------------------------------------------------------------------------------


@dataclass
class Verdict:
    violations: list[str]
    stats: dict[str, Any]

    @property
    def ok(self) -> bool:
        return not self.violations


def check_history(h: History) -> Verdict:
    """Every property of the module docstring, on one run. Pure: no processes, no I/O."""
    v: list[str] = []
    lines = h.lines
    grants = sorted((x for x in lines if x["ev"] == "grant"), key=lambda x: x["t"])

    # 1. at most one holder per token
    holders: dict[int, set[str]] = {}
    for g in grants:
        holders.setdefault(g["token"], set()).add(g["holder"])
    for tok, hs in holders.items():
        if len(hs) > 1:
            v.append(f"token {tok} granted to {len(hs)} holders: {sorted(hs)}")

    # 2. tokens strictly increasing in grant order (a holder re-granted the lease it
    #    still had keeps its token)
    for a, b in zip(grants, grants[1:], strict=False):
        if b["token"] < a["token"] or (b["token"] == a["token"] and b["holder"] != a["holder"]):
            v.append(f"grant order: token {a['token']} ({a['holder']}) at {a['t']:.3f} then token {b['token']} "
                     f"({b['holder']}) at {b['t']:.3f}")

    # 3. no two holders at once: a grant's interval ends at the earliest of its last
    #    validity horizon, its end line, the death of its process
    def interval_end(g: dict[str, Any]) -> float:
        cid, tok = g["cid"], g["token"]
        mine = [x for x in lines if x["cid"] == cid and x.get("token") == tok]
        until = max([g["until"]] + [x["until"] for x in mine if x["ev"] == "valid"])
        ends = [x["t"] for x in mine if x["ev"] == "end" and x["t"] >= g["t"]]
        cands = [until] + ([min(ends)] if ends else [])
        if cid in h.deaths:
            cands.append(h.deaths[cid])
        return min(cands)

    spans = [(g["t"], interval_end(g), g) for g in grants]
    for i, (s1, e1, g1) in enumerate(spans):
        for s2, e2, g2 in spans[i + 1:]:
            if g1["holder"] != g2["holder"] and s2 < e1 and s1 < e2:
                v.append(f"two holders at once: token {g1['token']} ({g1['holder']}) held {s1:.3f}..{e1:.3f}, "
                         f"token {g2['token']} ({g2['holder']}) granted at {s2:.3f}")

    # 4. writes against the final contents
    sent = {x["wid"]: x for x in lines if x["ev"] == "w"}
    out = {x["wid"]: x for x in lines if x["ev"] == "r"}
    rows = {r["wid"]: r for r in h.rows}
    ok = [sent[w] | {"done": out[w]["t"]} for w in out if out[w]["out"] == "ok"]
    fenced = [sent[w] | {"done": out[w]["t"], "err": out[w].get("err", "")} for w in out if out[w]["out"] == "fenced"]
    for w in ok:
        r = rows.get(w["wid"])
        if r is None or r["token"] != w["token"] or r["holder"] != w["holder"]:
            v.append(f"acknowledged write {w['wid']} (token {w['token']}) missing or changed in the table: {r}")
    for w in fenced:
        if w["wid"] in rows:
            v.append(f"refused write {w['wid']} (token {w['token']}) is visible: {rows[w['wid']]}")
        # Servers learn a grant from the lock service (heartbeat) possibly before the new
        # holder records it, so a refusal may precede the recorded grant time; it must
        # still be explained by some newer token that was really granted.
        if not any(g["token"] > w["token"] for g in grants):
            v.append(f"write {w['wid']} (token {w['token']}) refused although no newer token was ever granted: {w['err']}")
    for wid, r in rows.items():
        if wid not in sent or sent[wid]["token"] != r["token"]:
            v.append(f"row {wid} in the table was never sent with that token: {r}")

    # 5. no accepted write with a token older than one acknowledged before it was sent
    acked = sorted(ok, key=lambda w: w["done"])
    done_t = [w["done"] for w in acked]
    prefix_max: list[int] = []
    m = -1
    for w in acked:
        m = max(m, w["token"])
        prefix_max.append(m)
    accepted = [sent[wid] for wid in rows if wid in sent]  # includes outcomes lost to SIGKILL
    for w in accepted:
        k = bisect.bisect_left(done_t, w["t"])
        if k and prefix_max[k - 1] > w["token"]:
            v.append(f"write {w['wid']} with token {w['token']} accepted although token {prefix_max[k - 1]} "
                     f"had been acknowledged before it was sent")

    stats = {
        "contenders": len({x["cid"] for x in lines}),
        "grants": len(grants), "distinct_tokens": len(holders),
        "min_token": min(holders) if holders else None, "max_token": max(holders) if holders else None,
        "writes_sent": len(sent), "acked": len(ok), "fenced": len(fenced),
        "errors": sum(1 for x in out.values() if x["out"] == "error"), "unknown": len(set(sent) - set(out)),
        "rogue_sent": sum(1 for x in sent.values() if x.get("rogue")),
        "stale_grants": sum(1 for x in lines if x["ev"] == "stale"),
        "rows": len(rows), "kills": len(h.deaths),
        "stops": sum(1 for x in h.nemesis if x.get("action", "").startswith("stop")),
    }
    return Verdict(v, stats)


# --- for the tests ------------------------------------------------------------------------


def make_table(cluster: "Cluster", name: str) -> str:
    table = f"default.{name}"
    cluster.admin().create_table(table, COLUMNS, primary_key="wid", num_buckets=6)
    return table


def run_and_check(cluster: "Cluster", tmp_path: Path, name: str, expect_fenced: bool = True, min_grants: int = 5,
                  **kw: Any) -> History:
    """Make a table, run :func:`run_checker` against ``cluster``, assert :func:`check_history` finds nothing
    (and that the run exercised grants, writes and, if asked, refusals); the verdict goes to
    ``<tmp_path>/<name>/verdict.json``."""
    table = make_table(cluster, name)
    h = run_checker(tmp_path / name, cluster.app_env(), cluster.locator_arg,
                    str(cluster.secret_file) if cluster.secret_file else None, table,
                    lambda: cluster.admin().scan(table).to_pylist(), group=name, **kw)
    verdict = check_history(h)
    (tmp_path / name / "verdict.json").write_text(json.dumps({"violations": verdict.violations, "stats": verdict.stats,
                                                              "nemesis": h.nemesis}, indent=1, default=str))
    print(f"\n{name}: {verdict.stats}")
    assert verdict.ok, "\n".join(verdict.violations[:20])
    # the run exercised what it is meant to: several grants, refused zombie writes
    assert verdict.stats["grants"] >= min_grants, verdict.stats
    assert verdict.stats["acked"] >= 20, verdict.stats
    if expect_fenced:
        assert verdict.stats["fenced"] >= 1, verdict.stats
    return h


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("contend")
    c.add_argument("--cid", type=int, required=True)
    c.add_argument("--seed", type=int, required=True)
    c.add_argument("--backend", choices=["locator", "zk"], default="locator")
    c.add_argument("--locator", required=True)
    c.add_argument("--secret-file")
    c.add_argument("--zk")
    c.add_argument("--group", required=True)
    c.add_argument("--table", required=True)
    c.add_argument("--ttl", type=float, default=1.5)
    c.add_argument("--until", type=float, required=True, help="time.monotonic() at which to stop")
    c.add_argument("--history", required=True)
    c.add_argument("--stop-file", required=True, help="stop once this file exists")
    c.add_argument("--max-hold", type=float, default=0.0, help="longest time to keep the lease (0: 2.5 TTLs)")
    c.add_argument("--min-hold", type=float, default=0.2, help="shortest time to keep the lease")
    a = ap.parse_args(argv)
    return contend(a)


if __name__ == "__main__":
    sys.exit(main())
