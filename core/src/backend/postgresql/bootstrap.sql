-- Run by `twofactor fleet init` as a superuser before the migrations, every time: the
-- roles, what PUBLIC may no longer do in this database, and the key reader. The
-- extensions are placed by the code that runs this (see `place_extensions`).
--
-- Roles: twofactor_owner (NOLOGIN) owns the tables and functions; twofactor_hosts
-- (NOLOGIN) holds the hosts' grants, and each host logs in as a role of its own that is
-- a member of it (`twofactor fleet add-host`); twofactor_admin logs in for the admin
-- commands; twofactor_keyreader (NOLOGIN, and nobody is a member) owns the one function
-- that reads key files.

DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'twofactor_owner') THEN
        CREATE ROLE twofactor_owner NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'twofactor_hosts') THEN
        CREATE ROLE twofactor_hosts NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'twofactor_admin') THEN
        CREATE ROLE twofactor_admin LOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'twofactor_keyreader') THEN
        CREATE ROLE twofactor_keyreader NOLOGIN;
    END IF;
    -- By default every role may create temporary objects and (before PostgreSQL 15)
    -- objects in public; a host must create nothing our functions could resolve.
    EXECUTE pg_catalog.format('REVOKE TEMPORARY, CREATE ON DATABASE %I FROM PUBLIC',
                              pg_catalog.current_database());
END $$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- Nobody else becomes the owner or the key reader, and neither may do more than its job.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT m.roleid::regrole AS granted, m.member::regrole AS member
               FROM pg_catalog.pg_auth_members m
              WHERE m.roleid IN ('twofactor_owner'::regrole, 'twofactor_keyreader'::regrole)
    LOOP
        EXECUTE pg_catalog.format('REVOKE %s FROM %s', r.granted, r.member);
    END LOOP;
    FOR r IN SELECT rolname FROM pg_catalog.pg_roles
              WHERE rolname IN ('twofactor_owner', 'twofactor_keyreader', 'twofactor_admin',
                                'twofactor_hosts', 'twofactor_host')
    LOOP
        EXECUTE pg_catalog.format('ALTER ROLE %I NOSUPERUSER NOCREATEROLE NOCREATEDB NOBYPASSRLS',
                                  r.rolname);
        EXECUTE pg_catalog.format('REVOKE TEMPORARY, CREATE ON DATABASE %I FROM %I',
                                  pg_catalog.current_database(), r.rolname);
        EXECUTE pg_catalog.format('REVOKE CREATE ON SCHEMA public FROM %I', r.rolname);
    END LOOP;
END $$;

-- The owner reads no file: anything that runs as it must not reach the server's files.
REVOKE pg_read_server_files FROM twofactor_owner;
REVOKE EXECUTE ON FUNCTION pg_catalog.pg_read_file(text) FROM twofactor_owner;
ALTER DEFAULT PRIVILEGES FOR ROLE twofactor_owner REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE twofactor_keyreader REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- pgcrypto and sslinfo, where no host or administrator can create anything.
CREATE SCHEMA IF NOT EXISTS twofactor_ext;
REVOKE ALL ON SCHEMA twofactor_ext FROM PUBLIC;
GRANT USAGE ON SCHEMA twofactor_ext TO twofactor_owner;

-- The key files the superuser registered, and the one function that reads them.
CREATE SCHEMA IF NOT EXISTS twofactor_keys;
REVOKE ALL ON SCHEMA twofactor_keys FROM PUBLIC;
GRANT USAGE ON SCHEMA twofactor_keys TO twofactor_keyreader, twofactor_owner;
CREATE TABLE IF NOT EXISTS twofactor_keys.files (
    id integer PRIMARY KEY,
    path text NOT NULL UNIQUE
);
REVOKE ALL ON twofactor_keys.files FROM PUBLIC;
GRANT SELECT ON twofactor_keys.files TO twofactor_keyreader;
GRANT pg_read_server_files TO twofactor_keyreader;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_file(text) TO twofactor_keyreader;

-- The contents of registered key file p_id. The owner may run it with an id, never a path.
CREATE OR REPLACE FUNCTION twofactor_keys.read(p_id integer) RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p pg_catalog.text;
BEGIN
    SELECT f.path INTO p FROM twofactor_keys.files f WHERE f.id = p_id;
    IF p IS NULL THEN
        RAISE EXCEPTION 'twofactor: no key file is registered as key %', p_id;
    END IF;
    RETURN pg_catalog.pg_read_file(p);
END
$$;
ALTER FUNCTION twofactor_keys.read(integer) OWNER TO twofactor_keyreader;
REVOKE ALL ON FUNCTION twofactor_keys.read(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION twofactor_keys.read(integer) TO twofactor_owner;
