import { z } from "zod";
import { Grade } from "./grades.js";
import { MAX_SHARDS } from "./shards.js";

/** Bumped when a message changes incompatibly; the gateway refuses runners that speak another version. */
export const PROTOCOL_VERSION = 1;

const JobId = z.string().min(1).max(64);
const LeaseToken = z.string().min(16).max(64);
const Sha256 = z.string().regex(/^[0-9a-f]{64}$/);

/** A lease names the job and the attempt it belongs to; every report about the job must repeat both. */
export const LeaseRef = z.object({ jobId: JobId, token: LeaseToken });
export type LeaseRef = z.infer<typeof LeaseRef>;

// ---- runner → gateway -------------------------------------------------------------------------

export const HelloMessage = z.object({
  type: z.literal("hello"),
  protocol: z.literal(PROTOCOL_VERSION),
  runner: z.string().min(1).max(100),
  capacity: z.number().int().min(0).max(256),
  otterVersions: z.array(z.string().max(40)).max(20),
  /** Leases the runner still holds after a reconnect; the gateway keeps those that are still valid. */
  holding: z.array(LeaseRef).max(256).default([]),
  /** The runner wants an `offer_answer` after each hello and ready that offers free slots (see there). */
  offerAnswers: z.boolean().default(false),
  /** All the runner's grading slots, whatever share of them it offers this shard (shown to staff). */
  slots: z.number().int().min(0).max(256).optional(),
});

/**
 * "I am willing to hold `capacity` jobs at once now." The gateway counts the leases it gave the runner
 * itself, so a lease and a ready that cross on the wire never overfill the runner. 0 means draining.
 * With several shards, each socket's capacity is what the runner holds from that shard plus the free
 * slots it offers that shard; a lease for a slot another shard filled first comes back as a `release`.
 */
export const ReadyMessage = z.object({ type: z.literal("ready"), capacity: z.number().int().min(0).max(256) });

/** The runner gives a lease back unworked (shutting down); the job is queued again at once. */
export const ReleaseMessage = z.object({ type: z.literal("release"), lease: LeaseRef, reason: z.string().max(500) });

/** Extends the leases the runner is still working on. */
export const HeartbeatMessage = z.object({ type: z.literal("heartbeat"), holding: z.array(LeaseRef).max(256) });

/** An environment image a job waited for: built on this runner (with the end of pip's log) or pulled from the fleet's registry. */
export const EnvironmentPrepared = z.object({
  hash: Sha256,
  how: z.enum(["built", "pulled"]),
  seconds: z.number().nonnegative(),
  log: z.string().max(8_000),
});
export type EnvironmentPrepared = z.infer<typeof EnvironmentPrepared>;

/** The grade of a job, or why the runner could not produce one. */
export const ResultMessage = z.object({
  type: z.literal("result"),
  lease: LeaseRef,
  outcome: z.discriminatedUnion("kind", [
    z.object({
      kind: z.literal("graded"),
      grade: Grade,
      timings: z.record(z.string(), z.number()).default({}),
      /** The job waited for its assignment's environment image: how it came to the node (for staff). */
      environment: EnvironmentPrepared.optional(),
    }),
    /** Not the student's fault (engine down, image missing, fetch failed): the job is retried, never graded 0. */
    z.object({ kind: z.literal("infrastructure_error"), message: z.string().max(2_000) }),
    /**
     * The assignment's environment (its autograder.zip's requirements) cannot be installed: neither
     * the student's fault nor the node's. The job waits, never graded 0, until staff upload a zip.
     */
    z.object({ kind: z.literal("environment_failed"), environment: Sha256, message: z.string().max(4_000) }),
  ]),
});

/**
 * Where a job stands before its result, for the student's page: "preparing_environment" while the
 * runner builds (or pulls) the assignment's environment image, which can take minutes once per
 * environment. Advisory: a gateway that does not know the stage ignores it.
 */
export const ProgressStage = z.enum(["preparing_environment"]);
export type ProgressStage = z.infer<typeof ProgressStage>;
export const ProgressMessage = z.object({ type: z.literal("progress"), lease: LeaseRef, stage: ProgressStage });
export type ProgressMessage = z.infer<typeof ProgressMessage>;

export const RunnerMessage = z.discriminatedUnion("type", [HelloMessage, ReadyMessage, HeartbeatMessage, ResultMessage, ReleaseMessage, ProgressMessage]);
export type RunnerMessage = z.infer<typeof RunnerMessage>;
export type ResultMessage = z.infer<typeof ResultMessage>;
export type HelloMessage = z.infer<typeof HelloMessage>;

// ---- gateway → runner -------------------------------------------------------------------------

export const WelcomeMessage = z.object({
  type: z.literal("welcome"),
  heartbeatMs: z.number().int().positive(),
  leaseTtlMs: z.number().int().positive(),
  /** Of the leases the runner said it holds, those it must drop (expired or already regraded elsewhere). */
  dropped: z.array(LeaseRef).default([]),
  /**
   * How many Dispatcher shards the queue is split into. The runner keeps a socket to each
   * (`/runner/v1/connect?shard=k`) and offers its free slots on all of them.
   */
  shards: z.number().int().min(1).max(MAX_SHARDS).default(1),
});

/**
 * Where an assignment's tests run. "kernel": in the student's kernel, exactly as `otter run` does
 * (the grade is otter's; a notebook can rewrite the checker, as under otter). "grader": in the
 * grader's own process through the bridge (tamper-resistant; a test the bridge cannot carry runs
 * in the kernel instead). Jobs from gateways that predate the setting grade as "kernel".
 */
export const Isolation = z.enum(["kernel", "grader"]);
export type Isolation = z.infer<typeof Isolation>;

export const JobSpec = z.object({
  submissionId: JobId,
  course: z.string(),
  section: z.string(),
  assignment: z.string(),
  notebook: z.object({ sha256: Sha256, bytes: z.number().int().nonnegative() }),
  autograder: z.object({ sha256: Sha256, otterVersion: z.string() }),
  /** Wall-clock limit the runner enforces on the grading container. */
  timeoutMs: z.number().int().positive(),
  isolation: Isolation.default("kernel"),
  /** Set when this job grades an existing submission again for a staff regrade. */
  regradeId: z.number().int().positive().optional(),
});
export type JobSpec = z.infer<typeof JobSpec>;

export const LeaseMessage = z.object({
  type: z.literal("lease"),
  lease: LeaseRef,
  attempt: z.number().int().positive(),
  deadline: z.number().int(),
  job: JobSpec,
  /** How long the job waited in the queue before this lease, measured by the gateway (no clock skew). */
  queuedMs: z.number().int().nonnegative().optional(),
});
export type LeaseMessage = z.infer<typeof LeaseMessage>;

/** Answer to a result: `accepted: false` means the lease was stale and the result was discarded. */
export const AckMessage = z.object({
  type: z.literal("ack"),
  lease: LeaseRef,
  accepted: z.boolean(),
  reason: z.string().optional(),
});

/**
 * Answer to a hello or ready (sent at the first dispatch after it that finds the runner a free slot
 * on this shard): how many jobs were leased into the free slots (the leases come first), and
 * whether the shard ran out of jobs for this runner.
 * A runner that offers its free slots to one shard at a time moves on to the next shard when this
 * one has run out, so that under a backlog no two shards are offered the same slot.
 */
export const OfferAnswerMessage = z.object({ type: z.literal("offer_answer"), leased: z.number().int().nonnegative(), exhausted: z.boolean() });

/** The gateway took the lease back (expired); the runner stops work on it. */
export const RevokeMessage = z.object({ type: z.literal("revoke"), lease: LeaseRef, reason: z.string() });

export const ErrorMessage = z.object({ type: z.literal("error"), error: z.string(), message: z.string() });

export const GatewayMessage = z.discriminatedUnion("type", [WelcomeMessage, LeaseMessage, AckMessage, RevokeMessage, ErrorMessage, OfferAnswerMessage]);
export type GatewayMessage = z.infer<typeof GatewayMessage>;
