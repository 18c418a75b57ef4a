// A failure to reach the broker at all (exit code 3), as opposed to a refused request. Its own
// module so that the CLI's entry can tell it apart without loading node:http and node:https
// (and TLS with them) for commands that never call the admin API.
export class UnreachableError extends Error {}
