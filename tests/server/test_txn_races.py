"""Server transactions under interleavings that used to split a transaction's outcome
(committed on one server, aborted on another), driven deterministically on a real engine:
the racing call runs in a thread while the first one is held at a chosen point, and the
hand-over is an event (set when the racer waits for the transaction's lock or is done),
never a sleep."""

from __future__ import annotations

import random
import threading
from typing import Any, Callable, Iterator

import pytest

from spark_ext.exceptions import TransactionStateError
from spark_ext.server.indoubt import COMMIT, DecisionLedger, InDoubtResolver
from spark_ext.server.store_service import StoreService
from spark_ext.server.txns import TxnManager
from spark_ext.store import Store

T = "ns.t"
WAIT_S = 30.0  # a guard against a hang, never a synchronisation


@pytest.fixture
def store() -> Iterator[Store]:
    s = Store(background=False)
    s.create_table(T, [("id", "int64"), ("v", "string")], "id", 2).insert([(1, "old"), (2, "old")])
    try:
        yield s
    finally:
        s.close()


class _Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _ReportingLock:
    """A real lock for ``ServerTxn.lock`` that sets ``waited`` when a caller finds it held
    (so the holder knows the racer reached it and is blocked on it)."""

    def __init__(self, waited: threading.Event) -> None:
        self._lock = threading.Lock()
        self.waited = waited

    def __enter__(self) -> "_ReportingLock":
        if not self._lock.acquire(blocking=False):
            self.waited.set()
            self._lock.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._lock.release()


def _stage(mgr: TxnManager, txn: str, key: int, token: int | None = None) -> None:
    if token is not None:
        mgr.note_fence(txn, "g", token)
    mgr.stage(txn, "p", ("upsert", T, ([(key, "new")],)), 1)
    mgr.prepare_part(txn, "p", StoreService._apply)


def _held(mgr: TxnManager, txn: str) -> Any:
    """The live ServerTxn (white box: the race needs its lock and change set)."""
    return mgr._txns[txn]


def _prepare_racing(mgr: TxnManager, txn: str, racer: Callable[[], Any], before: Callable[[], None] = lambda: None
                    ) -> Any:
    """Job-form PREPARE of ``txn`` with ``racer`` started while the prepare holds the
    transaction's lock and its state is still ``open``; returns the racer's result.

    The prepare goes on once the racer waits for the lock (or finished without it), so
    a racer that read ``open`` before the lock sees the prepared transaction after it.
    """
    t = _held(mgr, txn)
    progressed = threading.Event()
    t.lock = _ReportingLock(progressed)
    result: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(racer())
        except BaseException as e:  # reported by the test below
            errors.append(e)
        finally:
            progressed.set()

    racer_thread = threading.Thread(target=run, name="racer")
    real_prepare = t.cs.prepare

    def prepare() -> None:
        assert t.cs.state == "open"
        before()
        racer_thread.start()
        assert progressed.wait(WAIT_S), "the racer neither waited for the lock nor finished"
        real_prepare()

    t.cs.prepare = prepare
    assert mgr.prepare_all(txn, ["p"], ["s0", "s1"]) == "prepared"
    racer_thread.join(WAIT_S)
    assert not racer_thread.is_alive()
    if errors:
        raise errors[0]
    return result[0]


# --- 1. a newer token or the idle reaper never aborts a durably prepared transaction ---------


def test_a_newer_token_during_the_old_leaders_prepare_leaves_it_prepared(store: Store) -> None:
    """FenceRegistry.guard's first check fires abort_fenced while the old leader's prepare
    runs: the prepare answers ``prepared``, so the abort must not land after it (the
    deposed leader's phase 2 is still accepted by the decider: a split outcome)."""
    mgr = TxnManager(store)
    _stage(mgr, "tx", 1, token=1)
    aborted = _prepare_racing(mgr, "tx", lambda: mgr.abort_fenced("g", 2))
    assert aborted == []
    assert mgr.status("tx")["state"] == "prepared"
    assert mgr.commit("tx", None) == "committed"  # the old leader's phase 2, as the decider lets it through
    assert store.table(T).get(1) == (1, "new")


def test_the_new_token_still_aborts_open_and_not_yet_begun_transactions(store: Store) -> None:
    mgr = TxnManager(store)
    _stage(mgr, "open", 1, token=1)
    mgr.note_fence("noted", "g", 1)  # fenced request seen, transaction not begun yet
    mgr.note_fence("newer", "g", 3)
    assert mgr.abort_fenced("g", 2) == ["open"]
    with pytest.raises(TransactionStateError, match="open is already aborted .*group g.*token 2"):
        mgr.commit("open", None)
    with pytest.raises(TransactionStateError, match="noted is already aborted .*token 2"):
        mgr.stage("noted", "p", ("upsert", T, ([(2, "x")],)), 1)
    assert mgr.fence_of("newer") == ("g", 3) and mgr.fence_of("open") is None and mgr.fence_of("noted") is None
    with store.begin() as cs:  # the open one's key lock is gone
        cs.upsert(T, [(1, "later")])


def test_the_reaper_racing_a_prepare_leaves_it_prepared(store: Store) -> None:
    clock = _Clock()
    mgr = TxnManager(store, timeout_s=10.0, clock=clock)
    _stage(mgr, "tx", 1)

    def idle_past_the_timeout() -> None:
        clock.now += 60.0

    assert _prepare_racing(mgr, "tx", mgr.reap, before=idle_past_the_timeout) is None
    assert mgr.status("tx")["state"] == "prepared"
    mgr.reap()  # and later passes leave it to its coordinator / the in-doubt resolver
    assert mgr.status("tx")["state"] == "prepared"
    assert mgr.commit("tx", None) == "committed"


def test_the_reaper_aborts_idle_open_transactions_only(store: Store) -> None:
    clock = _Clock()
    mgr = TxnManager(store, timeout_s=10.0, clock=clock)
    _stage(mgr, "idle", 1)
    clock.now += 5.0
    _stage(mgr, "busy", 2)
    mgr.reap()
    assert mgr.status("idle")["state"] == "open"  # not idle long enough yet
    clock.now += 6.0
    mgr.reap()
    assert mgr.status("idle")["state"] == "aborted" and mgr.status("busy")["state"] == "open"
    with pytest.raises(TransactionStateError, match="idle is already aborted .*no request for over 10s"):
        mgr.prepare_part("idle", "q", StoreService._apply)


# --- 2. the decider's ledger holds a commit: no abort can undo it ------------------------------


def _fail_commits(mgr: TxnManager, txn: str, times: int) -> list[int]:
    """Make the next ``times`` applications of ``txn``'s commit fail as a full disk would
    (before anything is applied); returns the list that counts the attempts."""
    cs = _held(mgr, txn).cs
    real = cs.commit
    calls: list[int] = []

    def commit() -> None:
        calls.append(1)
        if len(calls) <= times:
            raise OSError(28, "No space left on device")
        real()

    cs.commit = commit
    return calls


def _decider(store: Store) -> tuple[TxnManager, DecisionLedger, InDoubtResolver]:
    mgr = TxnManager(store)
    led = DecisionLedger(None)
    return mgr, led, InDoubtResolver(mgr, "s0", led, None, None, timeout_s=60.0)


def test_an_abort_after_a_failed_commit_at_the_decider_finishes_the_commit(store: Store) -> None:
    mgr, led, r = _decider(store)
    _stage(mgr, "tx", 1)
    assert mgr.prepare_all("tx", ["p"], ["s0", "s1"]) == "prepared"
    calls = _fail_commits(mgr, "tx", 1)
    with pytest.raises(OSError, match="No space"):
        mgr.commit("tx", None)
    assert led.get("tx") == COMMIT  # recorded before it was applied: it is the outcome
    # The coordinator's TXN_ABORT after its failed commit: the commit is applied instead.
    assert mgr.abort("tx") == "committed"
    assert len(calls) == 2 and store.table(T).get(1) == (1, "new")
    assert mgr.status("tx")["state"] == "committed" and r.answer("tx") == "committed"


def test_the_decider_refuses_an_abort_while_its_recorded_commit_cannot_be_applied(store: Store) -> None:
    mgr, led, r = _decider(store)
    _stage(mgr, "tx", 1)
    assert mgr.prepare_all("tx", ["p"], ["s0", "s1"]) == "prepared"
    calls = _fail_commits(mgr, "tx", 2)
    with pytest.raises(OSError):
        mgr.commit("tx", None)
    with pytest.raises(TransactionStateError, match="transaction tx is already decided: committed") as e:
        mgr.abort("tx")
    assert e.value.details["state"] == "committed"
    assert mgr.status("tx")["state"] == "prepared" and store.table(T).get(1) == (1, "old")
    # A participant in doubt asks: the decider applies its recorded decision again.
    assert r.answer("tx") == "committed"
    assert len(calls) == 3 and store.table(T).get(1) == (1, "new")
    mgr._decided.clear()  # its in-memory record forgotten (eviction, restart): the ledger agrees
    assert mgr.status("tx")["state"] == "committed" and mgr.abort("tx") == "committed"


def test_the_resolver_retries_a_recorded_commit_that_failed(store: Store) -> None:
    mgr, led, r = _decider(store)
    _stage(mgr, "tx", 1)
    assert mgr.prepare_all("tx", ["p"], ["s0", "s1"]) == "prepared"
    _fail_commits(mgr, "tx", 2)
    with pytest.raises(OSError):
        mgr.commit("tx", None)
    r.step()  # fails again: stays prepared (logged), not aborted
    assert mgr.status("tx")["state"] == "prepared"
    r.step()
    assert mgr.status("tx")["state"] == "committed" and store.table(T).get(1) == (1, "new")


def test_a_non_decider_and_an_unrecorded_commit_still_abort(store: Store) -> None:
    """The refusal is for recorded commits only: a participant other than the decider,
    or a decider whose commit never got recorded, aborts as before."""
    mgr, led, r = _decider(store)
    _stage(mgr, "other", 1)
    assert mgr.prepare_all("other", ["p"], ["s1", "s0"]) == "prepared"  # s1 decides
    _fail_commits(mgr, "other", 1)
    with pytest.raises(OSError):
        mgr.commit("other", None)
    assert led.get("other") is None
    assert mgr.abort("other") == "aborted" and store.table(T).get(1) == (1, "old")


# --- 4. answers about unknown transactions do not evict real decisions ---------------------------


def test_unknown_ids_asked_about_do_not_evict_real_decisions(store: Store) -> None:
    mgr, led, r = _decider(store)
    assert mgr.abort("late") == "aborted"  # an abort before the first stage (commit 852606f)
    _stage(mgr, "real", 1)
    assert mgr.abort("real") == "aborted"
    rng = random.Random(7)
    asked = [f"probe-{rng.getrandbits(64):016x}" for _ in range(25_000)]
    for txn in asked:
        assert r.answer(txn) == "aborted"
    assert mgr.abort("one-more") == "aborted"  # a real decision after the flood (it trims)
    with pytest.raises(TransactionStateError, match="transaction late is already aborted"):
        mgr.stage("late", "p1", ("upsert", T, ([(2, "b")],)), 1)
    with pytest.raises(TransactionStateError, match="transaction real is already aborted"):
        mgr.prepare_part("real", "p", StoreService._apply)
    # The answers are still remembered (bounded), the newest ones at least: a late
    # PREPARE of a transaction its decider answered ``aborted`` about is refused.
    with pytest.raises(TransactionStateError, match=f"{asked[-1]} is already aborted .*never prepared"):
        mgr.prepare_all(asked[-1], [], ["s0", "s1"])
    assert mgr.remembered_count() <= 10_000 + 4_096
