package io.sparkext.spark;

import org.apache.spark.sql.connector.expressions.NamedReference;
import org.apache.spark.sql.connector.read.ScanBuilder;
import org.apache.spark.sql.connector.write.DeltaBatchWrite;
import org.apache.spark.sql.connector.write.DeltaWrite;
import org.apache.spark.sql.connector.write.DeltaWriteBuilder;
import org.apache.spark.sql.connector.write.LogicalWriteInfo;
import org.apache.spark.sql.connector.write.RowLevelOperation;
import org.apache.spark.sql.connector.write.SupportsDelta;
import org.apache.spark.sql.util.CaseInsensitiveStringMap;

/** UPDATE / DELETE / MERGE in delta mode: the row id is the primary key (or the hidden _rowid). */
public class StoreDeltaOperation implements SupportsDelta {
  private final StoreTable table;
  private final RowLevelOperation.Command command;

  StoreDeltaOperation(StoreTable table, RowLevelOperation.Command command) {
    this.table = table;
    this.command = command;
  }

  @Override
  public Command command() { return command; }

  @Override
  public String description() { return "spark-ext " + command + " on " + table.meta.fullName; }

  @Override
  public ScanBuilder newScanBuilder(CaseInsensitiveStringMap options) {
    return new StoreScanBuilder(table.endpoint, table.meta, table.dataSchema(), false);
  }

  @Override
  public NamedReference[] rowId() { return table.rowId(); }

  @Override
  public DeltaWriteBuilder newWriteBuilder(LogicalWriteInfo info) {
    return new DeltaWriteBuilder() {
      @Override
      public DeltaWrite build() {
        return new DeltaWrite() {
          @Override
          public String description() { return "spark-ext " + command + " on " + table.meta.fullName; }

          @Override
          public DeltaBatchWrite toBatch() {
            return new StoreBatchWrite(table.endpoint, table.meta, info, false, "insert");
          }
        };
      }
    };
  }
}
