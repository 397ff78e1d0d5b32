/**
 * `-o` / `--outbound-if4` / `--outbound-if6`: the source address of the host
 * sockets tapir opens for the guest's own connections, flows and pings.
 *
 * On a host with several addresses the user may want the guest's traffic to
 * leave from one of them (slirp4netns's `--outbound-addr`). Each outbound
 * socket is bound to that address (port 0: the kernel picks one) before it
 * connects. Sockets for forwarded ports are not outbound and are left alone.
 *
 * @module
 */

import * as sys from "../sys/mod.ts";

/** Binds new outbound sockets to the configured source address of their family. */
export class OutboundBind {
  readonly #sa4: Uint8Array | null;
  readonly #len4: number;
  readonly #sa6: Uint8Array | null;
  readonly #len6: number;

  /** Sources per family (4 and 16 bytes), or null to leave that family unbound. */
  constructor(addr4: Uint8Array | null | undefined, addr6: Uint8Array | null | undefined) {
    this.#sa4 = addr4 ? new Uint8Array(sys.SOCKADDR_IN_SIZE) : null;
    this.#len4 = addr4 ? sys.sockaddrIn4(this.#sa4!, addr4, 0) : 0;
    this.#sa6 = addr6 ? new Uint8Array(sys.SOCKADDR_IN6_SIZE) : null;
    this.#len6 = addr6 ? sys.sockaddrIn6(this.#sa6!, addr6, 0) : 0;
  }

  /** Binds `fd` (of family IPv6 if `v6`) to the source of its family; 0, or -errno from bind(2). */
  apply(fd: number, v6: boolean): number {
    const sa = v6 ? this.#sa6 : this.#sa4;
    return sa === null ? 0 : sys.bind(fd, sa, v6 ? this.#len6 : this.#len4);
  }
}
