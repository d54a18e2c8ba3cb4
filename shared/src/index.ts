export * from "./notebook.js";
export * from "./protocol.js";
export * from "./grades.js";
export * from "./shards.js";
export * from "./environment.js";
export * from "./backoff.js";
