/** What a passback request that got no answer says in its attempt row: a time-out, or the network error. */
export function requestFailure(err: unknown, timeoutMs: number): string {
  const name = (err as Error).name;
  return name === "TimeoutError" || name === "AbortError" ? `no reply within ${timeoutMs} ms` : `request failed: ${String(err)}`;
}
