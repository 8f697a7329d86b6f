package io.sparkext.spark;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.HashMap;
import java.util.Map;
import java.util.function.Function;

/**
 * The plug-in's settings, read from the Spark conf on the driver and checked there, so a bad
 * value fails SparkContext start with a message naming the key and the value. The driver hands
 * the checked values (secret included) to every executor through {@link #toExecutorConf()}, so
 * executors need neither the conf keys nor the secret file.
 *
 * <p>Keys (all optional; {@code spark_ext.configure} sets the first four):
 * <pre>
 * spark.sparkext.locator               host:port of the locator (else the catalog's locator option,
 *                                      else the embedded server of $SPARK_EXT_HOME)
 * spark.sparkext.secretFile            file holding the cluster's secret (else $SPARK_EXT_HOME/secret
 *                                      when it exists, as the catalog does)
 * spark.sparkext.embedded              true: the store is this user's embedded server
 * spark.sparkext.executorStartServer   true: executors start a missing store server on their host
 * spark.sparkext.requireLocator        true (default): SparkContext start fails when the locator
 *                                      does not answer; false: log an error and go on
 * spark.sparkext.checkTimeoutMs        how long the driver waits for the locator's answer (5000)
 * spark.sparkext.executor.python       Python that runs a started server (default spark.pyspark.python,
 *                                      $PYSPARK_PYTHON, else python3)
 * spark.sparkext.executor.dataDir      its data directory (default $SPARK_EXT_HOME/executor-server/HOST_PORT)
 * spark.sparkext.executor.serverHost   address it binds and registers (default: the executor's host name)
 * spark.sparkext.executor.startTimeoutMs  how long an executor waits for it to register (60000)
 * </pre>
 */
public final class PluginSettings {
  public static final String LOCATOR = "spark.sparkext.locator";
  public static final String SECRET_FILE = "spark.sparkext.secretFile";
  public static final String EMBEDDED = "spark.sparkext.embedded";
  public static final String CATALOG_NAME = "spark.sparkext.catalogName";
  public static final String START_SERVER = "spark.sparkext.executorStartServer";
  public static final String REQUIRE_LOCATOR = "spark.sparkext.requireLocator";
  public static final String CHECK_TIMEOUT = "spark.sparkext.checkTimeoutMs";
  public static final String PYTHON = "spark.sparkext.executor.python";
  public static final String DATA_DIR = "spark.sparkext.executor.dataDir";
  public static final String SERVER_HOST = "spark.sparkext.executor.serverHost";
  public static final String START_TIMEOUT = "spark.sparkext.executor.startTimeoutMs";

  /** Host and port of the locator (or embedded server). */
  public final String host;
  public final int port;
  /** The secret (null: no authentication) and where it came from (for messages). */
  public final byte[] secret;
  public final String secretSource;
  public final boolean startServer;
  public final boolean requireLocator;
  public final int checkTimeoutMs;
  public final String python;
  public final String dataDir;
  public final String serverHost;
  public final int startTimeoutMs;

  private PluginSettings(String host, int port, byte[] secret, String secretSource, boolean startServer,
                         boolean requireLocator, int checkTimeoutMs, String python, String dataDir,
                         String serverHost, int startTimeoutMs) {
    this.host = host;
    this.port = port;
    this.secret = secret;
    this.secretSource = secretSource;
    this.startServer = startServer;
    this.requireLocator = requireLocator;
    this.checkTimeoutMs = checkTimeoutMs;
    this.python = python;
    this.dataDir = dataDir;
    this.serverHost = serverHost;
    this.startTimeoutMs = startTimeoutMs;
  }

  /** {@code host:port} of the locator. */
  public String address() { return host + ":" + port; }

  /**
   * Reads and checks the settings. {@code conf} answers a key with its value or null.
   *
   * @throws IllegalArgumentException a bad value, naming the key and the value
   * @throws IllegalStateException no address in the conf and no embedded server running
   */
  public static PluginSettings fromConf(Function<String, String> conf, Map<String, String> env) {
    boolean startServer = bool(conf, START_SERVER, false);
    boolean require = bool(conf, REQUIRE_LOCATOR, true);
    int checkTimeout = millis(conf, CHECK_TIMEOUT, 5000);
    int startTimeout = millis(conf, START_TIMEOUT, 60000);
    String python = blankToNull(conf.apply(PYTHON));
    if (python == null) python = blankToNull(conf.apply("spark.pyspark.python"));
    if (python == null) python = blankToNull(env.get("PYSPARK_PYTHON"));
    if (python == null) python = "python3";
    String dataDir = blankToNull(conf.apply(DATA_DIR));
    String serverHost = blankToNull(conf.apply(SERVER_HOST));
    if (serverHost != null && serverHost.chars().anyMatch(Character::isWhitespace)) {
      throw new IllegalArgumentException("spark-ext: " + SERVER_HOST + "='" + serverHost + "' has spaces; expected a host name or address");
    }

    String loc = blankToNull(conf.apply(LOCATOR));
    String locKey = LOCATOR;
    if (loc == null) {
      String cat = blankToNull(conf.apply(CATALOG_NAME));
      locKey = "spark.sql.catalog." + (cat == null ? "store" : cat) + ".locator";
      loc = blankToNull(conf.apply(locKey));
    }
    String sf = blankToNull(conf.apply(SECRET_FILE));
    byte[] secret = null;
    String source = null;
    if (sf != null) {
      Path p = Paths.get(sf);
      if (!Files.isRegularFile(p)) {
        throw new IllegalArgumentException("spark-ext: " + SECRET_FILE + "='" + sf + "': no such file");
      }
      secret = Endpoints.readSecret(p);
      if (secret == null) throw new IllegalArgumentException("spark-ext: " + SECRET_FILE + "='" + sf + "': the file is empty");
      source = sf;
    }
    String host;
    int port;
    if (loc != null) {
      int i = loc.lastIndexOf(':');
      String p = i < 0 ? "" : loc.substring(i + 1);
      host = i <= 0 ? "" : loc.substring(0, i).trim();
      if (host.startsWith("[") && host.endsWith("]")) host = host.substring(1, host.length() - 1);
      port = p.matches("[0-9]{1,5}") ? Integer.parseInt(p) : -1;
      if (host.isEmpty() || host.chars().anyMatch(Character::isWhitespace) || port < 1 || port > 65535) {
        throw new IllegalArgumentException("spark-ext: " + locKey + "='" + loc + "': expected host:port, e.g. 127.0.0.1:7100");
      }
      if (secret == null) {  // as the catalog does: the home's secret when none is named
        Path s = Endpoints.home().resolve("secret");
        if (Files.isRegularFile(s)) {
          secret = Endpoints.readSecret(s);
          source = s.toString();
        }
      }
    } else {
      // Nothing configured: the embedded server of $SPARK_EXT_HOME, as the catalog does.
      io.sparkext.wire.Endpoint e = Endpoints.resolve(new HashMap<>());
      host = e.host;
      port = e.port;
      secret = e.secret;
      source = Endpoints.home().resolve("secret").toString();
    }
    return new PluginSettings(host, port, secret, source, startServer, require, checkTimeout, python, dataDir,
        serverHost, startTimeout);
  }

  /** What the driver sends to the executors' plug-ins (their {@code extraConf}). */
  public Map<String, String> toExecutorConf() {
    Map<String, String> m = new HashMap<>();
    m.put("host", host);
    m.put("port", Integer.toString(port));
    if (secret != null) m.put("secret", new String(secret, StandardCharsets.UTF_8));
    m.put("startServer", Boolean.toString(startServer));
    m.put("python", python);
    if (dataDir != null) m.put("dataDir", dataDir);
    if (serverHost != null) m.put("serverHost", serverHost);
    m.put("startTimeoutMs", Integer.toString(startTimeoutMs));
    return m;
  }

  /** The executor side of {@link #toExecutorConf()}. */
  public static PluginSettings fromExecutorConf(Map<String, String> m) {
    String s = m.get("secret");
    return new PluginSettings(m.get("host"), Integer.parseInt(m.get("port")),
        s == null ? null : s.getBytes(StandardCharsets.UTF_8), "the driver", "true".equals(m.get("startServer")),
        true, 5000, m.get("python"), m.get("dataDir"), m.get("serverHost"), Integer.parseInt(m.get("startTimeoutMs")));
  }

  private static String blankToNull(String s) {
    return s == null || s.trim().isEmpty() ? null : s.trim();
  }

  private static boolean bool(Function<String, String> conf, String key, boolean dflt) {
    String v = blankToNull(conf.apply(key));
    if (v == null) return dflt;
    if (v.equalsIgnoreCase("true")) return true;
    if (v.equalsIgnoreCase("false")) return false;
    throw new IllegalArgumentException("spark-ext: " + key + "='" + v + "': expected true or false");
  }

  private static int millis(Function<String, String> conf, String key, int dflt) {
    String v = blankToNull(conf.apply(key));
    if (v == null) return dflt;
    if (v.matches("[0-9]{1,9}")) {
      int n = Integer.parseInt(v);
      if (n >= 100 && n <= 3_600_000) return n;
    }
    throw new IllegalArgumentException("spark-ext: " + key + "='" + v + "': expected milliseconds between 100 and 3600000");
  }
}
