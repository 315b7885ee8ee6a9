-- twofactor's fleet schema, migration 001: the tables of schema version 1. `twofactor
-- fleet init` applies the numbered files it has not applied yet, in order, in one
-- transaction, as a superuser; functions.sql is applied after them every time.

CREATE SCHEMA IF NOT EXISTS twofactor AUTHORIZATION twofactor_owner;
REVOKE ALL ON SCHEMA twofactor FROM PUBLIC;
GRANT USAGE ON SCHEMA twofactor TO twofactor_hosts, twofactor_admin;
SET LOCAL ROLE twofactor_owner;

CREATE TABLE IF NOT EXISTS twofactor.meta (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    version integer NOT NULL
);

-- Limits a host's config cannot loosen: a host may be stricter, never laxer.
CREATE TABLE IF NOT EXISTS twofactor.settings (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    max_failures_cap integer NOT NULL DEFAULT 10 CHECK (max_failures_cap > 0),
    lock_seconds_floor bigint NOT NULL DEFAULT 60 CHECK (lock_seconds_floor > 0),
    window_cap integer NOT NULL DEFAULT 2 CHECK (window_cap BETWEEN 0 AND 10),
    grace_logins_cap integer NOT NULL DEFAULT 10 CHECK (grace_logins_cap >= 0),
    trust_days_cap integer NOT NULL DEFAULT 90 CHECK (trust_days_cap > 0)
);
INSERT INTO twofactor.settings DEFAULT VALUES ON CONFLICT DO NOTHING;

-- Keys that encrypt secrets at rest. Only the path is here: the key itself lives in a
-- file outside the data directory that only the server's OS user can read.
CREATE TABLE IF NOT EXISTS twofactor.keys (
    id serial PRIMARY KEY,
    path text NOT NULL UNIQUE,
    added_at timestamptz NOT NULL DEFAULT now(),
    current boolean NOT NULL DEFAULT false
);

CREATE TABLE IF NOT EXISTS twofactor.users (
    name text PRIMARY KEY,
    secret bytea,
    key_id integer REFERENCES twofactor.keys (id),
    authenticator_id bytea,
    algorithm text CHECK (algorithm IN ('SHA1', 'SHA256', 'SHA512')),
    digits integer CHECK (digits IN (6, 8)),
    period integer CHECK (period BETWEEN 15 AND 300),
    enabled boolean NOT NULL DEFAULT true,
    enrolled_at bigint,
    last_step bigint,
    window_steps integer,
    failures integer NOT NULL DEFAULT 0,
    locks integer NOT NULL DEFAULT 0,
    locked_until bigint,
    grace_logins_used integer NOT NULL DEFAULT 0,
    -- A short-lived ticket a successful verify hands the host that ran it: it lets that
    -- host, and no other, make one change for this user (trust a client, new codes).
    ticket bytea,
    ticket_host text,
    ticket_until bigint
);

CREATE TABLE IF NOT EXISTS twofactor.backup_codes (
    name text NOT NULL REFERENCES twofactor.users (name) ON DELETE CASCADE,
    hash bytea NOT NULL,
    key_id integer NOT NULL REFERENCES twofactor.keys (id),
    used_at timestamptz,
    used_by text,
    PRIMARY KEY (name, hash)
);

CREATE TABLE IF NOT EXISTS twofactor.trusted_hosts (
    name text NOT NULL REFERENCES twofactor.users (name) ON DELETE CASCADE,
    id text NOT NULL,
    granted_by text NOT NULL,
    service text NOT NULL,
    host text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('ip', 'name')),
    created bigint NOT NULL,
    expires bigint NOT NULL,
    PRIMARY KEY (name, id)
);

CREATE TABLE IF NOT EXISTS twofactor.audit (
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    host text NOT NULL,
    role text NOT NULL,
    name text,
    action text NOT NULL,
    outcome text NOT NULL
);

RESET ROLE;
