package io.sparkext.wire;

import java.io.Serializable;

/** Where a store server listens. */
public final class ServerAddr implements Serializable {
  public final String id;
  public final String host;
  public final int port;
  public final boolean up;

  public ServerAddr(String id, String host, int port, boolean up) {
    this.id = id;
    this.host = host;
    this.port = port;
    this.up = up;
  }
}
