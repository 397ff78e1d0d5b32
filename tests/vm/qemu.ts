/**
 * The VM tests' guest under QEMU: building it (tests/vm/build.sh), its
 * kernel command line, and QEMU's arguments for the stream socket or
 * vhost-user. Shared by tests/vm/vm_test.ts and the benchmark's QEMU rows.
 *
 * @module
 */

import { runOk } from "../helpers/netns.ts";

const HERE = new URL(".", import.meta.url).pathname;

/** The guest's kernel and initramfs. */
export interface GuestImage {
  readonly kernel: string;
  readonly initrd: string;
}

/** Guest memory over vhost-user (shared with tapir): room for 64 MiB files in the guest's RAM. */
export const VHOST_GUEST_MEM_MB = 512;

/** Builds (or finds in the cache) the guest's kernel and initramfs. */
export async function buildGuest(): Promise<GuestImage> {
  const out = (await runOk("sh", [`${HERE}build.sh`])).trim().split("\n").pop()!;
  return { kernel: `${out}/vmlinuz`, initrd: `${out}/initramfs.gz` };
}

/**
 * QEMU's arguments for a guest booted with kernel command line `append`,
 * networked through `socket` by the stream protocol or vhost-user (with
 * `listen`, QEMU is the socket's server, as when libvirt hands the
 * back-end a connected socket).
 */
export function qemuArgs(
  guest: GuestImage,
  append: string,
  socket: string,
  vhost: boolean,
  listen = false,
): string[] {
  const common = [
    "-machine",
    "q35",
    "-accel",
    "tcg",
    "-nodefaults",
    "-display",
    "none",
    "-no-reboot",
    "-serial",
    "stdio",
    "-kernel",
    guest.kernel,
    "-initrd",
    guest.initrd,
    "-append",
    append,
  ];
  if (vhost) {
    return [
      ...common,
      "-m",
      `${VHOST_GUEST_MEM_MB}`,
      // vhost-user needs guest memory tapir can map: a shared memfd.
      "-object",
      `memory-backend-memfd,id=mem,size=${VHOST_GUEST_MEM_MB}M,share=on`,
      "-numa",
      "node,memdev=mem",
      "-chardev",
      // `listen`: QEMU makes the socket and waits for its back-end to connect.
      `socket,id=c0,path=${socket}${listen ? ",server=on,wait=on" : ""}`,
      "-netdev",
      "vhost-user,id=n0,chardev=c0",
      "-device",
      "virtio-net-pci,netdev=n0,romfile=,vectors=0",
    ];
  }
  return [
    ...common,
    "-m",
    "256",
    "-netdev",
    `stream,id=n0,server=off,addr.type=unix,addr.path=${socket}`,
    // No option ROM: the kernel is loaded directly, iPXE would only slow
    // boot. No event index: with it, QEMU 7.2 under TCG stopped filling
    // the guest's receive ring for good in 4 of 8 relay runs (the
    // guest's rx_packets frozen while QEMU had read every frame tapir
    // sent, window probes included; the same with mrg_rxbuf=off); with
    // notifications suppressed by flags instead, none of 6 stalled.
    "-device",
    "virtio-net-pci,netdev=n0,romfile=,event_idx=off",
  ];
}

/** The kernel command line of a guest that runs the steps `params` lists. */
export function guestAppend(params: Record<string, string | number>): string {
  return [
    "console=ttyS0",
    "loglevel=1",
    "panic=-1",
    ...Object.entries(params).map(([k, v]) => `tapirvm.${k}=${v}`),
  ].join(" ");
}
