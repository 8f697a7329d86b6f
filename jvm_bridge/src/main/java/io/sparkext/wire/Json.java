package io.sparkext.wire;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.IOException;
import java.nio.charset.StandardCharsets;

/** Strict JSON for frame metadata (Jackson from Spark's jars). */
public final class Json {
  public static final ObjectMapper MAPPER = new ObjectMapper();

  private Json() {}

  public static ObjectNode obj() { return MAPPER.createObjectNode(); }

  public static ArrayNode arr() { return MAPPER.createArrayNode(); }

  public static byte[] encode(JsonNode n) {
    if (n == null || (n.isObject() && n.size() == 0)) return new byte[0];
    try {
      return MAPPER.writeValueAsBytes(n);
    } catch (IOException e) {
      throw new WireException(100, "BAD_ARGUMENT", "cannot encode metadata: " + e.getMessage());
    }
  }

  public static ObjectNode decode(byte[] b) {
    if (b.length == 0) return obj();
    try {
      JsonNode n = MAPPER.readTree(b);
      if (!(n instanceof ObjectNode)) throw new WireException(1, "MALFORMED", "metadata is not a JSON object");
      return (ObjectNode) n;
    } catch (IOException e) {
      throw new WireException(1, "MALFORMED", "metadata is not valid JSON: " + e.getMessage());
    }
  }

  public static ObjectNode parse(String s) {
    return decode(s.getBytes(StandardCharsets.UTF_8));
  }

  public static JsonNode parseAny(String s) {
    try {
      return MAPPER.readTree(s);
    } catch (IOException e) {
      throw new IllegalArgumentException(e);
    }
  }
}
