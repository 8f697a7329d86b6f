package io.sparkext.bench;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;

/**
 * Redis's RESP2 over one socket: {@code GET <id>} and {@code SET <id> <value>}, the key
 * being the id's decimal text (as the Python harness writes it). Requests are written as
 * RESP arrays of bulk strings; a reply is read fully before the next request.
 */
final class RespPointClient implements PointClient {
  private static final byte[] GET = "*2\r\n$3\r\nGET\r\n".getBytes(StandardCharsets.US_ASCII);
  private static final byte[] SET = "*3\r\n$3\r\nSET\r\n".getBytes(StandardCharsets.US_ASCII);
  private static final byte[] CRLF = {'\r', '\n'};

  private final String where;
  private final Socket socket;
  private final InputStream in;
  private final OutputStream out;
  private final ByteArrayOutputStream line = new ByteArrayOutputStream(64);

  RespPointClient(String host, int port, int timeoutMs) {
    where = host + ":" + port;
    try {
      socket = new Socket();
      socket.connect(new InetSocketAddress(host, port), timeoutMs);
      socket.setTcpNoDelay(true);
      socket.setSoTimeout(timeoutMs);
      in = new BufferedInputStream(socket.getInputStream(), 1 << 16);
      out = new BufferedOutputStream(socket.getOutputStream(), 1 << 16);
    } catch (IOException e) {
      throw new UncheckedIOException("cannot connect to redis at " + where + ": " + e.getMessage(), e);
    }
  }

  private void bulk(byte[] b) throws IOException {
    out.write('$');
    out.write(Integer.toString(b.length).getBytes(StandardCharsets.US_ASCII));
    out.write(CRLF);
    out.write(b);
    out.write(CRLF);
  }

  private static byte[] keyText(long key) {
    return Long.toString(key).getBytes(StandardCharsets.US_ASCII);
  }

  /** One CRLF-terminated line, without the CRLF. */
  private String readLine() throws IOException {
    line.reset();
    while (true) {
      int c = in.read();
      if (c < 0) throw new IOException("redis at " + where + " closed the connection");
      if (c == '\r') {
        if (in.read() != '\n') throw new IOException("redis at " + where + " sent a line without LF after CR");
        return line.toString(StandardCharsets.UTF_8);
      }
      line.write(c);
    }
  }

  private void readFully(byte[] b) throws IOException {
    int off = 0;
    while (off < b.length) {
      int n = in.read(b, off, b.length - off);
      if (n < 0) throw new IOException("redis at " + where + " closed the connection in a reply");
      off += n;
    }
  }

  /** A bulk-string reply's bytes (null for a nil reply); error replies are thrown. */
  private byte[] readBulk() throws IOException {
    int type = in.read();
    String rest = readLine();
    if (type == '-') throw new IllegalStateException("redis at " + where + " answered an error: " + rest);
    if (type != '$') throw new IllegalStateException("redis at " + where + " answered '" + (char) type + rest + "', expected a bulk string");
    int n = Integer.parseInt(rest);
    if (n < 0) return null;
    byte[] b = new byte[n];
    readFully(b);
    if (in.read() != '\r' || in.read() != '\n') throw new IOException("redis at " + where + " sent a bulk string without CRLF");
    return b;
  }

  @Override
  public byte[] get(long key) {
    try {
      out.write(GET);
      bulk(keyText(key));
      out.flush();
      return readBulk();
    } catch (IOException e) {
      throw new UncheckedIOException("GET " + key + " from redis at " + where + " failed: " + e.getMessage(), e);
    }
  }

  @Override
  public void put(long key, byte[] value) {
    try {
      out.write(SET);
      bulk(keyText(key));
      bulk(value);
      out.flush();
      int type = in.read();
      String rest = readLine();
      if (type != '+' || !rest.equals("OK")) {
        throw new IllegalStateException("SET " + key + " on redis at " + where + " answered '" + (char) type + rest + "', expected +OK");
      }
    } catch (IOException e) {
      throw new UncheckedIOException("SET " + key + " on redis at " + where + " failed: " + e.getMessage(), e);
    }
  }

  @Override
  public void close() {
    try {
      socket.close();
    } catch (IOException e) {
      // closing after the run: nothing left to lose
    }
  }
}
