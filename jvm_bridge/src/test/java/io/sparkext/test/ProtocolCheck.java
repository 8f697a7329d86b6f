package io.sparkext.test;

import io.sparkext.wire.Connection;
import io.sparkext.wire.Json;
import io.sparkext.wire.Kinds;
import io.sparkext.wire.WireException;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;

/** Handshake against a live server: PING with the right secret works, a wrong secret is refused. Args: host port secretFile */
public final class ProtocolCheck {
  public static void main(String[] args) throws Exception {
    String host = args[0];
    int port = Integer.parseInt(args[1]);
    byte[] secret = new String(Files.readAllBytes(Paths.get(args[2])), StandardCharsets.UTF_8).trim().getBytes(StandardCharsets.UTF_8);
    try (Connection c = new Connection(host, port, secret, 10000)) {
      var r = c.request(Kinds.PING, Json.obj());
      System.out.println("PING " + r.meta.path("pong").asBoolean());
      try {
        c.request(0xF0F0, Json.obj());
      } catch (WireException e) {
        System.out.println("UNKNOWN_KIND " + e.name);
      }
      System.out.println("AFTER_ERROR " + c.request(Kinds.PING, Json.obj()).meta.path("pong").asBoolean());
    }
    try (Connection c = new Connection(host, port, "wrong".getBytes(StandardCharsets.UTF_8), 10000)) {
      System.out.println("WRONG_SECRET accepted");
    } catch (WireException e) {
      System.out.println("WRONG_SECRET " + e.name);
    }
    try (Connection c = new Connection(host, port, null, 10000)) {
      System.out.println("NO_SECRET accepted");
    } catch (WireException e) {
      System.out.println("NO_SECRET " + e.name);
    }
  }
}
