/**
 * Creating a tap device: `/dev/net/tun` and `TUNSETIFF`, by the thread that
 * is inside the guest's network namespace (the namespace worker; see
 * `lib/ns.ts`). Apart from the backend that reads and writes the device
 * (`tuntap.ts`), so that the worker, whose module loading is on the
 * critical path of start-up, does not load the send path with it.
 *
 * @module
 */

import * as sys from "../sys/mod.ts";

/** Size of `struct ifreq`. */
const IFREQ_SIZE = 40;
/** Offset of `ifr_flags` in `struct ifreq`. */
const IFR_FLAGS = 16;

/** A tap device opened by {@linkcode tuntapOpen}. */
export interface TuntapDevice {
  /** The device fd (non-blocking, close-on-exec). */
  readonly fd: number;
  /** The interface name the kernel gave it. */
  readonly name: string;
  /** Frames carry a virtio-net header (see `tuntap.ts`). */
  readonly vnetHdr: boolean;
}

/**
 * Creates (or attaches to) tap interface `name` in the calling thread's
 * network namespace. Returns the device, or -errno. `flags` are the IFF_*
 * bits for TUNSETIFF (default: a tap without packet-information prefix).
 */
export function tuntapOpen(
  name: string,
  flags: number = sys.IFF_TAP | sys.IFF_NO_PI | sys.IFF_VNET_HDR,
): TuntapDevice | number {
  const nameBytes = new TextEncoder().encode(name);
  if (nameBytes.length === 0 || nameBytes.length >= sys.IFNAMSIZ) return -sys.Errno.EINVAL;
  const fd = sys.open("/dev/net/tun", sys.O_RDWR | sys.O_NONBLOCK | sys.O_CLOEXEC);
  if (fd < 0) return fd;
  const ifr = new Uint8Array(IFREQ_SIZE);
  ifr.set(nameBytes, 0);
  new DataView(ifr.buffer).setUint16(IFR_FLAGS, flags, true);
  const rc = sys.ioctl(fd, sys.TUNSETIFF, ifr);
  if (rc < 0) {
    sys.close(fd);
    return rc;
  }
  if (flags & sys.IFF_VNET_HDR) {
    const size = new Int32Array([sys.VNET_HDR_LEN]);
    let err = sys.ioctl(fd, sys.TUNSETVNETHDRSZ, new Uint8Array(size.buffer));
    if (err === 0) err = sys.ioctlInt(fd, sys.TUNSETOFFLOAD, sys.TUN_F_CSUM);
    if (err < 0) {
      sys.close(fd);
      return err;
    }
  }
  const end = ifr.indexOf(0);
  return {
    fd,
    name: new TextDecoder().decode(ifr.subarray(0, end < 0 ? sys.IFNAMSIZ : end)),
    vnetHdr: (flags & sys.IFF_VNET_HDR) !== 0,
  };
}
