package io.sparkext.test;

import io.sparkext.wire.Frame;

import java.io.BufferedInputStream;
import java.io.DataInputStream;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.OutputStream;

/** Decodes every frame of a file written by Python and re-encodes it into another file. Args: in out */
public final class FrameCheck {
  public static void main(String[] args) throws Exception {
    int n = 0;
    try (DataInputStream in = new DataInputStream(new BufferedInputStream(new FileInputStream(args[0])));
         OutputStream out = new FileOutputStream(args[1])) {
      Frame f;
      while ((f = Frame.read(in, Frame.DEFAULT_MAX_FRAME)) != null) {
        out.write(new Frame(f.kind, f.requestId, f.flags, f.meta, f.body).encode(Frame.DEFAULT_MAX_FRAME));
        n++;
      }
    }
    System.out.println("FRAMES " + n);
  }
}
