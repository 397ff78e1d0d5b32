/**
 * Constants of the Linux system-call interface tapir uses.
 *
 * Most numbers are Linux's generic ones, shared by x86_64 and aarch64; the
 * few that differ (open flags, the epoll_event layout) sit in
 * {@linkcode ARCH_CONSTS}, one table per architecture, and the right table is
 * picked once at start-up from `Deno.build.arch`.
 *
 * @module
 */

/** Per-architecture values: everything here differs between x86_64 and aarch64. */
export interface ArchConsts {
  /** Size of `struct epoll_event`: packed (12) on x86_64, naturally aligned (16) on aarch64. */
  readonly EPOLL_EVENT_SIZE: number;
  /** Offset of `epoll_event.data` (the 64-bit tag). */
  readonly EPOLL_DATA_OFFSET: number;
  /** open(2) flags whose values differ. */
  readonly O_DIRECTORY: number;
  /** open(2): do not follow a final symbolic link. */
  readonly O_NOFOLLOW: number;
}

/** The per-architecture tables. */
export const ARCH_CONSTS: Readonly<Record<"x86_64" | "aarch64", ArchConsts>> = {
  x86_64: {
    EPOLL_EVENT_SIZE: 12,
    EPOLL_DATA_OFFSET: 4,
    O_DIRECTORY: 0o200000,
    O_NOFOLLOW: 0o400000,
  },
  aarch64: {
    EPOLL_EVENT_SIZE: 16,
    EPOLL_DATA_OFFSET: 8,
    O_DIRECTORY: 0o40000,
    O_NOFOLLOW: 0o100000,
  },
};

function pickArch(): ArchConsts {
  const arch = Deno.build.arch;
  if (arch !== "x86_64" && arch !== "aarch64") {
    throw new Error(`tapir supports x86_64 and aarch64, not ${arch}`);
  }
  return ARCH_CONSTS[arch];
}

/** The table for the architecture we run on. */
export const ARCH: ArchConsts = pickArch();

// Address families and socket types.
/** Address family: UNIX domain sockets. */
export const AF_UNIX = 1;
/** Address family: IPv4. */
export const AF_INET = 2;
/** Address family: IPv6. */
export const AF_INET6 = 10;
/** Address family: netlink. */
export const AF_NETLINK = 16;
/** Socket type: stream. */
export const SOCK_STREAM = 1;
/** Socket type: datagram. */
export const SOCK_DGRAM = 2;
/** Socket type: raw. */
export const SOCK_RAW = 3;
/** Socket type: sequenced packets. */
export const SOCK_SEQPACKET = 5;
/** socket(2) type flag: non-blocking. */
export const SOCK_NONBLOCK = 0o4000;
/** socket(2) type flag: close on exec. */
export const SOCK_CLOEXEC = 0o2000000;

// Protocol levels and protocols.
/** Option level: socket. */
export const SOL_SOCKET = 1;
/** IP protocol numbers (also option levels). */
export const IPPROTO_IP = 0;
/** ICMP. */
export const IPPROTO_ICMP = 1;
/** TCP. */
export const IPPROTO_TCP = 6;
/** UDP. */
export const IPPROTO_UDP = 17;
/** IPv6. */
export const IPPROTO_IPV6 = 41;
/** ICMPv6. */
export const IPPROTO_ICMPV6 = 58;
/** Netlink protocol: routing. */
export const NETLINK_ROUTE = 0;

// Socket options.
/** SOL_SOCKET options. */
export const SO_REUSEADDR = 2;
/** Socket type, read-only. */
export const SO_TYPE = 3;
/** Pending socket error (read clears it). */
export const SO_ERROR = 4;
/** Send buffer size. */
export const SO_SNDBUF = 7;
/** Receive buffer size. */
export const SO_RCVBUF = 8;
/** Keep-alive probes. */
export const SO_KEEPALIVE = 9;
/** Linger on close. */
export const SO_LINGER = 13;
/** Port reuse across sockets. */
export const SO_REUSEPORT = 15;
/** Receive timeout (`struct timeval`; the 64-bit layout on x86_64 and aarch64). */
export const SO_RCVTIMEO = 20;
/** Send timeout (`struct timeval`). */
export const SO_SNDTIMEO = 21;
/** Bind to a device. */
export const SO_BINDTODEVICE = 25;
/** Peek offset for MSG_PEEK. */
export const SO_PEEK_OFF = 42;
/** Socket memory counters. */
export const SO_MEMINFO = 55;
/** TCP_* options. */
export const TCP_NODELAY = 1;
/** Maximum segment size. */
export const TCP_MAXSEG = 2;
/** Connection information (struct tcp_info). */
export const TCP_INFO = 11;
/** Quick ACK mode. */
export const TCP_QUICKACK = 12;
/** IP_* options. */
export const IP_TTL = 2;
/** Deliver ICMP errors on the error queue. */
export const IP_RECVERR = 11;
/** IPV6_* options. */
export const IPV6_UNICAST_HOPS = 16;
/** Deliver ICMPv6 errors on the error queue. */
export const IPV6_RECVERR = 25;
/** Restrict an AF_INET6 socket to IPv6. */
export const IPV6_V6ONLY = 26;

// Message flags.
/** Peek without consuming. */
export const MSG_PEEK = 0x2;
/** Report/discard truncated data. */
export const MSG_TRUNC = 0x20;
/** Non-blocking for this call. */
export const MSG_DONTWAIT = 0x40;
/** Read from the error queue. */
export const MSG_ERRQUEUE = 0x2000;
/** No SIGPIPE on a broken stream. */
export const MSG_NOSIGNAL = 0x4000;
/** More data follows. */
export const MSG_MORE = 0x8000;
/** recvmmsg: block for the first message only. */
export const MSG_WAITFORONE = 0x10000;
/** Received: ancillary data did not fit (file descriptors past the buffer were closed). */
export const MSG_CTRUNC = 0x8;
/** recvmsg: file descriptors received with SCM_RIGHTS get close-on-exec. */
export const MSG_CMSG_CLOEXEC = 0x40000000;
/** Ancillary data type at SOL_SOCKET: file descriptors. */
export const SCM_RIGHTS = 1;
/** shutdown(2) directions. */
export const SHUT_RD = 0;
/** Shut down writing (send FIN). */
export const SHUT_WR = 1;
/** Shut down both directions. */
export const SHUT_RDWR = 2;

// Files.
/** open(2) access modes and flags (generic values). */
export const O_RDONLY = 0;
/** Write only. */
export const O_WRONLY = 1;
/** Read and write. */
export const O_RDWR = 2;
/** Create if missing. */
export const O_CREAT = 0o100;
/** Truncate. */
export const O_TRUNC = 0o1000;
/** Append. */
export const O_APPEND = 0o2000;
/** Non-blocking. */
export const O_NONBLOCK = 0o4000;
/** Close on exec. */
export const O_CLOEXEC = 0o2000000;
/** open(2): a descriptor that only names a path (for Landlock rules, say). */
export const O_PATH = 0o10000000;
/** fcntl(2) commands. */
export const F_GETFD = 1;
/** Set descriptor flags. */
export const F_SETFD = 2;
/** Get status flags. */
export const F_GETFL = 3;
/** Set status flags. */
export const F_SETFL = 4;
/** Duplicate a descriptor, close-on-exec. */
export const F_DUPFD_CLOEXEC = 1030;
/** Set pipe capacity. */
export const F_SETPIPE_SZ = 1031;
/** Get pipe capacity. */
export const F_GETPIPE_SZ = 1032;
/** Descriptor flag: close on exec. */
export const FD_CLOEXEC = 1;
/** splice(2) flags. */
export const SPLICE_F_MOVE = 1;
/** Non-blocking splice. */
export const SPLICE_F_NONBLOCK = 2;
/** More data follows. */
export const SPLICE_F_MORE = 4;

// epoll, eventfd, timerfd.
/** Readable. */
export const EPOLLIN = 0x1;
/** Urgent data. */
export const EPOLLPRI = 0x2;
/** Writable. */
export const EPOLLOUT = 0x4;
/** Error condition. */
export const EPOLLERR = 0x8;
/** Hang-up. */
export const EPOLLHUP = 0x10;
/** Peer closed its writing half. */
export const EPOLLRDHUP = 0x2000;
/** Edge-triggered (bit 31; an unsigned 32-bit value). */
export const EPOLLET = 0x80000000;
/** epoll_ctl operations. */
export const EPOLL_CTL_ADD = 1;
/** Remove an fd. */
export const EPOLL_CTL_DEL = 2;
/** Modify an fd's events or tag. */
export const EPOLL_CTL_MOD = 3;
/** epoll_create1 flag. */
export const EPOLL_CLOEXEC = 0o2000000;
/** eventfd flags. */
export const EFD_CLOEXEC = 0o2000000;
/** Non-blocking eventfd. */
export const EFD_NONBLOCK = 0o4000;
/** Clocks. */
export const CLOCK_REALTIME = 0;
/** Monotonic clock. */
export const CLOCK_MONOTONIC = 1;
/** timerfd flags. */
export const TFD_CLOEXEC = 0o2000000;
/** Non-blocking timerfd. */
export const TFD_NONBLOCK = 0o4000;

// inotify.
/** inotify_init1 flag: close on exec. */
export const IN_CLOEXEC = 0o2000000;
/** inotify_init1 flag: non-blocking. */
export const IN_NONBLOCK = 0o4000;
/** A file was moved out of a watched directory. */
export const IN_MOVED_FROM = 0x40;
/** A file was deleted from a watched directory. */
export const IN_DELETE = 0x200;
/** The watched file or directory itself was deleted. */
export const IN_DELETE_SELF = 0x400;
/** The watch was removed (the file is gone, or its file system unmounted). */
export const IN_IGNORED = 0x8000;
/** An unmount took the watched object away. */
export const IN_UNMOUNT = 0x2000;

// Namespaces, processes, memory.
/** unshare/setns: mount namespace. */
export const CLONE_NEWNS = 0x00020000;
/** UTS namespace. */
export const CLONE_NEWUTS = 0x04000000;
/** User namespace. */
export const CLONE_NEWUSER = 0x10000000;
/** Network namespace. */
export const CLONE_NEWNET = 0x40000000;
/** prctl: deliver a signal when the parent dies. */
export const PR_SET_PDEATHSIG = 1;
/** prctl: set the thread's name. */
export const PR_SET_NAME = 15;
/** prctl: get the thread's name. */
export const PR_GET_NAME = 16;
/** prctl: no new privileges. */
export const PR_SET_NO_NEW_PRIVS = 38;
/** mmap protections. */
export const PROT_READ = 1;
/** Writable mapping. */
export const PROT_WRITE = 2;
/** Executable mapping. */
export const PROT_EXEC = 4;
/** Shared mapping. */
export const MAP_SHARED = 1;
/** Private mapping. */
export const MAP_PRIVATE = 2;
/** Anonymous mapping. */
export const MAP_ANONYMOUS = 0x20;
/** No swap space set aside for the mapping: it reserves address space only. */
export const MAP_NORESERVE = 0x4000;
/** madvise: the pages go back to the kernel now; an anonymous mapping reads zeros there after. */
export const MADV_DONTNEED = 4;
/** memfd_create flag: close on exec. */
export const MFD_CLOEXEC = 1;
/** memfd_create flag: seals may be added (without it the file is sealed for good, unsealed). */
export const MFD_ALLOW_SEALING = 2;
/** fcntl(2): add seals to a memfd. */
export const F_ADD_SEALS = 1033;
/** fcntl(2): a memfd's seals. */
export const F_GET_SEALS = 1034;
/** Seal: no more seals may be added. */
export const F_SEAL_SEAL = 1;
/** Seal: the file may not shrink. */
export const F_SEAL_SHRINK = 2;

// ioctl requests (generic encoding, the same on x86_64 and aarch64).
/** Bytes readable now. */
export const FIONREAD = 0x541b;
/** Bytes in a socket's send queue not yet acknowledged (TIOCOUTQ). */
export const SIOCOUTQ = 0x5411;
/** tun: attach to / create an interface (`_IOW('T', 202, int)`). */
export const TUNSETIFF = 0x400454ca;
/** tun: set offloads. */
export const TUNSETOFFLOAD = 0x400454d0;
/** tun: set the vnet header size. */
export const TUNSETVNETHDRSZ = 0x400454d8;
/** TUNSETOFFLOAD flag: the reader takes frames with checksums left partial. */
export const TUN_F_CSUM = 0x01;
/** TUNSETOFFLOAD flag: the reader takes TCP over IPv4 GSO frames (needs TUN_F_CSUM). */
export const TUN_F_TSO4 = 0x02;
/** TUNSETOFFLOAD flag: the reader takes TCP over IPv6 GSO frames (needs TUN_F_CSUM). */
export const TUN_F_TSO6 = 0x04;
/** TUNSETOFFLOAD flag: the reader takes UDP GSO frames over IPv4 (only with TUN_F_USO6). */
export const TUN_F_USO4 = 0x20;
/** TUNSETOFFLOAD flag: the reader takes UDP GSO frames over IPv6 (only with TUN_F_USO4). */
export const TUN_F_USO6 = 0x40;
/** `SOL_UDP`: the socket level of UDP options. */
export const SOL_UDP = 17;
/** UDP option and control message: send a buffer as datagrams of this many bytes (u16). */
export const UDP_SEGMENT = 103;
/** tun flags. */
export const IFF_TUN = 0x0001;
/** tap (Ethernet frames). */
export const IFF_TAP = 0x0002;
/** No packet information prefix. */
export const IFF_NO_PI = 0x1000;
/** Frames carry a virtio-net header. */
export const IFF_VNET_HDR = 0x4000;
/** Interface name size, with the terminating zero. */
export const IFNAMSIZ = 16;

/** Size of `struct virtio_net_hdr` (without `num_buffers`): what a tap opened with IFF_VNET_HDR puts before each frame. */
export const VNET_HDR_LEN = 10;
