package io.sparkext.wire;

import org.apache.arrow.memory.BufferAllocator;
import org.apache.arrow.memory.RootAllocator;
import org.apache.arrow.vector.VectorSchemaRoot;
import org.apache.arrow.vector.ipc.ArrowStreamWriter;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;

/** Arrow IPC stream helpers; one root allocator per JVM, child allocators per user. */
public final class ArrowIO {
  private static RootAllocator root;

  private ArrowIO() {}

  public static synchronized BufferAllocator allocator(String name) {
    if (root == null) root = new RootAllocator(Long.MAX_VALUE);
    return root.newChildAllocator(name, 0, Long.MAX_VALUE);
  }

  /** The root's current rows as one IPC stream (schema + one batch + end marker). */
  public static byte[] writeStream(VectorSchemaRoot r) {
    ByteArrayOutputStream bos = new ByteArrayOutputStream(Math.max(1024, (int) Math.min(Integer.MAX_VALUE / 2, estimate(r))));
    try (ArrowStreamWriter w = new ArrowStreamWriter(r, null, bos)) {
      w.start();
      w.writeBatch();
      w.end();
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    return bos.toByteArray();
  }

  private static long estimate(VectorSchemaRoot r) {
    long n = 0;
    for (var v : r.getFieldVectors()) n += v.getBufferSize();
    return n + 1024;
  }
}
