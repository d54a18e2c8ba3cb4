import { z } from "zod";
import { inArray } from "drizzle-orm";
import { database, nowIso } from "./db/client.js";
import { courseSections, sectionAssignments } from "./db/schema.js";
import { GRADE_POLICIES } from "./submissions/grade-policy.js";

const Name = z.string().trim().min(1).max(100);

/**
 * The course config, in the old service's shape: course → section → {course_id, assignments:
 * {name → LMS block id}}. `course_id` and the block ids locate the edX LTI block for grade passback.
 */
const BlockId = z.string().trim().max(200).nullable();
const AssignmentEntry = z.union([BlockId, z.object({ block: BlockId.optional(), policy: z.enum(GRADE_POLICIES).optional() })]);

export const CourseConfig = z.record(
  Name,
  z.record(
    Name,
    z.object({
      course_id: z.string().trim().min(1).max(200).optional(),
      /** The old POST_GRADE switch: false records grades without sending them to the LMS. */
      post_grade: z.boolean().optional(),
      /** Assignment name → LTI block id, or {block, policy} where policy is "latest" (default) or "best". */
      assignments: z.record(Name, AssignmentEntry),
    }),
  ),
);
export type CourseConfig = z.infer<typeof CourseConfig>;

/** Replaces the sections and assignments of every course the config names, in one transaction. */
export async function loadCourseConfig(d1: D1Database, config: CourseConfig): Promise<{ courses: number; sections: number; assignments: number }> {
  const db = database(d1);
  const now = nowIso();
  const courses = Object.keys(config);
  const sectionRows = courses.flatMap((course) =>
    Object.entries(config[course]!).map(([section, s]) => ({ course, section, lmsCourseId: s.course_id ?? null, postGrades: s.post_grade ?? true, updatedAt: now })),
  );
  const assignmentRows = courses.flatMap((course) =>
    Object.entries(config[course]!).flatMap(([section, s]) =>
      Object.entries(s.assignments).map(([assignment, entry]) => {
        const { block, policy } = entry !== null && typeof entry === "object" ? entry : { block: entry, policy: undefined };
        return { course, section, assignment, lmsBlockId: block || null, policy: policy ?? ("latest" as const), updatedAt: now };
      }),
    ),
  );
  await db.batch([
    db.delete(courseSections).where(inArray(courseSections.course, courses)),
    db.delete(sectionAssignments).where(inArray(sectionAssignments.course, courses)),
    // D1 caps bound parameters per statement, so rows go in small groups.
    ...chunks(sectionRows, 20).map((rows) => db.insert(courseSections).values(rows)),
    ...chunks(assignmentRows, 15).map((rows) => db.insert(sectionAssignments).values(rows)),
  ] as unknown as Parameters<typeof db.batch>[0]);
  return { courses: courses.length, sections: sectionRows.length, assignments: assignmentRows.length };
}

function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
