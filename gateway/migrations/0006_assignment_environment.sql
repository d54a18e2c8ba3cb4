ALTER TABLE `assignments` ADD `environment_hash` text;--> statement-breakpoint
ALTER TABLE `assignments` ADD `environment` text;--> statement-breakpoint
ALTER TABLE `assignments` ADD `environment_status` text;--> statement-breakpoint
ALTER TABLE `assignments` ADD `environment_error` text;