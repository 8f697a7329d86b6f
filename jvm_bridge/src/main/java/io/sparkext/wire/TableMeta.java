package io.sparkext.wire;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;

/** A table as the locator describes it (GET_TABLE reply): schema, key, placement, servers. */
public final class TableMeta implements Serializable {
  public final List<String> namespace;
  public final String name;
  /** The engine's table name: namespace parts and name joined by dots. */
  public final String fullName;
  public final List<String> columnNames = new ArrayList<>();
  public final List<String> columnTypes = new ArrayList<>();
  public final List<Boolean> columnNullable = new ArrayList<>();
  public final List<String> primaryKey = new ArrayList<>();
  public final int numBuckets;
  public final Map<String, String> options = new LinkedHashMap<>();
  public final List<String[]> indexes = new ArrayList<>(); // {name, kind, col1,col2...}
  public final List<String> placement = new ArrayList<>();
  public final Map<String, ServerAddr> servers = new LinkedHashMap<>();
  public final long version;
  public final String specJson;

  public TableMeta(ObjectNode reply) {
    JsonNode e = reply.get("table");
    List<String> ns = new ArrayList<>();
    for (JsonNode n : e.get("namespace")) ns.add(n.asText());
    namespace = ns;
    name = e.get("name").asText();
    JsonNode spec = e.get("spec");
    specJson = spec.toString();
    fullName = spec.get("name").asText();
    for (JsonNode f : spec.get("fields")) {
      columnNames.add(f.get("name").asText());
      columnTypes.add(f.get("type").asText());
      columnNullable.add(f.path("nullable").asBoolean(true));
    }
    for (JsonNode k : spec.path("primary_key")) primaryKey.add(k.asText());
    numBuckets = spec.get("num_buckets").asInt();
    Iterator<Map.Entry<String, JsonNode>> it = spec.path("options").fields();
    while (it.hasNext()) {
      Map.Entry<String, JsonNode> o = it.next();
      options.put(o.getKey(), o.getValue().asText());
    }
    for (JsonNode ix : e.path("indexes")) {
      List<String> parts = new ArrayList<>();
      parts.add(ix.path("name").asText());
      parts.add(ix.path("kind").asText("hash"));
      for (JsonNode c : ix.path("columns")) parts.add(c.asText());
      indexes.add(parts.toArray(new String[0]));
    }
    for (JsonNode p : e.get("placement")) placement.add(p.asText());
    version = e.path("version").asLong(0);
    Iterator<Map.Entry<String, JsonNode>> si = reply.path("servers").fields();
    while (si.hasNext()) {
      Map.Entry<String, JsonNode> s = si.next();
      JsonNode v = s.getValue();
      servers.put(s.getKey(), new ServerAddr(s.getKey(), v.path("host").isNull() ? null : v.path("host").asText(null),
          v.path("port").asInt(0), v.path("up").asBoolean(false)));
    }
  }

  public boolean hiddenRowId() { return primaryKey.isEmpty(); }

  public int columnIndex(String col) {
    for (int i = 0; i < columnNames.size(); i++) if (columnNames.get(i).equalsIgnoreCase(col)) return i;
    return -1;
  }

  public String typeOf(String col) {
    if (col.equals("_rowid")) return "int64";
    int i = columnIndex(col);
    return i < 0 ? null : columnTypes.get(i);
  }

  /** The server hosting a bucket; fails clearly when it is down. */
  public ServerAddr serverOf(int bucket) {
    String sid = placement.get(bucket);
    ServerAddr s = servers.get(sid);
    if (s == null || !s.up || s.host == null) {
      throw new WireException(500, "BUCKET_OFFLINE", "bucket " + bucket + " of table '" + fullName
          + "' is offline: its server " + sid + " is down");
    }
    return s;
  }

  /** Distinct server ids in placement order (sorted, stable). */
  public List<String> serverIds() {
    return new ArrayList<>(new TreeSet<>(placement));
  }

  /** Buckets hosted by one server. */
  public List<Integer> bucketsOf(String serverId) {
    List<Integer> out = new ArrayList<>();
    for (int b = 0; b < placement.size(); b++) if (placement.get(b).equals(serverId)) out.add(b);
    return out;
  }
}
