"""Checkpoints: a consistent snapshot of a store's tables as Arrow IPC files.

Layout. A checkpoint directory holds one folder per checkpoint, ``ckpt-<lsn:020d>``,
where ``lsn`` is the last write-ahead-log record the snapshot includes. Inside:

* one Arrow IPC *file* (random-access format, uncompressed, so it can be memory-mapped
  and read zero-copy) per table, named ``<index:04d>-<safe name>.arrow``: the index
  makes names unique even on case-insensitive file systems, the safe name (the table
  name's UTF-8 bytes with everything but ``[A-Za-z0-9_-]`` percent-encoded, cut to 80
  characters) only helps humans; the manifest is the authority;
* ``manifest.json``: ``format`` (``"spark-ext-checkpoint"``), ``version`` (1), ``lsn``,
  ``created_unix``, ``catalog`` (the caller's JSON-able dict), ``tables`` (table name ->
  ``{"file", "rows", "bytes", "crc32"}``) and ``manifest_crc32``, the CRC-32 of the
  manifest's canonical JSON (sorted keys, no spaces, ASCII) without that field, so a
  flipped digit in a row count or in the catalog is caught too.

Atomicity. A checkpoint is written into ``.tmp-ckpt-...``, every file and the folder are
fsynced, the folder is renamed to its final name and the parent is fsynced. So a
``ckpt-*`` folder is either complete or absent after a crash; leftovers named ``.tmp-*``
are ignored by readers and removed by the next :func:`write_checkpoint`. Old
checkpoints are first renamed to ``.tmp-*`` and then deleted, for the same reason.

One writer per directory is assumed (the store server owning it); readers may run at
any time.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Iterable, Iterator, Mapping

import pyarrow as pa

from spark_ext.exceptions import StorageError
from spark_ext.store.files import fsync_dir

logger = logging.getLogger(__name__)

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "list_checkpoints",
    "read_latest_checkpoint",
    "write_checkpoint",
]

FORMAT: Final = "spark-ext-checkpoint"
VERSION: Final = 1
MANIFEST: Final = "manifest.json"

_CKPT_RE: Final = re.compile(r"^ckpt-(\d{20})$")
_TMP_PREFIX: Final = ".tmp-"
_SAFE_BYTES: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
)
_SAFE_NAME_MAX: Final = 80


class CheckpointError(StorageError):
    """A checkpoint cannot be written, or a checkpoint on disk is unusable."""


@dataclass(frozen=True)
class _TableEntry:
    file: str
    rows: int
    size: int
    crc32: int


# ---------------------------------------------------------------------- helpers


def _checkpoint_name(lsn: int) -> str:
    return f"ckpt-{lsn:020d}"


def _table_file_name(index: int, name: str) -> str:
    safe = "".join(
        chr(b) if b in _SAFE_BYTES else f"%{b:02X}" for b in name.encode("utf-8")
    )
    return f"{index:04d}-{safe[:_SAFE_NAME_MAX]}.arrow"


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _crc_of(source: pa.MemoryMappedFile) -> tuple[int, int]:
    # One zero-copy view of the whole mapping; zlib releases the GIL while it runs.
    size = source.size()
    source.seek(0)
    crc = zlib.crc32(memoryview(source.read_buffer(size))) if size else 0
    return crc, size


def _canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _manifest_crc(manifest: Mapping[str, Any]) -> int:
    body = {k: v for k, v in manifest.items() if k != "manifest_crc32"}
    return zlib.crc32(_canonical(body))


def _remove_tree(path: Path) -> None:
    # Rename first so a crash half-way through the delete leaves a .tmp-* leftover,
    # never a ckpt-* folder with files missing.
    doomed = path.with_name(f"{_TMP_PREFIX}del-{path.name}-{uuid.uuid4().hex[:8]}")
    os.rename(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def list_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """List checkpoint folders by name, oldest first, without validating them.

    Complexity: O(e log e) in the number of directory entries.

    Args:
        directory: the checkpoint directory.

    Returns:
        ``(lsn, path)`` pairs sorted by LSN; empty if the directory does not exist.
    """
    root = Path(directory)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        m = _CKPT_RE.match(entry.name)
        if m and entry.is_dir():
            found.append((int(m.group(1)), entry))
    found.sort()
    return found


def _clean_temp(root: Path) -> None:
    removed = False
    for entry in root.iterdir():
        if entry.name.startswith(_TMP_PREFIX):
            logger.warning("removing leftover checkpoint temp %s", entry)
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed = True
    if removed:
        fsync_dir(root)


def _prune(root: Path, keep: int) -> None:
    existing = list_checkpoints(root)
    doomed = existing[:-keep] if len(existing) > keep else []
    for lsn, path in doomed:
        logger.debug("removing old checkpoint %s (lsn %d)", path, lsn)
        _remove_tree(path)
    if doomed:
        fsync_dir(root)


# ---------------------------------------------------------------------- writing


def _write_table(
    path: Path, schema: pa.Schema, batches: Iterable[pa.RecordBatch] | pa.Table
) -> int:
    if isinstance(batches, pa.Table):
        batches = batches.to_batches()
    rows = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for batch in batches:
            # Arrow refuses a batch whose schema differs from the file's.
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def write_checkpoint(
    directory: str | Path,
    lsn: int,
    catalog: dict[str, Any],
    tables: Mapping[str, tuple[pa.Schema, Iterable[pa.RecordBatch]]],
    *,
    keep: int = 2,
) -> Path:
    """Write a checkpoint atomically and keep only the newest ``keep`` checkpoints.

    If a checkpoint with this LSN already exists and is valid, it is kept as it is (the
    same LSN means the same state) and its path returned; a corrupt one is replaced.

    Complexity: O(total bytes of the tables): each is written once, read back once from
    the page cache for its CRC, and fsynced; plus O(checkpoints) for the cleanup. When
    the LSN already has a checkpoint, O(its bytes) to verify it instead.

    Args:
        directory: the checkpoint directory; created if missing.
        lsn: the last write-ahead-log LSN the snapshot includes (>= 0).
        catalog: metadata to restore with the tables; must be JSON-serializable
            (tuples come back as lists, NaN and infinities are refused).
        tables: table name -> (schema, batches); ``batches`` may be any iterable
            (read once, streamed to disk) or a ``pa.Table``; every batch must match
            the schema.
        keep: how many checkpoints to keep, newest by LSN, including this one (>= 1).

    Returns:
        The path of the checkpoint folder.

    Raises:
        ValueError: ``lsn`` is negative or ``keep`` < 1.
        CheckpointError: ``catalog`` is not JSON-serializable, a table name is not a
            string, or a table could not be written (nothing is left behind).
        OSError: the file system failed.
    """
    if lsn < 0:
        raise ValueError(f"lsn must be >= 0, got {lsn}")
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    root = Path(directory)
    if not root.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        fsync_dir(root.parent)
    _clean_temp(root)

    final = root / _checkpoint_name(lsn)
    if final.exists():
        try:
            _load(final, lsn).close()
        except CheckpointError as exc:
            logger.warning("replacing corrupt checkpoint %s: %s", final, exc)
        else:
            logger.info("checkpoint %s already exists; keeping it", final)
            _prune(root, keep)
            return final
    newest = list_checkpoints(root)
    if newest and newest[-1][0] > lsn:
        logger.warning(
            "writing checkpoint at lsn %d below the newest existing one (%d)", lsn,
            newest[-1][0],
        )

    try:
        catalog_json = json.loads(_canonical({"catalog": catalog}))["catalog"]
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"catalog is not JSON-serializable: {exc}") from exc

    tmp = root / f"{_TMP_PREFIX}{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        entries: dict[str, dict[str, int | str]] = {}
        for index, (name, spec) in enumerate(tables.items()):
            if not isinstance(name, str):
                raise CheckpointError(f"table names must be str, got {name!r}")
            schema, batches = spec
            file_name = _table_file_name(index, name)
            path = tmp / file_name
            try:
                rows = _write_table(path, schema, batches)
            except (pa.ArrowException, TypeError, ValueError) as exc:
                raise CheckpointError(f"cannot write table {name!r}: {exc}") from exc
            with pa.memory_map(str(path), "r") as mapped:
                crc, size = _crc_of(mapped)
            _fsync_file(path)
            entries[name] = {"file": file_name, "rows": rows, "bytes": size, "crc32": crc}

        manifest: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "lsn": lsn,
            "created_unix": time.time(),
            "catalog": catalog_json,
            "tables": entries,
        }
        manifest["manifest_crc32"] = _manifest_crc(manifest)
        with open(tmp / MANIFEST, "w", encoding="ascii") as f:
            json.dump(manifest, f, indent=2, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(tmp)

        if final.exists():  # corrupt one found above: move it out of the way first
            _remove_tree(final)
        os.rename(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote checkpoint %s (%d tables)", final, len(entries))
    _prune(root, keep)
    return final


# ---------------------------------------------------------------------- reading


class Checkpoint:
    """A validated checkpoint whose table files are memory-mapped.

    Obtained from :func:`read_latest_checkpoint`. Batches read from it are zero-copy
    views of the mapped files; they stay valid after :meth:`close` and after the
    folder is deleted (the mapping lives as long as a batch uses it).
    """

    def __init__(
        self,
        path: Path,
        lsn: int,
        catalog: dict[str, Any],
        entries: dict[str, _TableEntry],
        maps: dict[str, pa.MemoryMappedFile],
    ) -> None:
        self._path = path
        self._lsn = lsn
        self._catalog = catalog
        self._entries = entries
        self._maps = maps
        self._closed = False

    @property
    def path(self) -> Path:
        """The checkpoint folder. O(1)."""
        return self._path

    @property
    def lsn(self) -> int:
        """The last write-ahead-log LSN included; replay the log after it. O(1)."""
        return self._lsn

    @property
    def catalog(self) -> dict[str, Any]:
        """The catalog dict given to :func:`write_checkpoint` (after a JSON round trip). O(1)."""
        return self._catalog

    @property
    def table_names(self) -> list[str]:
        """Table names in the order they were written. O(t)."""
        return list(self._entries)

    def row_count(self, name: str) -> int:
        """Rows of table ``name``, from the manifest. O(1).

        Raises:
            KeyError: no such table.
        """
        return self._entry(name).rows

    def schema(self, name: str) -> pa.Schema:
        """Schema of table ``name``. O(columns): reads the file footer.

        Raises:
            KeyError: no such table.
            CheckpointError: the checkpoint is closed.
        """
        return self._file_reader(name).schema

    def open_table(self, name: str) -> pa.RecordBatchReader:
        """Stream the batches of table ``name`` from the memory-mapped file.

        Complexity: O(columns) per batch; no data is copied.

        Args:
            name: the table name as written.

        Returns:
            A reader over the table's batches in the order they were written.

        Raises:
            KeyError: no such table.
            CheckpointError: the checkpoint is closed.
        """
        reader = self._file_reader(name)

        def batches() -> Iterator[pa.RecordBatch]:
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)

        return pa.RecordBatchReader.from_batches(reader.schema, batches())

    def read_table(self, name: str) -> pa.Table:
        """Read table ``name`` as a ``pa.Table``. O(batches), zero-copy.

        Raises:
            KeyError: no such table.
            CheckpointError: the checkpoint is closed.
        """
        return self._file_reader(name).read_all()

    def close(self) -> None:
        """Release the memory maps (batches already read stay valid). Idempotent. O(t)."""
        if self._closed:
            return
        self._closed = True
        for mapped in self._maps.values():
            mapped.close()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Checkpoint({str(self._path)!r}, lsn={self._lsn}, tables={len(self._entries)})"

    def _entry(self, name: str) -> _TableEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"checkpoint {self._path.name} has no table {name!r}") from None

    def _file_reader(self, name: str) -> pa.ipc.RecordBatchFileReader:
        self._entry(name)
        if self._closed:
            raise CheckpointError(f"checkpoint {self._path} is closed")
        return pa.ipc.open_file(self._maps[name])


def _parse_manifest(path: Path, lsn: int) -> tuple[dict[str, Any], dict[str, _TableEntry]]:
    try:
        manifest = json.loads((path / MANIFEST).read_bytes())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"unreadable manifest: {exc}") from exc
    if not isinstance(manifest, dict):
        raise CheckpointError("manifest is not a JSON object")
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise CheckpointError(
            f"unknown format {manifest.get('format')!r} version {manifest.get('version')!r}"
        )
    if manifest.get("manifest_crc32") != _manifest_crc(manifest):
        raise CheckpointError("manifest CRC mismatch")
    if manifest.get("lsn") != lsn:
        raise CheckpointError(f"manifest lsn {manifest.get('lsn')!r} != folder lsn {lsn}")
    catalog, tables = manifest.get("catalog"), manifest.get("tables")
    if not isinstance(catalog, dict) or not isinstance(tables, dict):
        raise CheckpointError("manifest lacks catalog or tables")
    entries: dict[str, _TableEntry] = {}
    for name, raw in tables.items():
        try:
            entry = _TableEntry(raw["file"], raw["rows"], raw["bytes"], raw["crc32"])
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"bad manifest entry for table {name!r}") from exc
        # The manifest is data: never let it point outside the checkpoint folder.
        if (
            not isinstance(entry.file, str)
            or entry.file != Path(entry.file).name
            or entry.file.startswith(".")
        ):
            raise CheckpointError(f"bad file name for table {name!r}: {entry.file!r}")
        entries[name] = entry
    return catalog, entries


def _load(path: Path, lsn: int) -> Checkpoint:
    catalog, entries = _parse_manifest(path, lsn)
    maps: dict[str, pa.MemoryMappedFile] = {}
    try:
        for name, entry in entries.items():
            try:
                mapped = pa.memory_map(str(path / entry.file), "r")
            except (OSError, pa.ArrowException) as exc:
                raise CheckpointError(f"cannot open table {name!r}: {exc}") from exc
            maps[name] = mapped
            crc, size = _crc_of(mapped)
            if size != entry.size or crc != entry.crc32:
                raise CheckpointError(
                    f"table {name!r} file {entry.file} fails its check (size {size} vs "
                    f"{entry.size}, crc {crc:#010x} vs {entry.crc32:#010x})"
                )
            try:
                reader = pa.ipc.open_file(mapped)
                rows = sum(
                    reader.get_batch(i).num_rows for i in range(reader.num_record_batches)
                )
            except pa.ArrowException as exc:
                raise CheckpointError(f"table {name!r} is not a valid IPC file: {exc}") from exc
            if rows != entry.rows:
                raise CheckpointError(f"table {name!r} has {rows} rows, manifest says {entry.rows}")
    except BaseException:
        for mapped in maps.values():
            mapped.close()
        raise
    return Checkpoint(path, lsn, catalog, entries, maps)


def read_latest_checkpoint(directory: str | Path) -> Checkpoint | None:
    """Open the newest complete, intact checkpoint in ``directory``.

    Checkpoints whose manifest does not parse or whose files fail their size, CRC or
    row-count checks are skipped with a warning, falling back to the next older one.
    ``.tmp-*`` leftovers of interrupted writes are ignored (and not touched: readers
    never modify the directory).

    Complexity: O(bytes of the checkpoint returned (plus those skipped)): every file
    is checksummed once through its memory map.

    Args:
        directory: the checkpoint directory.

    Returns:
        The checkpoint (close it when done), or None if there is no usable one.
    """
    for lsn, path in reversed(list_checkpoints(directory)):
        try:
            checkpoint = _load(path, lsn)
        except CheckpointError as exc:
            logger.warning("skipping checkpoint %s: %s", path, exc)
            continue
        logger.debug("using checkpoint %s", path)
        return checkpoint
    return None
