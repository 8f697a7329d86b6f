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
  private VectorSchemaRoot root;
  private int rows;

  RowBuffer(BufferAllocator allocator, String[] names, String[] types, int[] positions) {
    this.allocator = allocator;
    this.names = names;
    this.types = types;
    this.positions = positions;
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
    for (int c = 0; c < names.length; c++) {
      FieldVector v = root.getVector(c);
      int p = positions[c];
      if (p < 0 || row.isNullAt(p)) {
        v.setNull(rows);
        continue;
      }
      switch (types[c]) {
        case "int8": ((TinyIntVector) v).setSafe(rows, row.getByte(p)); break;
        case "int16": ((SmallIntVector) v).setSafe(rows, row.getShort(p)); break;
        case "int32": ((IntVector) v).setSafe(rows, row.getInt(p)); break;
        case "int64": ((BigIntVector) v).setSafe(rows, row.getLong(p)); break;
        case "float32": ((Float4Vector) v).setSafe(rows, row.getFloat(p)); break;
        case "float64": ((Float8Vector) v).setSafe(rows, row.getDouble(p)); break;
        case "string": ((VarCharVector) v).setSafe(rows, row.getUTF8String(p).getBytes()); break;
        case "binary": ((VarBinaryVector) v).setSafe(rows, row.getBinary(p)); break;
        case "bool": ((BitVector) v).setSafe(rows, row.getBoolean(p) ? 1 : 0); break;
        case "date": ((DateDayVector) v).setSafe(rows, row.getInt(p)); break;
        case "timestamp_tz": ((TimeStampMicroTZVector) v).setSafe(rows, row.getLong(p)); break;
        case "timestamp_ntz": ((TimeStampMicroVector) v).setSafe(rows, row.getLong(p)); break;
        default: {
          DecimalVector dv = (DecimalVector) v;
          Decimal d = row.getDecimal(p, dv.getPrecision(), dv.getScale());
          ((DecimalVector) v).setSafe(rows, d.toJavaBigDecimal().setScale(dv.getScale()));
        }
      }
    }
    rows++;
  }

  /** The buffered rows as an Arrow IPC stream; the buffer is empty afterwards. */
  byte[] drain() {
    if (root == null) open();
    root.setRowCount(rows);
    byte[] b = ArrowIO.writeStream(root);
    root.close();
    root = null;
    rows = 0;
    return b;
  }

  @Override
  public void close() {
    if (root != null) {
      root.close();
      root = null;
    }
  }
}
