package io.sparkext.spark;

import io.sparkext.wire.Json;
import io.sparkext.wire.WireException;

/** Maps error frame metadata (JSON, one per argument) with Errors.spark and prints each result's message. */
public final class ErrorsCheck {
  public static void main(String[] args) {
    for (String a : args) {
      RuntimeException e = Errors.spark(WireException.fromMetadata(Json.parse(a)));
      System.out.println("MAPPED " + e.getMessage());
    }
  }
}
