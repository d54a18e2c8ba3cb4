/**
 * Exponential backoff with jitter in the upper half: base·2^(attempt-1), capped at max, times
 * 0.5..1 (so that many clients failing together do not retry together). `attempt` counts from 1.
 * Used for the Dispatcher's retries, the passback outbox and the runner's reconnects.
 */
export function backoffMs(attempt: number, bounds: { baseMs: number; maxMs: number }, random = Math.random()): number {
  const ceiling = Math.min(bounds.maxMs, bounds.baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(ceiling * (0.5 + random / 2));
}
