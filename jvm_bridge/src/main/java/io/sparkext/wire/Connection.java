package io.sparkext.wire;

import com.fasterxml.jackson.databind.node.ObjectNode;

import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.Closeable;
import java.io.DataInputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.security.MessageDigest;
import java.security.SecureRandom;

/**
 * One client connection: HELLO/AUTH handshake (mutual HMAC-SHA256 when a secret is set),
 * then requests answered in order. Not thread-safe: one user at a time (see {@link ConnectionPool}).
 */
public final class Connection implements Closeable {
  private static final SecureRandom RANDOM = new SecureRandom();
  public static final String CLIENT_NAME = "spark-ext-jvm/0.1.0";

  public final String host;
  public final int port;
  private final Socket socket;
  private final DataInputStream in;
  private final OutputStream out;
  private long nextId = 1;
  private int maxFrame = Frame.DEFAULT_MAX_FRAME;
  private volatile boolean broken;
  public ObjectNode hello;

  public Connection(String host, int port, byte[] secret, int timeoutMs) {
    this.host = host;
    this.port = port;
    try {
      socket = new Socket();
      socket.connect(new InetSocketAddress(host, port), Math.min(timeoutMs, 10000));
      socket.setTcpNoDelay(true);
      socket.setSoTimeout(timeoutMs);
      in = new DataInputStream(new BufferedInputStream(socket.getInputStream(), 1 << 16));
      out = new BufferedOutputStream(socket.getOutputStream(), 1 << 16);
    } catch (IOException e) {
      throw new WireException(-1, "CONNECTION", "cannot connect to spark-ext at " + host + ":" + port + ": " + e.getMessage());
    }
    try {
      handshake(secret);
    } catch (RuntimeException e) {
      close();
      throw e;
    }
  }

  private void handshake(byte[] secret) {
    ObjectNode h = Json.obj();
    h.putArray("versions").add(1);
    h.put("client", CLIENT_NAME);
    h.put("max_frame", Frame.DEFAULT_MAX_FRAME);
    hello = request(Kinds.HELLO, h).meta;
    if (hello.path("max_frame").isInt()) maxFrame = Math.min(Frame.DEFAULT_MAX_FRAME, hello.get("max_frame").asInt());
    if (!hello.path("auth_required").asBoolean(false)) return;
    if (secret == null) {
      throw new WireException(5, "AUTH_REQUIRED", "spark-ext at " + host + ":" + port
          + " requires a secret: set the catalog option secretFile (or use the embedded server's $SPARK_EXT_HOME/secret)");
    }
    byte[] serverNonce = hex(hello.path("nonce").asText(""));
    if (serverNonce.length != 32) throw new WireException(6, "AUTH_FAILED", "server sent a bad nonce");
    byte[] clientNonce = new byte[32];
    RANDOM.nextBytes(clientNonce);
    ObjectNode a = Json.obj();
    a.put("client_nonce", hex(clientNonce));
    a.put("proof", hex(hmac(secret, serverNonce, clientNonce)));
    ObjectNode reply = request(Kinds.AUTH, a).meta;
    byte[] expected = hmac(secret, clientNonce, serverNonce);
    if (!MessageDigest.isEqual(expected, hex(reply.path("proof").asText("")))) {
      throw new WireException(6, "AUTH_FAILED", "server failed to prove it knows the secret");
    }
  }

  public static byte[] hmac(byte[] key, byte[] a, byte[] b) {
    try {
      Mac mac = Mac.getInstance("HmacSHA256");
      mac.init(new SecretKeySpec(key, "HmacSHA256"));
      mac.update(a);
      mac.update(b);
      return mac.doFinal();
    } catch (Exception e) {
      throw new IllegalStateException(e);
    }
  }

  public static String hex(byte[] b) {
    StringBuilder sb = new StringBuilder(b.length * 2);
    for (byte x : b) sb.append(Character.forDigit((x >> 4) & 0xF, 16)).append(Character.forDigit(x & 0xF, 16));
    return sb.toString();
  }

  public static byte[] hex(String s) {
    if (s.length() % 2 != 0) return new byte[0];
    byte[] b = new byte[s.length() / 2];
    for (int i = 0; i < b.length; i++) {
      int hi = Character.digit(s.charAt(2 * i), 16), lo = Character.digit(s.charAt(2 * i + 1), 16);
      if (hi < 0 || lo < 0) return new byte[0];
      b[i] = (byte) ((hi << 4) | lo);
    }
    return b;
  }

  public boolean isBroken() { return broken; }

  public Frame request(int kind, ObjectNode meta) {
    return request(kind, meta, null, 0);
  }

  /** Send one request and read its single reply; error replies are thrown as WireException. */
  public Frame request(int kind, ObjectNode meta, byte[] body, int flags) {
    send(kind, meta, body, flags);
    Frame f = readReply();
    if (f.more()) {
      // A streamed reply where one was expected: drain it to keep the stream aligned.
      Frame g = f;
      while (g.more()) g = readReply();
    }
    return f.raiseForError();
  }

  /** Send a request whose reply may be streamed; read frames with {@link #readReply()} until !more(). */
  public void send(int kind, ObjectNode meta, byte[] body, int flags) {
    if (broken) throw new WireException(-1, "CONNECTION", "connection to " + host + ":" + port + " is broken");
    Frame f = new Frame(kind, nextId++, flags, meta, body);
    byte[] bytes = f.encode(maxFrame);
    try {
      out.write(bytes);
      out.flush();
    } catch (IOException e) {
      broken = true;
      throw new WireException(-1, "CONNECTION", "sending to " + host + ":" + port + " failed: " + e.getMessage());
    }
  }

  public Frame readReply() {
    try {
      Frame f = Frame.read(in, maxFrame);
      if (f == null) {
        broken = true;
        throw new WireException(-1, "CONNECTION", "spark-ext at " + host + ":" + port + " closed the connection");
      }
      if (f.isError()) {
        WireException e = WireException.fromMetadata(f.meta);
        if (e.fatal()) broken = true;
      }
      return f;
    } catch (IOException e) {
      broken = true;
      throw new WireException(-1, "CONNECTION", "reading from " + host + ":" + port + " failed: " + e.getMessage());
    } catch (WireException e) {
      broken = true;
      throw e;
    }
  }

  public void markBroken() { broken = true; }

  @Override
  public void close() {
    broken = true;
    try {
      socket.close();
    } catch (IOException e) {
      // nothing to do
    }
  }

  static UncheckedIOException unchecked(IOException e) { return new UncheckedIOException(e); }
}
