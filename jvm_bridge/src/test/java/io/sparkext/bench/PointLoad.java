package io.sparkext.bench;

import com.fasterxml.jackson.databind.node.ObjectNode;
import io.sparkext.wire.Endpoint;
import io.sparkext.wire.Json;
import io.sparkext.wire.TableMeta;

import java.io.BufferedOutputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.locks.LockSupport;

/**
 * A load generator for point operations: N threads, each with its own connection, GET or
 * PUT random existing keys for a fixed time after a common start instant, against a
 * spark-ext server (its own protocol, through the bridge's {@code Connection}) or a
 * redis-server (RESP). Used by {@code bench/server_bench.py} so that both systems are
 * driven by the same cheap client; not shipped in the jar.
 *
 * <p>Keys are drawn from a fixed seed, one stream per thread. A GET thread draws any key
 * in {@code [0, keys)}; a PUT thread {@code t} of {@code T} draws keys {@code = t mod T}
 * (still uniform over all keys) so that it is the only writer of its keys and can read
 * back its last writes afterwards. Values come from a pool file (one ASCII value per
 * line, the pool the keys were preloaded from: key {@code k} holds line {@code k mod n}).
 *
 * <p>Every reply is checked: a GET must return the key's row and a value of the pool
 * (with {@code --expect preloaded}, exactly line {@code k mod n}); a PUT must report one
 * row; after the timed window each PUT thread reads back its last writes. A failed check
 * ends the run with exit status 1 and the problem on stderr.
 *
 * <p>Output: one JSON line on stdout ({@code ops}, {@code ops_per_s}, latency percentiles
 * in microseconds, server CPU seconds over the window (user and system), client CPU
 * seconds (this JVM's), checks done); with
 * {@code --lat-out} the raw per-op latencies (nanoseconds, int64 little-endian).
 *
 * <p>Usage: {@code PointLoad --system spark|redis --host H --port P --op get|put
 * --values FILE [--secret-file F] [--table bench_kv] [--threads 8] [--seconds 1.5]
 * [--keys 100000] [--seed 1] [--warmup 2000] [--expect pool|preloaded]
 * [--server-pid PID --clk-tck 100] [--lat-out FILE]}
 */
public final class PointLoad {
  private static final int TIMEOUT_MS = 30_000;
  private static final int READBACK = 16;

  private PointLoad() {}

  /** Bad command-line arguments: reported with the usage, exit status 2. */
  static final class UsageError extends RuntimeException {
    UsageError(String m) { super(m); }
  }

  /** The run's settings, checked before anything connects. */
  static final class Settings {
    String system;
    String host = "127.0.0.1";
    int port;
    String op;
    Path values;
    Path secretFile;
    String table = "bench_kv";
    int threads = 8;
    double seconds = 1.5;
    long keys = 100_000;
    long seed = 1;
    int warmup = 2000;
    boolean expectPreloaded;
    long serverPid = -1;
    int clkTck = 100;
    Path latOut;

    static Settings parse(String[] args) {
      Map<String, String> a = new HashMap<>();
      for (int i = 0; i < args.length; i++) {
        if (!args[i].startsWith("--") || i + 1 >= args.length) throw new UsageError("expected '--name value' pairs, got '" + args[i] + "'");
        a.put(args[i].substring(2), args[++i]);
      }
      Settings s = new Settings();
      s.system = need(a, "system");
      if (!s.system.equals("spark") && !s.system.equals("redis")) throw new UsageError("--system must be spark or redis, got '" + s.system + "'");
      s.op = need(a, "op");
      if (!s.op.equals("get") && !s.op.equals("put")) throw new UsageError("--op must be get or put, got '" + s.op + "'");
      s.port = (int) parseNum("port", need(a, "port"), 1, 65535);
      s.values = Paths.get(need(a, "values"));
      if (a.containsKey("secret-file")) s.secretFile = Paths.get(a.remove("secret-file"));
      if (a.containsKey("host")) s.host = a.remove("host");
      if (a.containsKey("table")) s.table = a.remove("table");
      s.threads = (int) num(a, "threads", s.threads, 1, 1024);
      s.keys = num(a, "keys", s.keys, 1, Long.MAX_VALUE);
      s.seed = num(a, "seed", s.seed, Long.MIN_VALUE, Long.MAX_VALUE);
      s.warmup = (int) num(a, "warmup", s.warmup, 0, 10_000_000);
      s.serverPid = num(a, "server-pid", s.serverPid, -1, Long.MAX_VALUE);
      s.clkTck = (int) num(a, "clk-tck", s.clkTck, 1, 1_000_000);
      if (a.containsKey("seconds")) {
        String v = a.remove("seconds");
        try {
          s.seconds = Double.parseDouble(v);
        } catch (NumberFormatException e) {
          throw new UsageError("--seconds must be a number, got '" + v + "'");
        }
        if (!(s.seconds > 0 && s.seconds <= 3600)) throw new UsageError("--seconds must be in (0, 3600], got " + v);
      }
      String expect = a.containsKey("expect") ? a.remove("expect") : "pool";
      if (!expect.equals("pool") && !expect.equals("preloaded")) throw new UsageError("--expect must be pool or preloaded, got '" + expect + "'");
      s.expectPreloaded = expect.equals("preloaded");
      if (a.containsKey("lat-out")) s.latOut = Paths.get(a.remove("lat-out"));
      if (s.op.equals("put") && s.keys < s.threads) {
        throw new UsageError("--keys (" + s.keys + ") must be at least --threads (" + s.threads + ") for put: each thread writes its own keys");
      }
      if (!a.isEmpty()) throw new UsageError("unknown option(s): --" + String.join(", --", a.keySet()));
      return s;
    }

    private static String need(Map<String, String> a, String k) {
      String v = a.remove(k);
      if (v == null) throw new UsageError("--" + k + " is required");
      return v;
    }

    private static long num(Map<String, String> a, String k, long dflt, long lo, long hi) {
      String v = a.remove(k);
      return v == null ? dflt : parseNum(k, v, lo, hi);
    }

    private static long parseNum(String k, String v, long lo, long hi) {
      long x;
      try {
        x = Long.parseLong(v);
      } catch (NumberFormatException e) {
        throw new UsageError("--" + k + " must be an integer, got '" + v + "'");
      }
      if (x < lo || x > hi) throw new UsageError("--" + k + " must be in [" + lo + ", " + hi + "], got " + x);
      return x;
    }
  }

  /** The value pool: line i is the value of pool index i. */
  static byte[][] readPool(Path p) throws IOException {
    List<byte[]> out = new ArrayList<>();
    for (String line : Files.readAllLines(p, StandardCharsets.US_ASCII)) {
      if (!line.isEmpty()) out.add(line.getBytes(StandardCharsets.US_ASCII));
    }
    if (out.isEmpty()) throw new UsageError("value pool " + p + " has no values (one ASCII value per line)");
    return out.toArray(new byte[0][]);
  }

  /** What one load thread did: latencies, its last reply instant, checks, or its error. */
  static final class ThreadResult {
    long[] lat = new long[1 << 14];
    int n;
    long firstNs;
    long lastNs;
    long checked;
    long readBack;
    Throwable error;

    void add(long ns) {
      if (n == lat.length) lat = Arrays.copyOf(lat, n * 2);
      lat[n++] = ns;
    }
  }

  /** One load thread's loop. */
  static final class Worker implements Runnable {
    final Settings s;
    final int id;
    final PointClient client;
    final byte[][] pool;
    final Set<String> poolSet;
    final SplittableRandom warmRng;
    final SplittableRandom rng;
    final CountDownLatch ready;
    final CountDownLatch go;
    final long[] window; // {start, end}
    final ThreadResult r = new ThreadResult();
    final long ownKeys; // put: how many keys = id mod threads

    Worker(Settings s, int id, PointClient client, byte[][] pool, Set<String> poolSet, SplittableRandom warmRng,
           SplittableRandom rng, CountDownLatch ready, CountDownLatch go, long[] window) {
      this.s = s;
      this.id = id;
      this.client = client;
      this.pool = pool;
      this.poolSet = poolSet;
      this.warmRng = warmRng;
      this.rng = rng;
      this.ready = ready;
      this.go = go;
      this.window = window;
      this.ownKeys = (s.keys - id + s.threads - 1) / s.threads;
    }

    private long nextKey(SplittableRandom g) {
      return s.op.equals("get") ? g.nextLong(s.keys) : id + s.threads * g.nextLong(ownKeys);
    }

    private void checkGet(long key, byte[] v) {
      if (v == null) throw new IllegalStateException("GET " + key + ": the key is missing (every key in [0, " + s.keys + ") was preloaded)");
      byte[] want = pool[(int) (key % pool.length)];
      if (Arrays.equals(v, want)) return;
      if (s.expectPreloaded) {
        throw new IllegalStateException("GET " + key + " returned '" + new String(v, StandardCharsets.ISO_8859_1)
            + "', expected the preloaded value '" + new String(want, StandardCharsets.US_ASCII) + "'");
      }
      if (!poolSet.contains(new String(v, StandardCharsets.ISO_8859_1))) {
        throw new IllegalStateException("GET " + key + " returned '" + new String(v, StandardCharsets.ISO_8859_1) + "', not a value of the pool");
      }
    }

    @Override
    public void run() {
      boolean isGet = s.op.equals("get");
      long[] lastKeys = new long[READBACK];
      int[] lastVals = new int[READBACK];
      long writes = 0;
      boolean counted = false;
      try {
        for (int i = 0; i < s.warmup; i++) {
          long k = nextKey(warmRng);
          if (isGet) {
            checkGet(k, client.get(k));
          } else {
            client.put(k, pool[warmRng.nextInt(pool.length)]);
          }
        }
        ready.countDown();
        counted = true;
        go.await();
        long start = window[0], end = window[1];
        for (long d = start - System.nanoTime(); d > 0; d = start - System.nanoTime()) LockSupport.parkNanos(d);
        long t1 = r.firstNs = System.nanoTime();
        while (true) {
          long k = nextKey(rng);
          long t0;
          if (isGet) {
            t0 = System.nanoTime();
            byte[] v = client.get(k);
            t1 = System.nanoTime();
            checkGet(k, v);
            r.checked++;
          } else {
            int vi = rng.nextInt(pool.length);
            t0 = System.nanoTime();
            client.put(k, pool[vi]);
            t1 = System.nanoTime();
            lastKeys[(int) (writes % READBACK)] = k;
            lastVals[(int) (writes % READBACK)] = vi;
            writes++;
          }
          r.add(t1 - t0);
          if (t1 >= end) break;
        }
        r.lastNs = t1;
        // This thread alone writes its keys: each one's latest write is what must be there.
        Map<Long, Integer> latest = new HashMap<>();
        for (long w = Math.max(0, writes - READBACK); w < writes; w++) latest.put(lastKeys[(int) (w % READBACK)], lastVals[(int) (w % READBACK)]);
        for (Map.Entry<Long, Integer> e : latest.entrySet()) {
          byte[] v = client.get(e.getKey());
          byte[] want = pool[e.getValue()];
          if (!Arrays.equals(v, want)) {
            throw new IllegalStateException("read back of key " + e.getKey() + " after PUT returned '"
                + (v == null ? "(missing)" : new String(v, StandardCharsets.ISO_8859_1)) + "', expected the value written '"
                + new String(want, StandardCharsets.US_ASCII) + "'");
          }
          r.readBack++;
        }
      } catch (Throwable t) {
        r.error = t;
      } finally {
        if (!counted) ready.countDown();
      }
    }
  }

  /** {user, system} CPU seconds of a process, from /proc/PID/stat (fields 14 and 15). */
  static double[] procCpuSeconds(long pid, int clkTck) throws IOException {
    String stat = Files.readString(Paths.get("/proc", Long.toString(pid), "stat"));
    String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
    return new double[] {Long.parseLong(f[11]) / (double) clkTck, Long.parseLong(f[12]) / (double) clkTck};
  }

  static double selfCpuSeconds() {
    return ((com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean()).getProcessCpuTime() / 1e9;
  }

  /** The p-th percentile (0..100) of sorted values, linear interpolation (as bench/common.py). */
  static double percentile(long[] sorted, double p) {
    double pos = (sorted.length - 1) * p / 100.0;
    int lo = (int) Math.floor(pos);
    int hi = Math.min(lo + 1, sorted.length - 1);
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
  }

  static PointClient connect(Settings s, TableMeta table, byte[] secret) {
    return s.system.equals("spark") ? new SparkPointClient(table, secret, TIMEOUT_MS) : new RespPointClient(s.host, s.port, TIMEOUT_MS);
  }

  static ObjectNode run(Settings s) throws Exception {
    byte[][] pool = readPool(s.values);
    Set<String> poolSet = new HashSet<>();
    for (byte[] v : pool) poolSet.add(new String(v, StandardCharsets.ISO_8859_1));
    byte[] secret = s.secretFile == null ? null
        : new String(Files.readAllBytes(s.secretFile), StandardCharsets.UTF_8).trim().getBytes(StandardCharsets.UTF_8);
    TableMeta table = null;
    if (s.system.equals("spark")) {
      String[] parts = s.table.split("\\.", -1);
      List<String> ns = parts.length > 1 ? Arrays.asList(Arrays.copyOf(parts, parts.length - 1)) : List.of("default");
      table = new Endpoint(s.host, s.port, secret).client().getTable(ns, parts[parts.length - 1]);
      SparkPointClient.checkShape(table);
    }
    SplittableRandom master = new SplittableRandom(s.seed);
    CountDownLatch ready = new CountDownLatch(s.threads);
    CountDownLatch go = new CountDownLatch(1);
    long[] window = new long[2];
    List<Worker> workers = new ArrayList<>();
    List<Thread> threads = new ArrayList<>();
    try {
      for (int t = 0; t < s.threads; t++) {
        Worker w = new Worker(s, t, connect(s, table, secret), pool, poolSet, master.split(), master.split(), ready, go, window);
        workers.add(w);
        Thread th = new Thread(w, "load-" + t);
        th.setDaemon(true);
        threads.add(th);
      }
      for (Thread th : threads) th.start();
      ready.await();
      // The window is written before the latch opens: the threads read it after await().
      long start = System.nanoTime() + 20_000_000L;
      window[0] = start;
      window[1] = start + (long) (s.seconds * 1e9);
      go.countDown();
      for (long d = start - System.nanoTime(); d > 0; d = start - System.nanoTime()) LockSupport.parkNanos(d);
      double[] server0 = s.serverPid > 0 ? procCpuSeconds(s.serverPid, s.clkTck) : null;
      double client0 = selfCpuSeconds();
      for (Thread th : threads) th.join();
      double[] server1 = s.serverPid > 0 ? procCpuSeconds(s.serverPid, s.clkTck) : null;
      double client1 = selfCpuSeconds();
      for (Worker w : workers) {
        if (w.r.error != null) {
          throw new IllegalStateException(s.system + " " + s.op + ", thread " + w.id + ": " + w.r.error.getMessage(), w.r.error);
        }
      }
      double[] server = server0 == null ? null : new double[] {server1[0] - server0[0], server1[1] - server0[1]};
      return summary(s, workers, start, server, client1 - client0);
    } finally {
      for (Worker w : workers) w.client.close();
    }
  }

  static ObjectNode summary(Settings s, List<Worker> workers, long start, double[] serverCpu, double clientCpu) throws IOException {
    int total = 0;
    long last = start, late = 0, checked = 0, readBack = 0;
    for (Worker w : workers) {
      total += w.r.n;
      last = Math.max(last, w.r.lastNs);
      late = Math.max(late, w.r.firstNs - start);
      checked += w.r.checked;
      readBack += w.r.readBack;
    }
    long[] all = new long[total];
    int off = 0;
    for (Worker w : workers) {
      System.arraycopy(w.r.lat, 0, all, off, w.r.n);
      off += w.r.n;
    }
    if (s.latOut != null) {
      ByteBuffer bb = ByteBuffer.allocate(8 * total).order(ByteOrder.LITTLE_ENDIAN);
      for (long v : all) bb.putLong(v);
      try (DataOutputStream o = new DataOutputStream(new BufferedOutputStream(Files.newOutputStream(s.latOut)))) {
        o.write(bb.array());
      }
    }
    Arrays.sort(all);
    double wall = (last - start) / 1e9;
    ObjectNode o = Json.obj();
    o.put("system", s.system);
    o.put("op", s.op);
    o.put("threads", s.threads);
    o.put("processes", 1);
    o.put("ops", total);
    o.put("wall_s", wall);
    o.put("ops_per_s", total / wall);
    ObjectNode lat = o.putObject("latency_us");
    lat.put("p50", percentile(all, 50) / 1e3);
    lat.put("p90", percentile(all, 90) / 1e3);
    lat.put("p99", percentile(all, 99) / 1e3);
    lat.put("max", all[all.length - 1] / 1e3);
    o.put("late_ms", late / 1e6);
    if (serverCpu == null) {
      o.putNull("server_cpu_s");
    } else {
      o.put("server_cpu_s", serverCpu[0] + serverCpu[1]);
      o.put("server_user_s", serverCpu[0]);
      o.put("server_sys_s", serverCpu[1]);
    }
    o.put("client_cpu_s", clientCpu);
    o.put("gets_checked", checked);
    o.put("puts_read_back", readBack);
    o.put("keys", s.keys);
    o.put("seed", s.seed);
    return o;
  }

  public static void main(String[] args) {
    Settings s;
    try {
      s = Settings.parse(args);
    } catch (UsageError e) {
      System.err.println("PointLoad: " + e.getMessage());
      System.err.println("usage: PointLoad --system spark|redis --host H --port P --op get|put --values FILE [--secret-file F] "
          + "[--table bench_kv] [--threads 8] [--seconds 1.5] [--keys 100000] [--seed 1] [--warmup 2000] "
          + "[--expect pool|preloaded] [--server-pid PID --clk-tck 100] [--lat-out FILE]");
      System.exit(2);
      return;
    }
    try {
      System.out.println(Json.MAPPER.writeValueAsString(run(s)));
      System.out.flush();
    } catch (Throwable t) {
      System.err.println("PointLoad: " + t.getMessage());
      System.exit(1);
    }
  }
}
