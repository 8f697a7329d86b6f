package io.sparkext.spark;

import io.sparkext.wire.WireException;

import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** Store errors as exceptions Spark shows well; the server's message (naming table, column and value) is kept. */
public final class Errors {
  private Errors() {}

  /** A store-side failure: the message is the server's own, prefixed by its error name. */
  public static final class StoreException extends RuntimeException {
    public final String code;

    public StoreException(WireException e) {
      this(e, e.name, e.serverMessage);
    }

    StoreException(WireException e, String code, String message) {
      super("[spark-ext " + code + "] " + message, e);
      this.code = code;
    }
  }

  private static final Pattern EARLIER = Pattern.compile("failed earlier: ([A-Za-z]+)Error: (.*)$", Pattern.DOTALL);

  public static RuntimeException spark(WireException e) {
    if (e.name.equals("TXN_STATE")) {
      // A retried task attempt meets the transaction its first attempt poisoned: report the
      // original violation (e.g. DUPLICATE_KEY naming table, column and value), not the state.
      // Servers carry it in the details (protocol section 14); older ones only in the message.
      if (e.details.hasNonNull("cause_code") && e.details.hasNonNull("cause_message")) {
        return new StoreException(e, e.details.get("cause_code").asText(),
            e.details.get("cause_message").asText() + " (found by an earlier attempt of this statement)");
      }
      Matcher m = EARLIER.matcher(e.serverMessage);
      if (m.find()) {
        String code = m.group(1).replaceAll("([a-z])([A-Z])", "$1_$2").toUpperCase();
        return new StoreException(e, code, m.group(2) + " (found by an earlier attempt of this statement)");
      }
    }
    return new StoreException(e);
  }
}
