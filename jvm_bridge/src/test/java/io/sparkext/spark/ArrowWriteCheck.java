package io.sparkext.spark;

import io.sparkext.wire.ArrowIO;
import org.apache.spark.sql.catalyst.expressions.GenericInternalRow;
import org.apache.spark.sql.types.Decimal;
import org.apache.spark.unsafe.types.UTF8String;

import java.io.FileOutputStream;
import java.math.BigDecimal;

/** Writes rows of every store type with RowBuffer (the write path's Arrow encoder) to a file. Args: out */
public final class ArrowWriteCheck {
  public static void main(String[] args) throws Exception {
    String[] names = {"i8", "i16", "i32", "i64", "f32", "f64", "dec", "s", "bin", "b", "d", "ts", "tsn"};
    String[] types = {"int8", "int16", "int32", "int64", "float32", "float64", "decimal(38,10)", "string", "binary", "bool",
        "date", "timestamp_tz", "timestamp_ntz"};
    int[] pos = new int[names.length];
    for (int i = 0; i < pos.length; i++) pos[i] = i;
    try (RowBuffer rb = new RowBuffer(ArrowIO.allocator("check"), names, types, pos)) {
      rb.add(new GenericInternalRow(new Object[] {(byte) -128, (short) 32767, Integer.MIN_VALUE, Long.MAX_VALUE, 1.5f, -2.25,
          Decimal.apply(new BigDecimal("-1234567890123456789012345678.0123456789"), 38, 10), UTF8String.fromString("héllo"),
          new byte[] {0, (byte) 255}, true, -1, 1700000000123456L, -1L}));
      rb.add(new GenericInternalRow(new Object[names.length]));
      try (FileOutputStream out = new FileOutputStream(args[0])) {
        out.write(rb.drain());
      }
    }
    System.out.println("ARROW OK");
  }
}
