import { and, eq, isNull } from "drizzle-orm";
import { sha256Hex } from "../autograder.js";
import { type Database, nowIso } from "../db/client.js";
import { type TokenKind, apiTokens } from "../db/schema.js";

export const ISSUED_TOKEN_PREFIX = "oe_";

function randomToken(kind: TokenKind): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  const text = btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
  // The prefix tells a human (or a secret scanner) what a leaked token is.
  return `${ISSUED_TOKEN_PREFIX}${kind}_${text}`;
}

/** Creates a token; its plain text is returned once and never stored. */
export async function issueToken(db: Database, t: { kind: TokenKind; name: string; course?: string | null }) {
  const token = randomToken(t.kind);
  const row = { id: crypto.randomUUID(), kind: t.kind, name: t.name, course: t.course ?? null, tokenSha256: await sha256Hex(new TextEncoder().encode(token)), createdAt: nowIso() };
  await db.insert(apiTokens).values(row);
  return { id: row.id, kind: row.kind, name: row.name, course: row.course, token };
}

/**
 * The live token a presented secret belongs to. Looked up by its hash: the secret has 256 bits of
 * entropy, so the lookup's timing reveals nothing useful.
 */
export async function findToken(db: Database, presented: string) {
  const [row] = await db
    .select()
    .from(apiTokens)
    .where(and(eq(apiTokens.tokenSha256, await sha256Hex(new TextEncoder().encode(presented))), isNull(apiTokens.revokedAt)))
    .limit(1);
  return row ?? null;
}

export async function revokeToken(db: Database, id: string) {
  const [row] = await db.update(apiTokens).set({ revokedAt: nowIso() }).where(and(eq(apiTokens.id, id), isNull(apiTokens.revokedAt))).returning();
  return row ?? null;
}
