ALTER TABLE `assignments` ADD `environment_hash` text;--> statement-breakpoint
ALTER TABLE `assignments` ADD `environment` text;