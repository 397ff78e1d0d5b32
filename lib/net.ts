/**
 * The network as tapir presents it to the guest.
 *
 * Fixed at start-up from the command line and, where the user left a value
 * out, from the host (as pasta does: the guest gets the host's address,
 * prefix and gateway, so addresses look the same inside and out). Everything
 * that answers the guest — ARP, NDP, DHCP, DHCPv6 — and the address mapping
 * of the translation layer read this one description.
 *
 * The guest talks to tapir as if tapir were its gateway: every frame from
 * tapir has source MAC {@linkcode GuestNet.ourMac}, and IPv6 router
 * advertisements come from {@linkcode GuestNet6.ourLinkLocal}.
 *
 * @module
 */

import type { NsConfig, VmConfig } from "./conf.ts";
import { parseIp } from "./addr.ts";
import type { AddrMapRules } from "./fwd.ts";
import { Netlink } from "./netlink.ts";

/** tapir's MAC: locally administered (02), then the bytes of "Tapir". */
export const TAPIR_MAC: Readonly<Uint8Array> = new Uint8Array([0x02, 0x54, 0x61, 0x70, 0x69, 0x72]);

/** What tapir reads from the host to fill in what the user left out. */
export interface HostFacts {
  /** Name of the interface of the host's default route (IPv4 first), if any. */
  readonly ifname: string | null;
  /** Host's IPv4 address on that interface, its prefix and the default gateway. */
  readonly addr4: Uint8Array | null;
  /** Prefix length of {@linkcode addr4}. */
  readonly prefix4: number | null;
  /** IPv4 default gateway. */
  readonly gateway4: Uint8Array | null;
  /** Host's global IPv6 address, its prefix and the IPv6 default gateway. */
  readonly addr6: Uint8Array | null;
  /** Prefix length of {@linkcode addr6}. */
  readonly prefix6: number | null;
  /** IPv6 default gateway. */
  readonly gateway6: Uint8Array | null;
}

/** The guest's IPv4 settings. Addresses are u32 numbers. */
export interface GuestNet4 {
  /** The guest's address. */
  readonly addr: number;
  /** Its prefix length. */
  readonly prefixLen: number;
  /** The default gateway: tapir itself, as far as the guest can tell. */
  readonly gateway: number;
  /** DNS servers offered by DHCP. */
  readonly dns: readonly number[];
}

/** The guest's IPv6 settings. Addresses are 16-byte arrays. */
export interface GuestNet6 {
  /** The guest's global address (offered by DHCPv6; SLAAC derives its own from the prefix). */
  readonly addr: Uint8Array;
  /** Prefix length of the on-link prefix advertised (64 for SLAAC). */
  readonly prefixLen: number;
  /** The default gateway the guest is configured with (`--config-net`). */
  readonly gateway: Uint8Array;
  /** tapir's link-local address: the source of router advertisements. */
  readonly ourLinkLocal: Uint8Array;
  /** DNS servers offered by RA (RDNSS) and DHCPv6. */
  readonly dns: readonly Uint8Array[];
}

/**
 * Everything about the guest's network; see the module comment. The address
 * mapping rules (gateway → host loopback, `--loopback-only`, `--dns-forward`)
 * are those of `AddrMapRules`.
 */
export interface GuestNet extends AddrMapRules {
  /** tapir's MAC address, the guest's gateway MAC. */
  readonly ourMac: Uint8Array;
  /** MTU of the guest interface. */
  readonly mtu: number;
  /** IPv4 settings, or null if IPv4 is off. */
  readonly ip4: GuestNet4 | null;
  /** IPv6 settings, or null if IPv6 is off. */
  readonly ip6: GuestNet6 | null;
  /** DNS search domains. */
  readonly search: readonly string[];
  /** Boot file (URL) offered by DHCP and DHCPv6, or "" for none. */
  readonly bootfile: string;
  /** Idle timeout of UDP flows, ms. */
  readonly udpTimeoutMs: number;
  /** Idle time after which a ping flow ends (default `PING_IDLE_MS`; the fuzzer shortens it). */
  readonly pingIdleMs?: number;
  /** Which services tapir runs for the guest. */
  readonly services: GuestServices;
  /** `-o`/`--outbound-if4`: IPv4 address outbound sockets are bound to, or null. */
  readonly outbound4?: Uint8Array | null;
  /** `-o`/`--outbound-if6`: IPv6 address outbound sockets are bound to, or null. */
  readonly outbound6?: Uint8Array | null;
}

/** The services switched on (all by default; `--no-dhcp` and friends turn them off). */
export interface GuestServices {
  /** DHCP server. */
  readonly dhcp: boolean;
  /** Neighbour and router solicitations answered. */
  readonly ndp: boolean;
  /** DHCPv6 server. */
  readonly dhcpv6: boolean;
  /** Router advertisements sent. */
  readonly ra: boolean;
}

/** Reads a 4-byte IPv4 address as a u32 number. */
export function ip4ToU32(b: Uint8Array, off = 0): number {
  return ((b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3]) >>> 0;
}

/** Writes u32 `addr` as 4 bytes at `b[off..]`. */
export function u32ToIp4(addr: number, b: Uint8Array = new Uint8Array(4), off = 0): Uint8Array {
  b[off] = addr >>> 24;
  b[off + 1] = addr >>> 16;
  b[off + 2] = addr >>> 8;
  b[off + 3] = addr;
  return b;
}

/** The link-local address fe80::/64 with the modified EUI-64 interface id of `mac` (RFC 4291 app. A). */
export function linkLocalFromMac(mac: Uint8Array): Uint8Array {
  const a = new Uint8Array(16);
  a[0] = 0xfe;
  a[1] = 0x80;
  a[8] = mac[0] ^ 0x02;
  a[9] = mac[1];
  a[10] = mac[2];
  a[11] = 0xff;
  a[12] = 0xfe;
  a[13] = mac[3];
  a[14] = mac[4];
  a[15] = mac[5];
  return a;
}

/** The first address of `addr`'s subnet other than `addr` itself (a gateway of last resort). */
function firstOtherInSubnet4(addr: number, prefixLen: number): number {
  const mask = prefixLen === 0 ? 0 : (~0 << (32 - prefixLen)) >>> 0;
  const first = ((addr & mask) + 1) >>> 0;
  return first === addr ? (first + 1) >>> 0 : first;
}

/**
 * The first IPv4 and IPv6 nameservers of `/etc/resolv.conf`: where
 * `--dns-forward` relays queries when `--dns-host` is not given.
 */
export function hostNameservers(
  path = "/etc/resolv.conf",
): { v4: Uint8Array | null; v6: Uint8Array | null } {
  const out: { v4: Uint8Array | null; v6: Uint8Array | null } = { v4: null, v6: null };
  let text = "";
  try {
    text = Deno.readTextFileSync(path);
  } catch {
    return out;
  }
  for (const line of text.split("\n")) {
    const m = line.match(/^\s*nameserver\s+(\S+)/);
    const ip = m ? parseIp(m[1].split("%")[0]) : null;
    if (ip?.family === 4) out.v4 ??= ip.bytes;
    else if (ip?.family === 6) out.v6 ??= ip.bytes;
  }
  return out;
}

/**
 * Builds the guest's network from the configuration, filling what the user
 * left out from `host`. A family is off when the user disabled it (`-4`,
 * `-6`) or when neither the user nor the host gives an address for it.
 * `nameservers` is consulted only for `--dns-forward` without `--dns-host`.
 */
export function guestNetFrom(
  conf: NsConfig | VmConfig,
  host: HostFacts,
  nameservers: () => { v4: Uint8Array | null; v6: Uint8Array | null } = hostNameservers,
): GuestNet {
  let ip4: GuestNet4 | null = null;
  const addr4 = conf.addr4 ?? host.addr4;
  if (conf.ipv4 && addr4) {
    const addr = ip4ToU32(addr4);
    const prefixLen = conf.prefix4 ?? (conf.addr4 ? null : host.prefix4) ?? 24;
    const gw = conf.gateway4 ?? host.gateway4;
    ip4 = {
      addr,
      prefixLen,
      gateway: gw ? ip4ToU32(gw) : firstOtherInSubnet4(addr, prefixLen),
      dns: conf.dns.filter((d) => d.family === 4).map((d) => ip4ToU32(d.bytes)),
    };
    // Offer the relay address as the guest's resolver unless -D says otherwise.
    if (ip4.dns.length === 0 && conf.dnsForward4) {
      ip4 = { ...ip4, dns: [ip4ToU32(conf.dnsForward4)] };
    }
  }
  let ip6: GuestNet6 | null = null;
  const addr6 = conf.addr6 ?? host.addr6;
  if (conf.ipv6 && addr6) {
    const ourLinkLocal = linkLocalFromMac(TAPIR_MAC);
    ip6 = {
      addr: addr6,
      prefixLen: 64,
      gateway: conf.gateway6 ?? host.gateway6 ?? ourLinkLocal,
      ourLinkLocal,
      dns: conf.dns.filter((d) => d.family === 6).map((d) => d.bytes),
    };
    if (ip6.dns.length === 0 && conf.dnsForward6) ip6 = { ...ip6, dns: [conf.dnsForward6] };
  }
  const mapLo4: number[] = [];
  if (ip4 && conf.mapGw) mapLo4.push(ip4.gateway);
  if (conf.mapHostLoopback4) mapLo4.push(ip4ToU32(conf.mapHostLoopback4));
  const mapLo6: Uint8Array[] = [];
  if (ip6 && conf.mapGw) mapLo6.push(ip6.gateway);
  if (ip6 && conf.mapGw && ip6.gateway !== ip6.ourLinkLocal) mapLo6.push(ip6.ourLinkLocal);
  if (conf.mapHostLoopback6) mapLo6.push(conf.mapHostLoopback6);
  const forwarding = conf.dnsForward4 !== null || conf.dnsForward6 !== null;
  const ns = forwarding && (!conf.dnsHost4 || !conf.dnsHost6)
    ? nameservers()
    : { v4: null, v6: null };
  const dnsHost4 = conf.dnsHost4 ?? ns.v4;
  return {
    ourMac: TAPIR_MAC,
    mtu: conf.mtu,
    ip4,
    ip6,
    search: conf.search,
    bootfile: conf.bootfile,
    mapLo4,
    mapLo6,
    loopbackOnly: conf.loopbackOnly,
    noHostLoopback: conf.noHostLoopback,
    mapGuest4: conf.mapGuestAddr4 ? ip4ToU32(conf.mapGuestAddr4) : 0,
    hostAddr4: host.addr4 ? ip4ToU32(host.addr4) : 0,
    mapGuest6: conf.mapGuestAddr6,
    hostAddr6: host.addr6,
    outbound4: conf.outbound4,
    outbound6: conf.outbound6,
    dnsForward4: conf.dnsForward4 ? ip4ToU32(conf.dnsForward4) : 0,
    dnsHost4: dnsHost4 ? ip4ToU32(dnsHost4) : 0,
    dnsForward6: conf.dnsForward6,
    dnsHost6: conf.dnsHost6 ?? ns.v6,
    udpTimeoutMs: conf.udpTimeout * 1000,
    services: { dhcp: conf.dhcp, ndp: conf.ndp, dhcpv6: conf.dhcpv6, ra: conf.ra },
  };
}

/** Address flags that make an address unusable as the guest's copy. */
const IFA_F_TENTATIVE_DEPRECATED = 0x40 | 0x20;

/**
 * Reads the host's default-route interface, its global addresses and the
 * default gateways, from the calling thread's network namespace (call it on
 * the main thread: the host's). Missing pieces are null.
 */
export function hostFacts(): HostFacts {
  const nl = new Netlink();
  try {
    const pick = (family: 4 | 6) => {
      const route = nl.defaultRoute(family);
      if (route === null || typeof route === "number") return null;
      const addrs = nl.addrList(family);
      if (typeof addrs === "number") return null;
      const own = addrs.filter((a) =>
        a.scope === 0 && (a.flags & IFA_F_TENTATIVE_DEPRECATED) === 0
      );
      const addr = own.find((a) => a.index === route.index) ?? own[0] ?? null;
      return { route, addr };
    };
    const v4 = pick(4);
    const v6 = pick(6);
    const index = v4?.route.index ?? v6?.route.index ?? 0;
    const link = index > 0 ? nl.linkGet(index) : -1;
    return {
      ifname: typeof link === "number" ? null : link.name,
      addr4: v4?.addr?.addr ?? null,
      prefix4: v4?.addr?.prefixLen ?? null,
      gateway4: v4?.route.gateway ?? null,
      addr6: v6?.addr?.addr ?? null,
      prefix6: v6?.addr?.prefixLen ?? null,
      gateway6: v6?.route.gateway ?? null,
    };
  } finally {
    nl.close();
  }
}

/**
 * The first usable global address of `family` on interface `ifname` in the
 * calling thread's namespace (`--outbound-if4`, `--outbound-if6`), or a
 * one-line reason why there is none.
 */
export function interfaceAddress(ifname: string, family: 4 | 6): Uint8Array | string {
  const nl = new Netlink();
  try {
    const index = nl.linkIndex(ifname);
    if (index < 0) return `no interface '${ifname}'`;
    const addrs = nl.addrList(family);
    if (typeof addrs === "number") return `cannot list addresses (errno ${-addrs})`;
    const own = addrs.find((a) =>
      a.index === index && a.scope === 0 && (a.flags & IFA_F_TENTATIVE_DEPRECATED) === 0
    );
    return own?.addr ?? `${ifname} has no global IPv${family} address`;
  } finally {
    nl.close();
  }
}

/**
 * The guest's network for `conf` on this host ({@linkcode guestNetFrom}),
 * with the outbound interfaces' addresses (`--outbound-if4`,
 * `--outbound-if6`) filled in; or a one-line reason why the guest cannot be
 * served.
 */
export function guestNetOf(conf: NsConfig | VmConfig, host: HostFacts): GuestNet | string {
  let net = guestNetFrom(conf, host);
  if (!net.ip4 && !net.ip6) {
    return "no address for the guest: the host has none to copy; give one with -a";
  }
  for (const [family, ifname] of [[4, conf.outboundIf4], [6, conf.outboundIf6]] as const) {
    if (ifname === null) continue;
    const addr = interfaceAddress(ifname, family);
    if (typeof addr === "string") return `--outbound-if${family}: ${addr}`;
    net = family === 4 ? { ...net, outbound4: addr } : { ...net, outbound6: addr };
  }
  return net;
}
