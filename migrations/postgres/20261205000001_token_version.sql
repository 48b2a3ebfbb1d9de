-- Access tokens carry the version of their user's tokens (`ver`); a token of an older
-- version is refused. Logging out and a change of role move the version on, so the
-- access tokens already handed out end at once on every replica.
ALTER TABLE app_user ADD COLUMN token_version BIGINT NOT NULL DEFAULT 0;
