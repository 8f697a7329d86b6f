package io.sparkext.spark;

import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.expressions.GenericInternalRow;
import org.apache.spark.sql.connector.read.HasPartitionKey;

/** One bucket of a table, read from the server that hosts it (its preferred location). */
public final class BucketPartition implements HasPartitionKey {
  public final int bucket;
  public final String host;
  public final int port;

  public BucketPartition(int bucket, String host, int port) {
    this.bucket = bucket;
    this.host = host;
    this.port = port;
  }

  @Override
  public InternalRow partitionKey() { return new GenericInternalRow(new Object[] {bucket}); }

  @Override
  public String[] preferredLocations() { return new String[] {host}; }
}
