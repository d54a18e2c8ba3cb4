/**
 * The path the JupyterHub proxy forwards to this gateway: the hub service `otter_grade`
 * (`c.JupyterHub.services`). The proxy keeps the prefix, so routes a student reaches through the
 * hub are mounted under it as well as at the root.
 */
export const HUB_SERVICE_PREFIX = "/services/otter_grade";

/** The prefix a request came in under: the hub service's when it came through the hub's proxy, else "". */
export function servicePrefixOf(path: string): string {
  return path === HUB_SERVICE_PREFIX || path.startsWith(`${HUB_SERVICE_PREFIX}/`) ? HUB_SERVICE_PREFIX : "";
}
