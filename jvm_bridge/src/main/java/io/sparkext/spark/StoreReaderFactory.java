package io.sparkext.spark;

import com.fasterxml.jackson.databind.node.ObjectNode;
import io.sparkext.wire.ConnectionPool;
import io.sparkext.wire.Endpoint;
import io.sparkext.wire.Json;
import io.sparkext.wire.Kinds;
import io.sparkext.wire.WireException;
import org.apache.spark.sql.catalyst.expressions.GenericInternalRow;
import org.apache.spark.sql.catalyst.InternalRow;
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
  final int countStars;

  StoreReaderFactory(Endpoint endpoint, String table, String[] columns, String where, Integer limit, String anyColumn,
                     int countStars) {
    this.countStars = countStars;
    this.endpoint = endpoint;
    this.table = table;
    this.columns = columns;
    this.where = where;
    this.limit = limit;
    this.anyColumn = anyColumn;
  }

  @Override
  public boolean supportColumnarReads(InputPartition partition) { return countStars == 0; }

  /** Row reads serve pushed COUNT(*): one row per bucket holding its count. */
  @Override
  public PartitionReader<InternalRow> createReader(InputPartition partition) {
    BucketPartition p = (BucketPartition) partition;
    ObjectNode m = Json.obj();
    m.put("table", table);
    if (where != null) m.set("where", Json.parseAny(where));
    m.putArray("buckets").add(p.bucket);
    long n;
    try {
      n = ConnectionPool.of(p.host, p.port, endpoint.secret).request(Kinds.COUNT, m, null, 0, true).meta.path("count").asLong();
    } catch (WireException e) {
      throw Errors.spark(e);
    }
    Object[] vals = new Object[countStars];
    java.util.Arrays.fill(vals, n);
    InternalRow row = new GenericInternalRow(vals);
    return new PartitionReader<InternalRow>() {
      private boolean done;

      @Override
      public boolean next() {
        if (done) return false;
        done = true;
        return true;
      }

      @Override
      public InternalRow get() { return row; }

      @Override
      public void close() {}
    };
  }

  @Override
  public PartitionReader<ColumnarBatch> createColumnarReader(InputPartition partition) {
    return new StoreColumnarReader(this, (BucketPartition) partition);
  }
}
