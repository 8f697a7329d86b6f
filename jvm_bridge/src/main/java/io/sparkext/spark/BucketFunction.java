package io.sparkext.spark;

import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.connector.catalog.functions.BoundFunction;
import org.apache.spark.sql.connector.catalog.functions.ScalarFunction;
import org.apache.spark.sql.connector.catalog.functions.UnboundFunction;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;

/**
 * bucket(numBuckets, key columns...): the store's bucket of a key (the shared key hash), so
 * Spark can match the partitioning tables report and join tables bucketed alike without a shuffle.
 */
public final class BucketFunction implements UnboundFunction {
  @Override
  public String name() { return "bucket"; }

  @Override
  public String description() { return "bucket(numBuckets, key...) - the spark-ext bucket of a key"; }

  @Override
  public BoundFunction bind(StructType inputType) {
    StructField[] fs = inputType.fields();
    if (fs.length < 2 || !(fs[0].dataType().equals(DataTypes.IntegerType))) {
      throw new UnsupportedOperationException("bucket(numBuckets INT, key columns...)");
    }
    String[] types = new String[fs.length - 1];
    DataType[] in = new DataType[fs.length];
    in[0] = DataTypes.IntegerType;
    for (int i = 1; i < fs.length; i++) {
      types[i - 1] = Types.storeType(fs[i].name(), fs[i].dataType());
      in[i] = fs[i].dataType();
    }
    return new Bound(types, in);
  }

  static final class Bound implements ScalarFunction<Integer> {
    private final String[] types;
    private final DataType[] in;
    private final int[] pos;

    Bound(String[] types, DataType[] in) {
      this.types = types;
      this.in = in;
      this.pos = new int[types.length];
      for (int i = 0; i < pos.length; i++) pos[i] = i + 1;
    }

    @Override
    public DataType[] inputTypes() { return in; }

    @Override
    public DataType resultType() { return DataTypes.IntegerType; }

    @Override
    public boolean isResultNullable() { return true; }

    @Override
    public String name() { return "bucket"; }

    @Override
    public String canonicalName() { return "spark_ext.bucket(" + String.join(",", types) + ")"; }

    @Override
    public Integer produceResult(InternalRow args) {
      int b = Types.bucket(args, pos, types, args.getInt(0));
      return b < 0 ? null : b;
    }
  }
}
