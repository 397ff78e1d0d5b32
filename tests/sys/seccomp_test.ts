import { equal, match, ok } from "node:assert/strict";
import {
  Bpf,
  BPF_INSN_SIZE,
  buildDenyFilter,
  CLONE_THREAD,
  SECCOMP_DATA_ARCH,
  SECCOMP_DATA_NR,
  seccompArch,
  SeccompRet,
  SYSCALL_NUMBERS,
} from "../../lib/sys/seccomp.ts";
import { SANDBOX_DENIED, sandboxFilter } from "../../lib/sandbox.ts";

const X86 = SYSCALL_NUMBERS.x86_64;
const AUDIT_X86_64 = 0xc000003e;
const AUDIT_I386 = 0x40000003;

/**
 * Runs a classic-BPF program the way the kernel runs a seccomp filter, over
 * a `struct seccomp_data` of `nr`, `arch` and the first argument; only the
 * opcodes `buildDenyFilter` emits are known, anything else fails the test.
 */
function runFilter(prog: Uint8Array, nr: number, arch = AUDIT_X86_64, arg0 = 0): number {
  const data = new DataView(new ArrayBuffer(64));
  data.setUint32(SECCOMP_DATA_NR, nr, true);
  data.setUint32(SECCOMP_DATA_ARCH, arch, true);
  data.setBigUint64(16, BigInt(arg0), true);
  const p = new DataView(prog.buffer, prog.byteOffset, prog.byteLength);
  const count = prog.length / BPF_INSN_SIZE;
  let a = 0;
  for (let pc = 0; pc < count; pc++) {
    const at = pc * BPF_INSN_SIZE;
    const code = p.getUint16(at, true), jt = p.getUint8(at + 2), jf = p.getUint8(at + 3);
    const k = p.getUint32(at + 4, true);
    switch (code) {
      case Bpf.LD_W_ABS:
        a = data.getUint32(k, true);
        break;
      case Bpf.JEQ_K:
        pc += a === k ? jt : jf;
        break;
      case Bpf.JGE_K:
        pc += a >= k ? jt : jf;
        break;
      case Bpf.JSET_K:
        pc += (a & k) !== 0 ? jt : jf;
        break;
      case Bpf.RET_K:
        return k;
      default:
        throw new Error(`unknown opcode ${code} at ${pc}`);
    }
  }
  throw new Error("the program ran off its end");
}

const EPERM = SeccompRet.ERRNO | 1;
const ENOSYS = SeccompRet.ERRNO | 38;

Deno.test("the sandbox's filter denies what it lists and allows the rest", () => {
  const prog = sandboxFilter("x86_64")!;
  for (const names of Object.values(SANDBOX_DENIED)) {
    for (const name of names) {
      const nr = (X86 as Record<string, number>)[name];
      ok(nr !== undefined, `${name} has an x86_64 number`);
      equal(runFilter(prog, nr), EPERM, name);
    }
  }
  // Numbers written out, not taken from the table under test.
  const allowed = {
    read: 0,
    write: 1,
    mmap: 9,
    futex: 202,
    epoll_wait: 232,
    openat: 257,
    sendmmsg: 307,
  };
  for (const [name, nr] of Object.entries(allowed)) {
    equal(runFilter(prog, nr), SeccompRet.ALLOW, name);
  }
});

Deno.test("clone makes threads but not processes; clone3 falls back to clone", () => {
  const prog = sandboxFilter("x86_64")!;
  const threadFlags = 0x3d0f00; // what glibc's pthread_create passes, CLONE_THREAD among them
  ok(threadFlags & CLONE_THREAD);
  equal(runFilter(prog, X86.clone, AUDIT_X86_64, threadFlags), SeccompRet.ALLOW);
  equal(runFilter(prog, X86.clone, AUDIT_X86_64, 0x11 /* SIGCHLD: fork */), EPERM);
  equal(runFilter(prog, X86.clone, AUDIT_X86_64, 0x4111 /* CLONE_VFORK|CLONE_VM */), EPERM);
  equal(runFilter(prog, X86.clone3), ENOSYS);
});

Deno.test("another architecture's entry point kills; x32 numbers are refused", () => {
  const prog = sandboxFilter("x86_64")!;
  equal(runFilter(prog, 0, AUDIT_I386), SeccompRet.KILL_PROCESS);
  equal(runFilter(prog, 0x40000000 + 0), EPERM, "x32 read");
});

Deno.test("the aarch64 filter uses aarch64's numbers and has no x32 rule", () => {
  const prog = sandboxFilter("aarch64")!;
  const audit = 0xc00000b7;
  equal(runFilter(prog, SYSCALL_NUMBERS.aarch64.execve, audit), EPERM);
  equal(runFilter(prog, 59, /* x86_64's execve: aarch64's 59 is pipe2 */ audit), SeccompRet.ALLOW);
  equal(runFilter(prog, 0x40000000, audit), SeccompRet.ALLOW);
  equal(runFilter(prog, 0, AUDIT_X86_64), SeccompRet.KILL_PROCESS);
  equal(sandboxFilter("riscv64"), null);
});

Deno.test("a list too long for one-byte jumps is refused, not truncated", () => {
  const many = Array.from({ length: 300 }, (_, i) => 1000 + i);
  let error = "";
  try {
    buildDenyFilter(seccompArch("x86_64"), many);
  } catch (e) {
    error = (e as Error).message;
  }
  match(error, /too many/);
});

Deno.test({
  name:
    "on this kernel: every thread gets no_new_privs, the filter and fewer capabilities; exec fails",
  ignore: Deno.build.os !== "linux",
  async fn() {
    // In a process of its own: the filter cannot be taken off again.
    const sandbox = new URL("../../lib/sandbox.ts", import.meta.url).href;
    const script = `
      import { applySandbox } from "${sandbox}";
      const w = new Worker("data:text/javascript,onmessage=()=>postMessage(1)", { type: "module" });
      const report = applySandbox();
      const threads = [...Deno.readDirSync("/proc/self/task")].map((t) => {
        const s = Deno.readTextFileSync("/proc/self/task/" + t.name + "/status");
        return /NoNewPrivs:\\s*(\\d)/.exec(s)[1] + /Seccomp:\\s*(\\d)/.exec(s)[1] + " " +
          /CapEff:\\s*(\\w+)/.exec(s)[1];
      });
      let exec = "ran";
      try { await new Deno.Command("true").output(); } catch (e) { exec = e.name; }
      w.postMessage(0);
      const worker = await new Promise((r) => w.onmessage = (e) => r(e.data));
      w.terminate();
      report.capabilities = report.capabilities?.toString(16);
      console.log(JSON.stringify({ report, threads, exec, worker }));
    `;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "-"],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const w = out.stdin.getWriter();
    await w.write(new TextEncoder().encode(script));
    await w.close();
    const { code, stdout } = await out.output();
    equal(code, 0);
    const got = JSON.parse(new TextDecoder().decode(stdout));
    equal(got.report.noNewPrivs, true);
    equal(got.report.seccomp, true);
    ok(got.threads.length > 1, `threads ${got.threads}`);
    // Run as root (as the tests are): CAP_NET_BIND_SERVICE is what stays.
    const caps = Deno.uid() === 0 ? "0000000000000400" : "0000000000000000";
    equal(got.report.capabilities, Deno.uid() === 0 ? "400" : "0");
    for (const t of got.threads) {
      equal(t, `12 ${caps}`, "NoNewPrivs 1, Seccomp 2, CapEff on every thread");
    }
    equal(got.exec, "PermissionDenied");
    equal(got.worker, 1, "a worker still answers");
  },
});
