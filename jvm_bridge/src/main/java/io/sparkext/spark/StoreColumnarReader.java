package io.sparkext.spark;

import com.fasterxml.jackson.databind.node.ObjectNode;
import io.sparkext.wire.ArrowIO;
import io.sparkext.wire.Connection;
import io.sparkext.wire.ConnectionPool;
import io.sparkext.wire.Frame;
import io.sparkext.wire.Json;
import io.sparkext.wire.Kinds;
import io.sparkext.wire.WireException;
import org.apache.arrow.memory.BufferAllocator;
import org.apache.arrow.vector.FieldVector;
import org.apache.arrow.vector.VectorSchemaRoot;
import org.apache.arrow.vector.ipc.ArrowStreamReader;
import org.apache.spark.sql.connector.read.PartitionReader;
import org.apache.spark.sql.vectorized.ArrowColumnVector;
import org.apache.spark.sql.vectorized.ColumnVector;
import org.apache.spark.sql.vectorized.ColumnarBatch;

import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.util.List;

/** Streams SCAN frames of one bucket and hands Spark the Arrow vectors as ColumnarBatches. */
final class StoreColumnarReader implements PartitionReader<ColumnarBatch> {
  private final StoreReaderFactory f;
  private final ConnectionPool pool;
  private final BufferAllocator allocator;
  private Connection conn;
  private boolean streamDone;
  private ArrowStreamReader reader;
  private ColumnarBatch current;
  /** With an aggregation: the reply's expected columns (the group columns, then agg0, agg1, ...). */
  private String[] replyNames;

  StoreColumnarReader(StoreReaderFactory f, BucketPartition p) {
    this.f = f;
    this.pool = ConnectionPool.of(p.host, p.port, f.endpoint.secret);
    this.allocator = ArrowIO.allocator("spark-ext-scan-" + f.table + "-" + p.bucket);
    ObjectNode m = Json.obj();
    m.put("table", f.table);
    if (f.aggregation != null) {
      ObjectNode a = Json.parse(f.aggregation);
      m.setAll(a); // group_by, aggregates: the reply is one row per group
      replyNames = replyNames(a);
    } else {
      var cols = m.putArray("columns");
      if (f.columns.length == 0) cols.add(f.anyColumn);
      for (String c : f.columns) cols.add(c);
    }
    if (f.where != null) m.set("where", Json.parseAny(f.where));
    if (f.limit != null) m.put("limit", f.limit);
    m.putArray("buckets").add(p.bucket);
    conn = pool.borrow();
    try {
      conn.send(Kinds.SCAN, m, null, 0);
    } catch (RuntimeException e) {
      pool.release(conn);
      conn = null;
      allocator.close();
      throw e;
    }
  }

  /**
   * The columns an aggregate SCAN answers (protocol section 10.2): a column key under its
   * name, an expression key as group&lt;i&gt;, then agg0, agg1, ...; a generated name that a
   * column key of the request also has gets "_" prepended until it is free (as the server's
   * {@code AggregateRequest.reply_names} does).
   */
  static String[] replyNames(com.fasterxml.jackson.databind.JsonNode a) {
    java.util.Set<String> taken = new java.util.HashSet<>();
    for (com.fasterxml.jackson.databind.JsonNode g : a.path("group_by")) if (g.isTextual()) taken.add(g.asText());
    java.util.List<String> names = new java.util.ArrayList<>();
    int i = 0;
    for (com.fasterxml.jackson.databind.JsonNode g : a.path("group_by")) {
      names.add(g.isTextual() ? g.asText() : free("group" + i, taken));
      i++;
    }
    for (int j = 0; j < a.path("aggregates").size(); j++) names.add(free("agg" + j, taken));
    return names.toArray(new String[0]);
  }

  private static String free(String name, java.util.Set<String> taken) {
    while (taken.contains(name)) name = "_" + name;
    return name;
  }

  private boolean nextFrame() throws IOException {
    if (streamDone) return false;
    Frame fr = conn.readReply();
    if (!fr.more()) streamDone = true;
    if (fr.isError()) {
      streamDone = true;
      WireException e = WireException.fromMetadata(fr.meta);
      throw Errors.spark(e);
    }
    closeReader();
    if (fr.hasArrow() && fr.body.length > 0) {
      reader = new ArrowStreamReader(new ByteArrayInputStream(fr.body), allocator);
    }
    return true;
  }

  private void closeReader() throws IOException {
    if (reader != null) {
      reader.close();
      reader = null;
    }
  }

  @Override
  public boolean next() throws IOException {
    while (true) {
      if (reader != null && reader.loadNextBatch()) {
        VectorSchemaRoot root = reader.getVectorSchemaRoot();
        if (f.aggregation != null) {
          checkAggregateReply(root);
          ColumnVector[] vs = new ColumnVector[f.replyIndex.length];
          for (int i = 0; i < vs.length; i++) vs[i] = new ArrowColumnVector(root.getVector(f.replyIndex[i]));
          current = new ColumnarBatch(vs, root.getRowCount());
          return true;
        }
        ColumnVector[] vs = new ColumnVector[f.columns.length];
        for (int i = 0; i < vs.length; i++) {
          FieldVector v = root.getVector(f.columns[i]);
          if (v == null) throw new IllegalStateException("scan reply lacks column " + f.columns[i]);
          vs[i] = new ArrowColumnVector(v);
        }
        current = new ColumnarBatch(vs, root.getRowCount());
        return true;
      }
      if (!nextFrame()) return false;
    }
  }

  /** A server that ignored group_by/aggregates would answer rows: never read those as aggregates. */
  private void checkAggregateReply(VectorSchemaRoot root) {
    List<FieldVector> vs = root.getFieldVectors();
    boolean ok = vs.size() == replyNames.length;
    for (int i = 0; ok && i < vs.size(); i++) ok = vs.get(i).getName().equals(replyNames[i]);
    if (!ok) {
      List<String> got = new java.util.ArrayList<>();
      vs.forEach(v -> got.add(v.getName()));
      throw new IllegalStateException("the aggregate SCAN reply for " + f.table + " has columns " + got + ", expected "
          + java.util.Arrays.toString(replyNames) + ": does its store server support SCAN aggregates (protocol section 10.2)?");
    }
  }

  @Override
  public ColumnarBatch get() { return current; }

  @Override
  public void close() throws IOException {
    try {
      closeReader();
    } finally {
      if (conn != null) {
        if (!streamDone) conn.markBroken(); // abandoned mid-stream: the connection cannot be reused
        pool.release(conn);
        conn = null;
      }
      allocator.close();
    }
  }
}
