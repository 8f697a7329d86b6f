package io.sparkext.spark;

import io.sparkext.wire.Connection;
import io.sparkext.wire.Json;
import io.sparkext.wire.Kinds;
import io.sparkext.wire.WireException;
import org.apache.spark.SparkConf;
import org.apache.spark.SparkContext;
import org.apache.spark.api.plugin.DriverPlugin;
import org.apache.spark.api.plugin.PluginContext;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;

/**
 * Driver half of {@link SparkExtPlugin}: checks the settings and that the locator answers, hands
 * the settings to the executors, and logs what the executors report about their store servers.
 */
public final class PluginDriver implements DriverPlugin {
  private static final Logger LOG = LoggerFactory.getLogger(PluginDriver.class);

  /** The latest driver plug-in of this JVM (one SparkContext at a time), for {@link #status()}. */
  private static volatile PluginDriver latest;

  private final List<String> events = Collections.synchronizedList(new ArrayList<>());

  @Override
  public Map<String, String> init(SparkContext sc, PluginContext ctx) {
    latest = this;
    SparkConf conf = sc.getConf();
    boolean require = !"false".equalsIgnoreCase(conf.get(PluginSettings.REQUIRE_LOCATOR, "true").trim());
    PluginSettings s;
    try {
      s = PluginSettings.fromConf(k -> conf.get(k, null), System.getenv());
    } catch (IllegalStateException e) {
      // No address configured and no embedded server running.
      if (require) throw new IllegalStateException("spark-ext plug-in: " + e.getMessage(), e);
      note("error: " + e.getMessage());
      LOG.error("spark-ext plug-in: {} ({}=false: starting anyway)", e.getMessage(), PluginSettings.REQUIRE_LOCATOR);
      return Collections.emptyMap();
    }
    String problem = ping(s);
    if (problem == null) {
      note("locator " + s.address() + " answered");
      LOG.info("spark-ext plug-in: the locator at {} answered", s.address());
    } else {
      String msg = "spark-ext plug-in: the locator at " + s.address() + " does not answer (" + problem + "). "
          + "Start it (`spark-ext locator start --port " + s.port + " ...`, or `spark-ext server start --embedded` "
          + "for the embedded server), or fix the address (" + PluginSettings.LOCATOR
          + ", or spark_ext.configure(builder, locator=...)); with " + PluginSettings.REQUIRE_LOCATOR
          + "=false Spark starts anyway";
      if (s.requireLocator) throw new IllegalStateException(msg);
      note("error: " + msg);
      LOG.error(msg);
    }
    return s.toExecutorConf();
  }

  /** PING with the handshake; null when the locator answered, else what went wrong. */
  static String ping(PluginSettings s) {
    Connection c = null;
    try {
      c = new Connection(s.host, s.port, s.secret, s.checkTimeoutMs);
      c.request(Kinds.PING, Json.obj());
      return null;
    } catch (WireException e) {
      String hint = "AUTH_FAILED".equals(e.name) || "AUTH_REQUIRED".equals(e.name)
          ? "; check the secret" + (s.secretSource == null ? " (none configured: set " + PluginSettings.SECRET_FILE + ")"
              : " in " + s.secretSource)
          : "";
      return e.getMessage() + hint;
    } catch (RuntimeException e) {
      return e.toString();
    } finally {
      if (c != null) c.close();
    }
  }

  @Override
  public Object receive(Object message) {
    String m = String.valueOf(message);
    note(m);
    if (m.contains(" error: ")) LOG.error("spark-ext plug-in: {}", m);
    else LOG.info("spark-ext plug-in: {}", m);
    return null;
  }

  private void note(String event) {
    events.add(event);
  }

  /**
   * What the latest driver plug-in of this JVM saw, oldest first: the locator check and each
   * executor's report on its store server. For logs, tests and the shell. O(events).
   */
  public static List<String> status() {
    PluginDriver d = latest;
    if (d == null) return Collections.emptyList();
    synchronized (d.events) {
      return new ArrayList<>(d.events);
    }
  }
}
