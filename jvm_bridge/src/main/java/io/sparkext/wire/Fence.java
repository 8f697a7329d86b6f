package io.sparkext.wire;

import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.Serializable;

/**
 * A driver's fencing token (docs/protocol.md section 15), and this JVM's leadership state.
 *
 * <p>The Python driver sets the state through py4j: {@link #lead} once it holds its HA
 * group's lease (before {@code getOrCreate()} returns), {@link #lose} the moment it learns
 * the lease is lost. Driver-side code reads {@link #forWrite()} when it starts a write and
 * puts the result on every request that changes data or the catalog; write jobs capture it
 * in their serialized writer factories, so executor tasks in other JVMs send the same
 * token. A JVM that never joined an HA group has no fence and its requests carry none.
 *
 * <p>Instances are immutable values; the static state is the one leadership of this JVM.
 */
public final class Fence implements Serializable {
  private static final long serialVersionUID = 1L;

  public final String group;
  public final long token;

  private static volatile Fence current;
  private static volatile String lostReason;

  public Fence(String group, long token) {
    if (group == null || group.isEmpty()) throw new IllegalArgumentException("a fence needs a group name");
    this.group = group;
    this.token = token;
  }

  /** This JVM now leads {@code group} with {@code token} (called by the Python driver). */
  public static synchronized void lead(String group, long token) {
    current = new Fence(group, token);
    lostReason = null;
  }

  /**
   * This JVM lost the leadership of {@code group} that it held with {@code token}: every
   * later write is refused here at once. A late call about an earlier term (an older
   * token) changes nothing.
   */
  public static synchronized void lose(String group, long token, String reason) {
    Fence f = current;
    if (f != null && f.group.equals(group) && f.token == token && lostReason == null) {
      lostReason = reason == null || reason.isEmpty() ? "lease lost" : reason;
    }
  }

  /** Forget any leadership (the session stopped or gave the lease up). */
  public static synchronized void clear() {
    current = null;
    lostReason = null;
  }

  /** The fence this JVM's writes carry now, or null when it is not in an HA group. O(1). */
  public static Fence current() { return current; }

  /** Why the leadership was lost, or null while it holds (or never had) one. */
  public static String lostReason() { return lostReason; }

  /**
   * The fence for a write starting now: null outside HA, the leader's fence while it leads.
   *
   * @throws WireException FENCED when this JVM was told its leadership is lost
   */
  public static Fence forWrite() {
    Fence f = current;
    if (f != null) f.checkHere();
    return f;
  }

  /**
   * Refuse at once if this JVM knows that the leadership this fence belongs to is lost.
   * A fence captured on the driver and checked in an executor JVM passes here (that JVM
   * was never told anything); the servers refuse it there once the new leader announced.
   */
  public void checkHere() {
    Fence f = current;
    String reason = lostReason;
    if (f != null && reason != null && f.group.equals(group) && f.token == token) {
      throw lost(group, token, reason);
    }
  }

  /** The FENCED error of a write this JVM refuses itself (its leadership is lost). */
  public static WireException lost(String group, long token, String reason) {
    ObjectNode d = Json.obj();
    d.put("group", group);
    d.put("token", token);
    return new WireException(600, "FENCED", "leader group '" + group + "': this driver lost its leadership (" + reason
        + "); token " + token + " may not write, a newer leader holds the group", d);
  }

  /** Put {@code fence: {group, token}} on a request's metadata; returns it. */
  public ObjectNode stamp(ObjectNode meta) {
    ObjectNode f = meta.putObject("fence");
    f.put("group", group);
    f.put("token", token);
    return meta;
  }

  /** {@link #stamp} when {@code fence} is not null. */
  public static ObjectNode stamp(ObjectNode meta, Fence fence) {
    return fence == null ? meta : fence.stamp(meta);
  }

  @Override
  public String toString() { return group + "#" + token; }
}
