package io.sparkext.spark;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.sparkext.wire.Endpoint;
import io.sparkext.wire.Json;
import io.sparkext.wire.StoreClient;
import io.sparkext.wire.TableMeta;
import io.sparkext.wire.WireException;
import org.apache.spark.sql.catalyst.analysis.NamespaceAlreadyExistsException;
import org.apache.spark.sql.catalyst.analysis.NoSuchNamespaceException;
import org.apache.spark.sql.catalyst.analysis.NoSuchTableException;
import org.apache.spark.sql.catalyst.analysis.NonEmptyNamespaceException;
import org.apache.spark.sql.catalyst.analysis.TableAlreadyExistsException;
import org.apache.spark.sql.connector.catalog.Column;
import org.apache.spark.sql.connector.catalog.FunctionCatalog;
import org.apache.spark.sql.connector.catalog.functions.UnboundFunction;
import org.apache.spark.sql.catalyst.analysis.NoSuchFunctionException;
import org.apache.spark.sql.connector.catalog.Identifier;
import org.apache.spark.sql.connector.catalog.NamespaceChange;
import org.apache.spark.sql.connector.catalog.SupportsNamespaces;
import org.apache.spark.sql.connector.catalog.Table;
import org.apache.spark.sql.connector.catalog.TableCatalog;
import org.apache.spark.sql.connector.catalog.TableCatalogCapability;
import org.apache.spark.sql.connector.catalog.TableChange;
import org.apache.spark.sql.connector.catalog.TableInfo;
import org.apache.spark.sql.connector.catalog.constraints.Constraint;
import org.apache.spark.sql.connector.catalog.constraints.PrimaryKey;
import org.apache.spark.sql.connector.expressions.NamedReference;
import org.apache.spark.sql.connector.expressions.Transform;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.sql.util.CaseInsensitiveStringMap;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * A Spark catalog over spark-ext: table metadata lives in the locator, data in the store servers.
 * Configure: {@code spark.sql.catalog.store=io.sparkext.spark.SparkExtCatalog}, optionally
 * {@code .locator=host:port} and {@code .secretFile=path} (default: the embedded server).
 */
public class SparkExtCatalog implements TableCatalog, SupportsNamespaces, FunctionCatalog {
  /** Table properties that are Spark's own bookkeeping, not options of the store table. */
  static final Set<String> RESERVED = new HashSet<>(Arrays.asList(
      "provider", "owner", "location", "is_managed_location", "external", "table_type", "comment", "collation"));

  private String name;
  private CaseInsensitiveStringMap options;
  private volatile Endpoint endpoint;
  private int defaultBuckets = 8;

  @Override
  public void initialize(String name, CaseInsensitiveStringMap options) {
    this.name = name;
    this.options = options;
    if (options.containsKey("buckets")) defaultBuckets = Integer.parseInt(options.get("buckets"));
  }

  @Override
  public String name() { return name; }

  /** Resolved on first use, so a missing server fails the first statement with a clear message. */
  public Endpoint endpoint() {
    Endpoint e = endpoint;
    if (e == null) {
      synchronized (this) {
        if (endpoint == null) endpoint = Endpoints.resolve(options.asCaseSensitiveMap());
        e = endpoint;
      }
    }
    return e;
  }

  StoreClient client() { return endpoint().client(); }

  @Override
  public String[] defaultNamespace() { return new String[] {"default"}; }

  @Override
  public Set<TableCatalogCapability> capabilities() {
    return EnumSet.of(TableCatalogCapability.SUPPORT_TABLE_CONSTRAINT);
  }

  static List<String> ns(String[] namespace) {
    return namespace == null || namespace.length == 0 ? List.of("default") : Arrays.asList(namespace);
  }

  static List<String> ns(Identifier ident) { return ns(ident.namespace()); }

  // --- tables -----------------------------------------------------------------------------

  @Override
  public Identifier[] listTables(String[] namespace) throws NoSuchNamespaceException {
    try {
      List<String> ts = client().listTables(ns(namespace));
      Identifier[] out = new Identifier[ts.size()];
      for (int i = 0; i < out.length; i++) out[i] = Identifier.of(ns(namespace).toArray(new String[0]), ts.get(i));
      return out;
    } catch (WireException e) {
      if (e.name.equals("NO_SUCH_NAMESPACE")) throw new NoSuchNamespaceException(namespace);
      throw Errors.spark(e);
    }
  }

  @Override
  public Table loadTable(Identifier ident) throws NoSuchTableException {
    StoreTable t = new StoreTable(endpoint(), loadMeta(ident));
    t.localPointReads = !"false".equalsIgnoreCase(options.getOrDefault("localPointReads", "true"));
    return t;
  }

  TableMeta loadMeta(Identifier ident) throws NoSuchTableException {
    try {
      return client().getTable(ns(ident), ident.name());
    } catch (WireException e) {
      if (e.name.equals("NO_SUCH_TABLE") || e.name.equals("NO_SUCH_NAMESPACE") || e.name.equals("BAD_ARGUMENT")) {
        throw new NoSuchTableException(ident);
      }
      throw Errors.spark(e);
    }
  }

  @Override
  public void invalidateTable(Identifier ident) {}

  @Override
  public Table createTable(Identifier ident, TableInfo info) throws TableAlreadyExistsException, NoSuchNamespaceException {
    List<String> pk = new ArrayList<>();
    for (Constraint c : info.constraints()) {
      if (c instanceof PrimaryKey) {
        for (NamedReference r : ((PrimaryKey) c).columns()) pk.add(String.join(".", r.fieldNames()));
      } else {
        throw new UnsupportedOperationException("spark-ext tables support PRIMARY KEY constraints only, not "
            + c.toDDL());
      }
    }
    return create(ident, info.columns(), info.partitions(), info.properties(), pk);
  }

  @Override
  public Table createTable(Identifier ident, Column[] columns, Transform[] partitions, Map<String, String> properties)
      throws TableAlreadyExistsException, NoSuchNamespaceException {
    return create(ident, columns, partitions, properties, new ArrayList<>());
  }

  @Override
  public Table createTable(Identifier ident, StructType schema, Transform[] partitions, Map<String, String> properties)
      throws TableAlreadyExistsException, NoSuchNamespaceException {
    Column[] cols = new Column[schema.fields().length];
    for (int i = 0; i < cols.length; i++) {
      StructField f = schema.fields()[i];
      cols[i] = Column.create(f.name(), f.dataType(), f.nullable());
    }
    return create(ident, cols, partitions, properties, new ArrayList<>());
  }

  private Table create(Identifier ident, Column[] columns, Transform[] partitions, Map<String, String> properties,
                       List<String> pk) throws TableAlreadyExistsException, NoSuchNamespaceException {
    if (partitions != null && partitions.length > 0) {
      throw new UnsupportedOperationException("spark-ext tables are not partitioned (PARTITIONED BY "
          + Arrays.toString(partitions) + "): rows are bucketed by primary key; set TBLPROPERTIES ('buckets'='N')");
    }
    Map<String, String> opts = new LinkedHashMap<>();
    int buckets = defaultBuckets;
    for (Map.Entry<String, String> e : properties.entrySet()) {
      String k = e.getKey();
      if (k.startsWith(TableCatalog.OPTION_PREFIX)) k = k.substring(TableCatalog.OPTION_PREFIX.length());
      String lk = k.toLowerCase(Locale.ROOT);
      if (RESERVED.contains(lk) || lk.equals("path")) continue;
      if (lk.equals("buckets") || lk.equals("num_buckets")) {
        buckets = Integer.parseInt(e.getValue().trim());
      } else if (lk.equals("primary_key") || lk.equals("primarykey")) {
        if (pk.isEmpty()) for (String c : e.getValue().split(",")) if (!c.trim().isEmpty()) pk.add(c.trim());
      } else {
        opts.put(k, e.getValue());
      }
    }
    String provider = properties.get(TableCatalog.PROP_PROVIDER);
    if (provider != null) opts.put("provider", provider);
    List<String> nsl = ns(ident);
    ObjectNode spec = Json.obj();
    spec.put("name", String.join(".", nsl) + "." + ident.name());
    var fields = spec.putArray("fields");
    Set<String> seen = new HashSet<>();
    for (Column c : columns) {
      String type = Types.storeType(c.name(), c.dataType());
      boolean key = pk.stream().anyMatch(p -> p.equalsIgnoreCase(c.name()));
      ObjectNode f = fields.addObject();
      f.put("name", c.name());
      f.put("type", type);
      f.put("nullable", c.nullable() && !key);
      seen.add(c.name().toLowerCase(Locale.ROOT));
    }
    for (int i = 0; i < pk.size(); i++) {
      String p = pk.get(i);
      if (!seen.contains(p.toLowerCase(Locale.ROOT))) {
        throw new IllegalArgumentException("PRIMARY KEY column '" + p + "' is not a column of " + ident);
      }
      for (Column c : columns) if (c.name().equalsIgnoreCase(p)) pk.set(i, c.name());
    }
    var pka = spec.putArray("primary_key");
    pk.forEach(pka::add);
    spec.put("num_buckets", buckets);
    ObjectNode o = spec.putObject("options");
    opts.forEach(o::put);
    try {
      return new StoreTable(endpoint(), client().createTable(nsl, ident.name(), spec, false));
    } catch (WireException e) {
      if (e.name.equals("TABLE_EXISTS")) throw new TableAlreadyExistsException(ident);
      if (e.name.equals("NO_SUCH_NAMESPACE")) throw new NoSuchNamespaceException(ident.namespace());
      throw Errors.spark(e);
    }
  }

  @Override
  public Table alterTable(Identifier ident, TableChange... changes) throws NoSuchTableException {
    Map<String, String> set = new LinkedHashMap<>();
    List<String> remove = new ArrayList<>();
    ArrayNode add = Json.arr();
    Set<String> adding = new HashSet<>();
    String table = String.join(".", ns(ident)) + "." + ident.name();
    for (TableChange c : changes) {
      if (c instanceof TableChange.SetProperty) {
        TableChange.SetProperty sp = (TableChange.SetProperty) c;
        set.put(sp.property(), sp.value());
      } else if (c instanceof TableChange.RemoveProperty) {
        remove.add(((TableChange.RemoveProperty) c).property());
      } else if (c instanceof TableChange.AddColumn) {
        add.add(newColumn(table, (TableChange.AddColumn) c, adding));
      } else {
        throw new UnsupportedOperationException("spark-ext does not support this ALTER TABLE change of " + table + ": "
            + c.getClass().getSimpleName() + " (supported: ADD COLUMNS, RENAME TO, SET/UNSET TBLPROPERTIES)");
      }
    }
    for (String k : set.keySet()) {
      String lk = k.toLowerCase(Locale.ROOT);
      if (lk.equals("buckets") || lk.equals("num_buckets") || lk.equals("primary_key") || lk.equals("primarykey")) {
        throw new UnsupportedOperationException("the bucket count and primary key of a spark-ext table cannot be changed ("
            + table + ", property '" + k + "')");
      }
    }
    loadMeta(ident);
    try {
      TableMeta meta = null;
      if (add.size() > 0) meta = client().addColumns(ns(ident), ident.name(), add);
      if (!set.isEmpty() || !remove.isEmpty() || meta == null) {
        meta = client().alterOptions(ns(ident), ident.name(), set, remove);
      }
      return new StoreTable(endpoint(), meta);
    } catch (WireException e) {
      if (e.name.equals("NO_SUCH_TABLE")) throw new NoSuchTableException(ident);
      throw Errors.spark(e);
    }
  }

  /**
   * One ADD COLUMNS entry in the locator's form ({name, type, nullable: true}), checked before any call:
   * top-level, nullable, no default, no position, a supported type, a name not given twice.
   */
  static ObjectNode newColumn(String table, TableChange.AddColumn a, Set<String> adding) {
    String[] path = a.fieldNames();
    String col = String.join(".", path);
    if (path.length != 1) {
      throw new UnsupportedOperationException("cannot add column '" + col + "' to " + table
          + ": spark-ext tables have no nested fields (add a top-level column)");
    }
    if (!a.isNullable()) {
      throw new UnsupportedOperationException("cannot add column '" + col + "' to " + table
          + " as NOT NULL: a column added to an existing table must be nullable (existing rows read NULL)");
    }
    if (a.defaultValue() != null) {
      throw new UnsupportedOperationException("cannot add column '" + col + "' to " + table
          + " with a DEFAULT: spark-ext tables do not support column defaults (existing rows read NULL)");
    }
    if (a.position() != null) {
      throw new UnsupportedOperationException("cannot add column '" + col + "' to " + table + " at position "
          + a.position() + ": spark-ext adds new columns after the existing ones (drop FIRST/AFTER)");
    }
    String type;
    try {
      type = Types.storeType(col, a.dataType());
    } catch (IllegalArgumentException e) {
      throw new IllegalArgumentException("cannot add to " + table + ": " + e.getMessage());
    }
    if (!adding.add(col.toLowerCase(Locale.ROOT))) {
      throw new IllegalArgumentException("cannot add column '" + col + "' to " + table + " twice in one statement");
    }
    ObjectNode f = Json.obj();
    f.put("name", col);
    f.put("type", type);
    f.put("nullable", true);
    return f;
  }

  @Override
  public boolean dropTable(Identifier ident) {
    try {
      return client().dropTable(ns(ident), ident.name(), true);
    } catch (WireException e) {
      if (e.name.equals("NO_SUCH_NAMESPACE")) return false;
      throw Errors.spark(e);
    }
  }

  /**
   * {@code ALTER TABLE ns.t RENAME TO t2} (same namespace: Spark passes the new name without one) or
   * {@code RENAME TO ns2.t2} (another namespace of this catalog).
   */
  @Override
  public void renameTable(Identifier from, Identifier to) throws NoSuchTableException, TableAlreadyExistsException {
    List<String> toNs = to.namespace() == null || to.namespace().length == 0 ? ns(from) : ns(to);
    if (to.name() == null || to.name().isEmpty()) {
      throw new IllegalArgumentException("cannot rename " + String.join(".", ns(from)) + "." + from.name()
          + ": the new name is empty");
    }
    try {
      client().renameTable(ns(from), from.name(), toNs, to.name());
    } catch (WireException e) {
      if (e.name.equals("NO_SUCH_TABLE")) throw new NoSuchTableException(from);
      if (e.name.equals("TABLE_EXISTS")) throw new TableAlreadyExistsException(Identifier.of(toNs.toArray(new String[0]), to.name()));
      throw Errors.spark(e);
    }
  }

  // --- namespaces -------------------------------------------------------------------------

  @Override
  public String[][] listNamespaces() throws NoSuchNamespaceException {
    return listNamespaces(new String[0]);
  }

  @Override
  public String[][] listNamespaces(String[] parent) throws NoSuchNamespaceException {
    try {
      List<List<String>> all = client().listNamespaces(Arrays.asList(parent));
      List<String[]> out = new ArrayList<>();
      for (List<String> n : all) {
        if (n.size() == parent.length + 1 && n.subList(0, parent.length).equals(Arrays.asList(parent))) {
          out.add(n.toArray(new String[0]));
        }
      }
      return out.toArray(new String[0][]);
    } catch (WireException e) {
      if (e.name.equals("NO_SUCH_NAMESPACE")) throw new NoSuchNamespaceException(parent);
      throw Errors.spark(e);
    }
  }

  @Override
  public boolean namespaceExists(String[] namespace) {
    try {
      client().namespaceProperties(Arrays.asList(namespace));
      return true;
    } catch (WireException e) {
      if (e.name.equals("NO_SUCH_NAMESPACE") || e.name.equals("BAD_ARGUMENT")) return false;
      throw Errors.spark(e);
    }
  }

  @Override
  public Map<String, String> loadNamespaceMetadata(String[] namespace) throws NoSuchNamespaceException {
    try {
      ObjectNode p = client().namespaceProperties(Arrays.asList(namespace));
      Map<String, String> out = new HashMap<>();
      var it = p.fields();
      while (it.hasNext()) {
        Map.Entry<String, JsonNode> e = it.next();
        out.put(e.getKey(), e.getValue().asText());
      }
      return out;
    } catch (WireException e) {
      if (e.name.equals("NO_SUCH_NAMESPACE") || e.name.equals("BAD_ARGUMENT")) throw new NoSuchNamespaceException(namespace);
      throw Errors.spark(e);
    }
  }

  @Override
  public void createNamespace(String[] namespace, Map<String, String> metadata) throws NamespaceAlreadyExistsException {
    try {
      client().createNamespace(Arrays.asList(namespace), metadata, false);
    } catch (WireException e) {
      if (e.name.equals("NAMESPACE_EXISTS")) throw new NamespaceAlreadyExistsException(namespace);
      throw Errors.spark(e);
    }
  }

  @Override
  public void alterNamespace(String[] namespace, NamespaceChange... changes) {
    throw new UnsupportedOperationException("spark-ext cannot alter namespace properties yet");
  }

  @Override
  public boolean dropNamespace(String[] namespace, boolean cascade) throws NoSuchNamespaceException, NonEmptyNamespaceException {
    try {
      client().dropNamespace(Arrays.asList(namespace), cascade, false);
      return true;
    } catch (WireException e) {
      if (e.name.equals("NO_SUCH_NAMESPACE")) throw new NoSuchNamespaceException(namespace);
      if (e.name.equals("NAMESPACE_NOT_EMPTY")) throw new NonEmptyNamespaceException(namespace);
      throw Errors.spark(e);
    }
  }

  // --- functions ----------------------------------------------------------------------------

  @Override
  public Identifier[] listFunctions(String[] namespace) {
    return new Identifier[] {Identifier.of(namespace, "bucket")};
  }

  @Override
  public UnboundFunction loadFunction(Identifier ident) throws NoSuchFunctionException {
    if (ident.name().equalsIgnoreCase("bucket")) return new BucketFunction();
    throw new NoSuchFunctionException(ident);
  }
}
