package io.sparkext.wire;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/** Catalog calls to the locator (or embedded server). Thread-safe: uses the shared pools. */
public final class StoreClient {
  public final Endpoint endpoint;
  private final ConnectionPool locator;

  public StoreClient(Endpoint e) {
    this.endpoint = e;
    this.locator = ConnectionPool.of(e.host, e.port, e.secret);
  }

  private static ArrayNode strings(List<String> xs) {
    ArrayNode a = Json.arr();
    for (String x : xs) a.add(x);
    return a;
  }

  private ObjectNode tableRef(List<String> ns, String name) {
    ObjectNode m = Json.obj();
    m.set("namespace", strings(ns));
    m.put("name", name);
    return m;
  }

  /** Requests that change the catalog: a leader's fence goes on each (docs/protocol.md section 15). */
  static boolean changesCatalog(int kind) {
    switch (kind) {
      case Kinds.CREATE_NAMESPACE: case Kinds.DROP_NAMESPACE: case Kinds.ALTER_NAMESPACE:
      case Kinds.CREATE_TABLE: case Kinds.DROP_TABLE: case Kinds.ALTER_TABLE: case Kinds.RENAME_TABLE:
      case Kinds.CREATE_INDEX: case Kinds.DROP_INDEX:
        return true;
      default:
        return false;
    }
  }

  /**
   * One request to the locator. DDL carries this JVM's fence when it leads an HA group,
   * and is refused here at once (FENCED) when it was told its leadership is lost.
   */
  public Frame call(int kind, ObjectNode meta, boolean idempotent) {
    if (changesCatalog(kind)) Fence.stamp(meta, Fence.forWrite());
    return locator.request(kind, meta, null, 0, idempotent);
  }

  public void ping() { call(Kinds.PING, Json.obj(), true); }

  public TableMeta getTable(List<String> ns, String name) {
    return new TableMeta(call(Kinds.GET_TABLE, tableRef(ns, name), true).meta);
  }

  public TableMeta createTable(List<String> ns, String name, ObjectNode spec, boolean ifNotExists) {
    ObjectNode m = tableRef(ns, name);
    m.set("table", spec);
    m.put("if_not_exists", ifNotExists);
    return new TableMeta(call(Kinds.CREATE_TABLE, m, false).meta);
  }

  public boolean dropTable(List<String> ns, String name, boolean ifExists) {
    ObjectNode m = tableRef(ns, name);
    m.put("if_exists", ifExists);
    return call(Kinds.DROP_TABLE, m, false).meta.path("dropped").asBoolean(false);
  }

  public List<String> listTables(List<String> ns) {
    ObjectNode m = Json.obj();
    m.set("namespace", strings(ns));
    List<String> out = new ArrayList<>();
    for (JsonNode t : call(Kinds.LIST_TABLES, m, true).meta.path("tables")) out.add(t.asText());
    return out;
  }

  public TableMeta alterOptions(List<String> ns, String name, Map<String, String> set, List<String> remove) {
    ObjectNode m = tableRef(ns, name);
    ObjectNode s = m.putObject("set_options");
    set.forEach(s::put);
    m.set("remove_options", strings(remove));
    return new TableMeta(call(Kinds.ALTER_TABLE, m, false).meta);
  }

  /** ALTER_TABLE {add_columns}: columns are {name, type, nullable: true} objects (protocol section 13.3). */
  public TableMeta addColumns(List<String> ns, String name, ArrayNode columns) {
    ObjectNode m = tableRef(ns, name);
    m.set("add_columns", columns);
    return new TableMeta(call(Kinds.ALTER_TABLE, m, false).meta);
  }

  /** RENAME_TABLE, within a namespace or to another one. */
  public TableMeta renameTable(List<String> ns, String name, List<String> newNs, String newName) {
    ObjectNode m = tableRef(ns, name);
    m.set("new_namespace", strings(newNs));
    m.put("new_name", newName);
    return new TableMeta(call(Kinds.RENAME_TABLE, m, false).meta);
  }

  public TableMeta createIndex(List<String> ns, String name, String index, List<String> cols, String kind) {
    ObjectNode m = tableRef(ns, name);
    ObjectNode ix = m.putObject("index");
    ix.put("name", index);
    ix.set("columns", strings(cols));
    ix.put("kind", kind);
    return new TableMeta(call(Kinds.CREATE_INDEX, m, false).meta);
  }

  public TableMeta dropIndex(List<String> ns, String name, String index) {
    ObjectNode m = tableRef(ns, name);
    m.put("index", index);
    return new TableMeta(call(Kinds.DROP_INDEX, m, false).meta);
  }

  public void createNamespace(List<String> ns, Map<String, String> props, boolean ifNotExists) {
    ObjectNode m = Json.obj();
    m.set("namespace", strings(ns));
    ObjectNode p = m.putObject("properties");
    if (props != null) props.forEach(p::put);
    m.put("if_not_exists", ifNotExists);
    call(Kinds.CREATE_NAMESPACE, m, false);
  }

  public List<String> dropNamespace(List<String> ns, boolean cascade, boolean ifExists) {
    ObjectNode m = Json.obj();
    m.set("namespace", strings(ns));
    m.put("cascade", cascade);
    m.put("if_exists", ifExists);
    List<String> out = new ArrayList<>();
    for (JsonNode t : call(Kinds.DROP_NAMESPACE, m, false).meta.path("dropped_tables")) out.add(t.asText());
    return out;
  }

  public List<List<String>> listNamespaces(List<String> parent) {
    ObjectNode m = Json.obj();
    m.set("parent", strings(parent));
    List<List<String>> out = new ArrayList<>();
    for (JsonNode n : call(Kinds.LIST_NAMESPACES, m, true).meta.path("namespaces")) {
      List<String> ns = new ArrayList<>();
      for (JsonNode p : n) ns.add(p.asText());
      out.add(ns);
    }
    return out;
  }

  public ObjectNode namespaceProperties(List<String> ns) {
    ObjectNode m = Json.obj();
    m.set("namespace", strings(ns));
    JsonNode p = call(Kinds.GET_NAMESPACE, m, true).meta.path("properties");
    return p instanceof ObjectNode ? (ObjectNode) p : Json.obj();
  }
}
