package io.sparkext.spark;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.TextNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.sparkext.wire.Json;
import io.sparkext.wire.TableMeta;
import org.apache.spark.sql.connector.expressions.Expression;
import org.apache.spark.sql.connector.expressions.NamedReference;
import org.apache.spark.sql.connector.expressions.aggregate.AggregateFunc;
import org.apache.spark.sql.connector.expressions.aggregate.Aggregation;
import org.apache.spark.sql.connector.expressions.aggregate.Count;
import org.apache.spark.sql.connector.expressions.aggregate.CountStar;
import org.apache.spark.sql.connector.expressions.aggregate.Max;
import org.apache.spark.sql.connector.expressions.aggregate.Min;
import org.apache.spark.sql.connector.expressions.aggregate.Sum;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;

import java.util.ArrayList;
import java.util.List;

/**
 * An aggregation Spark pushed to the store servers (partially: Spark merges the per-bucket
 * results). Each bucket's SCAN carries {@code group_by} and {@code aggregates}
 * (docs/protocol.md section 10.2) and answers one Arrow batch: the distinct group columns,
 * then {@code agg0, agg1, ...}.
 *
 * <p>The read schema is what Spark's V2ScanRelationPushDown expects for a partial push-down:
 * one column per group-by expression (repeats included), then one per aggregate function,
 * typed as Spark types the aggregate (COUNT: bigint; SUM of an integer type: bigint, of
 * float/double: double; MIN/MAX: the argument's type).
 *
 * <p>Group keys and aggregate arguments are plain columns or arithmetic expressions over
 * columns and literals ({@code GROUP BY k % 100}, {@code SUM(x * 2)}), which the servers
 * evaluate per bucket before grouping (see {@link PushedExpressions} for which ones).
 *
 * <p>Partial, not complete, push-down: a group's rows are spread over buckets (and servers)
 * unless the group keys hold the whole bucketing key, so Spark must merge the per-bucket
 * rows; with few groups that merge costs little next to the scan that no longer leaves the
 * servers.
 *
 * <p>{@link #of} answers null (Spark then aggregates by itself) for anything else: nested
 * fields, expressions {@link PushedExpressions} refuses, DISTINCT, SUM of a decimal
 * (Spark casts a pushed partial decimal sum back to the column's precision, which can
 * overflow where its own sum would not), other functions. FILTER clauses never reach here.
 */
final class PushedAggregation {
  /** The distinct group keys: store column names (text) or expressions, sent as {@code group_by}. */
  final List<JsonNode> groupBy = new ArrayList<>();
  /** {@code [fn]} / {@code [fn, column]} per aggregate, sent as {@code aggregates}. */
  final ArrayNode aggregates = Json.arr();
  /** Reply column of each read-schema column (group columns may repeat). */
  final int[] replyIndex;
  final StructType schema;
  /** For EXPLAIN: COUNT(*), SUM(x), ... and the group-by columns. */
  final List<String> described = new ArrayList<>();
  final List<String> describedGroupBy = new ArrayList<>();

  private PushedAggregation(int width, StructType schema) {
    this.replyIndex = new int[width];
    this.schema = schema;
  }

  /** The pushable form of an aggregation, or null when the servers cannot compute all of it. */
  static PushedAggregation of(TableMeta meta, Aggregation aggregation) {
    Expression[] groups = aggregation.groupByExpressions();
    AggregateFunc[] funcs = aggregation.aggregateExpressions();
    if (groups.length + funcs.length == 0) return null;
    List<StructField> fields = new ArrayList<>();
    List<JsonNode> distinct = new ArrayList<>();
    int[] groupReply = new int[groups.length];
    for (int i = 0; i < groups.length; i++) {
      JsonNode key;
      DataType type;
      boolean nullable;
      String col = column(meta, groups[i]);
      if (col != null) {
        key = TextNode.valueOf(col);
        type = Types.sparkType(meta.typeOf(col));
        nullable = meta.columnNullable.get(meta.columnIndex(col));
      } else {
        PushedExpressions.Typed e = PushedExpressions.translate(meta, groups[i]);
        if (e == null) return null;
        key = e.json;
        type = e.sparkType();
        nullable = e.nullable;
      }
      int at = distinct.indexOf(key); // JsonNode equality is structural
      if (at < 0) {
        at = distinct.size();
        distinct.add(key);
      }
      groupReply[i] = at;
      fields.add(DataTypes.createStructField("group_col_" + i, type, nullable));
    }
    ArrayNode aggs = Json.arr();
    List<String> described = new ArrayList<>();
    for (int j = 0; j < funcs.length; j++) {
      AggregateFunc f = funcs[j];
      String fn;
      Expression arg = null;
      if (f instanceof CountStar) {
        fn = "count_star";
      } else if (f instanceof Count) {
        if (((Count) f).isDistinct()) return null;
        fn = "count";
        arg = ((Count) f).column();
      } else if (f instanceof Sum) {
        if (((Sum) f).isDistinct()) return null;
        fn = "sum";
        arg = ((Sum) f).column();
      } else if (f instanceof Min) {
        fn = "min";
        arg = ((Min) f).column();
      } else if (f instanceof Max) {
        fn = "max";
        arg = ((Max) f).column();
      } else {
        return null;
      }
      ArrayNode a = Json.arr().add(fn);
      DataType type;
      boolean nullable = true;
      if (arg == null) {
        type = DataTypes.LongType;
        nullable = false;
      } else {
        String col = column(meta, arg);
        String st;
        if (col != null) {
          a.add(col);
          st = meta.typeOf(col);
        } else {
          PushedExpressions.Typed e = PushedExpressions.translate(meta, arg);
          if (e == null) return null;
          a.add(e.json);
          st = e.type;
        }
        switch (fn) {
          case "count":
            type = DataTypes.LongType;
            nullable = false;
            break;
          case "sum":
            type = sumType(st);
            if (type == null) return null;
            break;
          default: // min, max keep the argument's type
            type = Types.sparkType(st);
        }
      }
      aggs.add(a);
      described.add(f.toString());
      fields.add(DataTypes.createStructField("agg_func_" + j, type, nullable));
    }
    PushedAggregation p = new PushedAggregation(fields.size(), new StructType(fields.toArray(new StructField[0])));
    p.groupBy.addAll(distinct);
    p.aggregates.addAll(aggs);
    System.arraycopy(groupReply, 0, p.replyIndex, 0, groups.length);
    for (int j = 0; j < funcs.length; j++) p.replyIndex[groups.length + j] = distinct.size() + j;
    p.described.addAll(described);
    for (Expression g : groups) p.describedGroupBy.add(g.toString());
    return p;
  }

  /** The store column a plain (top-level, user) column reference names, else null. */
  private static String column(TableMeta meta, Expression e) {
    if (!(e instanceof NamedReference)) return null;
    String[] names = ((NamedReference) e).fieldNames();
    if (names.length != 1) return null;
    int i = meta.columnIndex(names[0]);
    return i < 0 ? null : meta.columnNames.get(i);
  }

  /** Spark's SUM result type for the types whose partial sums merge exactly; null otherwise. */
  private static DataType sumType(String storeType) {
    switch (storeType) {
      case "int8": case "int16": case "int32": case "int64": return DataTypes.LongType;
      case "float32": case "float64": return DataTypes.DoubleType;
      default: return null; // decimal: refused (see the class comment); others: no SUM in Spark
    }
  }

  /** The SCAN request fields of this aggregation. */
  void addTo(ObjectNode request) {
    ArrayNode g = request.putArray("group_by");
    groupBy.forEach(g::add);
    request.set("aggregates", aggregates.deepCopy());
  }

  String describe() {
    StringBuilder sb = new StringBuilder("PushedAggregates: ").append(described);
    sb.append(", PushedGroupBy: ").append(describedGroupBy);
    return sb.toString();
  }
}
