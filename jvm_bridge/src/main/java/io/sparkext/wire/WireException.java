package io.sparkext.wire;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

/** An error reply of the protocol ({code, name, message, details}) or a local protocol failure. */
public class WireException extends RuntimeException {
  public final int code;
  public final String name;
  public final String serverMessage;
  public final ObjectNode details;

  public WireException(int code, String name, String message) {
    this(code, name, message, Json.obj());
  }

  public WireException(int code, String name, String message, ObjectNode details) {
    super(name + ": " + message);
    this.code = code;
    this.name = name;
    this.serverMessage = message;
    this.details = details;
  }

  public static WireException fromMetadata(ObjectNode m) {
    JsonNode c = m.get("code");
    int code = c != null && c.isInt() ? c.asInt() : 900;
    String name = m.hasNonNull("name") ? m.get("name").asText() : "ERROR_" + code;
    String msg = m.hasNonNull("message") ? m.get("message").asText() : "(no message)";
    JsonNode d = m.get("details");
    return new WireException(code, name, msg, d instanceof ObjectNode ? (ObjectNode) d : Json.obj());
  }

  /** Whether the connection must be closed after this error. */
  public boolean fatal() {
    return code >= 1 && code <= 6 && code != 3;
  }
}
