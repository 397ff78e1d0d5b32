/** tapir's version: the one source of truth for `--version` and logs. */
export const VERSION = "0.1.0";
