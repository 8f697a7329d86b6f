"""The catalog: namespaces, table definitions, indexes, placement; persisted and versioned.

Every change is applied under one lock, bumps the catalog version and the table's
version, and is written to ``catalog.json`` atomically (temporary file, fsync, rename)
before it is acknowledged, so concurrent DDL from two applications is serialized and a
locator restart loses nothing acknowledged. A DDL request may carry ``expected_version``
(optimistic concurrency): a stale one is refused with CONFLICT instead of clobbering.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Sequence

from spark_ext.exceptions import (
    BadArgumentError,
    ConflictError,
    IndexExistsError,
    NamespaceExistsError,
    NamespaceNotEmptyError,
    NoSuchIndexError,
    NoSuchNamespaceError,
    NoSuchTableError,
    TableExistsError,
)
from spark_ext.store import alter
from spark_ext.store.files import write_json_atomic
from spark_ext.store.schema import TableSchema
from spark_ext.store.table import storage_options

logger = logging.getLogger(__name__)

Namespace = tuple[str, ...]


def full_name(namespace: Sequence[str], name: str) -> str:
    """The engine name of a table: ``ns1.ns2.name``."""
    return ".".join([*namespace, name])


def check_ident(v: Any, what: str) -> str:
    if not isinstance(v, str) or not v or "." in v or len(v) > 255 or any(ord(c) < 32 for c in v):
        raise BadArgumentError(f"{what} must be a non-empty name without dots or control characters, got {v!r}")
    return v


def check_namespace(ns: Any) -> Namespace:
    if isinstance(ns, str):
        ns = [ns]
    if not isinstance(ns, (list, tuple)) or not ns:
        raise BadArgumentError(f"a namespace is a non-empty list of names, got {ns!r}")
    return tuple(check_ident(p, "namespace name") for p in ns)


def _check_indexes(table: str, schema: TableSchema, indexes: Any) -> list[dict[str, Any]]:
    """Index definitions of a new table, checked: unique names, real columns, known kinds."""
    if not isinstance(indexes, list):
        raise BadArgumentError(f"table {table!r}: 'indexes' must be a list")
    out: list[dict[str, Any]] = []
    for ix in indexes:
        if not isinstance(ix, dict):
            raise BadArgumentError(f"table {table!r}: an index must be an object, got {ix!r}")
        name = check_ident(ix.get("name"), "index name")
        if any(o["name"] == name for o in out):
            raise IndexExistsError(f"table {table!r} defines index {name!r} twice", table=table, index=name)
        cols = ix.get("columns")
        if not isinstance(cols, list) or not cols:
            raise BadArgumentError(f"table {table!r}: index {name!r} needs a list of columns", table=table)
        for c in cols:
            schema.column_index(c)
        kind = ix.get("kind", "hash")
        if kind not in ("hash", "ordered"):
            raise BadArgumentError(f"table {table!r}: index kind must be 'hash' or 'ordered', got {kind!r}", table=table)
        out.append({"name": name, "columns": list(cols), "kind": kind})
    return out

#: Table options the store servers apply when they create a table: ALTER may not change them.
_FIXED_OPTIONS = frozenset({"persistence", "flush", "memory_limit_bytes", "num_buckets", "buckets", "primary_key"})


class Catalog:
    """Catalog state; thread-safe. ``path`` None keeps it in memory only."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.lock = threading.RLock()
        self.version = 0
        self.namespaces: dict[Namespace, dict[str, str]] = {("default",): {}}
        self.tables: dict[str, dict[str, Any]] = {}
        if self.path is not None and self.path.exists():
            self._load()

    # --- persistence ---------------------------------------------------------------------

    def _load(self) -> None:
        assert self.path is not None
        obj = json.loads(self.path.read_text("utf-8"))
        self.version = int(obj["version"])
        self.namespaces = {tuple(n["name"]): dict(n.get("properties", {})) for n in obj["namespaces"]}
        self.tables = {t["spec"]["name"]: t for t in obj["tables"]}
        logger.info("catalog loaded from %s: version %d, %d table(s)", self.path, self.version, len(self.tables))

    def _save(self) -> None:
        self.version += 1
        if self.path is None:
            return
        obj = {
            "version": self.version,
            "namespaces": [{"name": list(n), "properties": p} for n, p in sorted(self.namespaces.items())],
            "tables": [self.tables[k] for k in sorted(self.tables)],
        }
        write_json_atomic(self.path, obj)

    # --- namespaces ---------------------------------------------------------------------

    def create_namespace(self, ns: Any, properties: dict[str, str] | None = None, if_not_exists: bool = False) -> None:
        n = check_namespace(ns)
        with self.lock:
            if n in self.namespaces:
                if if_not_exists:
                    return
                raise NamespaceExistsError(f"namespace {'.'.join(n)!r} already exists", namespace=".".join(n))
            self.namespaces[n] = {str(k): str(v) for k, v in (properties or {}).items()}
            self._save()

    def drop_namespace(self, ns: Any, cascade: bool = False, if_exists: bool = False) -> list[str]:
        """Drop a namespace; with cascade also its tables (returned for the servers)."""
        n = check_namespace(ns)
        with self.lock:
            if n not in self.namespaces:
                if if_exists:
                    return []
                raise NoSuchNamespaceError(f"no namespace {'.'.join(n)!r}", namespace=".".join(n))
            # Tables of the namespace and of its child namespaces (dropped with them).
            inside = [k for k, t in self.tables.items() if tuple(t["namespace"])[: len(n)] == n]
            children = [m for m in self.namespaces if len(m) > len(n) and m[: len(n)] == n]
            if (inside or children) and not cascade:
                raise NamespaceNotEmptyError(
                    f"namespace {'.'.join(n)!r} is not empty ({len(inside)} table(s)); drop with cascade",
                    namespace=".".join(n),
                )
            for k in inside:
                del self.tables[k]
            for m in children:
                del self.namespaces[m]
            del self.namespaces[n]
            self._save()
            return inside

    def list_namespaces(self, parent: Any = ()) -> list[list[str]]:
        p = check_namespace(parent) if parent else ()
        with self.lock:
            return [list(n) for n in sorted(self.namespaces) if len(n) == len(p) + 1 and n[: len(p)] == p]

    def namespace_properties(self, ns: Any) -> dict[str, str]:
        n = check_namespace(ns)
        with self.lock:
            if n not in self.namespaces:
                raise NoSuchNamespaceError(f"no namespace {'.'.join(n)!r}", namespace=".".join(n))
            return dict(self.namespaces[n])

    # --- tables -------------------------------------------------------------------------

    def get(self, namespace: Any, name: Any) -> dict[str, Any]:
        key = full_name(check_namespace(namespace), check_ident(name, "table name"))
        with self.lock:
            t = self.tables.get(key)
            if t is None:
                raise NoSuchTableError(f"no table {key!r}", table=key)
            return json.loads(json.dumps(t))  # a copy the caller may change

    def list_tables(self, namespace: Any) -> list[str]:
        n = check_namespace(namespace)
        with self.lock:
            if n not in self.namespaces:
                raise NoSuchNamespaceError(f"no namespace {'.'.join(n)!r}", namespace=".".join(n))
            return sorted(t["name"] for t in self.tables.values() if tuple(t["namespace"]) == n)

    def create_table(self, namespace: Any, name: Any, spec: dict[str, Any], placement: list[str],
                     if_not_exists: bool = False) -> tuple[dict[str, Any], bool]:
        """Add a table; returns (entry, created). The spec is checked by the engine's rules."""
        n = check_namespace(namespace)
        nm = check_ident(name, "table name")
        key = full_name(n, nm)
        schema = TableSchema.from_json({**spec, "name": key})
        storage_options(key, schema.options)  # checked here, before any server sees the table
        indexes = _check_indexes(key, schema, spec.get("indexes") or [])
        with self.lock:
            if n not in self.namespaces:
                raise NoSuchNamespaceError(f"no namespace {'.'.join(n)!r}", namespace=".".join(n))
            if key in self.tables:
                if if_not_exists:
                    return json.loads(json.dumps(self.tables[key])), False
                raise TableExistsError(f"table {key!r} already exists", table=key)
            if len(placement) != schema.num_buckets:
                raise BadArgumentError("placement must name a server for every bucket")
            entry = {
                "namespace": list(n), "name": nm, "spec": schema.to_json(), "indexes": indexes,
                "placement": list(placement), "version": 1,
            }
            self.tables[key] = entry
            self._save()
            return json.loads(json.dumps(entry)), True

    def _entry(self, key: str, expected_version: Any) -> dict[str, Any]:
        t = self.tables.get(key)
        if t is None:
            raise NoSuchTableError(f"no table {key!r}", table=key)
        if expected_version is not None and expected_version != t["version"]:
            raise ConflictError(
                f"table {key!r} changed meanwhile (version {t['version']}, expected {expected_version}); reload and retry",
                table=key,
            )
        return t

    def drop_table(self, key: str, if_exists: bool = False, expected_version: Any = None) -> dict[str, Any] | None:
        with self.lock:
            if key not in self.tables and if_exists:
                return None
            t = self._entry(key, expected_version)
            del self.tables[key]
            self._save()
            return t

    def set_options(self, key: str, options: dict[str, Any], remove: Sequence[str] = (), expected_version: Any = None) -> dict[str, Any]:
        """Set and remove free-form table options (ALTER TABLE SET/UNSET TBLPROPERTIES).

        The options the store servers apply when they create the table (its storage)
        cannot change here: BadArgumentError names the table and the option.
        """
        fixed = sorted({str(k).lower() for k in [*options, *remove]} & _FIXED_OPTIONS)
        if fixed:
            raise BadArgumentError(
                f"table {key!r}: option {fixed[0]!r} is fixed when the table is created (the store servers apply it "
                f"then); re-create the table to change it", table=key)
        with self.lock:
            t = self._entry(key, expected_version)
            opts = t["spec"].setdefault("options", {})
            opts.update({str(k): str(v) for k, v in options.items()})
            for k in remove:
                opts.pop(k, None)
            t["version"] += 1
            self._save()
            return json.loads(json.dumps(t))

    def add_columns(self, key: str, columns: Any, expected_version: Any = None) -> dict[str, Any]:
        """Append nullable columns to a table's definition (ALTER TABLE ADD COLUMNS).

        Checked by the engine's rules before anything changes: SchemaError for a NOT
        NULL column, a default, a name the table has, an unsupported type.
        """
        with self.lock:
            t = self._entry(key, expected_version)
            schema = TableSchema.from_json(t["spec"])
            fields = alter.fields_from_json(key, columns)
            t["spec"] = alter.schema_with_columns(schema, fields).to_json()
            t["version"] += 1
            self._save()
            return json.loads(json.dumps(t))

    def rename_table(self, key: str, namespace: Any, name: Any, expected_version: Any = None) -> dict[str, Any]:
        """Move a table to another name, in its namespace or another one. O(tables).

        The entry remembers its earlier engine names (``former_names``) so a store
        server that was down during the rename finds its data when it registers again.
        """
        n = check_namespace(namespace)
        nm = check_ident(name, "table name")
        new_key = full_name(n, nm)
        with self.lock:
            t = self._entry(key, expected_version)
            if n not in self.namespaces:
                raise NoSuchNamespaceError(
                    f"cannot rename table {key!r} to {new_key!r}: no namespace {'.'.join(n)!r}", namespace=".".join(n))
            if new_key in self.tables:
                raise TableExistsError(f"cannot rename table {key!r} to {new_key!r}: that table already exists",
                                       table=new_key)
            former = [f for f in t.get("former_names", []) if f != new_key] + [key]
            t = {**t, "namespace": list(n), "name": nm, "spec": {**t["spec"], "name": new_key},
                 "former_names": former[-16:], "version": t["version"] + 1}
            del self.tables[key]
            self.tables[new_key] = t
            self._save()
            return json.loads(json.dumps(t))

    def add_index(self, key: str, index: dict[str, Any], expected_version: Any = None) -> dict[str, Any]:
        with self.lock:
            t = self._entry(key, expected_version)
            name = check_ident(index.get("name"), "index name")
            if any(ix["name"] == name for ix in t["indexes"]):
                raise IndexExistsError(f"table {key!r} already has an index {name!r}", table=key, index=name)
            cols = index.get("columns")
            if not isinstance(cols, list) or not cols:
                raise BadArgumentError(f"index {name!r} needs a list of columns")
            schema = TableSchema.from_json(t["spec"])
            for c in cols:
                schema.column_index(c)
            kind = index.get("kind", "hash")
            if kind not in ("hash", "ordered"):
                raise BadArgumentError(f"index kind must be 'hash' or 'ordered', got {kind!r}")
            t["indexes"].append({"name": name, "columns": list(cols), "kind": kind})
            t["version"] += 1
            self._save()
            return json.loads(json.dumps(t))

    def remove_index(self, key: str, name: str, expected_version: Any = None) -> dict[str, Any]:
        with self.lock:
            t = self._entry(key, expected_version)
            if not any(ix["name"] == name for ix in t["indexes"]):
                raise NoSuchIndexError(f"table {key!r} has no index {name!r}", table=key, index=name)
            t["indexes"] = [ix for ix in t["indexes"] if ix["name"] != name]
            t["version"] += 1
            self._save()
            return json.loads(json.dumps(t))

    def assignments(self, server_id: str) -> list[dict[str, Any]]:
        """Every table with buckets placed on ``server_id`` (for a (re)registering server)."""
        with self.lock:
            out = []
            for t in self.tables.values():
                bs = [b for b, s in enumerate(t["placement"]) if s == server_id]
                if bs:
                    out.append({"table": t["spec"], "buckets": bs, "indexes": t["indexes"],
                                "former_names": t.get("former_names", [])})
            return out
