import { randomUUID } from "node:crypto";
import type Docker from "dockerode";
import type { ContainerReaper } from "./container-reaper.js";
import { type DockerLimits, WARM_JOB, containerSpec, engineCall, logTail } from "./container-spec.js";

type Log = { info(obj: object, msg: string): void; warn(obj: object, msg: string): void; error(obj: object, msg: string): void };

export interface WarmContainer {
  container: Docker.Container;
  /** The run label it was created with: kept live in the reaper from its creation until its removal. */
  runId: string;
  version: string;
  imageId: string;
  bornAt: number;
  /** Set when it exited while waiting (it is then useless: discarded, never handed a job). */
  exited: boolean;
  retire: NodeJS.Timeout;
}

/** A grading image a warm container can be started from. */
export interface WarmableImage {
  ref: string;
  id: string;
  /** The image's driver can start before its job (WARM_START_CONTRACT). */
  warm: boolean;
}

/**
 * Per otter-grader version, `size` containers created and started ahead of time, each waiting with
 * otter imported (and no job files, no student code) until a job's files arrive on its /job volume.
 * Each is taken out of the pool for one job and never handed another; unused ones are retired after
 * `maxAgeMs`, so a new image or engine setting takes effect on an idle runner too.
 */
export class WarmPool {
  /** Started containers waiting for a job, oldest first. */
  private readonly warm: WarmContainer[] = [];
  /** Warm containers being created and started, with their otter version: a close waits for them, so none creates a container after the runner has gone. */
  private readonly starting = new Map<Promise<void>, string>();
  private closed = false;
  /** Counters for tests and logs. */
  readonly stats = { started: 0, handedOver: 0, retired: 0, diedWaiting: 0 };

  constructor(
    private readonly docker: Docker,
    private readonly reaper: ContainerReaper,
    private readonly o: { size: number; maxAgeMs: number; runnerName: string; limits: DockerLimits; images: () => Promise<Map<string, WarmableImage>>; log?: Log },
  ) {}

  get size(): number {
    return this.closed ? 0 : this.o.size;
  }

  /** Fills the pool (no-op without one); called at start-up and after every job taken from it. */
  fill(): void {
    if (this.size === 0) return;
    void this.fillOnce().catch((err) => this.o.log?.warn({ err: String(err) }, "could not fill the warm pool"));
  }

  private async fillOnce(): Promise<void> {
    const images = await this.o.images();
    for (const [version, image] of images) {
      if (!image.warm) continue; // an image whose driver cannot wait for its job: its jobs start cold
      // Counted after the await, synchronously with the additions below: concurrent fills never overshoot.
      let have = this.warm.filter((w) => w.version === version && w.imageId === image.id && !w.exited).length + [...this.starting.values()].filter((v) => v === version).length;
      while (have < this.size) {
        have += 1;
        const started: Promise<void> = this.start(version, image)
          .catch((err) => this.o.log?.warn({ otterVersion: version, err: String(err) }, "could not start a warm grading container"))
          .finally(() => this.starting.delete(started));
        this.starting.set(started, version);
      }
    }
  }

  private async start(version: string, image: WarmableImage): Promise<void> {
    const runId = randomUUID();
    this.reaper.track(runId);
    let container: Docker.Container | undefined;
    try {
      container = await engineCall(() => this.docker.createContainer(containerSpec({ image: image.id, jobId: WARM_JOB, runId, runnerName: this.o.runnerName, limits: this.o.limits, warmMaxAgeMs: this.o.maxAgeMs })));
      await engineCall(() => container!.start());
    } catch (err) {
      if (container) this.reaper.removeLater(container, runId);
      else this.reaper.untrack(runId);
      throw err;
    }
    const w: WarmContainer = { container, runId, version, imageId: image.id, bornAt: Date.now(), exited: false, retire: undefined as unknown as NodeJS.Timeout };
    if (this.closed) {
      this.reaper.removeLater(container, runId);
      return;
    }
    this.stats.started += 1;
    w.retire = setTimeout(() => {
      if (!this.drop(w)) return;
      this.stats.retired += 1;
      this.reaper.removeLater(w.container, w.runId);
      this.fill();
    }, this.o.maxAgeMs);
    w.retire.unref();
    // A warm container that exits while waiting (its check of the sandbox failed, or it was killed)
    // is never handed a job. Not replaced at once: a broken image would loop; the next job refills.
    void container.wait().then(
      () => {
        w.exited = true;
        if (!this.drop(w)) return;
        this.stats.diedWaiting += 1;
        void logTail(w.container).then((tail) =>
          this.o.log?.error({ container: w.container.id.slice(0, 12), otterVersion: version, log: tail.slice(-500) }, "a warm grading container exited before it got a job"),
        );
        this.reaper.removeLater(w.container, w.runId);
      },
      () => undefined, // the engine went away: the hand-over fails and the job is retried
    );
    this.warm.push(w);
    this.o.log?.info({ container: container.id.slice(0, 12), otterVersion: version }, "warm grading container waiting for a job");
  }

  /** Takes `w` out of the pool; false when it was not there (already taken, retired or dead). */
  private drop(w: WarmContainer): boolean {
    const i = this.warm.indexOf(w);
    if (i < 0) return false;
    this.warm.splice(i, 1);
    clearTimeout(w.retire);
    return true;
  }

  /** A warm container of exactly this image for one job, out of the pool for good; or none. */
  take(version: string, imageId: string): WarmContainer | undefined {
    for (const w of [...this.warm]) {
      if (w.version !== version || w.exited) continue;
      this.drop(w);
      if (w.imageId === imageId) {
        this.stats.handedOver += 1;
        return w;
      }
      // Started from an image that is no longer the newest for this version: never used.
      this.stats.retired += 1;
      this.reaper.removeLater(w.container, w.runId);
    }
    return undefined;
  }

  /**
   * Stops filling the pool and removes its containers (runner shutting down). Resolves once every
   * start under way has ended, each container it made handed to the reaper for removal: seen in CI,
   * a refill that began just before the close created its container after the close had returned.
   */
  async close(): Promise<void> {
    this.closed = true;
    for (const w of [...this.warm]) {
      this.drop(w);
      this.reaper.removeLater(w.container, w.runId);
    }
    await Promise.all([...this.starting.keys()]);
  }
}
