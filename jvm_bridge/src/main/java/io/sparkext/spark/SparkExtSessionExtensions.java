package io.sparkext.spark;

import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.SparkSessionExtensions;
import org.apache.spark.sql.SparkSessionExtensionsProvider;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.catalyst.rules.Rule;
import scala.runtime.AbstractFunction1;
import scala.runtime.BoxedUnit;

/**
 * The spark-ext Spark SQL extensions ({@code spark.sql.extensions=io.sparkext.spark.SparkExtSessionExtensions}).
 *
 * <p>Injects {@link PointWriteRule} into the analyzer: an UPDATE or DELETE of one
 * row of a spark-ext table, named by its full primary key, becomes one request to the key's
 * store server instead of a Spark job. Without the extension those statements take Spark's
 * row-level path (same results, a job per statement).
 *
 * <p>Spark instantiates this class by name (a public no-argument constructor) and calls it once
 * per session with the session's extension points.
 */
public final class SparkExtSessionExtensions extends AbstractFunction1<SparkSessionExtensions, BoxedUnit>
    implements SparkSessionExtensionsProvider {

  @Override
  public BoxedUnit apply(SparkSessionExtensions extensions) {
    AbstractFunction1<SparkSession, Rule<LogicalPlan>> rule = new AbstractFunction1<SparkSession, Rule<LogicalPlan>>() {
      @Override
      public Rule<LogicalPlan> apply(SparkSession session) {
        return new PointWriteRule();
      }
    };
    // No injection point runs before Spark's RewriteUpdateTable / RewriteDeleteFromTable:
    // they sit in the analyzer's Resolution batch ahead of the injected rules and rewrite a
    // statement into a WriteDelta in the pass where it becomes resolved. An injected
    // resolution rule is the next thing to see it, in that same pass: replacing it there
    // spares the batch's further passes over the row-level plan (about 1-2 ms a statement).
    extensions.injectResolutionRule(rule);
    // And once more after the batch, should a WriteDelta reach the end of it (a no-op otherwise).
    extensions.injectPostHocResolutionRule(rule);
    return BoxedUnit.UNIT;
  }
}
