/** The most Dispatcher shards a gateway may have (and a welcome may name). */
export const MAX_SHARDS = 64;

/**
 * Which of the gateway's Dispatcher shards holds a submission's job. Here, not in the gateway, so
 * that tests and tools compute it the same way.
 * FNV-1a over the id: cheap, stable across deploys, and even for random UUIDs and other ids alike.
 */
export function shardOf(submissionId: string, shards: number): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < submissionId.length; i++) {
    hash ^= submissionId.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0) % shards;
}
