/**
 * The counters registry: one place that knows every counter tapir keeps.
 *
 * # Theory of operation
 *
 * Each module keeps its counters in a plain object of numeric fields (its
 * `stats`) and increments them in place: `this.stats.bytesToHost += n` costs
 * nothing more than a property store, and no allocation. At set-up the
 * owner of a module registers that object under a group name (`tcp`, `udp`,
 * `tap`, `loop`, …) with {@linkcode StatsRegistry.add}. Only the registry
 * lists, snapshots and diffs counters, so a module added later shows up in
 * every report (the log line on SIGUSR2, `--stats`, the control socket)
 * once it is registered, and a test can check that nothing was left out.
 *
 * A group's fields are flattened into counter names: a number is a counter;
 * a nested object of numbers (a service's drop reasons) gives one counter
 * per field, named parent + field (`drop` + `malformed` → `dropMalformed`);
 * an array of numbers (a drop counter indexed by a reason code) needs labels
 * for its indexes, given at registration, and gives one counter per label.
 * Anything else (strings, functions) is not a counter and is skipped.
 *
 * A source is the object itself, or a function returning it (or null for
 * "absent now"), for parts that are replaced at run time — a vhost-user
 * front-end's rings come and go with the front-end.
 *
 * ## Names
 *
 * Group names are lower-case words joined by `-`; counter names are
 * camelCase. Direction words: `ToHost` for traffic from the guest (or the
 * namespace) toward the host, `ToGuest` for the other way; no other
 * direction words (`In`, `Out`, `Tap`, `Ns` as directions). Each cause of a
 * drop is its own counter named `drop` + cause; a lumped `dropped` is not
 * allowed. {@linkcode counterNameProblem} states the rule, and the tests run
 * it over every registered counter.
 *
 * @module
 */

/** A snapshot: group name → counter name → value. */
export type CountersSnapshot = Record<string, Record<string, number>>;

/** Where a group's counters are read from: the object, or a getter for one that comes and goes. */
export type StatsSource = object | (() => object | null);

/** Labels for the array fields of a group: field name → label per index (undefined: not a counter). */
export type StatsLabels = Readonly<Record<string, ReadonlyArray<string | undefined>>>;

interface Group {
  readonly name: string;
  readonly source: StatsSource;
  readonly labels: StatsLabels;
}

const GROUP_NAME = /^[a-z][a-z0-9]*(-[a-z0-9]+)*$/;
const COUNTER_NAME = /^[a-z][a-zA-Z0-9]*$/;
/** Direction words the scheme does not use (see the module comment). */
const WRONG_DIRECTION = /(In|Out|[Tt]o(Tap|Ns)|[Ff]rom(Tap|Ns|Host|Guest))$/;

/**
 * Why `name` breaks the naming scheme (see the module comment), or null if
 * it follows it. `name` is a counter name as it appears in a snapshot.
 */
export function counterNameProblem(name: string): string | null {
  if (!COUNTER_NAME.test(name)) return `'${name}' is not a camelCase name`;
  if (name === "dropped" || name.startsWith("dropped")) {
    return `'${name}' lumps drops together: count each cause as drop<Cause>`;
  }
  if (WRONG_DIRECTION.test(name)) return `'${name}': directions are ToHost and ToGuest`;
  return null;
}

function capitalise(s: string): string {
  return s.length === 0 ? s : s[0].toUpperCase() + s.slice(1);
}

function isNumberArray(v: unknown): v is ArrayLike<number> {
  return ArrayBuffer.isView(v) || (Array.isArray(v) && v.every((x) => typeof x === "number"));
}

/** Every module's counters under one name each; see the module comment. */
export class StatsRegistry {
  readonly #groups: Group[] = [];
  readonly #byName = new Map<string, Group>();

  /**
   * Registers a group. Throws on a group name outside the scheme or one
   * already taken: both are bugs of the set-up code.
   */
  add(name: string, source: StatsSource, labels: StatsLabels = {}): void {
    if (!GROUP_NAME.test(name)) throw new Error(`counter group '${name}': not a lower-case name`);
    if (this.#byName.has(name)) throw new Error(`counter group '${name}' registered twice`);
    const g = { name, source, labels };
    this.#groups.push(g);
    this.#byName.set(name, g);
  }

  /** Removes a group (a part that is gone for good); unknown names are ignored. */
  remove(name: string): void {
    const g = this.#byName.get(name);
    if (g === undefined) return;
    this.#byName.delete(name);
    this.#groups.splice(this.#groups.indexOf(g), 1);
  }

  /** The registered group names, in registration order. */
  groups(): string[] {
    return this.#groups.map((g) => g.name);
  }

  /**
   * The objects the groups read from now (getters called). Tests use it to
   * find stats objects nobody registered.
   */
  sources(): Set<object> {
    const out = new Set<object>();
    for (const g of this.#groups) {
      const o = typeof g.source === "function" ? g.source() : g.source;
      if (o === null) continue;
      out.add(o);
      for (const v of Object.values(o)) if (typeof v === "object" && v !== null) out.add(v);
    }
    return out;
  }

  /** Every counter's current value, by group (groups absent now are left out). */
  snapshot(): CountersSnapshot {
    const out: CountersSnapshot = {};
    for (const g of this.#groups) {
      const o = typeof g.source === "function" ? g.source() : g.source;
      if (o === null) continue;
      const counters: Record<string, number> = {};
      flatten(o as Record<string, unknown>, "", g.labels, counters, g.name);
      out[g.name] = counters;
    }
    return out;
  }

  /** The names of every counter now, as `group.counter`. */
  names(): string[] {
    const out: string[] = [];
    for (const [group, counters] of Object.entries(this.snapshot())) {
      for (const name of Object.keys(counters)) out.push(`${group}.${name}`);
    }
    return out;
  }
}

function flatten(
  o: Record<string, unknown>,
  prefix: string,
  labels: StatsLabels,
  out: Record<string, number>,
  group: string,
): void {
  for (const [key, v] of Object.entries(o)) {
    const name = prefix === "" ? key : prefix + capitalise(key);
    if (typeof v === "number") {
      if (name in out) throw new Error(`counter ${group}.${name} appears twice`);
      out[name] = v;
    } else if (isNumberArray(v)) {
      const l = labels[key];
      if (l === undefined) throw new Error(`counter array ${group}.${name} has no labels`);
      for (let i = 0; i < v.length; i++) {
        const label = l[i];
        if (label === undefined) continue;
        const n = name + capitalise(label);
        if (n in out) throw new Error(`counter ${group}.${n} appears twice`);
        out[n] = v[i];
      }
    } else if (typeof v === "object" && v !== null) {
      flatten(v as Record<string, unknown>, name, labels, out, group);
    }
  }
}

/**
 * What moved from `before` to `after`: `after − before` for every counter in
 * `after` (a counter or group missing from `before` counts from 0).
 */
export function countersDiff(before: CountersSnapshot, after: CountersSnapshot): CountersSnapshot {
  const out: CountersSnapshot = {};
  for (const [group, counters] of Object.entries(after)) {
    const prev = before[group] ?? {};
    const d: Record<string, number> = {};
    for (const [name, v] of Object.entries(counters)) d[name] = v - (prev[name] ?? 0);
    out[group] = d;
  }
  return out;
}

/** The counters of `diff` that moved (non-zero), for short reports. */
export function countersMoved(diff: CountersSnapshot): CountersSnapshot {
  const out: CountersSnapshot = {};
  for (const [group, counters] of Object.entries(diff)) {
    const moved = Object.entries(counters).filter(([, v]) => v !== 0);
    if (moved.length > 0) out[group] = Object.fromEntries(moved);
  }
  return out;
}
