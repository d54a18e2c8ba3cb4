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

/** Digests of a token list, computed once per isolate and list (the list is a secret that rarely changes). */
const listDigests = new Map<string, Promise<Array<{ name: string; digest: ArrayBuffer }>>>();

/** The name whose token matches `presented`, or null: one digest of the presented token, then constant-time compares. */
export async function findTokenOwner(list: string | undefined, presented: string): Promise<string | null> {
  if (!list) return null;
  let digests = listDigests.get(list);
  if (!digests) {
    digests = Promise.all(parseTokenList(list).map(async ({ name, token }) => ({ name, digest: await digest(token) })));
    listDigests.set(list, digests);
  }
  const mine = await digest(presented);
  let owner: string | null = null;
  // Every entry is compared, so the time taken does not say which entry (if any) matched.
  for (const { name, digest: d } of await digests) if (crypto.subtle.timingSafeEqual(d, mine) && owner === null) owner = name;
  return owner;
}

/** `Authorization: Bearer <t>` or `Authorization: token <t>` (JupyterHub's spelling). */
export function bearerToken(header: string | undefined): string | null {
  const match = /^(?:bearer|token)\s+(\S+)\s*$/i.exec(header ?? "");
  return match ? match[1]! : null;
}
