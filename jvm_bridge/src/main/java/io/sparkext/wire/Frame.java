package io.sparkext.wire;

import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.DataInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * One frame: a 22-byte little-endian header (magic "SX", version, kind u16, flags u8,
 * request id u64, metadata length u32, body length u32), JSON metadata, then the body.
 */
public final class Frame {
  public static final int HEADER_SIZE = 22;
  public static final int VERSION = 1;
  public static final int DEFAULT_MAX_FRAME = 64 * 1024 * 1024;

  public final int kind;
  public final long requestId;
  public final int flags;
  public final ObjectNode meta;
  public final byte[] body;

  public Frame(int kind, long requestId, int flags, ObjectNode meta, byte[] body) {
    this.kind = kind;
    this.requestId = requestId;
    this.flags = flags;
    this.meta = meta == null ? Json.obj() : meta;
    this.body = body == null ? new byte[0] : body;
  }

  public boolean isError() { return (flags & Kinds.FLAG_IS_ERROR) != 0; }

  public boolean more() { return (flags & Kinds.FLAG_MORE) != 0; }

  public boolean hasArrow() { return (flags & Kinds.FLAG_HAS_ARROW) != 0; }

  public Frame raiseForError() {
    if (isError()) throw WireException.fromMetadata(meta);
    return this;
  }

  /** The frame as bytes (header + metadata + body). */
  public byte[] encode(int maxFrame) {
    byte[] m = Json.encode(meta);
    long total = (long) HEADER_SIZE + m.length + body.length;
    if (total > maxFrame) {
      throw new WireException(2, "FRAME_TOO_LARGE",
          "frame of " + total + " bytes exceeds the cap of " + maxFrame + " bytes");
    }
    ByteBuffer bb = ByteBuffer.allocate((int) total).order(ByteOrder.LITTLE_ENDIAN);
    bb.put((byte) 'S').put((byte) 'X').put((byte) VERSION).putShort((short) kind).put((byte) flags)
        .putLong(requestId).putInt(m.length).putInt(body.length).put(m).put(body);
    return bb.array();
  }

  public void writeTo(OutputStream out, int maxFrame) throws IOException {
    out.write(encode(maxFrame));
    out.flush();
  }

  /** Read one frame; null at a clean end of stream. */
  public static Frame read(DataInputStream in, int maxFrame) throws IOException {
    byte[] h = new byte[HEADER_SIZE];
    int first = in.read(h, 0, 1);
    if (first < 0) return null;
    in.readFully(h, 1, HEADER_SIZE - 1);
    ByteBuffer bb = ByteBuffer.wrap(h).order(ByteOrder.LITTLE_ENDIAN);
    if (bb.get(0) != 'S' || bb.get(1) != 'X') throw new WireException(1, "MALFORMED", "bad magic in reply");
    int version = bb.get(2) & 0xFF;
    if (version != VERSION) throw new WireException(4, "UNSUPPORTED_VERSION", "reply has protocol version " + version);
    int kind = bb.getShort(3) & 0xFFFF;
    int flags = bb.get(5) & 0xFF;
    long rid = bb.getLong(6);
    long mlen = bb.getInt(14) & 0xFFFFFFFFL;
    long blen = bb.getInt(18) & 0xFFFFFFFFL;
    if (HEADER_SIZE + mlen + blen > maxFrame) {
      throw new WireException(2, "FRAME_TOO_LARGE", "reply frame declares " + (HEADER_SIZE + mlen + blen) + " bytes");
    }
    byte[] m = new byte[(int) mlen];
    in.readFully(m);
    byte[] b = new byte[(int) blen];
    in.readFully(b);
    return new Frame(kind, rid, flags, Json.decode(m), b);
  }

  static int readAtLeastOne(InputStream in) throws IOException {
    return in.read();
  }
}
