package io.sparkext.spark;

import org.apache.spark.api.plugin.ExecutorPlugin;
import org.apache.spark.api.plugin.PluginContext;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.Map;

/**
 * Executor half of {@link SparkExtPlugin}: with {@code spark.sparkext.executorStartServer=true},
 * makes sure a store server of the locator runs on this executor's host ({@link ServerLauncher}).
 * Never fails the executor: a server that cannot be started is logged as an error here and
 * reported to the driver, whose log names the executor, the host and the server's log file.
 */
public final class PluginExecutor implements ExecutorPlugin {
  private static final Logger LOG = LoggerFactory.getLogger(PluginExecutor.class);

  @Override
  public void init(PluginContext ctx, Map<String, String> extraConf) {
    if (extraConf == null || extraConf.get("host") == null) return;  // the driver found no store
    PluginSettings s = PluginSettings.fromExecutorConf(extraConf);
    if (!s.startServer) return;
    String host = hostName(ctx);
    String who = "executor " + ctx.executorID() + " on " + host;
    String report;
    try {
      report = who + ": " + new ServerLauncher(s, host).ensure();
      LOG.info("spark-ext: {}", report);
    } catch (Exception e) {
      report = who + " error: no store server for the locator " + s.address() + ": " + e.getMessage();
      LOG.error("spark-ext: {}", report, e);
    }
    try {
      ctx.send(report);
    } catch (Exception e) {
      LOG.warn("spark-ext: could not report to the driver: {}", e.toString());
    }
  }

  /**
   * This executor's host name. {@code PluginContext.hostname()} fails on executors of Spark 4.3
   * (it reads the address of the executor's RPC environment, which has none in client mode), so
   * Spark's own rule is used instead: SPARK_LOCAL_HOSTNAME, SPARK_LOCAL_IP, else the machine's.
   */
  static String hostName(PluginContext ctx) {
    try {
      return ctx.hostname();
    } catch (RuntimeException e) {
      return org.apache.spark.util.Utils.localHostName();
    }
  }
}
