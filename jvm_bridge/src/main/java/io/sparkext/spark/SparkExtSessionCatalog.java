package io.sparkext.spark;

import io.sparkext.wire.WireException;
import org.apache.spark.sql.catalyst.analysis.NoSuchNamespaceException;
import org.apache.spark.sql.catalyst.analysis.NoSuchTableException;
import org.apache.spark.sql.catalyst.analysis.TableAlreadyExistsException;
import org.apache.spark.sql.connector.catalog.Column;
import org.apache.spark.sql.connector.catalog.DelegatingCatalogExtension;
import org.apache.spark.sql.connector.catalog.Identifier;
import org.apache.spark.sql.connector.catalog.Table;
import org.apache.spark.sql.connector.catalog.TableCatalog;
import org.apache.spark.sql.connector.catalog.TableCatalogCapability;
import org.apache.spark.sql.connector.catalog.TableChange;
import org.apache.spark.sql.connector.catalog.TableInfo;
import org.apache.spark.sql.connector.expressions.Transform;
import org.apache.spark.sql.util.CaseInsensitiveStringMap;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * The session catalog extension: {@code spark.sql.catalog.spark_catalog=io.sparkext.spark.SparkExtSessionCatalog}.
 * {@code CREATE TABLE t (...) USING row} creates a spark-ext table in the default catalog; every
 * other table still goes to Spark's own session catalog. Name lookups try spark-ext first.
 */
public class SparkExtSessionCatalog extends DelegatingCatalogExtension {
  static final Set<String> PROVIDERS = new HashSet<>(Arrays.asList("row", "spark-ext", "sparkext", "io.sparkext.spark.rowsource"));
  private final SparkExtCatalog store = new SparkExtCatalog();

  @Override
  public void initialize(String name, CaseInsensitiveStringMap options) {
    super.initialize(name, options);
    store.initialize(name, options);
  }

  static boolean ours(Map<String, String> properties) {
    String p = properties == null ? null : properties.get(TableCatalog.PROP_PROVIDER);
    return p != null && PROVIDERS.contains(p.toLowerCase(Locale.ROOT));
  }

  @Override
  public Set<TableCatalogCapability> capabilities() {
    Set<TableCatalogCapability> c = new LinkedHashSet<>(super.capabilities());
    c.add(TableCatalogCapability.SUPPORT_TABLE_CONSTRAINT);
    return c;
  }

  /** The spark-ext table of that name, or null when spark-ext has none (or is not running). */
  private Table storeTable(Identifier ident) {
    if (ident.namespace().length > 1) return null;
    try {
      return store.loadTable(ident);
    } catch (NoSuchTableException | IllegalStateException e) {
      return null;
    } catch (Errors.StoreException e) {
      return null;
    }
  }

  @Override
  public Table loadTable(Identifier ident) throws NoSuchTableException {
    Table t = storeTable(ident);
    return t != null ? t : super.loadTable(ident);
  }

  @Override
  public boolean tableExists(Identifier ident) {
    return storeTable(ident) != null || super.tableExists(ident);
  }

  @Override
  public Identifier[] listTables(String[] namespace) throws NoSuchNamespaceException {
    List<Identifier> out = new ArrayList<>(Arrays.asList(super.listTables(namespace)));
    try {
      out.addAll(Arrays.asList(store.listTables(namespace)));
    } catch (NoSuchNamespaceException | IllegalStateException | Errors.StoreException e) {
      // nothing of spark-ext here
    }
    return out.toArray(new Identifier[0]);
  }

  @Override
  public Table createTable(Identifier ident, TableInfo info) throws TableAlreadyExistsException, NoSuchNamespaceException {
    if (ours(info.properties())) {
      ensureNamespace(ident);
      return store.createTable(ident, info);
    }
    return super.createTable(ident, info);
  }

  @Override
  public Table createTable(Identifier ident, Column[] columns, Transform[] partitions, Map<String, String> properties)
      throws TableAlreadyExistsException, NoSuchNamespaceException {
    if (ours(properties)) {
      ensureNamespace(ident);
      return store.createTable(ident, columns, partitions, properties);
    }
    return super.createTable(ident, columns, partitions, properties);
  }

  private void ensureNamespace(Identifier ident) {
    String[] ns = ident.namespace().length == 0 ? new String[] {"default"} : ident.namespace();
    try {
      store.client().createNamespace(Arrays.asList(ns), null, true);
    } catch (WireException e) {
      throw Errors.spark(e);
    }
  }

  @Override
  public Table alterTable(Identifier ident, TableChange... changes) throws NoSuchTableException {
    return storeTable(ident) != null ? store.alterTable(ident, changes) : super.alterTable(ident, changes);
  }

  @Override
  public void renameTable(Identifier from, Identifier to) throws NoSuchTableException, TableAlreadyExistsException {
    if (storeTable(from) != null) {
      store.renameTable(from, to);
    } else {
      super.renameTable(from, to);
    }
  }

  @Override
  public boolean dropTable(Identifier ident) {
    return storeTable(ident) != null ? store.dropTable(ident) : super.dropTable(ident);
  }

  @Override
  public boolean purgeTable(Identifier ident) {
    return storeTable(ident) != null ? store.dropTable(ident) : super.purgeTable(ident);
  }

  /** The bucket transform of spark-ext tables (their reported partitioning) resolves here too. */
  @Override
  public org.apache.spark.sql.connector.catalog.functions.UnboundFunction loadFunction(Identifier ident)
      throws org.apache.spark.sql.catalyst.analysis.NoSuchFunctionException {
    if (ident.namespace().length == 0 && ident.name().equalsIgnoreCase("bucket")) return new BucketFunction();
    return super.loadFunction(ident);
  }
}
