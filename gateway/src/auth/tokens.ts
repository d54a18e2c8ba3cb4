/**
 * Static credential lists (`name:token,name2:token2`), compared through SHA-256 digests with a
 * timing-safe compare so a wrong guess learns nothing from the response time.
 */
export function parseTokenList(list: string | undefined): Array<{ name: string; token: string }> {
  if (!list) return [];
  return list
    .split(",")
    .map((entry) => entry.trim())
    .filter(Boolean)
    .map((entry) => {
      const colon = entry.indexOf(":");
      return { name: entry.slice(0, colon).trim(), token: entry.slice(colon + 1).trim() };
    })
    .filter((e) => e.name && e.token);
}

async function digest(value: string): Promise<ArrayBuffer> {
  return crypto.subtle.digest("SHA-256", new TextEncoder().encode(value));
}

export async function tokensEqual(a: string, b: string): Promise<boolean> {
  const [da, db] = await Promise.all([digest(a), digest(b)]);
  return crypto.subtle.timingSafeEqual(da, db);
}

/** The name whose token matches `presented`, or null. */
export async function findTokenOwner(list: string | undefined, presented: string): Promise<string | null> {
  for (const { name, token } of parseTokenList(list)) {
    if (await tokensEqual(token, presented)) return name;
  }
  return null;
}

/** `Authorization: Bearer <t>` or `Authorization: token <t>` (JupyterHub's spelling). */
export function bearerToken(header: string | undefined): string | null {
  const match = /^(?:bearer|token)\s+(\S+)\s*$/i.exec(header ?? "");
  return match ? match[1]! : null;
}
