"""In-doubt resolution on one server: the decision rules, the decider's ledger, the
resolver's decider side and its hooks in TxnManager, on a real engine (on disk where a
restart matters). The multi-server paths run in integration/test_in_doubt.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from spark_ext.client.connection import Connection
from spark_ext.exceptions import BadArgumentError, ConflictError, TransactionStateError
from spark_ext.server.fencing import FenceRegistry
from spark_ext.server.indoubt import (
    ABORT,
    COMMIT,
    MAX_FENCES,
    DecisionLedger,
    InDoubtResolver,
    decider_verdict,
    participant_verdict,
)
from spark_ext.server.store_service import StoreService
from spark_ext.server.tcp import FrameServer
from spark_ext.server.txns import TxnManager
from spark_ext.store import Store
from spark_ext.wire.kinds import Kind

T = "ns.t"


# --- the rules ------------------------------------------------------------------------------


@pytest.mark.parametrize("recorded, fenced, idle, want", [
    (None, False, 0.0, None),  # its coordinator may still commit: wait
    (None, False, 9.9, None),
    (None, False, 10.0, ABORT),  # presumed abort after the timeout
    (None, True, 0.0, ABORT),  # deposed coordinator: abort at once
    (COMMIT, True, 99.0, COMMIT),  # a recorded decision wins over everything
    (COMMIT, False, 0.0, COMMIT),
])
def test_decider_verdict(recorded: str | None, fenced: bool, idle: float, want: str | None) -> None:
    outcome, why = decider_verdict(recorded=recorded, fenced=fenced, idle_s=idle, timeout_s=10.0)
    assert outcome == want
    assert why  # always says why


@pytest.mark.parametrize("state, want", [
    ("committed", COMMIT), ("aborted", ABORT), ("unknown", ABORT), ("prepared", None), ("open", None),
])
def test_participant_verdict(state: str, want: str | None) -> None:
    assert participant_verdict(state) == want


# --- the ledger -----------------------------------------------------------------------------


def test_ledger_is_durable_and_bounded(tmp_path: Path) -> None:
    p = tmp_path / "decisions.jsonl"
    led = DecisionLedger(p, max_entries=3)
    for i in range(5):
        led.record(f"t{i}")
    led.record("t4")  # a repeat is not a second line
    assert led.get("t4") == COMMIT and led.get("nope") is None
    led.close()
    with open(p, "a") as f:
        f.write('{"txn": "torn"')  # a crash in the middle of a line: never applied
    led = DecisionLedger(p, max_entries=3)
    assert [led.get(f"t{i}") for i in range(5)] == [None, None, COMMIT, COMMIT, COMMIT]  # newest 3 kept
    assert led.get("torn") is None
    assert [json.loads(x)["txn"] for x in p.read_text().splitlines()] == ["t2", "t3", "t4"]  # rewritten
    led.close()
    old = DecisionLedger(p, retention_s=-1.0)  # everything is past its retention
    assert len(old) == 0
    old.close()


# --- the decider on a real engine ------------------------------------------------------------


@pytest.fixture
def store() -> Iterator[Store]:
    s = Store(background=False)
    s.create_table(T, [("id", "int64"), ("v", "string")], "id", 2).insert([(1, "old")])
    try:
        yield s
    finally:
        s.close()


def _prepare(mgr: TxnManager, txn: str, key: int, participants: list[str], token: int | None = None) -> None:
    if token is not None:
        mgr.note_fence(txn, "g", token)
    mgr.stage(txn, "p", ("upsert", T, ([(key, "new")],)), 1)
    mgr.prepare_part(txn, "p", StoreService._apply)
    assert mgr.prepare_all(txn, ["p"], participants) == "prepared"


def _resolver(mgr: TxnManager, fences: FenceRegistry | None = None, timeout_s: float = 60.0,
              ledger: DecisionLedger | None = None) -> InDoubtResolver:
    return InDoubtResolver(mgr, "s0", ledger if ledger is not None else DecisionLedger(None), fences, None,
                           timeout_s=timeout_s)


def test_a_newer_token_makes_the_decider_abort_and_refuse_the_late_commit(store: Store) -> None:
    mgr = TxnManager(store)
    fences = FenceRegistry()
    r = _resolver(mgr, fences)
    _prepare(mgr, "tx", 1, ["s0", "s1"], token=1)
    r.step()
    assert mgr.status("tx")["state"] == "prepared"  # its coordinator may still commit
    fences.observe("g", 2)
    r.step()
    assert mgr.status("tx")["state"] == "aborted"
    with pytest.raises(TransactionStateError, match="tx is already aborted .*deposed"):
        mgr.commit("tx", None)
    assert store.table(T).get(1) == (1, "old")
    with store.begin() as cs:  # its key lock is gone
        cs.upsert(T, [(1, "later")])
    assert store.table(T).get(1) == (1, "later")


class _Clock:
    """A monotonic clock the test moves by hand (TxnManager's ``clock``)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_presumed_abort_after_the_timeout_but_a_commit_first_wins(store: Store) -> None:
    clock = _Clock()
    mgr = TxnManager(store, clock=clock)
    led = DecisionLedger(None)
    r = _resolver(mgr, timeout_s=10.0, ledger=led)
    _prepare(mgr, "slow", 1, ["s0", "s1"])
    _prepare(mgr, "quick", 2, ["s0", "s1"])
    assert mgr.commit("quick", None) == "committed"  # the coordinator's phase 2 came in time
    assert led.get("quick") == COMMIT  # the decider recorded it before applying it
    clock.now += 9.9
    r.step()
    assert mgr.status("slow")["state"] == "prepared"  # its coordinator may still commit
    clock.now += 0.1  # silent for the whole in-doubt timeout
    r.step()
    assert mgr.status("slow")["state"] == "aborted"
    assert mgr.abort("quick") == "committed"  # an abort cannot undo a decided commit
    assert store.table(T).get(2) == (2, "new") and store.table(T).get(1) == (1, "old")


def test_a_participant_never_decides_alone(store: Store) -> None:
    mgr = TxnManager(store)
    fences = FenceRegistry()
    r = InDoubtResolver(mgr, "s1", DecisionLedger(None), fences, lambda sid: None, timeout_s=0.0)
    _prepare(mgr, "tx", 1, ["s0", "s1"], token=1)
    fences.observe("g", 2)
    r.step(force=True)  # its decider s0 cannot be reached: it stays prepared
    assert mgr.status("tx")["state"] == "prepared"
    with store.begin() as cs, pytest.raises(ConflictError, match="locked by transaction tx"):
        cs.upsert(T, [(1, "x")])
    assert [t["txn"] for t in mgr.in_doubt_report("s1")] == ["tx"]
    assert mgr.in_doubt_report("s1")[0]["role"] == "participant"


def test_the_decider_answers_unknown_and_open_with_abort_and_refuses_them_later(store: Store) -> None:
    mgr = TxnManager(store)
    r = _resolver(mgr)
    assert r.answer("never-seen") == "aborted"
    with pytest.raises(TransactionStateError, match="never-seen is already aborted .*never prepared"):
        mgr.prepare_all("never-seen", [], ["s0", "s1"])
    mgr.stage("half", "p", ("upsert", T, ([(1, "new")],)), 1)
    assert r.answer("half") == "aborted"
    with pytest.raises(TransactionStateError, match="half is already aborted"):
        mgr.prepare_part("half", "p", StoreService._apply)
    _prepare(mgr, "live", 2, ["s0", "s1"])
    assert r.answer("live") == "prepared"  # its coordinator is not silent yet
    assert mgr.commit("live", None) == "committed"
    assert r.answer("live") == "committed"


def test_a_question_with_hostile_fences_is_refused_and_changes_nothing(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "fences.json"
    fences = FenceRegistry(path)
    fences.observe("g", 1)
    writes: list[dict[str, int]] = []
    real_persist = fences._persist

    def persist() -> None:  # counts the fsynced rewrites of the fence file
        writes.append(dict(fences._newest))
        real_persist()

    fences._persist = persist  # type: ignore[method-assign]
    mgr = TxnManager(store)
    r = _resolver(mgr, fences)
    _prepare(mgr, "tx", 1, ["s0", "s1"], token=1)
    before, on_disk = fences.snapshot(), path.read_text()
    flood = {f"group-{i}": i + 1 for i in range(10_000)}
    for bad, why in [
        (flood, f"'fences' has 10000 entries; at most {MAX_FENCES} are accepted"),
        ([["g", 2]], "'fences' must be an object"),
        ({"g": "2"}, "token of group 'g' must be an integer"),
        ({"g": True}, "token of group 'g' must be an integer"),
        ({"g": -1}, "token of group 'g' must be an integer"),
        ({"": 2}, "leader group '' must be a non-empty string"),
        ({"g": 3, "x" * 201: 1}, "must be a non-empty string of at most 200 characters"),
    ]:
        with pytest.raises(BadArgumentError, match=why):
            r.answer("tx", bad)
    assert fences.snapshot() == before and path.read_text() == on_disk and writes == []
    assert mgr.status("tx")["state"] == "prepared"  # nothing decided either
    # A well-formed question: only its transaction's group counts, written once.
    assert r.answer("tx", {"g": 2, **{f"other-{i}": 5 for i in range(MAX_FENCES - 1)}}) == "aborted"
    assert fences.snapshot() == {"g": 2} and writes == [{"g": 2}]
    assert json.loads(path.read_text()) == {"g": 2}
    assert r.answer("never-seen", {"g": 9}) == "aborted" and fences.newest("g") == 2  # not its group


@pytest.fixture
def decider() -> Iterator[tuple[StoreService, FrameServer]]:
    """A decider ``s0`` served over real sockets, with its fence registry and resolver."""
    s = Store(background=False)
    s.create_table(T, [("id", "int64"), ("v", "string")], "id", 2).insert([(1, "old")])
    service = StoreService(s, "s0")
    service.fence = FenceRegistry()
    service.resolver = InDoubtResolver(service.txns, "s0", DecisionLedger(None), service.fence, None)
    fs = FrameServer(role="server")
    service.register(fs)
    fs.start()
    try:
        yield service, fs
    finally:
        fs.stop()
        service.close()
        s.close()


def test_a_participant_asks_with_its_transactions_group_and_the_decider_takes_only_that(
        store: Store, decider: tuple[StoreService, FrameServer]) -> None:
    service, fs = decider
    _prepare(service.txns, "tx", 1, ["s0", "s1"], token=1)  # at the decider
    fences = FenceRegistry()  # the participant's: it saw the new leader (token 3) and another group
    fences.observe("g", 3)
    fences.observe("unrelated", 8)
    mgr = TxnManager(store)
    r = InDoubtResolver(mgr, "s1", DecisionLedger(None), fences, lambda sid: ("127.0.0.1", fs.port), timeout_s=60.0)
    try:
        _prepare(mgr, "tx", 1, ["s0", "s1"], token=1)
        r.step(force=True)
        assert service.fence.snapshot() == {"g": 3}  # learned from the question, nothing else
        assert service.txns.status("tx")["state"] == "aborted"  # its coordinator was deposed
        assert mgr.status("tx")["state"] == "aborted" and store.table(T).get(1) == (1, "old")
    finally:
        r.close()


def test_a_hostile_question_on_the_wire_is_bad_argument(decider: tuple[StoreService, FrameServer]) -> None:
    service, fs = decider
    _prepare(service.txns, "tx", 1, ["s0", "s1"], token=1)
    flood = {f"group-{i}": 2 for i in range(5_000)}
    service.fence.observe("g", 1)
    conn = Connection("127.0.0.1", fs.port)
    try:
        with pytest.raises(BadArgumentError, match=f"'fences' has 5000 entries; at most {MAX_FENCES}"):
            conn.request(Kind.TXN_STATUS, {"txn": "tx", "resolve": True, "fences": flood})
        assert conn.request(Kind.TXN_STATUS, {"txn": "tx", "resolve": True}).metadata["state"] == "prepared"
    finally:
        conn.close()
    assert service.fence.snapshot() == {"g": 1} and service.txns.status("tx")["state"] == "prepared"


def test_a_restart_restores_participants_and_fence_and_applies_the_ledger(tmp_path: Path) -> None:
    data, ledger_path = tmp_path / "store", tmp_path / "decisions.jsonl"
    s = Store(data, background=False)
    s.create_table(T, [("id", "int64"), ("v", "string")], "id", 2).insert([(1, "old"), (2, "old")])
    mgr = TxnManager(s)
    led = DecisionLedger(ledger_path)
    _prepare(mgr, "to-commit", 1, ["s0", "s1"], token=7)
    _prepare(mgr, "undecided", 2, ["s0", "s1"], token=7)
    led.record("to-commit")  # the decider decided, then died before applying it
    led.close()
    s.close()  # (the log holds both PREPARE records and no COMMIT)

    s = Store(data, background=False)
    try:
        mgr = TxnManager(s)
        assert sorted(s.in_doubt()) == ["to-commit", "undecided"]
        report = {t["txn"]: t for t in mgr.in_doubt_report("s0")}
        assert report["undecided"]["participants"] == ["s0", "s1"] and report["undecided"]["recovered"]
        assert report["undecided"]["fence"] == {"group": "g", "token": 7}
        fences = FenceRegistry()
        r = _resolver(mgr, fences, ledger=DecisionLedger(ledger_path))
        r.start()
        try:
            assert mgr.status("to-commit")["state"] == "committed"
            assert s.table(T).get(1) == (1, "new")
            assert mgr.status("undecided")["state"] == "prepared"
            fences.observe("g", 8)  # its leader was replaced while this server was down
            r.step()
            assert mgr.status("undecided")["state"] == "aborted"
            assert s.table(T).get(2) == (2, "old") and s.in_doubt() == []
        finally:
            r.close()
    finally:
        s.close()


def test_the_ledger_is_rebuilt_from_the_log_and_synced_before_a_checkpoint_trims_it(tmp_path: Path) -> None:
    """A machine crash may lose ledger lines written without an fsync; the log's COMMIT
    records back them up until a checkpoint, which syncs the ledger first."""
    data, ledger_path = tmp_path / "store", tmp_path / "decisions.jsonl"
    s = Store(data, background=False)
    s.create_table(T, [("id", "int64"), ("v", "string")], "id", 2)
    mgr = TxnManager(s)
    _prepare(mgr, "c1", 1, ["s0", "s1"])
    assert mgr.commit("c1", None) == "committed"  # no resolver here: no ledger line written
    s.close()

    s = Store(data, background=False)
    try:
        assert s.recovered_commits == ["c1"]
        mgr = TxnManager(s)
        led = DecisionLedger(ledger_path)
        r = _resolver(mgr, ledger=led)
        r.start()
        try:
            assert led.get("c1") == COMMIT and r.answer("c1") == "committed"
            assert json.loads(ledger_path.read_text())["txn"] == "c1"
            assert s.before_log_trim == led.sync  # installed by start()
            synced: list[bool] = []
            real = led.sync
            s.before_log_trim = lambda: (synced.append(True), real())[1]  # type: ignore[func-returns-value]
            s.checkpoint()
            assert synced == [True]
        finally:
            r.close()
    finally:
        s.close()
