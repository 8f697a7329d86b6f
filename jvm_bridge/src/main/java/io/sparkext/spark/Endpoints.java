package io.sparkext.spark;

import com.fasterxml.jackson.databind.JsonNode;
import io.sparkext.wire.Endpoint;
import io.sparkext.wire.Json;
import io.sparkext.wire.StoreClient;
import io.sparkext.wire.WireException;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Map;

/**
 * Where the catalog finds spark-ext: options {@code locator=host:port} and {@code secretFile=...}
 * (or {@code secret=...}), else the embedded server of $SPARK_EXT_HOME (default ~/.spark-ext):
 * run/embedded.json {pid, host, port} and the secret file.
 */
public final class Endpoints {
  private Endpoints() {}

  public static Path home() {
    String h = System.getenv("SPARK_EXT_HOME");
    if (h == null || h.isEmpty()) h = System.getProperty("sparkext.home");
    if (h == null || h.isEmpty()) h = Paths.get(System.getProperty("user.home"), ".spark-ext").toString();
    return Paths.get(h);
  }

  static byte[] readSecret(Path p) {
    try {
      byte[] b = new String(Files.readAllBytes(p), StandardCharsets.UTF_8).trim().getBytes(StandardCharsets.UTF_8);
      return b.length == 0 ? null : b;
    } catch (IOException e) {
      throw new IllegalArgumentException("cannot read the spark-ext secret file " + p + ": " + e.getMessage());
    }
  }

  public static Endpoint resolve(Map<String, String> options) {
    String loc = get(options, "locator");
    byte[] secret = null;
    String sf = get(options, "secretFile");
    String s = get(options, "secret");
    if (sf != null) secret = readSecret(Paths.get(sf));
    else if (s != null) secret = s.trim().getBytes(StandardCharsets.UTF_8);
    if (loc != null) {
      int i = loc.lastIndexOf(':');
      if (i <= 0) throw new IllegalArgumentException("spark-ext option locator must be host:port, got '" + loc + "'");
      if (secret == null && sf == null && s == null && Files.exists(home().resolve("secret"))) {
        secret = readSecret(home().resolve("secret"));
      }
      Endpoint e = new Endpoint(loc.substring(0, i), Integer.parseInt(loc.substring(i + 1)), secret);
      check(e, "the locator " + loc);
      return e;
    }
    Path home = home();
    Path run = home.resolve("run").resolve("embedded.json");
    String hint = "no spark-ext server is running for " + home + ": start one with `spark-ext server start --embedded` "
        + "(or from Python: spark_ext.client.embedded.ensure_embedded()), or point the catalog at a cluster "
        + "with spark.sql.catalog.<name>.locator=host:port and spark.sql.catalog.<name>.secretFile=<path>";
    if (!Files.exists(run)) throw new IllegalStateException(hint);
    JsonNode info;
    try {
      info = Json.MAPPER.readTree(Files.readAllBytes(run));
    } catch (IOException e) {
      throw new IllegalStateException(hint + " (cannot read " + run + ": " + e.getMessage() + ")");
    }
    if (secret == null && Files.exists(home.resolve("secret"))) secret = readSecret(home.resolve("secret"));
    Endpoint e = new Endpoint(info.path("host").asText("127.0.0.1"), info.path("port").asInt(), secret);
    try {
      new StoreClient(e).ping();
    } catch (WireException ex) {
      throw new IllegalStateException(hint + " (" + run + " names " + e + ", which does not answer: " + ex.getMessage() + ")");
    }
    return e;
  }

  private static void check(Endpoint e, String what) {
    try {
      new StoreClient(e).ping();
    } catch (WireException ex) {
      throw new IllegalStateException("cannot reach spark-ext at " + what + ": " + ex.getMessage());
    }
  }

  /** Prints where the catalog would connect (or why it cannot): a quick check from the shell. */
  public static void main(String[] args) {
    try {
      System.out.println("spark-ext at " + resolve(new java.util.HashMap<>()));
    } catch (RuntimeException e) {
      System.err.println(e.getMessage());
      System.exit(1);
    }
  }

  private static String get(Map<String, String> o, String k) {
    if (o == null) return null;
    for (Map.Entry<String, String> e : o.entrySet()) if (e.getKey().equalsIgnoreCase(k)) return e.getValue();
    return null;
  }
}
