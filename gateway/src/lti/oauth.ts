import OAuth from "oauth-1.0a";

/**
 * OAuth 1.0a as LTI 1.1 uses it, with the `oauth-1.0a` package for the parts the spec fixes (base
 * string, parameter normalisation, signing key, header) and Web Crypto for the hashes, which are
 * asynchronous in Workers (the package wants synchronous hash functions, so hashes are computed
 * first and handed to it).
 */

const encoder = new TextEncoder();

function base64(bytes: ArrayBuffer): string {
  let binary = "";
  for (const b of new Uint8Array(bytes)) binary += String.fromCharCode(b);
  return btoa(binary);
}

export async function sha1Base64(body: Uint8Array): Promise<string> {
  return base64(await crypto.subtle.digest("SHA-1", body));
}

export async function hmacSha1Base64(key: string, text: string): Promise<string> {
  const cryptoKey = await crypto.subtle.importKey("raw", encoder.encode(key), { name: "HMAC", hash: "SHA-1" }, false, ["sign"]);
  return base64(await crypto.subtle.sign("HMAC", cryptoKey, encoder.encode(text)));
}

function client(key: string, secret: string): OAuth {
  return new OAuth({
    consumer: { key, secret },
    signature_method: "HMAC-SHA1",
    // Never called: signatures are computed with Web Crypto below.
    hash_function: () => {
      throw new Error("synchronous hashing is not used");
    },
  });
}

export interface SignedBody {
  authorization: string;
  /** The signature base string, for tests that compare it with the spec. */
  baseString: string;
}

/**
 * Signs a POST whose body is not form-encoded (the LTI outcome XML): the body enters the signature
 * only through `oauth_body_hash` = base64(SHA-1(body bytes)) (OAuth Request Body Hash extension).
 */
export async function signBodyRequest(opts: {
  url: string;
  body: Uint8Array;
  key: string;
  secret: string;
  nonce?: string;
  timestamp?: number;
}): Promise<SignedBody> {
  const oauth = client(opts.key, opts.secret);
  const data: OAuth.Data & { oauth_body_hash: string } = {
    oauth_consumer_key: opts.key,
    oauth_nonce: opts.nonce ?? crypto.randomUUID().replaceAll("-", ""),
    oauth_signature_method: "HMAC-SHA1",
    oauth_timestamp: opts.timestamp ?? Math.floor(Date.now() / 1000),
    oauth_version: "1.0",
    oauth_body_hash: await sha1Base64(opts.body),
  };
  const request = { url: opts.url, method: "POST" };
  const baseString = oauth.getBaseString(request, data);
  const oauth_signature = await hmacSha1Base64(oauth.getSigningKey(undefined), baseString);
  return { authorization: oauth.toHeader({ ...data, oauth_signature }).Authorization, baseString };
}

/**
 * Checks the signature of a form-encoded POST (an LTI launch): every form field except
 * `oauth_signature` is signed, together with the URL's query parameters.
 */
export async function formSignatureValid(opts: { url: string; method: string; params: Record<string, string>; secret: string }): Promise<boolean> {
  const { oauth_signature: presented, ...signed } = opts.params;
  if (!presented) return false;
  const oauth = client(signed.oauth_consumer_key ?? "", opts.secret);
  const baseString = oauth.getBaseString({ url: opts.url, method: opts.method, data: signed }, {} as OAuth.Data);
  const expected = await hmacSha1Base64(oauth.getSigningKey(undefined), baseString);
  return constantTimeEqual(encoder.encode(expected), encoder.encode(presented));
}

/** Compares without an early exit, so the time taken says nothing about where a forgery differs. */
function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  let diff = a.byteLength ^ b.byteLength;
  for (let i = 0; i < Math.max(a.byteLength, b.byteLength); i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}
