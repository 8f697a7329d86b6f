package io.sparkext.test;

import com.fasterxml.jackson.databind.JsonNode;
import io.sparkext.wire.Json;
import io.sparkext.wire.KeyHash;

import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.time.LocalDate;
import java.util.Base64;

/** Checks every vector of tests/data/keyhash_vectors.json; prints "OK n" or the failures. */
public final class KeyHashCheck {
  public static void main(String[] args) throws Exception {
    JsonNode vectors = Json.MAPPER.readTree(Files.readAllBytes(Paths.get(args[0])));
    int ok = 0, bad = 0;
    for (JsonNode v : vectors) {
      JsonNode types = v.get("types"), values = v.get("values");
      long[] comps = new long[types.size()];
      for (int i = 0; i < comps.length; i++) comps[i] = component(types.get(i).asText(), values.get(i));
      long h = KeyHash.combine(comps);
      int bucket = KeyHash.bucketOfHash(h, v.get("num_buckets").asInt());
      boolean good = Long.toUnsignedString(h).equals(v.get("hash").asText()) && bucket == v.get("bucket").asInt();
      for (int i = 0; i < comps.length; i++) good &= Long.toUnsignedString(comps[i]).equals(v.get("components").get(i).asText());
      if (good) ok++;
      else {
        bad++;
        System.out.println("MISMATCH " + v + " got hash " + Long.toUnsignedString(h) + " bucket " + bucket);
      }
    }
    System.out.println((bad == 0 ? "OK " : "FAILED ") + ok + " " + bad);
    System.exit(bad == 0 ? 0 : 1);
  }

  static long component(String type, JsonNode v) {
    switch (type) {
      case "int8": case "int16": case "int32": case "int64": case "timestamp_tz": case "timestamp_ntz":
        return KeyHash.intComponent(v.asLong());
      case "bool":
        return KeyHash.intComponent(v.asBoolean() ? 1 : 0);
      case "date":
        return KeyHash.intComponent(LocalDate.parse(v.asText()).toEpochDay());
      case "string":
        return KeyHash.bytesComponent(v.asText().getBytes(StandardCharsets.UTF_8));
      case "binary":
        return KeyHash.bytesComponent(Base64.getDecoder().decode(v.asText()));
      default:
        if (type.startsWith("decimal(")) {
          int scale = Integer.parseInt(type.substring(type.indexOf(',') + 1, type.indexOf(')')).trim());
          return KeyHash.decimalComponent(new BigDecimal(v.asText()).setScale(scale).unscaledValue());
        }
        throw new IllegalArgumentException("unknown type " + type);
    }
  }
}
