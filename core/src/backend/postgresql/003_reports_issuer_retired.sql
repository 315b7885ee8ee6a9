-- twofactor's fleet schema, migration 003 (version 3): whom hosts report requiring, each
-- report labelled with its host; the fleet's issuer; hosts' certificate expiry; backup
-- codes voided when their key is retired; indexes for reading the audit.

SET LOCAL ROLE twofactor_owner;

-- Whether a user is required is each host's own config: the database knows only what
-- hosts report at login. One row per user and host, at most pending_per_host_cap rows
-- per host, so a host naming made-up users fills its own share only.
CREATE TABLE IF NOT EXISTS twofactor.required_by (
    name text NOT NULL,
    host text NOT NULL,
    reported_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (name, host)
);
CREATE INDEX IF NOT EXISTS required_by_host ON twofactor.required_by (host);

-- The name authenticator apps show for every account of this fleet (`fleet init --issuer`).
ALTER TABLE twofactor.settings ADD COLUMN IF NOT EXISTS issuer text
    CHECK (issuer IS NULL OR (length(issuer) BETWEEN 1 AND 64
                              AND issuer !~ '[[:cntrl:]:]'));

-- When the host's certificate runs out, as the host last reported it.
ALTER TABLE twofactor.hosts ADD COLUMN IF NOT EXISTS cert_not_after timestamptz;

-- Set when `fleet rotate-key --retire` voided the user's backup codes, until new ones.
ALTER TABLE twofactor.users ADD COLUMN IF NOT EXISTS codes_voided_at timestamptz;

CREATE INDEX IF NOT EXISTS audit_name_at ON twofactor.audit (name, at);
CREATE INDEX IF NOT EXISTS audit_host_at ON twofactor.audit (host, at);
CREATE INDEX IF NOT EXISTS audit_at ON twofactor.audit (at);

REVOKE ALL ON ALL TABLES IN SCHEMA twofactor FROM PUBLIC, twofactor_hosts, twofactor_admin;

RESET ROLE;
