import type Docker from "dockerode";
import { bounded } from "./container-exit.js";
import { ENGINE_CALL_TIMEOUT_MS, JOB_LABEL, RUN_LABEL, RUNNER_LABEL, engineCall } from "./container-spec.js";

type Log = { info(obj: object, msg: string): void; warn(obj: object, msg: string): void; error(obj: object, msg: string): void };

/**
 * Keeps a runner's engine free of its leftovers. Every container this process starts is a "run"
 * (the RUN_LABEL) held live from its creation until its removal; containers of this runner's name
 * whose run is not live are orphans of an earlier process (killed with its containers running) or
 * of a removal that failed while the engine was away, and are removed. Containers of other runners
 * sharing the engine are never touched.
 */
export class ContainerReaper {
  /** Runs of this process whose container may exist (jobs and warm containers): never reaped. */
  private readonly live = new Set<string>();
  /** Containers that did not stop after a kill, by id: left in place (and labelled) for an operator, not reaped by this process. */
  readonly stuck = new Map<string, { jobId: string; since: string }>();
  /** Container removals still under way (a job's container is removed after its result is returned). */
  private readonly removals = new Set<Promise<void>>();
  /** Set when a removal failed (engine down) or a job went wrong on the engine's side: the next job first reaps. */
  private pending = false;

  constructor(
    private readonly docker: Docker,
    private readonly runnerName: string,
    private readonly log?: Log,
  ) {}

  /** A container is about to be created for this run: not an orphan from now on. */
  track(runId: string): void {
    this.live.add(runId);
  }

  /** The run's container was never created. */
  untrack(runId: string): void {
    this.live.delete(runId);
  }

  /** Something went wrong on the engine's side: look for leftovers before the next job. */
  reapBeforeNextJob(): void {
    this.pending = true;
  }

  /** Reaps now if a failure asked for it (before a job). */
  async reapIfPending(): Promise<void> {
    if (!this.pending) return;
    this.pending = false;
    await this.reapOrphans().catch(() => (this.pending = true));
  }

  async reapOrphans(): Promise<{ removed: string[]; failed: string[] }> {
    const removed: string[] = [];
    const failed: string[] = [];
    const containers = await engineCall(() => this.docker.listContainers({ all: true, filters: { label: [`${RUNNER_LABEL}=${this.runnerName}`] } }));
    await Promise.all(
      containers.map(async (c) => {
        const run = c.Labels?.[RUN_LABEL];
        if ((run && this.live.has(run)) || this.stuck.has(c.Id)) return;
        try {
          await bounded(this.docker.getContainer(c.Id).remove({ v: true, force: true }), ENGINE_CALL_TIMEOUT_MS, "removing an orphan container");
          removed.push(c.Id);
          this.log?.info({ container: c.Id.slice(0, 12), submissionId: c.Labels?.[JOB_LABEL], state: c.State }, "removed an orphan grading container");
        } catch (err) {
          if ((err as { statusCode?: number }).statusCode === 404) return; // gone meanwhile
          failed.push(c.Id);
          this.log?.error({ container: c.Id.slice(0, 12), submissionId: c.Labels?.[JOB_LABEL], err: String(err) }, "could not remove an orphan grading container");
        }
      }),
    );
    // Job volumes no container uses any more (the engine removed a container but not its volume, e.g. while shutting down).
    const volumes = await engineCall(() => this.docker.listVolumes({ filters: { label: [`${RUNNER_LABEL}=${this.runnerName}`], dangling: ["true"] } }));
    for (const v of volumes.Volumes ?? []) {
      await bounded(this.docker.getVolume(v.Name).remove(), ENGINE_CALL_TIMEOUT_MS, "removing an orphan volume").then(
        () => this.log?.info({ volume: v.Name.slice(0, 12), submissionId: v.Labels?.[JOB_LABEL] }, "removed an orphan job volume"),
        (err) => this.log?.warn({ volume: v.Name.slice(0, 12), err: String(err) }, "could not remove an orphan job volume"),
      );
    }
    return { removed, failed };
  }

  /** Removes a container in the background; its run stays live (not reaped) until then. */
  removeLater(container: Docker.Container, runId: string): Promise<void> {
    const removal = bounded(container.remove({ v: true, force: true }), ENGINE_CALL_TIMEOUT_MS, "removing the container")
      .catch((err) => {
        if ((err as { statusCode?: number }).statusCode === 404) return;
        this.pending = true; // engine away: removed by the next job's reaping, or at the next start
      })
      .finally(() => {
        this.live.delete(runId);
        this.removals.delete(removal);
      });
    this.removals.add(removal);
    return removal;
  }

  /**
   * A container that did not stop after a kill: left for an operator (not reaped), and removed if it
   * exits after all (the runtime came back).
   */
  leaveStuck(container: Docker.Container, runId: string, jobId: string): void {
    this.stuck.set(container.id, { jobId, since: new Date().toISOString() });
    this.live.delete(runId);
    void container
      .wait()
      .then(() => container.remove({ v: true, force: true }))
      .then(
        () => {
          this.stuck.delete(container.id);
          this.log?.info({ container: container.id.slice(0, 12), submissionId: jobId }, "a stuck grading container stopped at last and was removed");
        },
        () => undefined, // still stuck, or the engine is gone: the next start's reaping tries again
      );
  }

  /** Waits for every removal under way (runner shutting down). */
  async settle(): Promise<void> {
    while (this.removals.size > 0) await Promise.all([...this.removals]);
  }
}
