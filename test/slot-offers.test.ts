import { describe, expect, it } from "vitest";
import { SlotOffers } from "../runner/src/slot-offers.js";

const allOpen = () => true;
const offered = (offers: Map<number, number>) => Object.fromEntries([...offers].filter(([, n]) => n > 0));

describe("SlotOffers: which shard a runner's free slots go to", () => {
  it("with one shard, offers every free slot to it, whatever it answers", () => {
    const offers = new SlotOffers();
    expect(offered(offers.offers(3, allOpen))).toEqual({ 0: 3 });
    // Nowhere else for the slots to go: shard 0 is never asked to answer for them.
    expect(offers.shouldAsk(0)).toBe(false);
    offers.answered(0, true);
    expect(offered(offers.offers(3, allOpen))).toEqual({ 0: 3 });
    expect(offered(offers.offers(0, allOpen))).toEqual({});
  });

  it("under a backlog, gives the free slots to one shard at a time, in rotation as slots free", () => {
    const offers = new SlotOffers();
    offers.setShardCount(3);
    expect(offered(offers.offers(2, allOpen))).toEqual({ 0: 2 });
    offers.leased(0);
    offers.leased(0);
    offers.slotFreed();
    expect(offered(offers.offers(1, allOpen))).toEqual({ 1: 1 });
    expect(offers.promisedTo(1)).toBe(1);
    expect(offers.shouldAsk(1)).toBe(true);
    offers.leased(1);
    offers.slotFreed();
    expect(offered(offers.offers(1, allOpen))).toEqual({ 2: 1 });
    offers.leased(2);
    offers.slotFreed();
    expect(offered(offers.offers(1, allOpen))).toEqual({ 0: 1 });
  });

  it("moves the slots on from a shard that ran out of jobs, and back to it once a slot frees", () => {
    const offers = new SlotOffers();
    offers.setShardCount(3);
    expect(offered(offers.offers(2, allOpen))).toEqual({ 0: 2 });
    offers.answered(0, true);
    expect(offered(offers.offers(2, allOpen))).toEqual({ 1: 2 });
    offers.leased(1);
    offers.answered(1, true);
    expect(offered(offers.offers(1, allOpen))).toEqual({ 2: 1 });
    offers.answered(2, false);
    expect(offered(offers.offers(1, allOpen))).toEqual({ 2: 1 });
    // A freed slot goes to the next shard in turn (1, asked again); shard 2 keeps its promised slot.
    offers.slotFreed();
    expect(offered(offers.offers(2, allOpen))).toEqual({ 1: 1, 2: 1 });
  });

  it("never promises more slots than are free, even when a slot frees while another shard's lease is on the way", () => {
    const offers = new SlotOffers();
    offers.setShardCount(3);
    expect(offered(offers.offers(1, allOpen))).toEqual({ 0: 1 });
    offers.slotFreed();
    expect(offered(offers.offers(2, allOpen))).toEqual({ 0: 1, 1: 1 });
    offers.leased(0);
    expect(offered(offers.offers(1, allOpen))).toEqual({ 1: 1 });
    // A lease that crossed a withdrawal: shard 2 filled a slot it was not promised, so shard 1's promise is taken back.
    offers.leased(2);
    expect(offered(offers.offers(0, allOpen))).toEqual({});
  });

  it("offers the free slots to every shard once all have run out (the queue is idle), and to one again when a shard leases", () => {
    const offers = new SlotOffers();
    offers.setShardCount(3);
    for (const shard of [0, 1, 2]) offers.answered(shard, true);
    expect(offered(offers.offers(2, allOpen))).toEqual({ 0: 2, 1: 2, 2: 2 });
    // Offers to every shard at once are not promises: no shard is asked to answer for them.
    expect([0, 1, 2].map((shard) => offers.promisedTo(shard))).toEqual([0, 0, 0]);
    offers.leased(2);
    expect(offered(offers.offers(1, allOpen))).toEqual({ 2: 1 });
  });

  it("skips shards whose socket is down", () => {
    const offers = new SlotOffers();
    offers.setShardCount(3);
    const open = (shard: number) => shard !== 0;
    expect(offered(offers.offers(2, open))).toEqual({ 1: 2 });
    offers.answered(1, true);
    offers.answered(2, true);
    expect(offered(offers.offers(2, open))).toEqual({ 1: 2, 2: 2 });
    expect(offered(offers.offers(2, () => false))).toEqual({});
  });
});
