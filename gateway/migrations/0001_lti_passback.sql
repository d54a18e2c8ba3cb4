CREATE TABLE `lti_links` (
	`course` text NOT NULL,
	`assignment` text NOT NULL,
	`user` text NOT NULL,
	`consumer_key` text NOT NULL,
	`outcome_service_url` text NOT NULL,
	`result_sourcedid` text NOT NULL,
	`resource_link_id` text,
	`updated_at` text NOT NULL,
	PRIMARY KEY(`course`, `assignment`, `user`)
);
--> statement-breakpoint
CREATE TABLE `lti_nonces` (
	`consumer_key` text NOT NULL,
	`nonce` text NOT NULL,
	`timestamp` integer NOT NULL,
	PRIMARY KEY(`consumer_key`, `nonce`)
);
--> statement-breakpoint
CREATE INDEX `lti_nonces_by_time` ON `lti_nonces` (`timestamp`);--> statement-breakpoint
CREATE TABLE `passback_attempts` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`passback_id` integer NOT NULL,
	`at` text NOT NULL,
	`message_id` text NOT NULL,
	`url` text NOT NULL,
	`score` real NOT NULL,
	`http_status` integer,
	`code_major` text,
	`description` text NOT NULL,
	`duration_ms` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `passback_attempts_by_passback` ON `passback_attempts` (`passback_id`,`id`);--> statement-breakpoint
CREATE TABLE `passbacks` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`submission_id` text NOT NULL,
	`course` text NOT NULL,
	`section` text NOT NULL,
	`assignment` text NOT NULL,
	`user` text NOT NULL,
	`state` text NOT NULL,
	`attempts` integer DEFAULT 0 NOT NULL,
	`next_attempt_at` integer,
	`posted_score` real,
	`last_error` text,
	`created_at` text NOT NULL,
	`delivered_at` text,
	`updated_at` text NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `passbacks_submission_id_unique` ON `passbacks` (`submission_id`);--> statement-breakpoint
CREATE INDEX `passbacks_due` ON `passbacks` (`state`,`next_attempt_at`);--> statement-breakpoint
CREATE INDEX `passbacks_by_student` ON `passbacks` (`course`,`assignment`,`user`);--> statement-breakpoint
ALTER TABLE `course_sections` ADD `post_grades` integer DEFAULT true NOT NULL;--> statement-breakpoint
ALTER TABLE `section_assignments` ADD `policy` text DEFAULT 'latest' NOT NULL;