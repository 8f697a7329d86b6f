package io.sparkext.spark;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import io.sparkext.wire.KeyHash;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.types.*;
import org.apache.spark.unsafe.types.UTF8String;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.time.LocalDate;
import java.util.Base64;

/** Spark SQL types <-> store type names (spark_ext/store/types.py), and values to JSON / key hash. */
public final class Types {
  private static final JsonNodeFactory F = JsonNodeFactory.instance;

  private Types() {}

  /** The store type of a Spark type; a clear error for types the store cannot hold. */
  public static String storeType(String column, DataType t) {
    if (t instanceof ByteType) return "int8";
    if (t instanceof ShortType) return "int16";
    if (t instanceof IntegerType) return "int32";
    if (t instanceof LongType) return "int64";
    if (t instanceof FloatType) return "float32";
    if (t instanceof DoubleType) return "float64";
    if (t instanceof DecimalType) {
      DecimalType d = (DecimalType) t;
      return "decimal(" + d.precision() + "," + d.scale() + ")";
    }
    if (t instanceof StringType || t instanceof VarcharType || t instanceof CharType) return "string";
    if (t instanceof BinaryType) return "binary";
    if (t instanceof BooleanType) return "bool";
    if (t instanceof DateType) return "date";
    if (t instanceof TimestampType) return "timestamp_tz";
    if (t instanceof TimestampNTZType) return "timestamp_ntz";
    if (t instanceof ArrayType || t instanceof MapType || t instanceof StructType) {
      throw new IllegalArgumentException("column '" + column + "' has type " + t.simpleString()
          + ": spark-ext tables do not support arrays, maps or structs yet; store them as a string (JSON) or binary column");
    }
    throw new IllegalArgumentException("column '" + column + "' has type " + t.simpleString()
        + ", which spark-ext tables do not support (supported: tinyint, smallint, int, bigint, float, double, "
        + "decimal(p,s) up to 38, string, binary, boolean, date, timestamp, timestamp_ntz)");
  }

  public static DataType sparkType(String storeType) {
    switch (storeType) {
      case "int8": return DataTypes.ByteType;
      case "int16": return DataTypes.ShortType;
      case "int32": return DataTypes.IntegerType;
      case "int64": return DataTypes.LongType;
      case "float32": return DataTypes.FloatType;
      case "float64": return DataTypes.DoubleType;
      case "string": return DataTypes.StringType;
      case "binary": return DataTypes.BinaryType;
      case "bool": return DataTypes.BooleanType;
      case "date": return DataTypes.DateType;
      case "timestamp_tz": return DataTypes.TimestampType;
      case "timestamp_ntz": return DataTypes.TimestampNTZType;
      default:
        if (storeType.startsWith("decimal(")) {
          String[] ps = storeType.substring(8, storeType.length() - 1).split(",");
          return DataTypes.createDecimalType(Integer.parseInt(ps[0].trim()), Integer.parseInt(ps[1].trim()));
        }
        throw new IllegalArgumentException("unknown store type " + storeType);
    }
  }

  public static int decimalScale(String storeType) {
    return Integer.parseInt(storeType.substring(storeType.indexOf(',') + 1, storeType.indexOf(')')).trim());
  }

  /** JSON literal of a Spark internal value (as stored in an InternalRow / a Literal). */
  public static JsonNode toJson(String storeType, Object v) {
    if (v == null) return F.nullNode();
    switch (storeType) {
      case "int8": case "int16": case "int32": case "int64":
        return F.numberNode(((Number) v).longValue());
      case "timestamp_tz": case "timestamp_ntz":
        return F.numberNode(((Number) v).longValue());
      case "float32": case "float64": {
        double d = ((Number) v).doubleValue();
        if (Double.isNaN(d)) return F.textNode("NaN");
        if (Double.isInfinite(d)) return F.textNode(d > 0 ? "Infinity" : "-Infinity");
        return F.numberNode(d);
      }
      case "bool": return F.booleanNode((Boolean) v);
      case "string": return F.textNode(v.toString());
      case "binary": return F.textNode(Base64.getEncoder().encodeToString((byte[]) v));
      case "date": return F.textNode(LocalDate.ofEpochDay(((Number) v).longValue()).toString());
      default:
        if (storeType.startsWith("decimal(")) return F.textNode(bigDecimal(v).toPlainString());
        throw new IllegalArgumentException("unknown store type " + storeType);
    }
  }

  static BigDecimal bigDecimal(Object v) {
    if (v instanceof Decimal) return ((Decimal) v).toJavaBigDecimal();
    if (v instanceof BigDecimal) return (BigDecimal) v;
    return new BigDecimal(v.toString());
  }

  /** Key hash component of a Spark internal value. */
  public static long component(String storeType, Object v) {
    switch (storeType) {
      case "int8": case "int16": case "int32": case "int64": case "date": case "timestamp_tz": case "timestamp_ntz":
        return KeyHash.intComponent(((Number) v).longValue());
      case "bool": return KeyHash.intComponent(((Boolean) v) ? 1 : 0);
      case "string":
        return KeyHash.bytesComponent(v instanceof UTF8String ? ((UTF8String) v).getBytes()
            : v.toString().getBytes(java.nio.charset.StandardCharsets.UTF_8));
      case "binary": return KeyHash.bytesComponent((byte[]) v);
      default:
        if (storeType.startsWith("decimal(")) {
          BigInteger u = bigDecimal(v).setScale(decimalScale(storeType), java.math.RoundingMode.UNNECESSARY).unscaledValue();
          return KeyHash.decimalComponent(u);
        }
        throw new IllegalArgumentException("a " + storeType + " column cannot be a key column");
    }
  }

  /** Read field i of a row as a Spark internal value of the given store type. */
  public static Object get(InternalRow row, int i, String storeType) {
    if (row.isNullAt(i)) return null;
    switch (storeType) {
      case "int8": return row.getByte(i);
      case "int16": return row.getShort(i);
      case "int32": case "date": return row.getInt(i);
      case "int64": case "timestamp_tz": case "timestamp_ntz": return row.getLong(i);
      case "float32": return row.getFloat(i);
      case "float64": return row.getDouble(i);
      case "bool": return row.getBoolean(i);
      case "string": return row.getUTF8String(i);
      case "binary": return row.getBinary(i);
      default:
        if (storeType.startsWith("decimal(")) {
          DecimalType d = (DecimalType) sparkType(storeType);
          return row.getDecimal(i, d.precision(), d.scale());
        }
        throw new IllegalArgumentException("unknown store type " + storeType);
    }
  }

  /** The JSON key ([v1, v2, ...]) of row fields at the given positions. */
  public static ArrayNode keyJson(InternalRow row, int[] pos, String[] types) {
    ArrayNode a = F.arrayNode();
    for (int k = 0; k < pos.length; k++) a.add(toJson(types[k], get(row, pos[k], types[k])));
    return a;
  }

  /** The bucket of the key held in row fields at the given positions. */
  public static int bucket(InternalRow row, int[] pos, String[] types, int numBuckets) {
    long[] c = new long[pos.length];
    for (int k = 0; k < pos.length; k++) {
      Object v = get(row, pos[k], types[k]);
      if (v == null) return -1;
      c[k] = component(types[k], v);
    }
    return KeyHash.bucketOfHash(KeyHash.combine(c), numBuckets);
  }
}
