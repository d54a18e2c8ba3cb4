ALTER TABLE `assignments` ADD `environment_prepared` text;--> statement-breakpoint
ALTER TABLE `assignments` ADD `environment_prepared_at` text;--> statement-breakpoint
ALTER TABLE `assignments` ADD `environment_log` text;