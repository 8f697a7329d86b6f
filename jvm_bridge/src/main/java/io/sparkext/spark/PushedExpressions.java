package io.sparkext.spark;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import io.sparkext.wire.Json;
import io.sparkext.wire.TableMeta;
import org.apache.spark.sql.connector.expressions.Cast;
import org.apache.spark.sql.connector.expressions.Expression;
import org.apache.spark.sql.connector.expressions.GeneralScalarExpression;
import org.apache.spark.sql.connector.expressions.Literal;
import org.apache.spark.sql.connector.expressions.NamedReference;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;

import java.util.Set;

/**
 * Arithmetic V2 expressions (group keys, aggregate arguments) in the JSON form the store
 * servers evaluate (docs/protocol.md section 10.3), e.g. {@code k % 100} ->
 * {@code ["%", ["col", "k"], ["lit", 100, "int32"]]}.
 *
 * <p>Spark's V2ExpressionBuilder hands {@code + - * / %} only when they run in ANSI mode, and
 * after analysis both operands have one type (Spark adds the casts: {@code CAST(b AS int) + 1}).
 * The servers implement exactly those ANSI semantics (overflow and division by zero fail,
 * {@code %} truncates like Java). {@link #translate} answers null - Spark then evaluates the
 * expression itself - for anything else: decimals (their precision rules), other functions,
 * NULL or non-finite literals, casts other than integer to integer or floating point and
 * float to double, integer {@code /} (Spark's {@code /} is double or decimal division).
 */
final class PushedExpressions {
  private PushedExpressions() {}

  /** The store types expressions compute in. */
  private static final Set<String> NUMERIC = Set.of("int8", "int16", "int32", "int64", "float32", "float64");
  private static final int MAX_DEPTH = 64;

  /** A translated expression: its JSON, its result's store type, and whether it can be NULL. */
  static final class Typed {
    final JsonNode json;
    final String type;
    final boolean nullable;

    Typed(JsonNode json, String type, boolean nullable) {
      this.json = json;
      this.type = type;
      this.nullable = nullable;
    }

    DataType sparkType() { return Types.sparkType(type); }
  }

  /** The pushable form of an arithmetic expression, or null. A plain column is not one (callers send its name). */
  static Typed translate(TableMeta meta, Expression e) {
    if (!(e instanceof GeneralScalarExpression) && !(e instanceof Cast)) return null;
    return node(meta, e, 1);
  }

  private static Typed node(TableMeta meta, Expression e, int depth) {
    if (depth > MAX_DEPTH) return null;
    if (e instanceof NamedReference) {
      String[] names = ((NamedReference) e).fieldNames();
      if (names.length != 1) return null;
      int i = meta.columnIndex(names[0]);
      if (i < 0) return null;
      String col = meta.columnNames.get(i);
      String t = meta.typeOf(col);
      if (!NUMERIC.contains(t)) return null;
      return new Typed(Json.arr().add("col").add(col), t, meta.columnNullable.get(i));
    }
    if (e instanceof Literal) return literal((Literal<?>) e);
    if (e instanceof Cast) {
      Cast c = (Cast) e;
      Typed a = node(meta, c.expression(), depth + 1);
      String to = storeType(c.dataType());
      if (a == null || to == null || !castable(a.type, to)) return null;
      return new Typed(Json.arr().add("cast").add(a.json).add(to), to, a.nullable);
    }
    if (!(e instanceof GeneralScalarExpression)) return null;
    GeneralScalarExpression g = (GeneralScalarExpression) e;
    Expression[] ch = g.children();
    String name = g.name();
    if (ch.length == 1 && (name.equals("-") || name.equals("ABS"))) {
      Typed a = node(meta, ch[0], depth + 1);
      if (a == null) return null;
      return new Typed(Json.arr().add(name.equals("-") ? "neg" : "abs").add(a.json), a.type, a.nullable);
    }
    if (ch.length == 2 && Set.of("+", "-", "*", "/", "%").contains(name)) {
      Typed a = node(meta, ch[0], depth + 1);
      Typed b = node(meta, ch[1], depth + 1);
      if (a == null || b == null || !a.type.equals(b.type)) return null;
      if (name.equals("/") && !a.type.startsWith("float")) return null;
      return new Typed(Json.arr().add(name).add(a.json).add(b.json), a.type, a.nullable || b.nullable);
    }
    return null;
  }

  private static Typed literal(Literal<?> l) {
    String t = storeType(l.dataType());
    Object v = l.value();
    if (t == null || v == null) return null;
    ArrayNode a = Json.arr().add("lit");
    if (v instanceof Byte || v instanceof Short || v instanceof Integer || v instanceof Long) {
      a.add(((Number) v).longValue());
    } else if (v instanceof Float || v instanceof Double) {
      double d = ((Number) v).doubleValue();
      if (Double.isNaN(d) || Double.isInfinite(d)) return null;
      // A float literal goes as the double of its value: exact, and the server rounds it back.
      a.add(d);
    } else {
      return null;
    }
    return new Typed(a.add(t), t, false);
  }

  private static String storeType(DataType t) {
    if (t.equals(DataTypes.ByteType)) return "int8";
    if (t.equals(DataTypes.ShortType)) return "int16";
    if (t.equals(DataTypes.IntegerType)) return "int32";
    if (t.equals(DataTypes.LongType)) return "int64";
    if (t.equals(DataTypes.FloatType)) return "float32";
    if (t.equals(DataTypes.DoubleType)) return "float64";
    return null;
  }

  /** The casts the servers evaluate exactly as Spark does (see scan_expressions._castable). */
  private static boolean castable(String from, String to) {
    if (from.startsWith("int")) return !(from.equals("int64") && to.equals("float32"));
    return from.equals(to) || (from.equals("float32") && to.equals("float64"));
  }
}
