package io.sparkext.spark;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.sparkext.wire.Fence;
import io.sparkext.wire.Json;
import io.sparkext.wire.KeyHash;
import io.sparkext.wire.Kinds;
import io.sparkext.wire.ServerAddr;
import io.sparkext.wire.TableMeta;
import io.sparkext.wire.WireException;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.expressions.Attribute;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.Literal;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.catalyst.trees.TreePattern;
import org.apache.spark.sql.connector.catalog.Identifier;
import org.apache.spark.sql.execution.CacheManager;
import org.apache.spark.sql.execution.command.LeafRunnableCommand;
import org.apache.spark.sql.execution.datasources.v2.DataSourceV2Relation;
import org.apache.spark.sql.types.ByteType;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.Decimal;
import org.apache.spark.sql.types.DecimalType;
import org.apache.spark.sql.types.IntegerType;
import org.apache.spark.sql.types.LongType;
import org.apache.spark.sql.types.ShortType;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import scala.Enumeration;
import scala.collection.immutable.IndexedSeq;
import scala.collection.immutable.Seq;
import scala.jdk.javaapi.CollectionConverters;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A single-row UPDATE or DELETE of a spark-ext table, run as one request to the store server of
 * the key's bucket (UPDATE {table, keys, values} or DELETE {table, keys}, protocol section 13.5)
 * instead of a Spark job. Built by {@link PointWriteRule}; EXPLAIN shows it as
 * {@code SparkExtPointWrite}.
 *
 * <p>The request is atomic on that server, carries this driver's fencing token like every
 * other write, and is durable per the table's flush policy; a missing row changes nothing. The
 * result is the row-level path's: no columns, no rows. A value that Spark fails to compute
 * (e.g. NULL for a NOT NULL column) fails the statement with Spark's own error when the row
 * exists, and is never computed when it does not, as on the row-level path.
 */
public final class PointWriteCommand extends LogicalPlan implements LeafRunnableCommand {
  private static final Logger LOG = LoggerFactory.getLogger(PointWriteCommand.class);
  private static final Seq<Enumeration.Value> PATTERNS =
      CollectionConverters.asScala(java.util.List.of(TreePattern.COMMAND())).toList();
  private static final AtomicLong EXECUTED = new AtomicLong();

  private final StoreTable table;
  private final DataSourceV2Relation relation;
  private final boolean delete;
  private final Expression[] keys;       // one constant per key column, key order
  private final String[] setColumns;
  private final Expression[] setValues;  // constants, already cast to the columns' types

  PointWriteCommand(StoreTable table, DataSourceV2Relation relation, boolean delete, Expression[] keys,
                    String[] setColumns, Expression[] setValues) {
    this.table = table;
    this.relation = relation;
    this.delete = delete;
    this.keys = keys;
    this.setColumns = setColumns;
    this.setValues = setValues;
  }

  /** How many point writes this JVM has started, failed ones included (shows the fast path was taken). O(1). */
  public static long executed() { return EXECUTED.get(); }

  @Override
  public Seq<Row> run(SparkSession session) {
    EXECUTED.incrementAndGet();
    TableMeta meta = table.meta;
    Fence fence;
    try {
      fence = Fence.forWrite();  // a driver that knows its lease is lost stops here, as its jobs do
    } catch (WireException e) {
      throw Errors.spark(e);
    }
    int nk = meta.primaryKey.size();
    Object[] key = new Object[nk];
    String[] keyTypes = new String[nk];
    for (int k = 0; k < nk; k++) {
      keyTypes[k] = meta.typeOf(meta.primaryKey.get(k));
      key[k] = keys[k].eval(null);
      // key = NULL is never true: no row matches, nothing changes (as on the row-level path).
      if (key[k] == null) return emptyResult();
    }
    ArrayNode keyJson = Json.arr();
    long[] components = new long[nk];
    for (int k = 0; k < nk; k++) {
      keyJson.add(Types.toJson(keyTypes[k], key[k]));
      components[k] = Types.component(keyTypes[k], key[k]);
    }
    ServerAddr server;
    try {
      server = meta.serverOf(KeyHash.bucketOfHash(KeyHash.combine(components), meta.numBuckets));
    } catch (WireException e) {
      throw Errors.spark(e);
    }
    ObjectNode m = Json.obj();
    m.put("table", meta.fullName);
    m.putArray("keys").add(keyJson);
    int kind = Kinds.DELETE;
    if (!delete) {
      kind = Kinds.UPDATE;
      ObjectNode values = m.putObject("values");
      for (int i = 0; i < setColumns.length; i++) {
        Object v;
        try {
          v = setValues[i].eval(null);
        } catch (RuntimeException e) {
          // The row-level path computes values only for rows that match.
          if (!exists(server, keyJson)) return emptyResult();
          throw e;
        }
        values.set(setColumns[i], Types.toJson(meta.typeOf(setColumns[i]), v));
      }
    }
    Fence.stamp(m, fence);
    long count;
    try {
      count = table.endpoint.pool(server).request(kind, m, null, 0, true).meta.path("count").asLong(0);
    } catch (WireException e) {
      throw Errors.spark(e);
    }
    LOG.debug("spark-ext point {} of {} key {} on {}: {} row(s)", delete ? "DELETE" : "UPDATE", meta.fullName,
        keyJson, server.id, count);
    refreshCache(session);
    return emptyResult();
  }

  /** Whether the row with this key exists (COUNT on its server). */
  private boolean exists(ServerAddr server, ArrayNode keyJson) {
    TableMeta meta = table.meta;
    ArrayNode where = Json.arr();
    where.add("and");
    for (int k = 0; k < meta.primaryKey.size(); k++) {
      ArrayNode eq = Json.arr();
      eq.add("=").add(meta.primaryKey.get(k)).add(keyJson.get(k));
      where.add(eq);
    }
    ObjectNode m = Json.obj();
    m.put("table", meta.fullName);
    m.set("where", where);
    try {
      return table.endpoint.pool(server).request(Kinds.COUNT, m, null, 0, true).meta.path("count").asLong(0) > 0;
    } catch (WireException e) {
      throw Errors.spark(e);
    }
  }

  /** Cached queries over the table are rebuilt, as Spark does after its own writes to a catalog table. */
  private void refreshCache(SparkSession session) {
    if (!(session instanceof org.apache.spark.sql.classic.SparkSession)) return;
    org.apache.spark.sql.classic.SparkSession s = (org.apache.spark.sql.classic.SparkSession) session;
    CacheManager cm = s.sharedState().cacheManager();
    if (cm.isEmpty()) return;
    if (relation.catalog().isDefined() && relation.identifier().isDefined()) {
      // By name: the cached plan holds another instance of the table, which a plan match would miss.
      Identifier id = relation.identifier().get();
      List<String> parts = new ArrayList<>();
      parts.add(relation.catalog().get().name());
      parts.addAll(Arrays.asList(id.namespace()));
      parts.add(id.name());
      cm.recacheTableOrView(s, CollectionConverters.asScala(parts).toList(), false);
    } else {
      cm.recacheByPlan(s, relation);
    }
  }

  private static Seq<Row> emptyResult() { return nil(); }

  @SuppressWarnings("unchecked")
  private static <T> Seq<T> nil() {
    return (Seq<T>) (Object) scala.collection.immutable.Nil$.MODULE$;
  }

  // --- the logical node: a leaf command with no output, no expressions, no children --------------

  @Override
  public String nodeName() { return "SparkExtPointWrite"; }

  @Override
  public String simpleString(int maxFields) {
    StringBuilder b = new StringBuilder(nodeName()).append(' ').append(delete ? "DELETE" : "UPDATE")
        .append(' ').append(table.meta.fullName).append(" WHERE ");
    for (int k = 0; k < keys.length; k++) {
      if (k > 0) b.append(" AND ");
      b.append(table.meta.primaryKey.get(k)).append(" = ").append(show(keys[k]));
    }
    if (!delete) {
      b.append(" SET ");
      for (int i = 0; i < setColumns.length; i++) {
        if (i > 0) b.append(", ");
        b.append(setColumns[i]).append(" = ").append(show(setValues[i]));
      }
    }
    return b.toString();
  }

  /** A constant as SQL, folded when that is possible (EXPLAIN only: nothing is written here). */
  private static String show(Expression e) {
    if (!e.foldable()) return e.sql();
    try {
      Object v = e.eval(null);
      DataType t = e.dataType();
      if (v == null) return "NULL";
      if (t instanceof DecimalType) return ((Decimal) v).toJavaBigDecimal().toPlainString();
      if (t instanceof LongType || t instanceof IntegerType || t instanceof ShortType || t instanceof ByteType) {
        return v.toString();
      }
      return Literal.create(v, t).sql();
    } catch (RuntimeException x) {
      return e.sql();  // it fails when the statement runs, as the row-level path would
    }
  }

  @Override
  public String verboseString(int maxFields) { return simpleString(maxFields); }

  @Override
  public Seq<Attribute> output() { return nil(); }

  @Override
  public Seq<Enumeration.Value> nodePatterns() { return PATTERNS; }

  @Override
  public void org$apache$spark$sql$catalyst$plans$logical$Command$_setter_$nodePatterns_$eq(Seq<Enumeration.Value> v) {
    // the patterns are the constant above
  }

  @Override
  public Seq<LogicalPlan> children() { return nil(); }

  @Override
  public LogicalPlan withNewChildrenInternal(IndexedSeq<LogicalPlan> newChildren) { return this; }

  @Override
  public LogicalPlan clone() { return this; }  // immutable, and has no product arguments to copy

  @Override
  public int productArity() { return 0; }

  @Override
  public Object productElement(int n) { throw new IndexOutOfBoundsException(Integer.toString(n)); }

  @Override
  public boolean canEqual(Object that) { return that == this; }
}
