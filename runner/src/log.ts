import { pino } from "pino";

/** One JSON line per event; job lines carry `submissionId` and `attempt` through child loggers. */
export const log = pino({ name: "otter-edge-runner", level: process.env.LOG_LEVEL ?? "info", base: { pid: process.pid } });
export type Logger = typeof log;
