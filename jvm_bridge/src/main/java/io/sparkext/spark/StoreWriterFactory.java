package io.sparkext.spark;

import io.sparkext.wire.Endpoint;
import io.sparkext.wire.Fence;
import io.sparkext.wire.TableMeta;
import org.apache.spark.TaskContext;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.connector.write.DeltaWriter;
import org.apache.spark.sql.connector.write.DeltaWriterFactory;
import org.apache.spark.sql.connector.write.LogicalWriteInfo;
import org.apache.spark.sql.types.StructType;

/** Serializable: makes one writer per task attempt, part = "partitionId-taskId-attempt". */
public final class StoreWriterFactory implements DeltaWriterFactory {
  final Endpoint endpoint;
  final TableMeta meta;
  final String txn;
  final String op;
  final StructType dataSchema;
  /** The driver's fence when the job was planned (null outside HA): the tasks send it. */
  final Fence fence = Fence.current();

  StoreWriterFactory(Endpoint endpoint, TableMeta meta, LogicalWriteInfo info, String txn, String op) {
    this.endpoint = endpoint;
    this.meta = meta;
    this.txn = txn;
    this.op = op;
    this.dataSchema = info.schema();
  }

  @Override
  public DeltaWriter<InternalRow> createWriter(int partitionId, long taskId) {
    TaskContext tc = TaskContext.get();
    int attempt = tc == null ? 0 : tc.attemptNumber();
    return new StoreWriter(this, partitionId, partitionId + "-" + taskId + "-" + attempt);
  }
}
