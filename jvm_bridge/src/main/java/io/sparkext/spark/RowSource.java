package io.sparkext.spark;

import org.apache.spark.sql.connector.catalog.Identifier;
import org.apache.spark.sql.connector.catalog.Table;
import org.apache.spark.sql.connector.catalog.TableProvider;
import org.apache.spark.sql.connector.expressions.Transform;
import org.apache.spark.sql.sources.DataSourceRegister;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.sql.util.CaseInsensitiveStringMap;

import java.util.Map;

/**
 * The "row" data source: makes {@code USING row} a DSv2 provider (so the session catalog
 * extension gets the CREATE TABLE), and lets {@code spark.read.format("row").option("table", "ns.t")}
 * read a spark-ext table without a catalog.
 */
public class RowSource implements TableProvider, DataSourceRegister {
  @Override
  public String shortName() { return "row"; }

  private StoreTable load(Map<String, String> options) {
    String name = null;
    for (Map.Entry<String, String> e : options.entrySet()) {
      if (e.getKey().equalsIgnoreCase("table") || e.getKey().equalsIgnoreCase("path")) name = e.getValue();
    }
    if (name == null) throw new IllegalArgumentException("format(\"row\") needs option table=<namespace.table>");
    SparkExtCatalog c = new SparkExtCatalog();
    c.initialize("row", new CaseInsensitiveStringMap(withSessionEndpoint(options)));
    String[] parts = name.split("\\.");
    Identifier ident = Identifier.of(java.util.Arrays.copyOf(parts, parts.length - 1), parts[parts.length - 1]);
    try {
      return (StoreTable) c.loadTable(ident);
    } catch (org.apache.spark.sql.catalyst.analysis.NoSuchTableException e) {
      throw new IllegalArgumentException("no spark-ext table " + name, e);
    }
  }

  /** Without a locator option, use the one configured for a spark-ext catalog of the active session. */
  static Map<String, String> withSessionEndpoint(Map<String, String> options) {
    for (String k : options.keySet()) if (k.equalsIgnoreCase("locator")) return options;
    Map<String, String> out = new java.util.HashMap<>(options);
    try {
      Map<String, String> conf = scala.jdk.javaapi.CollectionConverters.asJava(
          org.apache.spark.sql.SparkSession.active().conf().getAll());
      for (Map.Entry<String, String> e : conf.entrySet()) {
        String k = e.getKey();
        if (k.startsWith("spark.sql.catalog.") && k.split("\\.").length == 4
            && e.getValue().startsWith("io.sparkext.spark.")) {
          String loc = conf.get(k + ".locator");
          if (loc == null) continue;
          out.put("locator", loc);
          String sf = conf.get(k + ".secretFile");
          if (sf != null) out.put("secretFile", sf);
          return out;
        }
      }
    } catch (RuntimeException e) {
      // no active session: the embedded default applies
    }
    return out;
  }

  @Override
  public StructType inferSchema(CaseInsensitiveStringMap options) {
    return load(options.asCaseSensitiveMap()).dataSchema();
  }

  @Override
  public Table getTable(StructType schema, Transform[] partitioning, Map<String, String> properties) {
    return load(properties);
  }
}
