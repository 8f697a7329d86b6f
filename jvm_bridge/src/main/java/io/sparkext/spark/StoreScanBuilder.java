package io.sparkext.spark;

import com.fasterxml.jackson.databind.JsonNode;
import io.sparkext.wire.Endpoint;
import io.sparkext.wire.TableMeta;
import org.apache.spark.sql.connector.expressions.filter.Predicate;
import org.apache.spark.sql.connector.read.Scan;
import org.apache.spark.sql.connector.read.ScanBuilder;
import org.apache.spark.sql.connector.read.SupportsPushDownLimit;
import org.apache.spark.sql.connector.read.SupportsPushDownRequiredColumns;
import org.apache.spark.sql.connector.read.SupportsPushDownV2Filters;
import org.apache.spark.sql.connector.expressions.aggregate.Aggregation;
import org.apache.spark.sql.connector.read.SupportsPushDownAggregates;
import org.apache.spark.sql.types.StructType;

import java.util.ArrayList;
import java.util.List;

/** Filters, columns, limits and aggregates pushed to the store servers. */
public class StoreScanBuilder implements ScanBuilder, SupportsPushDownV2Filters, SupportsPushDownRequiredColumns,
    SupportsPushDownLimit, SupportsPushDownAggregates {
  private final Endpoint endpoint;
  private final TableMeta meta;
  private StructType required;
  private final List<Predicate> pushed = new ArrayList<>();
  private final List<JsonNode> conjuncts = new ArrayList<>();
  private Integer limit;
  private PushedAggregation agg;
  private final boolean aggregates;

  public StoreScanBuilder(Endpoint endpoint, TableMeta meta, StructType schema) {
    this(endpoint, meta, schema, true);
  }

  /** Point queries on the driver (no Spark job); the catalog option localPointReads=false turns it off. */
  boolean localPointReads = true;
  /** Aggregate push-down; the read option pushAggregates=false turns it off (Spark aggregates the rows). */
  boolean pushAggregates = true;

  public StoreScanBuilder(Endpoint endpoint, TableMeta meta, StructType schema, boolean aggregates) {
    this.aggregates = aggregates;
    this.endpoint = endpoint;
    this.meta = meta;
    this.required = schema;
  }

  @Override
  public Predicate[] pushPredicates(Predicate[] predicates) {
    List<Predicate> rest = new ArrayList<>();
    for (Predicate p : predicates) {
      JsonNode j = Predicates.translate(meta, p);
      if (j == null) {
        rest.add(p);
      } else {
        pushed.add(p);
        conjuncts.add(j);
      }
    }
    return rest.toArray(new Predicate[0]);
  }

  @Override
  public Predicate[] pushedPredicates() { return pushed.toArray(new Predicate[0]); }

  @Override
  public void pruneColumns(StructType requiredSchema) { this.required = requiredSchema; }

  @Override
  public boolean pushLimit(int n) {
    limit = n;
    return true;
  }

  @Override
  public boolean isPartiallyPushed() { return true; }

  /**
   * COUNT(*), COUNT(x), SUM, MIN, MAX (AVG arrives as SUM and COUNT) of columns or arithmetic
   * expressions, grouped by columns or arithmetic expressions ({@code k % 100}), are computed
   * per bucket by the servers; Spark merges the partial results.
   * Anything else is refused and Spark aggregates the rows itself (see PushedAggregation).
   */
  @Override
  public boolean pushAggregation(Aggregation aggregation) {
    if (!aggregates || !pushAggregates) return false;
    PushedAggregation p = PushedAggregation.of(meta, aggregation);
    if (p == null) return false;
    agg = p;
    return true;
  }

  @Override
  public boolean supportCompletePushDown(Aggregation aggregation) { return false; }

  @Override
  public Scan build() {
    if (agg != null) return new StoreScan(endpoint, meta, agg.schema, conjuncts, pushed, null, agg);
    StoreScan scan = new StoreScan(endpoint, meta, required, conjuncts, pushed, limit, null);
    if (aggregates && localPointReads && scan.pointBuckets() != null && scan.pointBuckets().size() <= 16) {
      return new StoreLocalScan(scan);
    }
    return scan;
  }
}
