import type { Env } from "../env.js";

/** One Dispatcher for now; sharding by course is where this name would change. */
export function dispatcherFor(env: Env) {
  return env.DISPATCHER.get(env.DISPATCHER.idFromName("global"));
}
