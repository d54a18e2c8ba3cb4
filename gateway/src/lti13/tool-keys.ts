import { type CryptoKey, type JWK, importJWK } from "jose";
import { z } from "zod";
import type { Env } from "../env.js";
import { ApiError } from "../errors.js";

/**
 * The tool's RS256 keys, from the LTI13_TOOL_KEYS secret: a JSON array of private JWKs, each with a
 * `kid`. The first signs; every key's public half is served at /.well-known/jwks.json. To rotate,
 * put a new key first and keep the old one after it until no platform can still hold an assertion
 * it signed or a cached copy of the old JWKS (assertions live 5 minutes; an hour is ample).
 */
const PrivateJwk = z.looseObject({ kty: z.literal("RSA"), kid: z.string().min(1), n: z.string().min(1), e: z.string().min(1), d: z.string().min(1) });
const ToolKeys = z.array(PrivateJwk).min(1);
export type ToolKey = z.infer<typeof PrivateJwk>;

/** The private members of an RSA JWK: never in the served JWKS. */
const PRIVATE_MEMBERS = ["d", "p", "q", "dp", "dq", "qi", "oth"] as const;

export function toolKeys(env: Env): ToolKey[] {
  if (!env.LTI13_TOOL_KEYS) throw new ApiError(503, "lti13_not_configured", "This gateway has no LTI 1.3 tool key (LTI13_TOOL_KEYS).");
  let json: unknown;
  try {
    json = JSON.parse(env.LTI13_TOOL_KEYS);
  } catch {
    throw new ApiError(500, "lti13_bad_tool_keys", "LTI13_TOOL_KEYS is not JSON (a list of private RSA JWKs with kid).");
  }
  const parsed = ToolKeys.safeParse(json);
  if (!parsed.success) throw new ApiError(500, "lti13_bad_tool_keys", `LTI13_TOOL_KEYS: ${parsed.error.issues[0]?.path.join(".")}: ${parsed.error.issues[0]?.message}.`);
  return parsed.data;
}

/** The tool's public JWKS: every configured key, newest first. */
export function publicJwks(env: Env): { keys: JWK[] } {
  return {
    keys: toolKeys(env).map((key) => {
      const pub: Record<string, unknown> = { ...key, alg: "RS256", use: "sig" };
      for (const member of PRIVATE_MEMBERS) delete pub[member];
      return pub as JWK;
    }),
  };
}

/** The key that signs the tool's client assertions, with its kid. */
export async function signingKey(env: Env): Promise<{ kid: string; key: CryptoKey }> {
  const [first] = toolKeys(env);
  return { kid: first!.kid, key: (await importJWK({ ...first!, alg: "RS256" }, "RS256")) as CryptoKey };
}
