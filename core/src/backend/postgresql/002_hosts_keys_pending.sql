-- twofactor's fleet schema, migration 002 (version 2): each host a role of its own in
-- the group twofactor_hosts, key files read only through twofactor_keys.read, and state
-- kept before a user enrols in a table of its own, bounded per host.

-- A database from version 1 has the shared login role twofactor_host: its certificates
-- keep working, through the group, until each host is added with a role of its own.
GRANT USAGE ON SCHEMA twofactor TO twofactor_hosts, twofactor_admin;
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'twofactor_host') THEN
        GRANT twofactor_hosts TO twofactor_host;
    END IF;
END $$;

-- Key paths move to the superuser's registry; the owner keeps only ids.
INSERT INTO twofactor_keys.files (id, path)
SELECT id, path FROM twofactor.keys ON CONFLICT DO NOTHING;

SET LOCAL ROLE twofactor_owner;

ALTER TABLE twofactor.keys DROP COLUMN IF EXISTS path;

-- The hosts added with `twofactor fleet add-host`: the role each logs in as, and the
-- name (its certificate's CN) it is known by.
CREATE TABLE IF NOT EXISTS twofactor.hosts (
    role text PRIMARY KEY,
    host text NOT NULL UNIQUE,
    added_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- What is kept of a user who has not enrolled (grace logins used). A host can name
-- anybody here, so each host may create only so many rows, and a user row is created
-- by enrolment alone.
CREATE TABLE IF NOT EXISTS twofactor.pending (
    name text PRIMARY KEY,
    created_by text NOT NULL,
    grace_logins_used integer NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS pending_created_by ON twofactor.pending (created_by);
ALTER TABLE twofactor.settings
    ADD COLUMN IF NOT EXISTS pending_per_host_cap integer NOT NULL DEFAULT 10000
        CHECK (pending_per_host_cap > 0);

INSERT INTO twofactor.pending (name, created_by, grace_logins_used)
SELECT name, 'version 1', grace_logins_used FROM twofactor.users
 WHERE secret IS NULL AND grace_logins_used > 0
ON CONFLICT DO NOTHING;
-- Rows version 1 made for a grace count alone; a lock or failures keep theirs.
DELETE FROM twofactor.users
 WHERE secret IS NULL AND failures = 0 AND locks = 0 AND locked_until IS NULL;
ALTER TABLE twofactor.users DROP COLUMN IF EXISTS grace_logins_used;

REVOKE ALL ON ALL TABLES IN SCHEMA twofactor FROM PUBLIC, twofactor_hosts, twofactor_admin;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA twofactor FROM PUBLIC, twofactor_hosts, twofactor_admin;

RESET ROLE;
