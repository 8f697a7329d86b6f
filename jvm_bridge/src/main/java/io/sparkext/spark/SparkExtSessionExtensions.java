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
 * <p>Injects {@link PointWriteRule} as a post-hoc resolution rule: an UPDATE or DELETE of one
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
    // Post-hoc: the rule must see the statement after the Resolution batch, where Spark's
    // RewriteUpdateTable / RewriteDeleteFromTable have turned it into a WriteDelta (they run
    // in that batch before any injected resolution rule could see the resolved UpdateTable).
    extensions.injectPostHocResolutionRule(new AbstractFunction1<SparkSession, Rule<LogicalPlan>>() {
      @Override
      public Rule<LogicalPlan> apply(SparkSession session) {
        return new PointWriteRule();
      }
    });
    return BoxedUnit.UNIT;
  }
}
