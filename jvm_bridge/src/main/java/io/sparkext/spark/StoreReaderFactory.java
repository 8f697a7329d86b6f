package io.sparkext.spark;

import org.apache.spark.sql.catalyst.InternalRow;
import io.sparkext.wire.Endpoint;
import org.apache.spark.sql.connector.read.InputPartition;
import org.apache.spark.sql.connector.read.PartitionReader;
import org.apache.spark.sql.connector.read.PartitionReaderFactory;
import org.apache.spark.sql.vectorized.ColumnarBatch;

/** Serializable: ships to executors; makes columnar readers of bucket partitions. */
public final class StoreReaderFactory implements PartitionReaderFactory {
  final Endpoint endpoint;
  final String table;
  final String[] columns;
  final String where;
  final Integer limit;
  final String anyColumn;
  /** Pushed aggregation: the SCAN fields {group_by, aggregates} as JSON, or null for a row scan. */
  final String aggregation;
  /** With an aggregation: the reply column of each output column (group columns may repeat). */
  final int[] replyIndex;

  StoreReaderFactory(Endpoint endpoint, String table, String[] columns, String where, Integer limit, String anyColumn,
                     String aggregation, int[] replyIndex) {
    this.endpoint = endpoint;
    this.table = table;
    this.columns = columns;
    this.where = where;
    this.limit = limit;
    this.anyColumn = anyColumn;
    this.aggregation = aggregation;
    this.replyIndex = replyIndex;
  }

  @Override
  public boolean supportColumnarReads(InputPartition partition) { return true; }

  @Override
  public PartitionReader<InternalRow> createReader(InputPartition partition) {
    throw new UnsupportedOperationException("spark-ext scans are columnar");
  }

  @Override
  public PartitionReader<ColumnarBatch> createColumnarReader(InputPartition partition) {
    return new StoreColumnarReader(this, (BucketPartition) partition);
  }
}
