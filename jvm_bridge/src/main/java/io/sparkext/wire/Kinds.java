package io.sparkext.wire;

/** Message kinds (docs/protocol.md, mirrored from spark_ext/wire/kinds.py). */
public final class Kinds {
  private Kinds() {}

  public static final int HELLO = 0x0001, AUTH = 0x0002, PING = 0x0003, STATUS = 0x0005;
  public static final int LIST_SERVERS = 0x0103;
  public static final int CREATE_NAMESPACE = 0x0200, DROP_NAMESPACE = 0x0201, LIST_NAMESPACES = 0x0202,
      GET_NAMESPACE = 0x0203, ALTER_NAMESPACE = 0x0204;
  public static final int CREATE_TABLE = 0x0210, DROP_TABLE = 0x0211, ALTER_TABLE = 0x0212, RENAME_TABLE = 0x0213,
      GET_TABLE = 0x0214, LIST_TABLES = 0x0215, CREATE_INDEX = 0x0216, DROP_INDEX = 0x0217;
  public static final int GET = 0x0300, GET_MANY = 0x0301, SCAN = 0x0302, COUNT = 0x0305;
  public static final int PUT = 0x0400, INSERT = 0x0401, UPDATE = 0x0402, DELETE = 0x0403, TRUNCATE = 0x0406;
  public static final int TXN_STAGE = 0x0500, TXN_PREPARE = 0x0501, TXN_COMMIT = 0x0502, TXN_ABORT = 0x0503,
      TXN_STATUS = 0x0504;

  public static final int FLAG_HAS_ARROW = 0x01, FLAG_COMPACT_ROWS = 0x02, FLAG_MORE = 0x04, FLAG_IS_ERROR = 0x08;
}
