package io.sparkext.spark;

import org.apache.spark.sql.connector.write.WriterCommitMessage;

/** What a committed task tells the driver: its part name and the servers it prepared it on. */
public final class PartMessage implements WriterCommitMessage {
  public final String part;
  public final String[] servers;
  public final long rows;

  PartMessage(String part, String[] servers, long rows) {
    this.part = part;
    this.servers = servers;
    this.rows = rows;
  }
}
