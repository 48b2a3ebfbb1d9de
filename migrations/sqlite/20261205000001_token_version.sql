-- SQLite twin of migrations/postgres/20261205000001_token_version.sql.
-- Access tokens carry the version of their user's tokens (`ver`); a token of an older
-- version is refused. Logging out and a change of role move the version on, so the
-- access tokens already handed out end at once.
ALTER TABLE app_user ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0;
