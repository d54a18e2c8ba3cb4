import { drizzle } from "drizzle-orm/d1";
import * as schema from "./schema.js";

/** One drizzle instance per D1 binding and isolate: building one walks the whole schema each time. */
const instances = new WeakMap<D1Database, ReturnType<typeof create>>();
const create = (d1: D1Database) => drizzle(d1, { schema });

export function database(d1: D1Database) {
  let db = instances.get(d1);
  if (!db) instances.set(d1, (db = create(d1)));
  return db;
}
export type Database = ReturnType<typeof database>;

export const nowIso = () => new Date().toISOString();
