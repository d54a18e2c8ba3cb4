CREATE TABLE `api_tokens` (
	`id` text PRIMARY KEY NOT NULL,
	`kind` text NOT NULL,
	`name` text NOT NULL,
	`course` text,
	`token_sha256` text NOT NULL,
	`created_at` text NOT NULL,
	`revoked_at` text
);
--> statement-breakpoint
CREATE UNIQUE INDEX `api_tokens_token_sha256_unique` ON `api_tokens` (`token_sha256`);--> statement-breakpoint
CREATE INDEX `api_tokens_by_kind` ON `api_tokens` (`kind`,`name`);