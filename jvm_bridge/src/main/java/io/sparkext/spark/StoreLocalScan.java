package io.sparkext.spark;

import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.connector.read.InputPartition;
import org.apache.spark.sql.connector.read.LocalScan;
import org.apache.spark.sql.connector.read.PartitionReader;
import org.apache.spark.sql.connector.read.PartitionReaderFactory;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.sql.vectorized.ColumnarBatch;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;

/**
 * A point query (equality on the full key: a few buckets, few rows) answered on the driver:
 * Spark runs it as a local table scan, without scheduling a job.
 */
final class StoreLocalScan implements LocalScan {
  private final StoreScan scan;
  private InternalRow[] rows;

  StoreLocalScan(StoreScan scan) { this.scan = scan; }

  @Override
  public StructType readSchema() { return scan.readSchema(); }

  @Override
  public String description() { return "Local" + scan.description(); }

  @Override
  public InternalRow[] rows() {
    if (rows != null) return rows;
    List<InternalRow> out = new ArrayList<>();
    PartitionReaderFactory f = scan.createReaderFactory();
    for (InputPartition p : scan.planInputPartitions()) {
      try (PartitionReader<ColumnarBatch> r = f.createColumnarReader(p)) {
        while (r.next()) {
          Iterator<InternalRow> it = r.get().rowIterator();
          while (it.hasNext()) out.add(it.next().copy());
        }
      } catch (IOException e) {
        throw new UncheckedIOException(e);
      }
    }
    rows = out.toArray(new InternalRow[0]);
    return rows;
  }
}
