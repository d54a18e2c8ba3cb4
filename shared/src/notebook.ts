import { z } from "zod";

/**
 * Where a submission is routed: the notebook's `metadata.otter_service` (otter-service 2.x), or the
 * top-level `metadata.course`, `metadata.section` and `metadata.assignment` (or `metadata.lab`) that
 * otter-service 0.1 read and older course notebooks still carry (see routingOf).
 */
export const OtterServiceRouting = z.object({
  course: z.string().trim().min(1).max(100),
  section: z.string().trim().min(1).max(100),
  assignment: z.string().trim().min(1).max(100),
});
export type OtterServiceRouting = z.infer<typeof OtterServiceRouting>;

/**
 * The parts of an nbformat 4 notebook the gateway relies on. Cells are left loose on purpose:
 * otter-grader (nbformat) is the authority on cell contents, and students' notebooks come from
 * many Jupyter versions.
 */
export const Notebook = z.looseObject({
  nbformat: z.literal(4),
  nbformat_minor: z.number().int().nonnegative(),
  metadata: z.looseObject({}),
  cells: z.array(z.looseObject({ cell_type: z.string() })),
});
export type Notebook = z.infer<typeof Notebook>;

/** Body of `POST /services/otter_grade/` (what the hub's Submit buttons send) and `POST /api/v1/submissions`. */
export const SubmitBody = z.object({
  nb: z.unknown(),
  /** Never trusted: a submission that names a user other than the verified one is refused. */
  user: z.unknown().optional(),
  username: z.unknown().optional(),
});
