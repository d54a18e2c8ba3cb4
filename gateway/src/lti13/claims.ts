/** Claim names and values of LTI 1.3 and AGS that the gateway reads or sends. */
export const LTI = "https://purl.imsglobal.org/spec/lti/claim/";
export const CLAIM = {
  messageType: `${LTI}message_type`,
  version: `${LTI}version`,
  deploymentId: `${LTI}deployment_id`,
  resourceLink: `${LTI}resource_link`,
  custom: `${LTI}custom`,
  lti1p1: `${LTI}lti1p1`,
  ags: "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint",
} as const;
export const AGS_SCORE_SCOPE = "https://purl.imsglobal.org/spec/lti-ags/scope/score";
export const SCORE_MEDIA_TYPE = "application/vnd.ims.lis.v1.score+json";
