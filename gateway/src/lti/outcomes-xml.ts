import { XMLParser } from "fast-xml-parser";

/** The LTI 1.1 Basic Outcomes score: a decimal in 0.0..1.0, clamped and rounded to 3 decimals like the old service. */
export function formatScore(score: number): string {
  const clamped = Number.isFinite(score) ? Math.min(1, Math.max(0, score)) : 0;
  return String(Math.round(clamped * 1000) / 1000);
}

function escapeXml(text: string): string {
  return text.replace(/[<>&'"]/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", "'": "&apos;", '"': "&quot;" })[c]!);
}

/**
 * A `replaceResultRequest` envelope, byte for byte the layout of the IMS LTI 1.1 implementation
 * guide's example (section 6.1.1), including its `version = "1.0"` spacing. The signature covers
 * these exact bytes through oauth_body_hash.
 */
export function replaceResultXml(opts: { messageId: string; sourcedId: string; score: number }): string {
  return [
    `<?xml version = "1.0" encoding = "UTF-8"?>`,
    `<imsx_POXEnvelopeRequest xmlns = "http://www.imsglobal.org/services/ltiv1p1/xsd/imsoms_v1p0">`,
    `<imsx_POXHeader>`,
    `<imsx_POXRequestHeaderInfo>`,
    `<imsx_version>V1.0</imsx_version>`,
    `<imsx_messageIdentifier>${escapeXml(opts.messageId)}</imsx_messageIdentifier>`,
    `</imsx_POXRequestHeaderInfo>`,
    `</imsx_POXHeader>`,
    `<imsx_POXBody>`,
    `<replaceResultRequest>`,
    `<resultRecord>`,
    `<sourcedGUID>`,
    `<sourcedId>${escapeXml(opts.sourcedId)}</sourcedId>`,
    `</sourcedGUID>`,
    `<result>`,
    `<resultScore>`,
    `<language>en</language>`,
    `<textString>${formatScore(opts.score)}</textString>`,
    `</resultScore>`,
    `</result>`,
    `</resultRecord>`,
    `</replaceResultRequest>`,
    `</imsx_POXBody>`,
    `</imsx_POXEnvelopeRequest>`,
  ].join("\n");
}

export interface OutcomeResponse {
  codeMajor: string;
  severity: string;
  description: string;
  messageRefIdentifier: string;
}

const parser = new XMLParser({ removeNSPrefix: true, parseTagValue: false, ignoreAttributes: true, trimValues: true });

/** Reads the status of an `imsx_POXEnvelopeResponse`; null when the reply is not one. */
export function parseOutcomeResponse(xml: string): OutcomeResponse | null {
  let doc: Record<string, any>;
  try {
    doc = parser.parse(xml);
  } catch {
    return null;
  }
  const info = doc?.imsx_POXEnvelopeResponse?.imsx_POXHeader?.imsx_POXResponseHeaderInfo;
  const status = info?.imsx_statusInfo;
  if (typeof status?.imsx_codeMajor !== "string") return null;
  return {
    codeMajor: status.imsx_codeMajor,
    severity: String(status.imsx_severity ?? ""),
    description: String(status.imsx_description ?? ""),
    messageRefIdentifier: String(status.imsx_messageRefIdentifier ?? ""),
  };
}
