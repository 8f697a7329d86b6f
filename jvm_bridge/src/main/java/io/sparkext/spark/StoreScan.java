package io.sparkext.spark;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.sparkext.wire.Endpoint;
import io.sparkext.wire.Json;
import io.sparkext.wire.ServerAddr;
import io.sparkext.wire.TableMeta;
import org.apache.spark.sql.connector.expressions.filter.Predicate;
import org.apache.spark.sql.connector.read.Batch;
import org.apache.spark.sql.connector.read.InputPartition;
import org.apache.spark.sql.connector.read.PartitionReaderFactory;
import org.apache.spark.sql.connector.read.Scan;
import org.apache.spark.sql.connector.read.SupportsReportPartitioning;
import org.apache.spark.sql.connector.read.partitioning.KeyGroupedPartitioning;
import org.apache.spark.sql.connector.read.partitioning.Partitioning;
import org.apache.spark.sql.connector.read.partitioning.UnknownPartitioning;
import org.apache.spark.sql.connector.expressions.Expressions;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.TreeSet;

/** A scan of a store table: one input partition per (selected) bucket, columnar Arrow reads. */
public class StoreScan implements Scan, Batch, SupportsReportPartitioning {
  private final Endpoint endpoint;
  private final TableMeta meta;
  private final StructType schema;
  private final List<JsonNode> conjuncts;
  private final List<Predicate> pushed;
  private final Integer limit;
  private final TreeSet<Integer> buckets;
  /** Non-null: each bucket answers partial aggregates instead of rows. */
  private final PushedAggregation agg;

  StoreScan(Endpoint endpoint, TableMeta meta, StructType schema, List<JsonNode> conjuncts, List<Predicate> pushed,
            Integer limit, PushedAggregation agg) {
    this.agg = agg;
    this.endpoint = endpoint;
    this.meta = meta;
    this.schema = schema;
    this.conjuncts = conjuncts;
    this.pushed = pushed;
    this.limit = limit;
    this.buckets = Predicates.buckets(meta, conjuncts);
  }

  @Override
  public StructType readSchema() { return schema; }

  /** The buckets pinned by equality on the full key, or null when the scan reads every bucket. */
  TreeSet<Integer> pointBuckets() { return buckets; }

  String whereJson() {
    if (conjuncts.isEmpty()) return null;
    if (conjuncts.size() == 1) return conjuncts.get(0).toString();
    ArrayNode a = Json.arr().add("and");
    conjuncts.forEach(a::add);
    return a.toString();
  }

  @Override
  public String description() {
    StringBuilder sb = new StringBuilder("SparkExtScan ").append(meta.fullName);
    sb.append(" PushedFilters: ").append(Arrays.toString(pushed.toArray()));
    if (!conjuncts.isEmpty()) sb.append(", where: ").append(whereJson());
    if (limit != null) sb.append(", PushedLimit: ").append(limit);
    if (agg != null) sb.append(", ").append(agg.describe());
    sb.append(", buckets: ").append(buckets == null ? "all " + meta.numBuckets : buckets.toString());
    return sb.toString();
  }

  @Override
  public Batch toBatch() { return this; }

  private int numPartitions() {
    int n = 0;
    for (int b = 0; b < meta.numBuckets; b++) if (buckets == null || buckets.contains(b)) n++;
    return n == 0 && agg != null && agg.groupBy.isEmpty() ? 1 : n;
  }

  /** Keyed tables report bucket(n, key...) partitioning: one partition per bucket, keyed by its number. */
  @Override
  public Partitioning outputPartitioning() {
    if (meta.hiddenRowId() || agg != null) return new UnknownPartitioning(numPartitions());
    for (String k : meta.primaryKey) {
      boolean present = false;
      for (String f : schema.fieldNames()) present |= f.equalsIgnoreCase(k);
      if (!present) return new UnknownPartitioning(numPartitions());
    }
    return new KeyGroupedPartitioning(
        new org.apache.spark.sql.connector.expressions.Expression[] {
            Expressions.bucket(meta.numBuckets, meta.primaryKey.toArray(new String[0]))},
        numPartitions());
  }

  @Override
  public InputPartition[] planInputPartitions() {
    List<InputPartition> out = new ArrayList<>();
    for (int b = 0; b < meta.numBuckets; b++) {
      if (buckets != null && !buckets.contains(b)) continue;
      ServerAddr s = meta.serverOf(b);
      out.add(new BucketPartition(b, s.host, s.port));
    }
    if (out.isEmpty() && agg != null && agg.groupBy.isEmpty()) {
      // Spark merges COUNT partials with SUM, which is NULL over no rows: one bucket (whose
      // rows the predicate cannot match either) answers the count 0 row.
      ServerAddr s = meta.serverOf(0);
      out.add(new BucketPartition(0, s.host, s.port));
    }
    return out.toArray(new InputPartition[0]);
  }

  @Override
  public PartitionReaderFactory createReaderFactory() {
    if (agg != null) {
      ObjectNode req = Json.obj();
      agg.addTo(req);
      return new StoreReaderFactory(endpoint, meta.fullName, new String[0], whereJson(), null, meta.columnNames.get(0),
          req.toString(), agg.replyIndex);
    }
    String[] cols = new String[schema.fields().length];
    String[] types = new String[cols.length];
    for (int i = 0; i < cols.length; i++) {
      StructField f = schema.fields()[i];
      cols[i] = f.name().equals(StoreTable.ROWID) ? StoreTable.ROWID : meta.columnNames.get(meta.columnIndex(f.name()));
      types[i] = meta.typeOf(cols[i]);
    }
    return new StoreReaderFactory(endpoint, meta.fullName, cols, whereJson(), limit, meta.columnNames.get(0), null, null);
  }
}
