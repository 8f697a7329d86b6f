package io.sparkext.wire;

import com.fasterxml.jackson.databind.node.ObjectNode;

import java.util.Arrays;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedDeque;

/** A thread-safe pool of connections to one address; pools are shared per JVM. */
public final class ConnectionPool {
  private static final ConcurrentHashMap<String, ConnectionPool> POOLS = new ConcurrentHashMap<>();
  public static final int TIMEOUT_MS = Integer.getInteger("sparkext.timeoutMs", 300_000);
  private static final int MAX_IDLE = 16;

  public final String host;
  public final int port;
  private final byte[] secret;
  private final ConcurrentLinkedDeque<Connection> idle = new ConcurrentLinkedDeque<>();

  private ConnectionPool(String host, int port, byte[] secret) {
    this.host = host;
    this.port = port;
    this.secret = secret;
  }

  public static ConnectionPool of(String host, int port, byte[] secret) {
    String key = host + ":" + port + ":" + (secret == null ? "-" : Integer.toHexString(Arrays.hashCode(secret)));
    return POOLS.computeIfAbsent(key, k -> new ConnectionPool(host, port, secret));
  }

  /** A connection for exclusive use; give it back with {@link #release}. */
  public Connection borrow() {
    Connection c;
    while ((c = idle.pollFirst()) != null) {
      if (!c.isBroken()) return c;
      c.close();
    }
    return new Connection(host, port, secret, TIMEOUT_MS);
  }

  public void release(Connection c) {
    if (c == null) return;
    if (c.isBroken() || idle.size() >= MAX_IDLE) {
      c.close();
    } else {
      idle.addFirst(c);
    }
  }

  /** One request/reply; idempotent requests are retried once on a stale pooled connection. */
  public Frame request(int kind, ObjectNode meta, byte[] body, int flags, boolean idempotent) {
    for (int attempt = 0; ; attempt++) {
      Connection c = borrow();
      try {
        Frame f = c.request(kind, meta, body, flags);
        release(c);
        return f;
      } catch (WireException e) {
        release(c);
        if (e.code == -1 && idempotent && attempt == 0) continue;
        throw e;
      }
    }
  }

  public Frame request(int kind, ObjectNode meta) {
    return request(kind, meta, null, 0, true);
  }

  public String address() { return host + ":" + port; }
}
