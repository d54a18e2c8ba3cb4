/**
 * The gateway's log: one JSON object per line, `{level, msg, ...fields}`, which Workers Logs and
 * `wrangler tail` index by field. `logger(component)` tags every line of one part of the gateway.
 */
export type LogFields = Record<string, unknown>;
type Level = "info" | "warn" | "error";

function write(level: Level, msg: string, fields: LogFields): void {
  const line = JSON.stringify({ level, msg, ...fields });
  if (level === "info") console.log(line);
  else console[level](line);
}

export function logger(component?: string) {
  const tagged = (fields: LogFields) => (component ? { component, ...fields } : fields);
  return {
    info: (msg: string, fields: LogFields = {}) => write("info", msg, tagged(fields)),
    warn: (msg: string, fields: LogFields = {}) => write("warn", msg, tagged(fields)),
    error: (msg: string, fields: LogFields = {}) => write("error", msg, tagged(fields)),
  };
}

export const log = logger();
