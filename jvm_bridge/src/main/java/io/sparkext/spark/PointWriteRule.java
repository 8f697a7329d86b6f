package io.sparkext.spark;

import org.apache.spark.sql.catalyst.expressions.Alias;
import org.apache.spark.sql.catalyst.expressions.And;
import org.apache.spark.sql.catalyst.expressions.Attribute;
import org.apache.spark.sql.catalyst.expressions.AttributeReference;
import org.apache.spark.sql.catalyst.expressions.EqualTo;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.Literal;
import org.apache.spark.sql.catalyst.expressions.NamedExpression;
import org.apache.spark.sql.catalyst.expressions.Unevaluable;
import org.apache.spark.sql.catalyst.plans.logical.Filter;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.catalyst.plans.logical.Project;
import org.apache.spark.sql.catalyst.plans.logical.WriteDelta;
import org.apache.spark.sql.catalyst.rules.Rule;
import org.apache.spark.sql.catalyst.util.RowDeltaUtils;
import org.apache.spark.sql.connector.write.RowLevelOperation;
import org.apache.spark.sql.connector.write.RowLevelOperationTable;
import org.apache.spark.sql.execution.datasources.v2.DataSourceV2Relation;
import org.apache.spark.sql.types.DataType;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import scala.jdk.javaapi.CollectionConverters;

import java.util.ArrayList;
import java.util.List;

/**
 * Turns a single-row UPDATE or DELETE of a spark-ext table into a {@link PointWriteCommand}.
 *
 * <p>Runs in the analyzer's Resolution batch (and once more post-hoc), on the {@code WriteDelta}
 * that Spark's RewriteUpdateTable / RewriteDeleteFromTable built from the resolved statement
 * (assignments aligned to the table's columns, with Spark's casts and NOT NULL checks already in
 * the values). It qualifies when:
 * the target is a spark-ext table with a primary key; the condition is a conjunction of exactly
 * one {@code key_column = <constant>} per key column and nothing else; for UPDATE, no key column
 * is assigned and every assigned value is a constant expression (deterministic, no column
 * references, no subquery) of the column's own type. Anything else, or a plan of a shape this
 * rule does not know, is returned unchanged and runs Spark's row-level path.
 *
 * <p>{@code spark.conf.set("spark.sparkext.pointWrites", "false")} turns it off for a session.
 *
 * <p>Constants are only checked here; they are evaluated when the command runs, so EXPLAIN
 * never fails or writes.
 */
public final class PointWriteRule extends Rule<LogicalPlan> {
  /** Session setting that switches the rule off ({@code false}): every statement then takes Spark's path. */
  public static final String ENABLED = "spark.sparkext.pointWrites";
  private static final Logger LOG = LoggerFactory.getLogger(PointWriteRule.class);

  @Override
  public LogicalPlan apply(LogicalPlan plan) {
    if (!(plan instanceof WriteDelta)) return plan;  // only a whole UPDATE/DELETE statement
    if ("false".equalsIgnoreCase(conf().getConfString(ENABLED, "true").trim())) return plan;
    try {
      PointWriteCommand cmd = match((WriteDelta) plan);
      if (cmd != null) return cmd;
    } catch (RuntimeException e) {
      // An unexpected plan shape must never break the statement: the normal path still works.
      LOG.debug("spark-ext point write: not taken ({})", e.toString());
    }
    return plan;
  }

  /** The command for a qualifying statement, or null. O(columns + conjuncts). */
  static PointWriteCommand match(WriteDelta wd) {
    if (wd.write().isDefined() || !(wd.table() instanceof DataSourceV2Relation)) return null;
    if (!(wd.originalTable() instanceof DataSourceV2Relation)) return null;
    DataSourceV2Relation target = (DataSourceV2Relation) wd.table();
    if (!(target.table() instanceof RowLevelOperationTable)) return null;
    RowLevelOperationTable rlt = (RowLevelOperationTable) target.table();
    if (!(rlt.table() instanceof StoreTable) || !(rlt.operation() instanceof StoreDeltaOperation)) return null;
    StoreTable table = (StoreTable) rlt.table();
    RowLevelOperation.Command command = rlt.operation().command();
    if (command != RowLevelOperation.Command.UPDATE && command != RowLevelOperation.Command.DELETE) return null;
    if (table.meta.hiddenRowId()) return null;

    // query = Project(__row_operation, ..., Filter(condition, read relation))
    if (!(wd.query() instanceof Project)) return null;  // e.g. an Expand when a key column is set
    Project project = (Project) wd.query();
    if (!(project.child() instanceof Filter)) return null;
    Filter filter = (Filter) project.child();
    // The rewrite puts the same condition object in both places; compare cheaply first.
    boolean same = filter.condition() == wd.condition() || filter.condition().semanticEquals(wd.condition());
    if (!same || !(filter.child() instanceof DataSourceV2Relation)) {
      return null;
    }
    List<Attribute> cols = CollectionConverters.asJava(filter.child().output());
    int n = table.meta.columnNames.size();
    if (cols.size() != n) return null;
    for (int i = 0; i < n; i++) {
      if (!cols.get(i).name().equalsIgnoreCase(table.meta.columnNames.get(i))) return null;
    }
    List<NamedExpression> out = CollectionConverters.asJava(project.projectList());
    int op = command == RowLevelOperation.Command.UPDATE ? RowDeltaUtils.UPDATE_OPERATION() : RowDeltaUtils.DELETE_OPERATION();
    if (out.isEmpty() || !isOperation(out.get(0), op)) return null;

    Expression[] keys = keyConstants(wd.condition(), cols, table);
    if (keys == null) return null;

    List<String> setCols = new ArrayList<>();
    List<Expression> setValues = new ArrayList<>();
    if (command == RowLevelOperation.Command.UPDATE) {
      if (out.size() != 1 + n) return null;  // metadata or original row id columns: not this shape
      for (int i = 0; i < n; i++) {
        NamedExpression ne = out.get(1 + i);
        if (!(ne instanceof Alias) || !ne.name().equalsIgnoreCase(cols.get(i).name())) return null;
        Expression v = ((Alias) ne).child();
        while (v instanceof Alias) v = ((Alias) v).child();  // the aligned assignment names its value
        if (v instanceof AttributeReference && ((AttributeReference) v).exprId().equals(cols.get(i).exprId())) {
          continue;  // column left as it is
        }
        String col = table.meta.columnNames.get(i);
        if (table.isKey(col)) return null;  // a key change moves the row: Spark's path handles it
        if (!constant(v) || !v.dataType().sameType(cols.get(i).dataType())) return null;
        setCols.add(col);
        setValues.add(v);
      }
      if (setCols.isEmpty()) return null;  // nothing assigned: leave the no-op to Spark
    }
    return new PointWriteCommand(table, (DataSourceV2Relation) wd.originalTable(), command == RowLevelOperation.Command.DELETE,
        keys, setCols.toArray(new String[0]), setValues.toArray(new Expression[0]));
  }

  private static boolean isOperation(NamedExpression e, int op) {
    if (!(e instanceof Alias) || !e.name().equals(RowDeltaUtils.OPERATION_COLUMN())) return false;
    Expression c = ((Alias) e).child();
    return c instanceof Literal && Integer.valueOf(op).equals(((Literal) c).value());
  }

  /**
   * One constant per key column (in key order) when the condition is exactly
   * {@code k1 = c1 AND k2 = c2 ...} over the key columns, else null.
   */
  static Expression[] keyConstants(Expression condition, List<Attribute> cols, StoreTable table) {
    List<Expression> conjuncts = new ArrayList<>();
    split(condition, conjuncts);
    List<String> pk = table.meta.primaryKey;
    Expression[] keys = new Expression[pk.size()];
    for (Expression c : conjuncts) {
      if (!(c instanceof EqualTo)) return null;
      Expression l = ((EqualTo) c).left();
      Expression r = ((EqualTo) c).right();
      Expression attr = l instanceof AttributeReference ? l : r;
      Expression value = attr == l ? r : l;
      if (!(attr instanceof AttributeReference) || !constant(value)) return null;
      int k = keyIndex((AttributeReference) attr, cols, table);
      if (k < 0 || keys[k] != null) return null;  // not a key column, or one named twice
      DataType t = attr.dataType();
      if (!value.dataType().sameType(t) || !t.sameType(Types.sparkType(table.meta.typeOf(pk.get(k))))) return null;
      keys[k] = value;
    }
    for (Expression k : keys) if (k == null) return null;
    return keys;
  }

  private static void split(Expression e, List<Expression> out) {
    if (e instanceof And) {
      split(((And) e).left(), out);
      split(((And) e).right(), out);
    } else {
      out.add(e);
    }
  }

  /** Position in the primary key of the read relation's attribute, or -1. */
  private static int keyIndex(AttributeReference a, List<Attribute> cols, StoreTable table) {
    for (int i = 0; i < cols.size(); i++) {
      if (cols.get(i).exprId().equals(a.exprId())) return table.meta.primaryKey.indexOf(table.meta.columnNames.get(i));
    }
    return -1;
  }

  /** Deterministic, no column references, no subquery, and evaluable without a plan. */
  static boolean constant(Expression e) {
    return e.deterministic() && e.references().isEmpty() && evaluable(e);
  }

  private static boolean evaluable(Expression e) {
    if (e instanceof Unevaluable) return false;  // subqueries, placeholders, Python UDFs...
    for (Expression c : CollectionConverters.asJava(e.children())) {
      if (!evaluable(c)) return false;
    }
    return true;
  }
}
