package io.sparkext.spark;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import io.sparkext.wire.Json;
import io.sparkext.wire.KeyHash;
import io.sparkext.wire.TableMeta;
import org.apache.spark.sql.connector.expressions.Expression;
import org.apache.spark.sql.connector.expressions.Literal;
import org.apache.spark.sql.connector.expressions.NamedReference;
import org.apache.spark.sql.connector.expressions.filter.Predicate;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;

/** Spark V2 predicates -> the store's predicate JSON (spark_ext/store/predicate.py); null when not translatable. */
public final class Predicates {
  private Predicates() {}

  private static String column(TableMeta meta, Expression e) {
    if (!(e instanceof NamedReference)) return null;
    String[] parts = ((NamedReference) e).fieldNames();
    if (parts.length != 1) return null;
    String t = meta.typeOf(parts[0]);
    if (t == null) return null;
    return parts[0].equals("_rowid") ? "_rowid" : meta.columnNames.get(meta.columnIndex(parts[0]));
  }

  private static boolean floaty(String type) { return type.equals("float32") || type.equals("float64"); }

  private static JsonNode literal(String type, Expression e) {
    if (!(e instanceof Literal)) return null;
    Object v = ((Literal<?>) e).value();
    if (v == null) return null;
    try {
      // Integer columns compared with integer literals only (Spark casts otherwise).
      return Types.toJson(type, v);
    } catch (RuntimeException ex) {
      return null;
    }
  }

  private static final Map<String, String> FLIP = Map.of("=", "=", "<", ">", "<=", ">=", ">", "<", ">=", "<=", "<>", "<>");

  public static JsonNode translate(TableMeta meta, Predicate p) {
    String name = p.name();
    Expression[] ch = p.children();
    switch (name) {
      case "AND": case "OR": {
        ArrayNode a = Json.arr().add(name.toLowerCase());
        for (Expression c : ch) {
          if (!(c instanceof Predicate)) return null;
          JsonNode t = translate(meta, (Predicate) c);
          if (t == null) return null;
          a.add(t);
        }
        return a;
      }
      case "NOT": {
        if (!(ch[0] instanceof Predicate)) return null;
        JsonNode t = translate(meta, (Predicate) ch[0]);
        return t == null ? null : Json.arr().add("not").add(t);
      }
      case "=": case "<>": case "<": case "<=": case ">": case ">=": {
        String op = name;
        Expression l = ch[0], r = ch[1];
        if (!(l instanceof NamedReference) && r instanceof NamedReference) {
          Expression tmp = l; l = r; r = tmp;
          op = FLIP.get(op);
        }
        String col = column(meta, l);
        if (col == null) return null;
        String type = meta.typeOf(col);
        if (floaty(type)) return null; // NaN ordering differs between Spark and Arrow
        JsonNode v = literal(type, r);
        return v == null ? null : Json.arr().add(op).add(col).add(v);
      }
      case "IN": {
        String col = column(meta, ch[0]);
        if (col == null) return null;
        String type = meta.typeOf(col);
        if (floaty(type)) return null;
        ArrayNode vs = Json.arr();
        for (int i = 1; i < ch.length; i++) {
          JsonNode v = literal(type, ch[i]);
          if (v == null) return null;
          vs.add(v);
        }
        return Json.arr().add("in").add(col).add(vs);
      }
      case "IS_NULL": case "IS_NOT_NULL": {
        String col = column(meta, ch[0]);
        return col == null ? null : Json.arr().add(name.toLowerCase()).add(col);
      }
      case "STARTS_WITH": {
        String col = column(meta, ch[0]);
        if (col == null || !meta.typeOf(col).equals("string")) return null;
        JsonNode v = literal("string", ch[1]);
        return v == null ? null : Json.arr().add("starts_with").add(col).add(v);
      }
      default:
        return null;
    }
  }

  /**
   * The buckets a conjunction of pushed predicates can match: equality (or IN) on every key
   * column pins them; null means all buckets.
   */
  public static TreeSet<Integer> buckets(TableMeta meta, List<JsonNode> conjuncts) {
    List<String> key = meta.hiddenRowId() ? List.of("_rowid") : meta.primaryKey;
    Map<String, List<JsonNode>> eq = new HashMap<>();
    for (JsonNode c : conjuncts) {
      String op = c.get(0).asText();
      if (op.equals("=") && key.contains(c.get(1).asText())) {
        eq.put(c.get(1).asText(), List.of(c.get(2)));
      } else if (op.equals("in") && key.contains(c.get(1).asText()) && !eq.containsKey(c.get(1).asText())) {
        List<JsonNode> vs = new ArrayList<>();
        c.get(2).forEach(vs::add);
        eq.put(c.get(1).asText(), vs);
      }
    }
    for (String k : key) if (!eq.containsKey(k)) return null;
    TreeSet<Integer> out = new TreeSet<>();
    List<long[]> combos = new ArrayList<>();
    combos.add(new long[0]);
    for (String k : key) {
      String type = meta.typeOf(k);
      List<long[]> next = new ArrayList<>();
      for (long[] prefix : combos) {
        for (JsonNode v : eq.get(k)) {
          if (v.isNull()) continue;
          long c;
          try {
            if (k0(key)) {
              if (!v.isIntegralNumber()) return null;
              c = v.asLong();
            } else {
              c = jsonComponent(type, v);
            }
          } catch (RuntimeException e) {
            return null;
          }
          long[] n = java.util.Arrays.copyOf(prefix, prefix.length + 1);
          n[prefix.length] = c;
          next.add(n);
        }
      }
      combos = next;
      if (combos.size() > 4096) return null;
    }
    for (long[] cs : combos) {
      if (k0(key)) {
        // hidden row ids carry their bucket: rowid mod num_buckets
        out.add((int) Math.floorMod(cs[0], (long) meta.numBuckets));
      } else {
        out.add(KeyHash.bucketOfHash(KeyHash.combine(cs), meta.numBuckets));
      }
    }
    return out;
  }

  private static boolean k0(List<String> key) { return key.size() == 1 && key.get(0).equals("_rowid"); }

  /** The key hash component of a JSON literal of a column type. */
  static long jsonComponent(String type, JsonNode v) {
    switch (type) {
      case "int8": case "int16": case "int32": case "int64": case "timestamp_tz": case "timestamp_ntz":
        if (!v.isIntegralNumber()) throw new IllegalArgumentException();
        return KeyHash.intComponent(v.asLong());
      case "bool": return KeyHash.intComponent(v.asBoolean() ? 1 : 0);
      case "date": return KeyHash.intComponent(java.time.LocalDate.parse(v.asText()).toEpochDay());
      case "string": return KeyHash.stringComponent(v.asText());
      case "binary": return KeyHash.bytesComponent(java.util.Base64.getDecoder().decode(v.asText()));
      default:
        if (type.startsWith("decimal(")) {
          return KeyHash.decimalComponent(new java.math.BigDecimal(v.asText())
              .setScale(Types.decimalScale(type), java.math.RoundingMode.UNNECESSARY).unscaledValue());
        }
        throw new IllegalArgumentException(type);
    }
  }
}
