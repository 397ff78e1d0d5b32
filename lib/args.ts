/**
 * Splitting a command line into option tokens: the one tokenizer under both
 * of tapir's command lines (`lib/conf.ts`) and slirp4netns's
 * (`lib/engines/slirp4netns.ts`).
 *
 * It follows the conventions of `node:util`'s `parseArgs` in its lenient
 * mode, which these parsers used before: `--name value`, `--name=value`,
 * `-n value`, `-nvalue`, groups of flags (`-46`, and `-4m1500` where the
 * last takes a value), `--` ending the options, and `-` alone being an
 * argument. An option that takes a value takes the next argument whatever
 * it looks like (`-t -d` gives `-t` the value `-d`); judging that is the
 * caller's. Unknown options are tokens too, named as written, so the caller
 * can say which one it does not know.
 *
 * Why not `parseArgs` itself: importing `node:util` loads a good part of
 * Deno's Node compatibility layer, about 15 ms and 6 MiB before the first
 * option is read, on the path of every start-up.
 *
 * @module
 */

/** What the tokenizer needs to know about an option. */
export interface ArgSpec {
  /** Long name, without dashes. */
  readonly long: string;
  /** Short letter, if any. */
  readonly short?: string;
  /** Set (to the value's name in the help, say `N`) when the option takes a value. */
  readonly value?: string;
}

/** One token of a command line. */
export type ArgToken =
  | {
    readonly kind: "option";
    /** Index of the argument the option came from. */
    readonly index: number;
    /** Long name (the short letter itself when no option has it). */
    readonly name: string;
    /** As written: `--mtu`, `-m`. */
    readonly rawName: string;
    /** The value, if one was given or taken. */
    readonly value?: string;
    /** The value was in the same argument (`--mtu=1500`, `-m1500`). */
    readonly inlineValue?: boolean;
  }
  | { readonly kind: "positional"; readonly index: number; readonly value: string }
  | { readonly kind: "option-terminator"; readonly index: number };

/** Tokens of `args` under `specs`; see the module comment. Never throws. */
export function tokenizeArgs(args: readonly string[], specs: readonly ArgSpec[]): ArgToken[] {
  const byLong = new Map(specs.map((s) => [s.long, s]));
  const longOf = (letter: string) => specs.find((s) => s.short === letter)?.long ?? letter;
  const takesValue = (long: string) => byLong.get(long)?.value !== undefined;
  const tokens: ArgToken[] = [];
  // Arguments still to read, with the index of the argument each came from
  // (the parts of a flag group share their group's).
  const pending: [string, number][] = args.map((a, i) => [a, i]);
  while (pending.length > 0) {
    const [arg, index] = pending.shift()!;
    const next = pending[0];
    if (arg === "--") {
      tokens.push({ kind: "option-terminator", index });
      for (const [rest, i] of pending) tokens.push({ kind: "positional", index: i, value: rest });
      break;
    }
    if (arg.length < 2 || arg[0] !== "-") {
      tokens.push({ kind: "positional", index, value: arg });
      continue;
    }
    if (arg[1] !== "-") {
      const name = longOf(arg[1]);
      const rawName = arg.slice(0, 2);
      if (arg.length === 2) {
        if (takesValue(name) && next !== undefined) {
          pending.shift();
          tokens.push({ kind: "option", index, name, rawName, value: next[0], inlineValue: false });
        } else tokens.push({ kind: "option", index, name, rawName });
      } else if (takesValue(name)) {
        tokens.push({
          kind: "option",
          index,
          name,
          rawName,
          value: arg.slice(2),
          inlineValue: true,
        });
      } else {
        // A group: each letter is an option; one that takes a value ends
        // the group with the rest of the argument as its value.
        const parts: [string, number][] = [];
        for (let i = 1; i < arg.length; i++) {
          if (!takesValue(longOf(arg[i])) || i === arg.length - 1) {
            parts.push([`-${arg[i]}`, index]);
          } else {
            parts.push([`-${arg.slice(i)}`, index]);
            break;
          }
        }
        pending.unshift(...parts);
      }
      continue;
    }
    const eq = arg.indexOf("=", 3);
    if (eq >= 0) {
      const name = arg.slice(2, eq);
      tokens.push({
        kind: "option",
        index,
        name,
        rawName: `--${name}`,
        value: arg.slice(eq + 1),
        inlineValue: true,
      });
      continue;
    }
    const name = arg.slice(2);
    if (takesValue(name) && next !== undefined) {
      pending.shift();
      tokens.push({
        kind: "option",
        index,
        name,
        rawName: arg,
        value: next[0],
        inlineValue: false,
      });
    } else tokens.push({ kind: "option", index, name, rawName: arg });
  }
  return tokens;
}
