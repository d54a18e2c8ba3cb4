import { setTimeout as delay } from "node:timers/promises";
import type Docker from "dockerode";
import { InfrastructureError } from "./errors.js";

/**
 * The container's exit, as its exit code (null when the engine gives none). The engine's answer to
 * `wait` can be lost while the container runs on (seen for containers alive across a dockerd
 * restart), so the container is also inspected every `pollMs`, and whichever notices first answers.
 * An error from `wait` itself rejects (the engine is gone: the caller's infrastructure failure).
 * `stop()` ends the polling when the caller stops waiting (a kill that never came back).
 */
export function exitOf(container: Docker.Container, pollMs: number): { exited: Promise<number | null>; stop: () => void } {
  const polling = new AbortController();
  const waited = (container.wait() as Promise<{ StatusCode?: number }>).then((r) => r.StatusCode ?? null);
  const polled = (async () => {
    while (!polling.signal.aborted) {
      await delay(pollMs, undefined, { signal: polling.signal }).catch(() => undefined);
      if (polling.signal.aborted) break;
      const state = await container.inspect().then((i) => i.State, () => null);
      if (state && !state.Running && !state.Restarting) return state.ExitCode ?? null;
    }
    return new Promise<never>(() => undefined);
  })();
  const exited = Promise.race([waited, polled]).finally(() => polling.abort());
  exited.catch(() => undefined); // a caller that stopped waiting no longer awaits it
  return { exited, stop: () => polling.abort() };
}

/** Rejects when `promise` has not settled within `ms`; the engine can hang a call forever (a wedged runtime). */
export function bounded<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new InfrastructureError(`docker engine: ${what} did not answer within ${ms / 1000} s`)), ms)));
  promise.catch(() => undefined);
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
