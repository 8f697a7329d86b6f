package io.sparkext.spark;

import io.sparkext.wire.Endpoint;
import io.sparkext.wire.StoreClient;
import io.sparkext.wire.TableMeta;
import io.sparkext.wire.WireException;
import org.apache.spark.sql.catalyst.analysis.IndexAlreadyExistsException;
import org.apache.spark.sql.catalyst.analysis.NoSuchIndexException;
import org.apache.spark.sql.connector.catalog.Column;
import org.apache.spark.sql.connector.catalog.MetadataColumn;
import org.apache.spark.sql.connector.catalog.SupportsMetadataColumns;
import org.apache.spark.sql.connector.catalog.SupportsRead;
import org.apache.spark.sql.connector.catalog.SupportsRowLevelOperations;
import org.apache.spark.sql.connector.catalog.SupportsWrite;
import org.apache.spark.sql.connector.catalog.TableCapability;
import org.apache.spark.sql.connector.catalog.constraints.Constraint;
import org.apache.spark.sql.connector.catalog.index.SupportsIndex;
import org.apache.spark.sql.connector.catalog.index.TableIndex;
import org.apache.spark.sql.connector.expressions.Expressions;
import org.apache.spark.sql.connector.expressions.NamedReference;
import org.apache.spark.sql.connector.read.ScanBuilder;
import org.apache.spark.sql.connector.write.LogicalWriteInfo;
import org.apache.spark.sql.connector.write.RowLevelOperationBuilder;
import org.apache.spark.sql.connector.write.RowLevelOperationInfo;
import org.apache.spark.sql.connector.write.WriteBuilder;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.sql.util.CaseInsensitiveStringMap;

import java.util.ArrayList;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/** A spark-ext table as a DSv2 table: reads, writes, row-level operations, indexes. */
public class StoreTable implements SupportsRead, SupportsWrite, SupportsRowLevelOperations, SupportsMetadataColumns, SupportsIndex {
  public static final String ROWID = "_rowid";

  final Endpoint endpoint;
  final TableMeta meta;

  public StoreTable(Endpoint endpoint, TableMeta meta) {
    this.endpoint = endpoint;
    this.meta = meta;
  }

  @Override
  public String name() { return meta.fullName; }

  boolean isKey(String col) {
    for (String k : meta.primaryKey) if (k.equals(col)) return true;
    return false;
  }

  @Override
  public Column[] columns() {
    Column[] out = new Column[meta.columnNames.size()];
    for (int i = 0; i < out.length; i++) {
      String c = meta.columnNames.get(i);
      out[i] = Column.create(c, Types.sparkType(meta.columnTypes.get(i)), meta.columnNullable.get(i) && !isKey(c));
    }
    return out;
  }

  /** The user columns as a Spark schema. */
  public StructType dataSchema() {
    StructField[] fs = new StructField[meta.columnNames.size()];
    Column[] cs = columns();
    for (int i = 0; i < fs.length; i++) fs[i] = DataTypes.createStructField(cs[i].name(), cs[i].dataType(), cs[i].nullable());
    return new StructType(fs);
  }

  @Override
  @SuppressWarnings("deprecation")
  public StructType schema() { return dataSchema(); }

  @Override
  public Map<String, String> properties() {
    Map<String, String> p = new LinkedHashMap<>(meta.options);
    p.put("buckets", Integer.toString(meta.numBuckets));
    if (!meta.primaryKey.isEmpty()) p.put("primary_key", String.join(",", meta.primaryKey));
    return p;
  }

  @Override
  public Constraint[] constraints() {
    if (meta.primaryKey.isEmpty()) return new Constraint[0];
    NamedReference[] refs = meta.primaryKey.stream().map(Expressions::column).toArray(NamedReference[]::new);
    return new Constraint[] {Constraint.primaryKey(meta.name + "_pk", refs).build()};
  }

  @Override
  public Set<TableCapability> capabilities() {
    return EnumSet.of(TableCapability.BATCH_READ, TableCapability.BATCH_WRITE, TableCapability.TRUNCATE,
        TableCapability.OVERWRITE_DYNAMIC);
  }

  // --- metadata columns ---------------------------------------------------------------------

  @Override
  public MetadataColumn[] metadataColumns() {
    if (!meta.hiddenRowId()) return new MetadataColumn[0];
    return new MetadataColumn[] {new MetadataColumn() {
      @Override
      public String name() { return ROWID; }

      @Override
      public DataType dataType() { return DataTypes.LongType; }

      @Override
      public boolean isNullable() { return false; }

      @Override
      public String comment() { return "hidden row id of a table without a primary key"; }
    }};
  }

  // --- reads and writes -----------------------------------------------------------------------

  @Override
  public ScanBuilder newScanBuilder(CaseInsensitiveStringMap options) {
    StoreScanBuilder b = new StoreScanBuilder(endpoint, meta, dataSchema());
    b.localPointReads = localPointReads && !"false".equalsIgnoreCase(options.getOrDefault("localPointReads", "true"));
    b.pushAggregates = !"false".equalsIgnoreCase(options.getOrDefault("pushAggregates", "true"));
    return b;
  }

  /** Whether point queries may run on the driver (catalog option localPointReads, default true). */
  boolean localPointReads = true;

  @Override
  public WriteBuilder newWriteBuilder(LogicalWriteInfo info) {
    return new StoreWriteBuilder(endpoint, meta, info, null);
  }

  @Override
  public RowLevelOperationBuilder newRowLevelOperationBuilder(RowLevelOperationInfo info) {
    return () -> new StoreDeltaOperation(this, info.command());
  }

  /** Row id columns: the primary key, or the hidden row id. */
  NamedReference[] rowId() {
    if (meta.hiddenRowId()) return new NamedReference[] {Expressions.column(ROWID)};
    return meta.primaryKey.stream().map(Expressions::column).toArray(NamedReference[]::new);
  }

  // --- indexes ----------------------------------------------------------------------------------

  private StoreClient client() { return endpoint.client(); }

  @Override
  public void createIndex(String indexName, NamedReference[] columns,
                          Map<NamedReference, Map<String, String>> columnProperties, Map<String, String> properties)
      throws IndexAlreadyExistsException {
    List<String> cols = new ArrayList<>();
    for (NamedReference r : columns) cols.add(String.join(".", r.fieldNames()));
    String kind = properties == null ? null : properties.get(PROP_TYPE);
    if (kind == null || kind.isEmpty()) kind = "hash";
    kind = kind.toLowerCase();
    if (kind.equals("btree") || kind.equals("sorted") || kind.equals("range")) kind = "ordered";
    try {
      client().createIndex(meta.namespace, meta.name, indexName, cols, kind);
    } catch (WireException e) {
      if (e.name.equals("INDEX_EXISTS")) throw new IndexAlreadyExistsException(indexName, meta.fullName, scala.Option.empty());
      throw Errors.spark(e);
    }
  }

  @Override
  public void dropIndex(String indexName) throws NoSuchIndexException {
    try {
      client().dropIndex(meta.namespace, meta.name, indexName);
    } catch (WireException e) {
      if (e.name.equals("NO_SUCH_INDEX")) throw new NoSuchIndexException(indexName, meta.fullName, scala.Option.empty());
      throw Errors.spark(e);
    }
  }

  @Override
  public boolean indexExists(String indexName) {
    for (TableIndex t : listIndexes()) if (t.indexName().equals(indexName)) return true;
    return false;
  }

  @Override
  public TableIndex[] listIndexes() {
    TableMeta m = client().getTable(meta.namespace, meta.name);
    List<TableIndex> out = new ArrayList<>();
    for (String[] ix : m.indexes) {
      NamedReference[] cols = new NamedReference[ix.length - 2];
      for (int i = 2; i < ix.length; i++) cols[i - 2] = Expressions.column(ix[i]);
      out.add(new TableIndex(ix[0], ix[1], cols, new HashMap<>(), new java.util.Properties()));
    }
    return out.toArray(new TableIndex[0]);
  }
}
