package io.sparkext.spark;

import com.fasterxml.jackson.databind.JsonNode;
import io.sparkext.wire.Connection;
import io.sparkext.wire.Json;
import io.sparkext.wire.Kinds;
import io.sparkext.wire.WireException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.File;
import java.io.IOException;
import java.net.InetAddress;
import java.net.NetworkInterface;
import java.net.UnknownHostException;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Starts a store server on this host when the locator has no live server here.
 *
 * <p>The check and the start run under an exclusive file lock
 * ({@code $SPARK_EXT_HOME/run/executor-server-HOST_PORT.lock}), so executors sharing a host start
 * one server: the second one finds the first one's server registered. The server runs detached
 * ({@code setsid}) and outlives the executor: it is a long-lived member of the cluster, stopped
 * with {@code spark-ext server stop --run-file $SPARK_EXT_HOME/run/executor-server-HOST_PORT.json}.
 */
final class ServerLauncher {
  private static final Logger LOG = LoggerFactory.getLogger(ServerLauncher.class);
  private static final int POLL_MS = 200;

  private final PluginSettings s;
  private final String executorHost;
  private final Path home;
  private final String tag;

  ServerLauncher(PluginSettings s, String executorHost) {
    this.s = s;
    this.executorHost = executorHost;
    this.home = Endpoints.home();
    this.tag = (s.host + "_" + s.port).replaceAll("[^A-Za-z0-9_.-]", "_");
  }

  Path runFile() { return home.resolve("run").resolve("executor-server-" + tag + ".json"); }

  Path logFile() { return home.resolve("logs").resolve("executor-server-" + tag + ".log"); }

  Path dataDir() {
    return s.dataDir != null ? Paths.get(s.dataDir) : home.resolve("executor-server").resolve(tag);
  }

  /**
   * Finds or starts the server; returns what happened, for the logs.
   *
   * @throws IOException the lock or log file cannot be made, or the server did not come up
   *     (the message names its log file)
   */
  String ensure() throws IOException, InterruptedException {
    Path run = Files.createDirectories(home.resolve("run"));
    Path lockPath = run.resolve("executor-server-" + tag + ".lock");
    try (FileChannel ch = FileChannel.open(lockPath, StandardOpenOption.CREATE, StandardOpenOption.WRITE);
         FileLock ignored = ch.lock()) {
      JsonNode here = serverOnThisHost();
      if (here != null) {
        return "found store server " + here.path("server_id").asText() + " at " + here.path("host").asText() + ":"
            + here.path("port").asInt() + " on this host; not starting one";
      }
      return start();
    }
  }

  private String start() throws IOException, InterruptedException {
    if (!executable(s.python)) {
      throw new IOException("cannot run " + s.python + " (" + PluginSettings.PYTHON + "): no such executable file"
          + (s.python.contains("/") ? "" : " on PATH"));
    }
    Files.createDirectories(logFile().getParent());
    Files.createDirectories(dataDir());
    String bind = s.serverHost != null ? s.serverHost : executorHost;
    List<String> cmd = new ArrayList<>();
    for (String setsid : new String[] {"/usr/bin/setsid", "/bin/setsid"}) {
      if (new File(setsid).canExecute()) {  // its own session: executor kills do not reach it
        cmd.add(setsid);
        break;
      }
    }
    cmd.add(s.python);
    for (String a : new String[] {"-m", "spark_ext.cli", "server", "start", "--foreground", "--locator", s.address(),
        "--host", bind, "--port", "0", "--data-dir", dataDir().toString(), "--run-file", runFile().toString()}) {
      cmd.add(a);
    }
    ProcessBuilder pb = new ProcessBuilder(cmd);
    Map<String, String> env = pb.environment();
    env.put("SPARK_EXT_HOME", home.toString());
    env.remove("SPARK_EXT_SECRET");
    if (s.secret != null) env.put("SPARK_EXT_SECRET", new String(s.secret, StandardCharsets.UTF_8));
    pb.redirectErrorStream(true);
    pb.redirectOutput(ProcessBuilder.Redirect.appendTo(logFile().toFile()));
    pb.redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")));
    LOG.info("spark-ext: starting a store server on {}: {} (log {})", bind, String.join(" ", cmd), logFile());
    Process p;
    try {
      p = pb.start();
    } catch (IOException e) {
      throw new IOException("cannot run " + s.python + " (" + PluginSettings.PYTHON + "): " + e.getMessage(), e);
    }
    long deadline = System.currentTimeMillis() + s.startTimeoutMs;
    while (System.currentTimeMillis() < deadline) {
      if (!p.isAlive()) {
        throw new IOException("the store server exited with code " + p.exitValue() + " during start; see " + logFile()
            + tail());
      }
      JsonNode here = serverOnThisHost();
      if (here != null) {
        return "started store server " + here.path("server_id").asText() + " at " + here.path("host").asText() + ":"
            + here.path("port").asInt() + " (pid " + p.pid() + ", data " + dataDir() + ", log " + logFile() + ")";
      }
      Thread.sleep(POLL_MS);
    }
    throw new IOException("the store server (pid " + p.pid() + ") did not register with the locator " + s.address()
        + " within " + s.startTimeoutMs + " ms (" + PluginSettings.START_TIMEOUT + "); see " + logFile());
  }

  /** Whether {@code cmd} (a path, or a name looked up on PATH) is an executable file. */
  static boolean executable(String cmd) {
    if (cmd.contains("/")) return Files.isRegularFile(Paths.get(cmd)) && Files.isExecutable(Paths.get(cmd));
    String path = System.getenv("PATH");
    if (path == null) return false;
    for (String dir : path.split(File.pathSeparator)) {
      Path p = Paths.get(dir.isEmpty() ? "." : dir, cmd);
      if (Files.isRegularFile(p) && Files.isExecutable(p)) return true;
    }
    return false;
  }

  private String tail() {
    try {
      List<String> lines = Files.readAllLines(logFile(), StandardCharsets.UTF_8);
      return ":\n  " + String.join("\n  ", lines.subList(Math.max(0, lines.size() - 8), lines.size()));
    } catch (IOException e) {
      return "";
    }
  }

  /** A live server of the locator whose address is on this host, or null. */
  private JsonNode serverOnThisHost() {
    Connection c = new Connection(s.host, s.port, s.secret, 10_000);
    try {
      JsonNode servers = c.request(Kinds.LIST_SERVERS, Json.obj()).meta.path("servers");
      for (JsonNode srv : servers) {
        if (srv.path("up").asBoolean(false) && isThisHost(srv.path("host").asText(""))) return srv;
      }
      return null;
    } catch (WireException e) {
      throw new IllegalStateException("cannot list the servers of the locator " + s.address() + ": " + e.getMessage(), e);
    } finally {
      c.close();
    }
  }

  /** Whether {@code host} names this machine (the executor's host name, or a local address). */
  boolean isThisHost(String host) {
    if (host.isEmpty()) return false;
    if (host.equalsIgnoreCase(executorHost)) return true;
    try {
      for (InetAddress a : InetAddress.getAllByName(host)) {
        if (a.isLoopbackAddress() || a.isAnyLocalAddress() || NetworkInterface.getByInetAddress(a) != null) return true;
      }
    } catch (UnknownHostException e) {
      return false;
    } catch (IOException e) {
      LOG.debug("spark-ext: cannot resolve {}: {}", host, e.toString());
    }
    return false;
  }
}
