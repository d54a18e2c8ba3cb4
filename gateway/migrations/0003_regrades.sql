CREATE TABLE `regrade_items` (
	`regrade_id` integer NOT NULL,
	`submission_id` text NOT NULL,
	`user` text NOT NULL,
	`state` text NOT NULL,
	`attempts` integer DEFAULT 0 NOT NULL,
	`old_score` real,
	`new_score` real,
	`new_points` real,
	`new_max_points` real,
	`verdict` text,
	`outcome` text,
	`graded_token` text,
	`message` text,
	`finished_at` text,
	`updated_at` text NOT NULL,
	PRIMARY KEY(`regrade_id`, `submission_id`)
);
--> statement-breakpoint
CREATE INDEX `regrade_items_by_state` ON `regrade_items` (`regrade_id`,`state`);--> statement-breakpoint
CREATE TABLE `regrades` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`course` text NOT NULL,
	`assignment` text NOT NULL,
	`autograder_sha256` text NOT NULL,
	`dry_run` integer NOT NULL,
	`never_lower` integer NOT NULL,
	`only_outdated` integer NOT NULL,
	`scope_user` text,
	`scope_submissions` text,
	`requested_by` text NOT NULL,
	`state` text NOT NULL,
	`total` integer NOT NULL,
	`message` text,
	`created_at` text NOT NULL,
	`finished_at` text,
	`updated_at` text NOT NULL
);
--> statement-breakpoint
CREATE INDEX `regrades_by_assignment` ON `regrades` (`course`,`assignment`,`state`);