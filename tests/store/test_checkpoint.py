"""Tests for spark_ext.store.checkpoint: round trips, atomicity, fallback, cleanup."""

from __future__ import annotations

import datetime
import decimal
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pytest

from spark_ext.store.checkpoint import (
    Checkpoint,
    CheckpointError,
    list_checkpoints,
    read_latest_checkpoint,
    write_checkpoint,
)

SCHEMA = pa.schema(
    [
        pa.field("i8", pa.int8()),
        pa.field("i16", pa.int16()),
        pa.field("i32", pa.int32()),
        pa.field("i64", pa.int64(), nullable=False),
        pa.field("f32", pa.float32()),
        pa.field("f64", pa.float64()),
        pa.field("dec", pa.decimal128(38, 10)),
        pa.field("s", pa.string()),
        pa.field("b", pa.binary()),
        pa.field("flag", pa.bool_()),
        pa.field("d", pa.date32()),
        pa.field("ts", pa.timestamp("us")),
        pa.field("ts_utc", pa.timestamp("us", tz="UTC")),
    ],
    metadata={b"spark_ext.table": b"orders"},
)


def make_batch(start: int, rows: int) -> pa.RecordBatch:
    def maybe(i: int, value: Any) -> Any:
        return None if i % 5 == 3 else value  # nulls in every nullable column

    idx = range(start, start + rows)
    epoch = datetime.datetime(2024, 1, 1)
    return pa.record_batch(
        [
            pa.array([maybe(i, i % 128 - 64) for i in idx], pa.int8()),
            pa.array([maybe(i, i - 30000) for i in idx], pa.int16()),
            pa.array([maybe(i, -(2**31) + i) for i in idx], pa.int32()),
            pa.array([2**62 + i for i in idx], pa.int64()),
            pa.array([maybe(i, i / 4) for i in idx], pa.float32()),
            pa.array([maybe(i, i / 3) for i in idx], pa.float64()),
            pa.array(
                [maybe(i, decimal.Decimal(f"{'-' if i % 2 else ''}1234567890123456789012345678.{i:010d}"))
                 for i in idx],
                pa.decimal128(38, 10),
            ),
            pa.array([maybe(i, f"str-{i}-ünï") for i in idx], pa.string()),
            pa.array([maybe(i, bytes([i % 256]) * (i % 7)) for i in idx], pa.binary()),
            pa.array([maybe(i, i % 2 == 0) for i in idx], pa.bool_()),
            pa.array([maybe(i, datetime.date(2000, 1, 1) + datetime.timedelta(days=i)) for i in idx], pa.date32()),
            pa.array([maybe(i, epoch + datetime.timedelta(microseconds=i)) for i in idx], pa.timestamp("us")),
            pa.array(
                [maybe(i, (epoch + datetime.timedelta(seconds=i)).replace(tzinfo=datetime.timezone.utc))
                 for i in idx],
                pa.timestamp("us", tz="UTC"),
            ),
        ],
        schema=SCHEMA,
    )


ODD_NAMES = ["db.orders", "weird/na:me *?<>|\\", "名前 with spaces", "T", "t", ".hidden", "..", ""]
CATALOG = {
    "tables": {"db.orders": {"pk": ["i64"], "buckets": 8}, "T": {"pk": []}},
    "version": 3,
    "ratio": 0.25,
    "note": "ünïcode",
    "nothing": None,
}


@pytest.fixture
def ckpt_dir(tmp_path: Path) -> Path:
    return tmp_path / "ckpt"


@pytest.fixture
def loaded() -> Iterator[list[Checkpoint]]:
    """Checkpoints appended here are closed after the test."""
    held: list[Checkpoint] = []
    yield held
    for ckpt in held:
        ckpt.close()


def read(directory: Path, held: list[Checkpoint]) -> Checkpoint | None:
    ckpt = read_latest_checkpoint(directory)
    if ckpt is not None:
        held.append(ckpt)
    return ckpt


def simple_tables(value: int) -> dict[str, tuple[pa.Schema, Any]]:
    t = pa.table({"v": [value] * 3})
    return {"t": (t.schema, t.to_batches())}


def test_round_trip_many_types_and_names(ckpt_dir: Path, loaded: list[Checkpoint]) -> None:
    main = [make_batch(0, 100), make_batch(100, 1), make_batch(101, 0), make_batch(101, 57)]

    def streamed() -> Iterator[pa.RecordBatch]:  # batches may be a one-shot generator
        yield from main

    tables: dict[str, tuple[pa.Schema, Any]] = {"db.orders": (SCHEMA, streamed())}
    for n, name in enumerate(ODD_NAMES[1:], start=1):
        tables[name] = (SCHEMA, [make_batch(n * 1000, n)])
    tables["empty"] = (SCHEMA, [])
    tables["as_table"] = (SCHEMA, pa.Table.from_batches([make_batch(7, 9)]))

    path = write_checkpoint(ckpt_dir, 42, CATALOG, tables)
    assert path == ckpt_dir / "ckpt-00000000000000000042"
    assert sorted(os.listdir(path)) == sorted(
        [json.loads((path / "manifest.json").read_text())["tables"][n]["file"] for n in tables]
        + ["manifest.json"]
    )
    assert len(set(os.listdir(path))) == len(tables) + 1  # "T" and "t" get distinct files

    ckpt = read(ckpt_dir, loaded)
    assert ckpt is not None
    assert ckpt.lsn == 42 and ckpt.path == path
    assert ckpt.catalog == CATALOG
    assert ckpt.table_names == list(tables)

    reader = ckpt.open_table("db.orders")
    assert isinstance(reader, pa.RecordBatchReader)
    assert reader.schema.equals(SCHEMA, check_metadata=True)
    got = list(reader)
    assert [b.num_rows for b in got] == [100, 1, 0, 57]
    for a, b in zip(got, main):
        assert a.equals(b)
    assert ckpt.row_count("db.orders") == 158
    assert ckpt.schema("db.orders").field("dec").type == pa.decimal128(38, 10)
    assert ckpt.schema("db.orders").field("ts_utc").type.tz == "UTC"
    assert ckpt.schema("db.orders").field("i64").nullable is False

    for n, name in enumerate(ODD_NAMES[1:], start=1):
        table = ckpt.read_table(name)
        assert table.equals(pa.Table.from_batches([make_batch(n * 1000, n)])), name
        assert ckpt.row_count(name) == n
    assert ckpt.read_table("empty").num_rows == 0
    assert ckpt.read_table("empty").schema.equals(SCHEMA)
    assert ckpt.read_table("as_table").equals(pa.Table.from_batches([make_batch(7, 9)]))

    # Spot-check real values, not only Arrow's own equality.
    row = ckpt.read_table("db.orders").slice(1, 1).to_pylist()[0]
    assert row["dec"] == decimal.Decimal("-1234567890123456789012345678.0000000001")
    assert row["ts_utc"] == datetime.datetime(2024, 1, 1, 0, 0, 1, tzinfo=datetime.timezone.utc)
    assert row["d"] == datetime.date(2000, 1, 2) and row["b"] == b"\x01"
    expected_nulls = sum(1 for i in [*range(0, 101), *range(101, 158)] if i % 5 == 3)
    assert ckpt.read_table("db.orders").column("s").null_count == expected_nulls == 31

    with pytest.raises(KeyError, match="no table 'missing'"):
        ckpt.open_table("missing")


def test_batches_outlive_close_and_deletion(ckpt_dir: Path) -> None:
    path = write_checkpoint(ckpt_dir, 1, {}, {"x": (SCHEMA, [make_batch(0, 10)])})
    with read_latest_checkpoint(ckpt_dir) as ckpt:  # type: ignore[union-attr]
        table = ckpt.read_table("x")
    with pytest.raises(CheckpointError, match="closed"):
        ckpt.open_table("x")
    shutil.rmtree(path)
    assert table.equals(pa.Table.from_batches([make_batch(0, 10)]))


def test_manifest_contents(ckpt_dir: Path) -> None:
    path = write_checkpoint(ckpt_dir, 7, {"k": [1, 2]}, {"a.b": (SCHEMA, [make_batch(0, 3)])})
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format"] == "spark-ext-checkpoint" and manifest["version"] == 1
    assert manifest["lsn"] == 7 and manifest["catalog"] == {"k": [1, 2]}
    entry = manifest["tables"]["a.b"]
    assert entry["rows"] == 3
    assert entry["file"].endswith(".arrow") and "/" not in entry["file"]
    assert entry["bytes"] == (path / entry["file"]).stat().st_size
    import zlib

    assert entry["crc32"] == zlib.crc32((path / entry["file"]).read_bytes())
    with pa.ipc.open_file(str(path / entry["file"])) as f:  # a plain Arrow IPC file
        assert f.read_all().num_rows == 3


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _table_file(ckpt: Path) -> Path:
    return next(p for p in ckpt.iterdir() if p.suffix == ".arrow")


def _edit_manifest(ckpt: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    manifest = json.loads((ckpt / "manifest.json").read_text())
    edit(manifest)
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


CORRUPTIONS: dict[str, Callable[[Path], object]] = {
    "flipped data byte": lambda c: _flip_byte(_table_file(c), _table_file(c).stat().st_size // 2),
    "truncated table file": lambda c: _table_file(c).write_bytes(_table_file(c).read_bytes()[:100]),
    "missing table file": lambda c: _table_file(c).unlink(),
    "missing manifest": lambda c: (c / "manifest.json").unlink(),
    "truncated manifest": lambda c: (c / "manifest.json").write_bytes(
        (c / "manifest.json").read_bytes()[:40]
    ),
    "edited row count": lambda c: _edit_manifest(c, lambda m: m["tables"]["t"].update(rows=4)),
    "edited catalog": lambda c: _edit_manifest(c, lambda m: m["catalog"].update(gen=21)),
    "path escape": lambda c: _edit_manifest(c, lambda m: m["tables"]["t"].update(file="../x")),
    "wrong lsn": lambda c: c.rename(c.with_name("ckpt-00000000000000000030")),
}


@pytest.mark.parametrize("corrupt", list(CORRUPTIONS), ids=list(CORRUPTIONS))
def test_corrupt_newest_falls_back_to_older(
    ckpt_dir: Path, loaded: list[Checkpoint], caplog: pytest.LogCaptureFixture, corrupt: str
) -> None:
    write_checkpoint(ckpt_dir, 10, {"gen": 10}, simple_tables(10))
    newest = write_checkpoint(ckpt_dir, 20, {"gen": 20}, simple_tables(20))
    CORRUPTIONS[corrupt](newest)
    with caplog.at_level(logging.WARNING, logger="spark_ext.store.checkpoint"):
        ckpt = read(ckpt_dir, loaded)
    assert ckpt is not None
    assert ckpt.lsn == 10 and ckpt.catalog == {"gen": 10}
    assert ckpt.read_table("t").column("v").to_pylist() == [10, 10, 10]
    assert "skipping checkpoint" in caplog.text


def test_all_corrupt_gives_none(ckpt_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_checkpoint(ckpt_dir, 5, {}, simple_tables(5))
    (path / "manifest.json").write_text("{not json")
    assert read_latest_checkpoint(ckpt_dir) is None
    assert read_latest_checkpoint(ckpt_dir / "missing") is None
    assert "unreadable manifest" in caplog.text


def test_keep_n_cleanup(ckpt_dir: Path, loaded: list[Checkpoint]) -> None:
    for lsn in (1, 5, 9, 12):
        write_checkpoint(ckpt_dir, lsn, {"lsn": lsn}, simple_tables(lsn))
    assert [lsn for lsn, _ in list_checkpoints(ckpt_dir)] == [9, 12]
    write_checkpoint(ckpt_dir, 20, {}, simple_tables(20), keep=3)
    assert [lsn for lsn, _ in list_checkpoints(ckpt_dir)] == [9, 12, 20]
    write_checkpoint(ckpt_dir, 21, {}, simple_tables(21), keep=1)
    assert [lsn for lsn, _ in list_checkpoints(ckpt_dir)] == [21]
    assert sorted(os.listdir(ckpt_dir)) == ["ckpt-00000000000000000021"]  # no leftovers
    ckpt = read(ckpt_dir, loaded)
    assert ckpt is not None and ckpt.lsn == 21


def test_temp_folder_from_crash_is_ignored_then_cleaned(
    ckpt_dir: Path, loaded: list[Checkpoint]
) -> None:
    write_checkpoint(ckpt_dir, 3, {"ok": True}, simple_tables(3))
    crashed = ckpt_dir / ".tmp-ckpt-00000000000000000009-12345-deadbeef"
    crashed.mkdir()
    (crashed / "0000-t.arrow").write_bytes(b"half a file")
    (ckpt_dir / ".tmp-del-ckpt-00000000000000000001-abcd").mkdir()
    ckpt = read(ckpt_dir, loaded)
    assert ckpt is not None and ckpt.lsn == 3
    assert crashed.exists()  # readers never modify the directory
    write_checkpoint(ckpt_dir, 4, {}, simple_tables(4))
    assert sorted(os.listdir(ckpt_dir)) == ["ckpt-00000000000000000003", "ckpt-00000000000000000004"]


def test_crash_before_rename_leaves_previous_checkpoint(
    ckpt_dir: Path, loaded: list[Checkpoint], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_checkpoint(ckpt_dir, 3, {"gen": 3}, simple_tables(3))

    def power_cut(src: Any, dst: Any) -> None:
        raise OSError(5, "simulated failure at rename")

    monkeypatch.setattr(os, "rename", power_cut)
    with pytest.raises(OSError, match="simulated"):
        write_checkpoint(ckpt_dir, 8, {"gen": 8}, simple_tables(8))
    monkeypatch.undo()
    assert sorted(os.listdir(ckpt_dir)) == ["ckpt-00000000000000000003"]
    ckpt = read(ckpt_dir, loaded)
    assert ckpt is not None and ckpt.catalog == {"gen": 3}


def test_bad_batch_leaves_nothing_behind(ckpt_dir: Path) -> None:
    other = pa.record_batch({"x": ["not the schema"]})
    with pytest.raises(CheckpointError, match="cannot write table 'bad'"):
        write_checkpoint(ckpt_dir, 2, {}, {"good": (SCHEMA, [make_batch(0, 2)]), "bad": (SCHEMA, [other])})
    assert os.listdir(ckpt_dir) == []


def test_same_lsn_keeps_valid_and_replaces_corrupt(ckpt_dir: Path, loaded: list[Checkpoint]) -> None:
    path = write_checkpoint(ckpt_dir, 6, {"first": True}, simple_tables(1))
    again = write_checkpoint(ckpt_dir, 6, {"first": False}, simple_tables(2))
    assert again == path
    ckpt = read(ckpt_dir, loaded)
    assert ckpt is not None and ckpt.catalog == {"first": True}
    ckpt.close()

    _flip_byte(_table_file(path), 50)
    write_checkpoint(ckpt_dir, 6, {"first": False}, simple_tables(2))
    ckpt = read(ckpt_dir, loaded)
    assert ckpt is not None and ckpt.catalog == {"first": False}
    assert ckpt.read_table("t").column("v").to_pylist() == [2, 2, 2]
    assert sorted(os.listdir(ckpt_dir)) == ["ckpt-00000000000000000006"]


def test_argument_validation(ckpt_dir: Path) -> None:
    with pytest.raises(ValueError, match="lsn"):
        write_checkpoint(ckpt_dir, -1, {}, {})
    with pytest.raises(ValueError, match="keep"):
        write_checkpoint(ckpt_dir, 1, {}, {}, keep=0)
    with pytest.raises(CheckpointError, match="JSON"):
        write_checkpoint(ckpt_dir, 1, {"x": object()}, {})
    with pytest.raises(CheckpointError, match="JSON"):
        write_checkpoint(ckpt_dir, 1, {"x": float("nan")}, {})
    with pytest.raises(CheckpointError, match="table names"):
        write_checkpoint(ckpt_dir, 1, {}, {1: (SCHEMA, [])})  # type: ignore[dict-item]
    assert list_checkpoints(ckpt_dir) == []


def test_no_tables_is_a_valid_checkpoint(ckpt_dir: Path, loaded: list[Checkpoint]) -> None:
    write_checkpoint(ckpt_dir, 0, {"empty": True}, {})
    ckpt = read(ckpt_dir, loaded)
    assert ckpt is not None and ckpt.lsn == 0 and ckpt.table_names == []
