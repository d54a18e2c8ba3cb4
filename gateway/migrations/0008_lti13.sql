CREATE TABLE `lti13_links` (
	`course` text NOT NULL,
	`assignment` text NOT NULL,
	`user` text NOT NULL,
	`issuer` text NOT NULL,
	`client_id` text NOT NULL,
	`deployment_id` text NOT NULL,
	`sub` text NOT NULL,
	`lineitem` text NOT NULL,
	`resource_link_id` text,
	`updated_at` text NOT NULL,
	PRIMARY KEY(`course`, `assignment`, `user`)
);
--> statement-breakpoint
CREATE TABLE `lti13_logins` (
	`state` text PRIMARY KEY NOT NULL,
	`nonce` text NOT NULL,
	`issuer` text NOT NULL,
	`client_id` text NOT NULL,
	`created_at_ms` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `lti13_logins_by_time` ON `lti13_logins` (`created_at_ms`);--> statement-breakpoint
CREATE TABLE `lti13_platforms` (
	`issuer` text NOT NULL,
	`client_id` text NOT NULL,
	`auth_url` text NOT NULL,
	`token_url` text NOT NULL,
	`jwks_url` text NOT NULL,
	`deployment_ids` text NOT NULL,
	`jwks` text,
	`jwks_fetched_at` integer,
	`created_at` text NOT NULL,
	`updated_at` text NOT NULL,
	PRIMARY KEY(`issuer`, `client_id`)
);
--> statement-breakpoint
CREATE TABLE `lti13_tokens` (
	`issuer` text NOT NULL,
	`client_id` text NOT NULL,
	`scope` text NOT NULL,
	`access_token` text NOT NULL,
	`expires_at_ms` integer NOT NULL,
	PRIMARY KEY(`issuer`, `client_id`, `scope`)
);
