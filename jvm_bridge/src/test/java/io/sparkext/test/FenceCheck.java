package io.sparkext.test;

import io.sparkext.wire.Endpoint;
import io.sparkext.wire.Fence;
import io.sparkext.wire.StoreClient;
import io.sparkext.wire.WireException;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.ObjectInputStream;
import java.io.ObjectOutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.List;
import java.util.Map;

/**
 * The JVM's fence on DDL against a live server (a locator or the embedded server): sent
 * while leading, refused by the server when older than one it saw, refused here at once
 * after a loss; and it survives Java serialization (executor tasks get it that way).
 * Args: host port secretFile group. Prints one line per step.
 */
public final class FenceCheck {
  public static void main(String[] args) throws Exception {
    byte[] secret = new String(Files.readAllBytes(Paths.get(args[2])), StandardCharsets.UTF_8).trim().getBytes(StandardCharsets.UTF_8);
    StoreClient c = new Endpoint(args[0], Integer.parseInt(args[1]), secret).client();
    String g = args[3];
    System.out.println("NONE " + (Fence.current() == null) + " " + (Fence.forWrite() == null));
    Fence.lead(g, 3);
    System.out.println("LEAD3 " + attempt(c, "fc_lead3"));
    Fence.lead(g, 2);
    System.out.println("LEAD2 " + attempt(c, "fc_lead2"));
    Fence.lead(g, 4);
    Fence.lose(g, 3, "a late call about an earlier term");
    System.out.println("LATE " + (Fence.lostReason() == null));
    Fence.lose(g, 4, "renewal failed");
    System.out.println("LOST " + attempt(c, "fc_lost"));
    Fence.lose("other-group", 4, "not ours");
    Fence.lead(g, 5);
    System.out.println("RELEAD " + attempt(c, "fc_relead"));
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    try (ObjectOutputStream out = new ObjectOutputStream(bytes)) {
      out.writeObject(Fence.current());
    }
    Fence back;
    try (ObjectInputStream in = new ObjectInputStream(new ByteArrayInputStream(bytes.toByteArray()))) {
      back = (Fence) in.readObject();
    }
    System.out.println("SERIALIZED " + back + " " + back.stamp(io.sparkext.wire.Json.obj()));
    Fence.clear();
    System.out.println("CLEARED " + attempt(c, "fc_cleared"));
    System.out.println("NAMESPACES " + c.listNamespaces(List.of()));
  }

  private static String attempt(StoreClient c, String ns) {
    try {
      c.createNamespace(List.of(ns), Map.of(), false);
      return "ok";
    } catch (WireException e) {
      return e.name + " " + e.serverMessage;
    }
  }
}
