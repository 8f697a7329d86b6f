package io.sparkext.wire;

import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.util.zip.CRC32;

/**
 * The bucket of a key, identical to spark_ext/store/keyhash.py: per key column a 64-bit
 * component (fmix64 of integer-like values; fmix64(crc32(b) | len(b) << 32) of byte-like
 * values, decimals as 16 little-endian bytes of the unscaled value), folded from SEED with
 * h = fmix64(h ^ c); bucket = h mod n (unsigned).
 */
public final class KeyHash {
  public static final long SEED = 0x9E3779B97F4A7C15L;
  private static final long C1 = 0xFF51AFD7ED558CCDL;
  private static final long C2 = 0xC4CEB9FE1A85EC53L;

  private KeyHash() {}

  public static long fmix64(long k) {
    k ^= k >>> 33;
    k *= C1;
    k ^= k >>> 33;
    k *= C2;
    k ^= k >>> 33;
    return k;
  }

  public static long intComponent(long v) { return fmix64(v); }

  public static long bytesComponent(byte[] b) {
    CRC32 crc = new CRC32();
    crc.update(b, 0, b.length);
    return fmix64(crc.getValue() | ((long) b.length << 32));
  }

  public static long stringComponent(String s) { return bytesComponent(s.getBytes(StandardCharsets.UTF_8)); }

  /** 16 bytes, little-endian two's complement, of a decimal's unscaled value. */
  public static byte[] decimalBytes(BigInteger unscaled) {
    byte[] be = unscaled.toByteArray();
    if (be.length > 16) throw new IllegalArgumentException("decimal unscaled value does not fit 128 bits");
    byte[] le = new byte[16];
    byte fill = (byte) (unscaled.signum() < 0 ? 0xFF : 0);
    for (int i = 0; i < 16; i++) le[i] = i < be.length ? be[be.length - 1 - i] : fill;
    return le;
  }

  public static long decimalComponent(BigInteger unscaled) { return bytesComponent(decimalBytes(unscaled)); }

  public static long combine(long[] components) {
    long h = SEED;
    for (long c : components) h = fmix64(h ^ c);
    return h;
  }

  public static int bucketOfHash(long h, int numBuckets) {
    return (int) Long.remainderUnsigned(h, numBuckets);
  }
}
