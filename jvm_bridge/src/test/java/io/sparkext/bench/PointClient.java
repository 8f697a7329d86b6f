package io.sparkext.bench;

import java.io.Closeable;

/**
 * One connection's point operations on a key-value shaped store, as the load generator
 * drives them. Not thread-safe: each load thread has its own instance.
 */
interface PointClient extends Closeable {
  /**
   * The value stored under {@code key}, or null when the key is absent.
   *
   * @param key an existing key (an int64 id)
   * @return the value's bytes as the server sent them
   */
  byte[] get(long key);

  /**
   * Upserts {@code key} with {@code value} (one row, one statement).
   *
   * @param key an existing key
   * @param value the value's bytes
   */
  void put(long key, byte[] value);

  @Override
  void close();
}
