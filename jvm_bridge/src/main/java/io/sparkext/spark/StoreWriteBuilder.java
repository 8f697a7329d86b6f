package io.sparkext.spark;

import io.sparkext.wire.Endpoint;
import io.sparkext.wire.TableMeta;
import org.apache.spark.sql.connector.write.BatchWrite;
import org.apache.spark.sql.connector.write.LogicalWriteInfo;
import org.apache.spark.sql.connector.write.SupportsDynamicOverwrite;
import org.apache.spark.sql.connector.write.SupportsTruncate;
import org.apache.spark.sql.connector.write.Write;
import org.apache.spark.sql.connector.write.WriteBuilder;

/** INSERT INTO / INSERT OVERWRITE (truncate, then insert) / append, as one staged transaction. */
public class StoreWriteBuilder implements WriteBuilder, SupportsTruncate, SupportsDynamicOverwrite {
  private final Endpoint endpoint;
  private final TableMeta meta;
  private final LogicalWriteInfo info;
  private boolean truncate;

  StoreWriteBuilder(Endpoint endpoint, TableMeta meta, LogicalWriteInfo info, Object unused) {
    this.endpoint = endpoint;
    this.meta = meta;
    this.info = info;
  }

  @Override
  public WriteBuilder truncate() {
    truncate = true;
    return this;
  }

  @Override
  public WriteBuilder overwriteDynamicPartitions() {
    truncate = true; // the table has no partitions: everything is replaced
    return this;
  }

  @Override
  public Write build() {
    String mode = info.options().getOrDefault("mode", "insert").toLowerCase();
    String op = mode.equals("upsert") || mode.equals("put") ? "upsert" : "insert";
    boolean t = truncate;
    return new Write() {
      @Override
      public String description() { return "spark-ext " + op + (t ? " (overwrite)" : "") + " into " + meta.fullName; }

      @Override
      public BatchWrite toBatch() { return new StoreBatchWrite(endpoint, meta, info, t, op); }
    };
  }
}
