/**
 * Landlock's constants: file system access rights by ABI version.
 *
 * A Landlock ruleset names the rights it *handles* (everything else stays
 * allowed) and rules grant some of them beneath given directories. Once a
 * thread restricts itself to the ruleset, opening a file beneath no rule
 * that grants the right fails with `EACCES`. Each ABI version added rights;
 * a ruleset may only handle those the running kernel knows, so
 * {@linkcode landlockFsRights} gives the set for a version.
 *
 * @module
 */

/** `LANDLOCK_ACCESS_FS_*` rights. */
export const LandlockFs = {
  EXECUTE: 1n << 0n,
  WRITE_FILE: 1n << 1n,
  READ_FILE: 1n << 2n,
  READ_DIR: 1n << 3n,
  REMOVE_DIR: 1n << 4n,
  REMOVE_FILE: 1n << 5n,
  MAKE_CHAR: 1n << 6n,
  MAKE_DIR: 1n << 7n,
  MAKE_REG: 1n << 8n,
  MAKE_SOCK: 1n << 9n,
  MAKE_FIFO: 1n << 10n,
  MAKE_BLOCK: 1n << 11n,
  MAKE_SYM: 1n << 12n,
  /** ABI 2: link or rename into another directory. */
  REFER: 1n << 13n,
  /** ABI 3: truncate. */
  TRUNCATE: 1n << 14n,
  /** ABI 5: ioctl on a device opened after the restriction. */
  IOCTL_DEV: 1n << 15n,
} as const;

/** `LANDLOCK_CREATE_RULESET_VERSION`: ask for the ABI version instead. */
export const LANDLOCK_CREATE_RULESET_VERSION = 1;
/** `LANDLOCK_RULE_PATH_BENEATH`. */
export const LANDLOCK_RULE_PATH_BENEATH = 1;

/** Every file system right ABI version `abi` knows (0n for none). */
export function landlockFsRights(abi: number): bigint {
  if (abi < 1) return 0n;
  const bits = abi >= 5 ? 16n : abi >= 3 ? 15n : abi >= 2 ? 14n : 13n;
  return (1n << bits) - 1n;
}
