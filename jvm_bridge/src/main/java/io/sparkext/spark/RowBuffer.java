package io.sparkext.spark;

import io.sparkext.wire.ArrowIO;
import org.apache.arrow.memory.BufferAllocator;
import org.apache.arrow.vector.*;
import org.apache.arrow.vector.types.DateUnit;
import org.apache.arrow.vector.types.FloatingPointPrecision;
import org.apache.arrow.vector.types.TimeUnit;
import org.apache.arrow.vector.types.pojo.ArrowType;
import org.apache.arrow.vector.types.pojo.Field;
import org.apache.arrow.vector.types.pojo.FieldType;
import org.apache.arrow.vector.types.pojo.Schema;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.types.Decimal;

import java.util.ArrayList;
import java.util.List;

/** Rows of a table (user columns, by name) collected in Arrow vectors, shipped as one IPC stream. */
final class RowBuffer implements AutoCloseable {
  private final BufferAllocator allocator;
  private final String[] names;
  private final String[] types;
  private final int[] positions; // where each table column sits in the incoming rows
  private final int[] codes;     // per column: one of the T_* codes (a switch on ints, not strings, per value)
  private VectorSchemaRoot root;
  private FieldVector[] vectors;
  private int rows;

  private static final int T_INT8 = 0, T_INT16 = 1, T_INT32 = 2, T_INT64 = 3, T_FLOAT32 = 4, T_FLOAT64 = 5,
      T_STRING = 6, T_BINARY = 7, T_BOOL = 8, T_DATE = 9, T_TS_TZ = 10, T_TS_NTZ = 11, T_DECIMAL = 12;

  RowBuffer(BufferAllocator allocator, String[] names, String[] types, int[] positions) {
    this.allocator = allocator;
    this.names = names;
    this.types = types;
    this.positions = positions;
    this.codes = new int[types.length];
    for (int i = 0; i < types.length; i++) codes[i] = code(types[i]);
  }

  private static int code(String t) {
    switch (t) {
      case "int8": return T_INT8;
      case "int16": return T_INT16;
      case "int32": return T_INT32;
      case "int64": return T_INT64;
      case "float32": return T_FLOAT32;
      case "float64": return T_FLOAT64;
      case "string": return T_STRING;
      case "binary": return T_BINARY;
      case "bool": return T_BOOL;
      case "date": return T_DATE;
      case "timestamp_tz": return T_TS_TZ;
      case "timestamp_ntz": return T_TS_NTZ;
      default: return T_DECIMAL;
    }
  }

  static ArrowType arrowType(String t) {
    switch (t) {
      case "int8": return new ArrowType.Int(8, true);
      case "int16": return new ArrowType.Int(16, true);
      case "int32": return new ArrowType.Int(32, true);
      case "int64": return new ArrowType.Int(64, true);
      case "float32": return new ArrowType.FloatingPoint(FloatingPointPrecision.SINGLE);
      case "float64": return new ArrowType.FloatingPoint(FloatingPointPrecision.DOUBLE);
      case "string": return ArrowType.Utf8.INSTANCE;
      case "binary": return ArrowType.Binary.INSTANCE;
      case "bool": return ArrowType.Bool.INSTANCE;
      case "date": return new ArrowType.Date(DateUnit.DAY);
      case "timestamp_tz": return new ArrowType.Timestamp(TimeUnit.MICROSECOND, "UTC");
      case "timestamp_ntz": return new ArrowType.Timestamp(TimeUnit.MICROSECOND, null);
      default:
        String[] ps = t.substring(8, t.length() - 1).split(",");
        return new ArrowType.Decimal(Integer.parseInt(ps[0].trim()), Integer.parseInt(ps[1].trim()), 128);
    }
  }

  private void open() {
    List<Field> fields = new ArrayList<>();
    for (int i = 0; i < names.length; i++) fields.add(new Field(names[i], FieldType.nullable(arrowType(types[i])), null));
    root = VectorSchemaRoot.create(new Schema(fields), allocator);
    root.allocateNew();
    vectors = root.getFieldVectors().toArray(new FieldVector[0]);
    rows = 0;
  }

  int rows() { return rows; }

  long bytes() {
    if (root == null) return 0;
    long n = 0;
    for (FieldVector v : root.getFieldVectors()) n += v.getBufferSize();
    return n;
  }

  void add(InternalRow row) {
    if (root == null) open();
    final int r = rows;
    for (int c = 0; c < codes.length; c++) {
      FieldVector v = vectors[c];
      int p = positions[c];
      if (p < 0 || row.isNullAt(p)) {
        v.setNull(r);
        continue;
      }
      switch (codes[c]) {
        case T_INT8: ((TinyIntVector) v).setSafe(r, row.getByte(p)); break;
        case T_INT16: ((SmallIntVector) v).setSafe(r, row.getShort(p)); break;
        case T_INT32: ((IntVector) v).setSafe(r, row.getInt(p)); break;
        case T_INT64: ((BigIntVector) v).setSafe(r, row.getLong(p)); break;
        case T_FLOAT32: ((Float4Vector) v).setSafe(r, row.getFloat(p)); break;
        case T_FLOAT64: ((Float8Vector) v).setSafe(r, row.getDouble(p)); break;
        case T_STRING: {
          // The UTF-8 bytes straight from Spark's string (no byte[] copy when it is on-heap).
          org.apache.spark.unsafe.types.UTF8String u = row.getUTF8String(p);
          Object base = u.getBaseObject();
          if (base instanceof byte[] && u.getBaseOffset() >= org.apache.spark.unsafe.Platform.BYTE_ARRAY_OFFSET) {
            int off = (int) (u.getBaseOffset() - org.apache.spark.unsafe.Platform.BYTE_ARRAY_OFFSET);
            ((VarCharVector) v).setSafe(r, (byte[]) base, off, u.numBytes());
          } else {
            ((VarCharVector) v).setSafe(r, u.getBytes());
          }
          break;
        }
        case T_BINARY: ((VarBinaryVector) v).setSafe(r, row.getBinary(p)); break;
        case T_BOOL: ((BitVector) v).setSafe(r, row.getBoolean(p) ? 1 : 0); break;
        case T_DATE: ((DateDayVector) v).setSafe(r, row.getInt(p)); break;
        case T_TS_TZ: ((TimeStampMicroTZVector) v).setSafe(r, row.getLong(p)); break;
        case T_TS_NTZ: ((TimeStampMicroVector) v).setSafe(r, row.getLong(p)); break;
        default: {
          DecimalVector dv = (DecimalVector) v;
          Decimal d = row.getDecimal(p, dv.getPrecision(), dv.getScale());
          dv.setSafe(r, d.toJavaBigDecimal().setScale(dv.getScale()));
        }
      }
    }
    rows = r + 1;
  }

  /** The buffered rows as an Arrow IPC stream; the buffer is empty afterwards. */
  byte[] drain() {
    if (root == null) open();
    root.setRowCount(rows);
    byte[] b = ArrowIO.writeStream(root);
    root.close();
    root = null;
    vectors = null;
    rows = 0;
    return b;
  }

  @Override
  public void close() {
    if (root != null) {
      root.close();
      root = null;
      vectors = null;
    }
  }
}
