package io.sparkext.spark;

import com.fasterxml.jackson.databind.node.ObjectNode;
import io.sparkext.wire.Endpoint;
import io.sparkext.wire.Fence;
import io.sparkext.wire.Json;
import io.sparkext.wire.Kinds;
import io.sparkext.wire.ServerAddr;
import io.sparkext.wire.TableMeta;
import io.sparkext.wire.WireException;
import org.apache.spark.sql.connector.write.DeltaBatchWrite;
import org.apache.spark.sql.connector.write.DeltaWriterFactory;
import org.apache.spark.sql.connector.write.LogicalWriteInfo;
import org.apache.spark.sql.connector.write.PhysicalWriteInfo;
import org.apache.spark.sql.connector.write.WriterCommitMessage;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;

/**
 * The driver side of one Spark write job = one store transaction. Tasks stage and prepare
 * their parts; job commit prepares the collected parts durably on every server (phase 1),
 * then commits them everywhere (phase 2); with one server only, it commits there in one
 * phase. Abort discards everything.
 */
public class StoreBatchWrite implements DeltaBatchWrite {
  static final String DRIVER_PART = "driver";
  /** Write option naming the statement whose committed row count Python reads back (putInto). */
  static final String STATEMENT_OPTION = "statement";
  private static final ConcurrentHashMap<String, Long> COMMITTED = new ConcurrentHashMap<>();
  private final Endpoint endpoint;
  private final TableMeta meta;
  private final LogicalWriteInfo info;
  private final boolean truncate;
  private final String op;
  final String txn;
  /** This driver's fence when the write was planned; refused at once if its lease is already lost. */
  private final Fence fence = fenceForWrite();

  StoreBatchWrite(Endpoint endpoint, TableMeta meta, LogicalWriteInfo info, boolean truncate, String op) {
    this.endpoint = endpoint;
    this.meta = meta;
    this.info = info;
    this.truncate = truncate;
    this.op = op;
    this.txn = "spark-" + UUID.randomUUID();
  }

  private ObjectNode txnMeta() {
    ObjectNode m = Json.obj();
    m.put("txn", txn);
    return m;
  }

  private ServerAddr server(String sid) {
    ServerAddr s = meta.servers.get(sid);
    if (s == null || !s.up || s.host == null) {
      throw new WireException(500, "BUCKET_OFFLINE", "server " + sid + " of table '" + meta.fullName + "' is down");
    }
    return s;
  }

  private static Fence fenceForWrite() {
    try {
      return Fence.forWrite();
    } catch (WireException e) {
      throw Errors.spark(e);
    }
  }

  private void call(String sid, int kind, ObjectNode m) {
    if (fence != null && kind != Kinds.TXN_ABORT) {
      // Stage and prepare stop here once the lease is known lost; a commit of a prepared
      // transaction is still sent (the servers refuse it if a newer leader announced itself).
      if (kind != Kinds.TXN_COMMIT) fence.checkHere();
      fence.stamp(m);
    }
    endpoint.pool(server(sid)).request(kind, m, null, 0, false);
  }

  @Override
  public DeltaWriterFactory createBatchWriterFactory(PhysicalWriteInfo physical) {
    if (truncate) {
      // Staged before any task runs, so it is applied first when the transaction commits.
      try {
        for (String sid : meta.serverIds()) {
          ObjectNode st = txnMeta();
          st.put("part", DRIVER_PART);
          st.put("table", meta.fullName);
          st.put("op", "truncate");
          call(sid, Kinds.TXN_STAGE, st);
          ObjectNode pr = txnMeta();
          pr.put("part", DRIVER_PART);
          call(sid, Kinds.TXN_PREPARE, pr);
        }
      } catch (WireException e) {
        abortAll();
        throw Errors.spark(e); // e.g. FENCED, named like every other store error
      }
    }
    return new StoreWriterFactory(endpoint, meta, info, txn, op);
  }

  @Override
  public boolean useCommitCoordinator() { return true; }

  /**
   * The rows committed by the write run with option {@code statement=id} (then forgotten),
   * or -1 if none was committed under that id. Called by Python's putInto after the write.
   */
  public static long takeCommittedRows(String statement) {
    Long n = COMMITTED.remove(statement);
    return n == null ? -1 : n;
  }

  private void committed(WriterCommitMessage[] messages) {
    String id = info.options().get(STATEMENT_OPTION);
    if (id == null) return;
    long n = 0;
    for (WriterCommitMessage m : messages) if (m instanceof PartMessage) n += ((PartMessage) m).rows;
    COMMITTED.put(id, n);
  }

  @Override
  public void commit(WriterCommitMessage[] messages) {
    doCommit(messages);
    committed(messages);
  }

  private void doCommit(WriterCommitMessage[] messages) {
    Map<String, List<String>> parts = new TreeMap<>();
    if (truncate) for (String sid : meta.serverIds()) parts.computeIfAbsent(sid, k -> new ArrayList<>()).add(DRIVER_PART);
    for (WriterCommitMessage m : messages) {
      if (!(m instanceof PartMessage)) continue;
      PartMessage pm = (PartMessage) m;
      for (String sid : pm.servers) parts.computeIfAbsent(sid, k -> new ArrayList<>()).add(pm.part);
    }
    if (parts.size() == 1) {
      // One server holds the whole statement: no second participant to agree with, so
      // it commits in one phase (one log record, one fsync, one round trip less). If the
      // commit is refused nothing was applied; abort drops the transaction there.
      Map.Entry<String, List<String>> only = parts.entrySet().iterator().next();
      ObjectNode m = txnMeta();
      var a = m.putArray("parts");
      only.getValue().forEach(a::add);
      try {
        call(only.getKey(), Kinds.TXN_COMMIT, m);
      } catch (WireException e) {
        // Refused (nothing applied) or the reply was lost: the abort's answer tells which.
        if (!"committed".equals(abortOn(only.getKey()))) {
          abortAll();
          throw Errors.spark(e);
        }
      }
      for (String sid : meta.serverIds()) {
        if (!parts.containsKey(sid)) abortOn(sid);
      }
      return;
    }
    // Participants in id order; the first is the decider (docs/in-doubt.md): it is
    // prepared first and committed first, and its outcome is the transaction's, so the
    // servers finish the transaction by themselves if this driver dies or is deposed.
    try {
      for (Map.Entry<String, List<String>> e : parts.entrySet()) {
        ObjectNode m = txnMeta();
        var a = m.putArray("parts");
        e.getValue().forEach(a::add);
        var ps = m.putArray("participants");
        parts.keySet().forEach(ps::add);
        call(e.getKey(), Kinds.TXN_PREPARE, m);
      }
    } catch (WireException e) {
      abortAll();
      throw Errors.spark(e);
    }
    boolean decided = false;
    for (Map.Entry<String, List<String>> e : parts.entrySet()) {
      ObjectNode m = txnMeta();
      var a = m.putArray("parts");
      e.getValue().forEach(a::add);
      try {
        call(e.getKey(), Kinds.TXN_COMMIT, m);
      } catch (WireException x) {
        // The decider's commit failed: its abort's answer says whether it committed
        // after all (lost reply), or aborted: then abort everywhere. No answer (the
        // decider unreachable, or refusing the abort because its ledger holds the
        // commit) leaves the outcome unknown: the participants stay prepared and learn
        // it from the decider (docs/in-doubt.md); aborting them could split the
        // statement. A later participant's failure leaves it in doubt likewise.
        if (!decided) {
          String answer = abortOn(e.getKey());
          if ("aborted".equals(answer)) {
            abortAll();
            throw Errors.spark(x);
          }
          if (!"committed".equals(answer)) throw Errors.spark(x);
        } else {
          throw Errors.spark(x);
        }
      }
      decided = true;
    }
    // Servers where only failed attempts staged anything: drop their leftovers now.
    for (String sid : meta.serverIds()) {
      if (!parts.containsKey(sid)) abortOn(sid);
    }
  }

  /** Abort on one server; returns its answer ("aborted", or "committed" for a committed one), or null if unreachable. */
  private String abortOn(String sid) {
    try {
      return endpoint.pool(server(sid)).request(Kinds.TXN_ABORT, txnMeta(), null, 0, false).meta.path("state").asText(null);
    } catch (RuntimeException e) {
      return null; // best effort: the server's idle timeout aborts it anyway
    }
  }

  private void abortAll() {
    for (String sid : meta.serverIds()) abortOn(sid);
  }

  @Override
  public void abort(WriterCommitMessage[] messages) {
    abortAll();
  }
}
