package io.sparkext.spark;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.sparkext.wire.ArrowIO;
import io.sparkext.wire.ConnectionPool;
import io.sparkext.wire.Fence;
import io.sparkext.wire.Frame;
import io.sparkext.wire.Json;
import io.sparkext.wire.Kinds;
import io.sparkext.wire.ServerAddr;
import io.sparkext.wire.TableMeta;
import io.sparkext.wire.WireException;
import org.apache.arrow.memory.BufferAllocator;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.connector.write.DeltaWriter;
import org.apache.spark.sql.connector.write.WriterCommitMessage;

import java.io.IOException;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/**
 * One task attempt's writer: rows, deletes and replacements are buffered per store server
 * and staged (TXN_STAGE) under the job's transaction as this attempt's part; task commit
 * prepares the part on every server it touched, task abort drops it.
 *
 * <p>A full buffer is staged by a sender thread while the task goes on filling the next
 * one (at most one request in flight, so at most one drained buffer waits in memory): the
 * server decodes and orders a batch while Spark produces the next. Its outcome is
 * collected before the next request and before the task commits, so an error still
 * fails the task.
 */
final class StoreWriter implements DeltaWriter<InternalRow> {
  private static final int BATCH_ROWS = Integer.getInteger("sparkext.write.batchRows", 131072);
  private static final long BATCH_BYTES = Long.getLong("sparkext.write.batchBytes", 16L << 20);

  private final StoreWriterFactory f;
  private final TableMeta meta;
  private final String part;
  private final BufferAllocator allocator;
  private final String[] colNames;
  private final String[] colTypes;
  private final int[] colPos;       // table column -> position in data rows
  private final int[] keyPos;       // key column -> position in data rows
  private final String[] keyTypes;
  private final int[] idPos;        // row id column -> position in id rows
  private final String[] idTypes;
  private final List<String> serverIds;
  private final int partitionId;
  private final Map<String, Work> work = new TreeMap<>();
  private long staged;
  private ExecutorService sender;   // created on the first background stage
  private Future<Long> inFlight;    // the background TXN_STAGE, if any

  private final class Work {
    final String sid;
    final RowBuffer inserts = new RowBuffer(allocator, colNames, colTypes, colPos);
    final RowBuffer replRows = new RowBuffer(allocator, colNames, colTypes, colPos);
    ArrayNode replKeys = Json.arr();
    ArrayNode delKeys = Json.arr();

    Work(String sid) { this.sid = sid; }

    boolean full() {
      int n = inserts.rows() + replRows.rows() + delKeys.size();
      // The byte size is summed over the vectors: look at it every 1,024 rows only.
      return n >= BATCH_ROWS || ((n & 1023) == 0 && inserts.bytes() + replRows.bytes() >= BATCH_BYTES);
    }

    /** Stage everything buffered; {@code background}: the requests may still be in flight on return. */
    void flush(boolean background) {
      if (delKeys.size() > 0) {
        ObjectNode m = stageMeta("delete");
        m.set("keys", delKeys);
        stage(sid, m, null, background);
        delKeys = Json.arr();
      }
      if (replRows.rows() > 0) {
        ObjectNode m = stageMeta("replace");
        m.set("keys", replKeys);
        stage(sid, m, replRows.drain(), background);
        replKeys = Json.arr();
      }
      if (inserts.rows() > 0) stage(sid, stageMeta(f.op), inserts.drain(), background);
    }
  }

  StoreWriter(StoreWriterFactory f, int partitionId, String part) {
    this.f = f;
    this.meta = f.meta;
    this.part = part;
    this.partitionId = partitionId;
    this.allocator = ArrowIO.allocator("spark-ext-write-" + part);
    int n = meta.columnNames.size();
    colNames = meta.columnNames.toArray(new String[0]);
    colTypes = meta.columnTypes.toArray(new String[0]);
    colPos = new int[n];
    String[] dataNames = f.dataSchema.fieldNames();
    for (int i = 0; i < n; i++) {
      colPos[i] = -1;
      for (int j = 0; j < dataNames.length; j++) if (dataNames[j].equalsIgnoreCase(colNames[i])) colPos[i] = j;
    }
    keyPos = new int[meta.primaryKey.size()];
    keyTypes = new String[keyPos.length];
    for (int k = 0; k < keyPos.length; k++) {
      int ci = meta.columnIndex(meta.primaryKey.get(k));
      keyPos[k] = colPos[ci];
      keyTypes[k] = colTypes[ci];
    }
    if (meta.hiddenRowId()) {
      idPos = new int[] {0};
      idTypes = new String[] {"int64"};
    } else {
      idPos = new int[keyPos.length];
      for (int k = 0; k < idPos.length; k++) idPos[k] = k;
      idTypes = keyTypes;
    }
    serverIds = meta.serverIds();
  }

  private ObjectNode stageMeta(String op) {
    ObjectNode m = Json.obj();
    m.put("txn", f.txn);
    m.put("part", part);
    m.put("table", meta.fullName);
    m.put("op", op);
    return Fence.stamp(m, f.fence);
  }

  private ConnectionPool pool(String sid) {
    ServerAddr s = meta.servers.get(sid);
    if (s == null || !s.up || s.host == null) {
      throw new WireException(500, "BUCKET_OFFLINE", "server " + sid + " of table '" + meta.fullName + "' is down");
    }
    return f.endpoint.pool(s);
  }

  private long stageNow(String sid, ObjectNode m, byte[] body) {
    Frame r = pool(sid).request(Kinds.TXN_STAGE, m, body, body == null ? 0 : Kinds.FLAG_HAS_ARROW, false);
    return r.meta.path("staged").asLong(0);
  }

  private void stage(String sid, ObjectNode m, byte[] body, boolean background) {
    awaitInFlight();  // requests stay in order, and one drained buffer at most waits
    if (f.fence != null) f.fence.checkHere(); // a driver JVM told of its lost lease stops here
    if (!background) {
      try {
        staged += stageNow(sid, m, body);
      } catch (WireException e) {
        throw Errors.spark(e);
      }
      return;
    }
    if (sender == null) {
      sender = Executors.newSingleThreadExecutor(r -> {
        Thread t = new Thread(r, "spark-ext-stage-" + part);
        t.setDaemon(true);
        return t;
      });
    }
    inFlight = sender.submit(() -> stageNow(sid, m, body));
  }

  /** Wait for the background TXN_STAGE and fail like a direct one if it failed. */
  private void awaitInFlight() {
    Future<Long> p = inFlight;
    if (p == null) return;
    inFlight = null;
    try {
      staged += p.get();
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IllegalStateException("spark-ext: interrupted while staging rows of part " + part, e);
    } catch (ExecutionException e) {
      Throwable c = e.getCause();
      if (c instanceof WireException) throw Errors.spark((WireException) c);
      if (c instanceof RuntimeException) throw (RuntimeException) c;
      throw new IllegalStateException("spark-ext: staging rows of part " + part + " failed", c);
    }
  }

  private Work work(String sid) {
    return work.computeIfAbsent(sid, Work::new);
  }

  private String serverOfBucket(int bucket) {
    return meta.placement.get(bucket < 0 ? 0 : bucket);
  }

  /** The server a new row goes to: its key's bucket, or (no key) spread by partition. */
  private String serverOfRow(InternalRow row) {
    if (meta.hiddenRowId()) return serverIds.get(Math.floorMod(partitionId, serverIds.size()));
    return serverOfBucket(Types.bucket(row, keyPos, keyTypes, meta.numBuckets));
  }

  private String serverOfId(InternalRow id) {
    if (meta.hiddenRowId()) return serverOfBucket((int) Math.floorMod(id.getLong(0), (long) meta.numBuckets));
    return serverOfBucket(Types.bucket(id, idPos, idTypes, meta.numBuckets));
  }

  private void maybeFlush(Work w) {
    if (w.full()) w.flush(true);
  }

  @Override
  public void write(InternalRow row) throws IOException { insert(row); }

  @Override
  public void insert(InternalRow row) throws IOException {
    Work w = work(serverOfRow(row));
    w.inserts.add(row);
    maybeFlush(w);
  }

  @Override
  public void delete(InternalRow metadata, InternalRow id) throws IOException {
    Work w = work(serverOfId(id));
    w.delKeys.add(Types.keyJson(id, idPos, idTypes));
    maybeFlush(w);
  }

  @Override
  public void update(InternalRow metadata, InternalRow id, InternalRow row) throws IOException {
    String from = serverOfId(id);
    String to = meta.hiddenRowId() ? from : serverOfRow(row);
    if (!from.equals(to)) {
      // The new key lives on another server: delete there, insert here (same transaction).
      Work d = work(from);
      d.delKeys.add(Types.keyJson(id, idPos, idTypes));
      Work i = work(to);
      i.inserts.add(row);
      maybeFlush(d);
      maybeFlush(i);
      return;
    }
    Work w = work(from);
    w.replKeys.add(Types.keyJson(id, idPos, idTypes));
    w.replRows.add(row);
    maybeFlush(w);
  }

  @Override
  public WriterCommitMessage commit() throws IOException {
    for (Work w : work.values()) w.flush(false);
    awaitInFlight();
    long n = 0;
    for (String sid : work.keySet()) {
      ObjectNode m = Json.obj();
      m.put("txn", f.txn);
      m.put("part", part);
      Fence.stamp(m, f.fence);
      try {
        if (f.fence != null) f.fence.checkHere();
        n += pool(sid).request(Kinds.TXN_PREPARE, m, null, 0, false).meta.path("prepared").asLong(0);
      } catch (WireException e) {
        throw Errors.spark(e);
      }
    }
    return new PartMessage(part, work.keySet().toArray(new String[0]), n);
  }

  @Override
  public void abort() throws IOException {
    try {
      awaitInFlight();  // a part is dropped only after its last stage has arrived
    } catch (RuntimeException e) {
      // the attempt is aborted anyway
    }
    for (String sid : work.keySet()) {
      ObjectNode m = Json.obj();
      m.put("txn", f.txn);
      m.put("part", part);
      try {
        pool(sid).request(Kinds.TXN_ABORT, m, null, 0, false);
      } catch (RuntimeException e) {
        // best effort: the job abort drops the whole transaction
      }
    }
  }

  @Override
  public void close() throws IOException {
    if (sender != null) sender.shutdownNow();
    for (Work w : work.values()) {
      w.inserts.close();
      w.replRows.close();
    }
    allocator.close();
  }
}
