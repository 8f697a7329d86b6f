package io.sparkext.bench;

import com.fasterxml.jackson.databind.node.ObjectNode;
import io.sparkext.wire.Connection;
import io.sparkext.wire.Frame;
import io.sparkext.wire.Json;
import io.sparkext.wire.KeyHash;
import io.sparkext.wire.Kinds;
import io.sparkext.wire.ServerAddr;
import io.sparkext.wire.TableMeta;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * spark-ext's protocol through the bridge's own {@link Connection}: GET
 * {@code {table, key: [id], ncols}} answered with compact rows in presence form, and PUT
 * {@code {table, ncols}} with one compact row (an upsert), for a table shaped
 * {@code (id BIGINT primary key, v STRING)}. Each key goes to the server hosting its
 * bucket (KeyHash, as the Python client does); one connection per server.
 */
final class SparkPointClient implements PointClient {
  private final TableMeta table;
  private final Connection[] byBucket;
  private final Map<String, Connection> byServer = new HashMap<>();

  /**
   * Checks that {@code t} has the shape the load generator writes; fails naming the table.
   *
   * @param t the table as the locator describes it
   */
  static void checkShape(TableMeta t) {
    boolean ok = t.columnNames.size() == 2 && t.columnTypes.get(0).equals("int64") && t.columnTypes.get(1).equals("string")
        && t.primaryKey.equals(List.of(t.columnNames.get(0)));
    if (!ok) {
      throw new IllegalArgumentException("table '" + t.fullName + "' has columns " + t.columnNames + " " + t.columnTypes
          + " and primary key " + t.primaryKey + "; the load generator needs (id int64 primary key, v string)");
    }
  }

  SparkPointClient(TableMeta t, byte[] secret, int timeoutMs) {
    checkShape(t);
    table = t;
    byBucket = new Connection[t.numBuckets];
    try {
      for (int b = 0; b < t.numBuckets; b++) {
        ServerAddr s = t.serverOf(b);
        Connection c = byServer.get(s.id);
        if (c == null) {
          c = new Connection(s.host, s.port, secret, timeoutMs);
          byServer.put(s.id, c);
        }
        byBucket[b] = c;
      }
    } catch (RuntimeException e) {
      close();
      throw e;
    }
  }

  private Connection connectionOf(long key) {
    return byBucket[KeyHash.bucketOfHash(KeyHash.combine(new long[] {KeyHash.intComponent(key)}), byBucket.length)];
  }

  @Override
  public byte[] get(long key) {
    ObjectNode m = Json.obj();
    m.put("table", table.fullName);
    m.putArray("key").add(key);
    m.put("ncols", 2);
    Frame r = connectionOf(key).request(Kinds.GET, m);
    if ((r.flags & Kinds.FLAG_COMPACT_ROWS) == 0) {
      throw new IllegalStateException("GET " + key + " of '" + table.fullName + "': reply without compact rows (flags " + r.flags + ")");
    }
    // Presence form (docs/protocol.md section 9): count, present, null bitmap, id, v.
    ByteBuffer bb = ByteBuffer.wrap(r.body).order(ByteOrder.LITTLE_ENDIAN);
    int count = bb.getInt();
    if (count != 1) throw new IllegalStateException("GET " + key + " of '" + table.fullName + "': " + count + " entries, expected 1");
    int present = bb.get();
    if (present == 0) return null;
    int nulls = bb.get();
    if (nulls != 0) throw new IllegalStateException("GET " + key + " of '" + table.fullName + "': NULL columns (bitmap " + nulls + ")");
    long id = bb.getLong();
    if (id != key) throw new IllegalStateException("GET " + key + " of '" + table.fullName + "' answered the row of id " + id);
    byte[] v = new byte[bb.getInt()];
    bb.get(v);
    if (bb.hasRemaining()) {
      throw new IllegalStateException("GET " + key + " of '" + table.fullName + "': " + bb.remaining() + " bytes after the row");
    }
    return v;
  }

  @Override
  public void put(long key, byte[] value) {
    // Plain form: count 1, null bitmap 0, id int64, v as u32 length + bytes.
    ByteBuffer bb = ByteBuffer.allocate(4 + 1 + 8 + 4 + value.length).order(ByteOrder.LITTLE_ENDIAN);
    bb.putInt(1).put((byte) 0).putLong(key).putInt(value.length).put(value);
    ObjectNode m = Json.obj();
    m.put("table", table.fullName);
    m.put("ncols", 2);
    Frame r = connectionOf(key).request(Kinds.PUT, m, bb.array(), Kinds.FLAG_COMPACT_ROWS);
    long n = r.meta.path("count").asLong(-1);
    if (n != 1) throw new IllegalStateException("PUT " + key + " into '" + table.fullName + "' answered count " + n + ", expected 1");
  }

  @Override
  public void close() {
    for (Connection c : byServer.values()) c.close();
  }
}
