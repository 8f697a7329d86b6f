package io.sparkext.wire;

import java.io.Serializable;

/** How to reach a spark-ext cluster: the locator (or embedded server) address and the secret. */
public final class Endpoint implements Serializable {
  public final String host;
  public final int port;
  public final byte[] secret;

  public Endpoint(String host, int port, byte[] secret) {
    this.host = host;
    this.port = port;
    this.secret = secret;
  }

  public StoreClient client() { return new StoreClient(this); }

  public ConnectionPool pool(ServerAddr s) { return ConnectionPool.of(s.host, s.port, secret); }

  @Override
  public String toString() { return host + ":" + port; }
}
