CREATE TABLE `assignments` (
	`course` text NOT NULL,
	`assignment` text NOT NULL,
	`autograder_sha256` text NOT NULL,
	`otter_version` text NOT NULL,
	`timeout_seconds` integer DEFAULT 600 NOT NULL,
	`updated_at` text NOT NULL,
	PRIMARY KEY(`course`, `assignment`)
);
--> statement-breakpoint
CREATE TABLE `course_sections` (
	`course` text NOT NULL,
	`section` text NOT NULL,
	`lms_course_id` text,
	`updated_at` text NOT NULL,
	PRIMARY KEY(`course`, `section`)
);
--> statement-breakpoint
CREATE TABLE `section_assignments` (
	`course` text NOT NULL,
	`section` text NOT NULL,
	`assignment` text NOT NULL,
	`lms_block_id` text,
	`updated_at` text NOT NULL,
	PRIMARY KEY(`course`, `section`, `assignment`)
);
--> statement-breakpoint
CREATE TABLE `submission_events` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`submission_id` text NOT NULL,
	`at` text NOT NULL,
	`state` text NOT NULL,
	`detail` text DEFAULT '' NOT NULL
);
--> statement-breakpoint
CREATE INDEX `submission_events_by_submission` ON `submission_events` (`submission_id`,`id`);--> statement-breakpoint
CREATE TABLE `submissions` (
	`id` text PRIMARY KEY NOT NULL,
	`user` text NOT NULL,
	`course` text NOT NULL,
	`section` text NOT NULL,
	`assignment` text NOT NULL,
	`notebook_sha256` text NOT NULL,
	`notebook_bytes` integer NOT NULL,
	`autograder_sha256` text NOT NULL,
	`status` text NOT NULL,
	`attempts` integer DEFAULT 0 NOT NULL,
	`runner` text,
	`graded_token` text,
	`verdict` text,
	`score` real,
	`points` real,
	`max_points` real,
	`message` text,
	`created_at` text NOT NULL,
	`leased_at` text,
	`finished_at` text,
	`updated_at` text NOT NULL
);
--> statement-breakpoint
CREATE INDEX `submissions_by_student` ON `submissions` (`course`,`assignment`,`user`);--> statement-breakpoint
CREATE INDEX `submissions_by_status` ON `submissions` (`status`,`created_at`);--> statement-breakpoint
CREATE TABLE `test_results` (
	`submission_id` text NOT NULL,
	`name` text NOT NULL,
	`score` real NOT NULL,
	`max_score` real NOT NULL,
	`visibility` text NOT NULL,
	`output` text NOT NULL,
	PRIMARY KEY(`submission_id`, `name`)
);
