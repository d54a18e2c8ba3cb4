/**
 * Which of the gateway's Dispatcher shards the runner's free slots are offered to.
 *
 * Offering every free slot to every shard at once would, under a backlog, make each shard lease a job
 * for the same slot, and all but one would come back unworked: N−1 wasted leases per job with N
 * shards. So each free slot is promised to one shard at a time:
 * - a slot that frees goes to the next shard in rotation (every shard gets its turn, so a shard that
 *   had no work is asked again);
 * - a shard that answers that it ran out of jobs (`offer_answer` with `exhausted`) gives its unfilled
 *   slots to the next shard that has not run out;
 * - a slot whose shard leased a job is used; a shard whose socket is down loses its promises.
 * Only when every shard has run out are the slots nobody holds offered to all of them together: the
 * queue is idle then, and a job that arrives in any shard is leased at once. Two shards that fill
 * the same slot at that moment are rare, and the runner hands the extra lease back.
 */
export class SlotOffers {
  private shards: number[] = [0];
  /** The shard whose turn it is for the next freed slot. */
  private turn = 0;
  /** Free slots promised to each shard, not yet filled. */
  private readonly promised = new Map<number, number>();
  /** Shards that said they had no job left for this runner, since they were last given a turn or leased. */
  private readonly exhausted = new Set<number>();

  /** The gateway named its shard count (in a welcome). */
  setShardCount(count: number): void {
    this.shards = Array.from({ length: Math.max(1, count) }, (_, shard) => shard);
  }

  /**
   * How many free slots to offer each shard now, on top of the jobs it holds here, given the runner's
   * free slots and which shards' sockets are open.
   */
  offers(free: number, isOpen: (shard: number) => boolean): Map<number, number> {
    for (const shard of this.promised.keys()) if (!isOpen(shard)) this.promised.delete(shard);
    // More promised than free: a shard filled a slot it was not promised (a crossing lease); take the
    // promise back from whichever shard holds the most.
    while (free < this.totalPromised()) {
      const [shard, n] = [...this.promised].reduce((a, b) => (b[1] > a[1] ? b : a));
      this.promise(shard, n - 1);
    }
    const unpromised = Math.max(0, free - this.totalPromised());
    const taker = this.fromTurn().find((shard) => isOpen(shard) && !this.exhausted.has(shard));
    if (taker !== undefined) this.promise(taker, (this.promised.get(taker) ?? 0) + unpromised);
    // Nobody has work: the slots nobody holds are offered everywhere until a slot frees or a shard leases.
    const standing = taker === undefined ? unpromised : 0;
    return new Map(this.shards.map((shard) => [shard, isOpen(shard) ? (this.promised.get(shard) ?? 0) + standing : 0]));
  }

  /** Free slots promised to this shard and not filled yet (not counting offers to every shard at once). */
  promisedTo(shard: number): number {
    return this.promised.get(shard) ?? 0;
  }

  /**
   * Whether the shard should be asked (again) to answer for the slots promised to it: it holds some,
   * and there is another shard they could go to.
   */
  shouldAsk(shard: number): boolean {
    return this.shards.length > 1 && this.promisedTo(shard) > 0;
  }

  /** A slot freed: it goes to the next shard in rotation, which is asked again even if it ran out before. */
  slotFreed(): void {
    this.turn = this.shards[(this.shards.indexOf(this.turn) + 1) % this.shards.length] ?? 0;
    this.exhausted.delete(this.turn);
  }

  /** The shard answered an offer; if it ran out of jobs, its unfilled slots go to another shard. */
  answered(shard: number, exhausted: boolean): void {
    if (!exhausted) {
      this.exhausted.delete(shard);
      return;
    }
    this.exhausted.add(shard);
    this.promised.delete(shard);
  }

  /** The shard leased a job: one of its promised slots (if it had one) is filled, and it has work. */
  leased(shard: number): void {
    this.exhausted.delete(shard);
    this.promise(shard, (this.promised.get(shard) ?? 0) - 1);
  }

  private promise(shard: number, n: number): void {
    if (n > 0) this.promised.set(shard, n);
    else this.promised.delete(shard);
  }

  private totalPromised(): number {
    let total = 0;
    for (const n of this.promised.values()) total += n;
    return total;
  }

  /** Shards starting from the one whose turn it is. */
  private fromTurn(): number[] {
    const start = Math.max(0, this.shards.indexOf(this.turn));
    return [...this.shards.slice(start), ...this.shards.slice(0, start)];
  }
}
