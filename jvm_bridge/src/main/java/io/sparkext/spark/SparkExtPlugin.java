package io.sparkext.spark;

import org.apache.spark.api.plugin.DriverPlugin;
import org.apache.spark.api.plugin.ExecutorPlugin;
import org.apache.spark.api.plugin.SparkPlugin;

/**
 * The spark-ext Spark plug-in ({@code spark.plugins=io.sparkext.spark.SparkExtPlugin}).
 *
 * <p>Driver side ({@link PluginDriver}): checks at SparkContext start that the locator answers
 * (PING, with the HMAC handshake when a secret is configured) and fails the start with a message
 * naming the address when it does not. Executor side ({@link PluginExecutor}): when
 * {@code spark.sparkext.executorStartServer=true}, starts a store server on the executor's host if
 * none of the locator's live servers runs there. Settings: {@link PluginSettings}.
 */
public final class SparkExtPlugin implements SparkPlugin {
  @Override
  public DriverPlugin driverPlugin() { return new PluginDriver(); }

  @Override
  public ExecutorPlugin executorPlugin() { return new PluginExecutor(); }
}
