-- twofactor's fleet functions, applied by `twofactor fleet init` after the migrations,
-- every time: CREATE OR REPLACE makes each run the same.
--
-- Tables are reachable only through the SECURITY DEFINER functions below, owned by the
-- NOLOGIN role twofactor_owner. Hosts (members of twofactor_hosts) may run the login and
-- self-service functions (h_*); administrators (twofactor_admin) also the a_* ones.
-- TOTP is computed here, on the database's clock: no caller passes a time in.
--
-- Every function pins search_path to our schemas and pg_catalog with pg_temp last:
-- otherwise the caller's temporary schema is searched first for type and table names,
-- and a temporary domain named "text" would run the caller's code as the owner.

-- Hosts and administrators use the schema, and create nothing in it.
REVOKE ALL ON SCHEMA twofactor FROM PUBLIC, twofactor_hosts, twofactor_admin;
GRANT USAGE ON SCHEMA twofactor TO twofactor_hosts, twofactor_admin;
REVOKE ALL ON ALL TABLES IN SCHEMA twofactor FROM PUBLIC, twofactor_hosts, twofactor_admin;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA twofactor FROM PUBLIC, twofactor_hosts, twofactor_admin;

SET LOCAL ROLE twofactor_owner;

-- ---------------------------------------------------------------------------------
-- Internal helpers (owner only).

-- The calling host: its client certificate's CN, or the role for other connections.
CREATE OR REPLACE FUNCTION twofactor.caller() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
    SELECT coalesce(CASE WHEN ssl_client_cert_present() THEN ssl_client_dn_field('CN') END,
                    session_user::text)
$$;

CREATE OR REPLACE FUNCTION twofactor.now_s() RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
    SELECT floor(extract(epoch FROM clock_timestamp()))::bigint
$$;

CREATE OR REPLACE FUNCTION twofactor.log(p_name text, p_action text, p_outcome text)
RETURNS void LANGUAGE sql SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
    INSERT INTO twofactor.audit (host, role, name, action, outcome)
    VALUES (twofactor.caller(), session_user::text, p_name, p_action, p_outcome)
$$;

-- A user name any account could have: not empty, at most @MAX_USER_LEN@ bytes (core's
-- limit), no control, format (bidi) or separator character. Raises otherwise, so
-- nothing is stored under it.
CREATE OR REPLACE FUNCTION twofactor.valid_name(p_name text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
BEGIN
    -- The file store's rules (store::validate_user_name), so both refuse the same names.
    IF p_name IS NULL OR p_name = '' OR octet_length(p_name) > @MAX_USER_LEN@
       OR p_name ~ '@UNSAFE_CHARS@' OR strpos(p_name, '/') > 0
       OR left(p_name, 1) IN ('.', '-') THEN
        RAISE EXCEPTION 'twofactor: invalid user name' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN p_name;
END
$$;

-- A host's word for the audit (a PAM service, a client address): at most 255 bytes, no
-- control, format or separator character, so no audit row can be made to look like more.
CREATE OR REPLACE FUNCTION twofactor.valid_text(p_text text, p_what text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
BEGIN
    IF p_text IS NULL OR p_text = '' OR octet_length(p_text) > 255 OR p_text ~ '@UNSAFE_CHARS@' THEN
        RAISE EXCEPTION 'twofactor: invalid %', p_what USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN p_text;
END
$$;

-- Whether the session is the administrators' (a member of twofactor_admin).
CREATE OR REPLACE FUNCTION twofactor.is_admin() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
    SELECT pg_has_role(session_user, 'twofactor_admin', 'MEMBER')
$$;

-- The key with this id (hex).
CREATE OR REPLACE FUNCTION twofactor.key(p_id integer) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
DECLARE
    k text;
BEGIN
    -- Read by the key reader: the owner names a registered key, never a path.
    k := btrim(twofactor_keys.read(p_id), E' \n\r\t');
    IF k !~ '^[0-9a-f]{64}$' THEN
        RAISE EXCEPTION 'twofactor: the key file registered as key % must hold 64 hex digits', p_id;
    END IF;
    RETURN k;
END
$$;

CREATE OR REPLACE FUNCTION twofactor.current_key() RETURNS integer
LANGUAGE sql STABLE SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
    SELECT id FROM twofactor.keys WHERE current
$$;

CREATE OR REPLACE FUNCTION twofactor.encrypt(p_secret bytea, p_key integer) RETURNS bytea
LANGUAGE sql VOLATILE SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
    SELECT pgp_sym_encrypt_bytea(p_secret, twofactor.key(p_key), 'cipher-algo=aes256')
$$;

CREATE OR REPLACE FUNCTION twofactor.decrypt(p_data bytea, p_key integer) RETURNS bytea
LANGUAGE sql STABLE SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
    SELECT pgp_sym_decrypt_bytea(p_data, twofactor.key(p_key))
$$;

-- Backup codes are kept as a keyed hash: a copy of the database alone cannot test guesses.
CREATE OR REPLACE FUNCTION twofactor.code_hash(p_code text, p_key integer) RETURNS bytea
LANGUAGE sql STABLE SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
    SELECT hmac(convert_to('backup code', 'UTF8') || '\x00'::bytea || convert_to(p_code, 'UTF8'),
                decode(twofactor.key(p_key), 'hex'), 'sha256')
$$;

-- RFC 6238 code for one time step.
CREATE OR REPLACE FUNCTION twofactor.totp_code(p_secret bytea, p_algorithm text,
                                               p_digits integer, p_step bigint)
RETURNS text LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
DECLARE
    h bytea;
    o integer;
    v bigint;
BEGIN
    h := hmac(int8send(p_step), p_secret, lower(p_algorithm));
    o := get_byte(h, length(h) - 1) & 15;
    v := ((get_byte(h, o) & 127)::bigint << 24) | (get_byte(h, o + 1)::bigint << 16)
         | (get_byte(h, o + 2)::bigint << 8) | get_byte(h, o + 3)::bigint;
    RETURN lpad((v % (10::bigint ^ p_digits)::bigint)::text, p_digits, '0');
END
$$;

-- The authenticator id, as core's AuthenticatorId::of computes it.
CREATE OR REPLACE FUNCTION twofactor.authenticator_id(p_secret bytea) RETURNS bytea
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
    SELECT substring(digest(convert_to('twofactor authenticator id', 'UTF8') || '\x00'::bytea
                            || p_secret, 'sha256') FROM 1 FOR 16)
$$;

-- The newest step within the window whose code is p_code, or NULL.
CREATE OR REPLACE FUNCTION twofactor.matching_step(u twofactor.users, p_secret bytea,
                                                   p_code text, p_window integer)
RETURNS bigint LANGUAGE plpgsql STABLE SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
DECLARE
    cur bigint := twofactor.now_s() / u.period;
    newest bigint;
BEGIN
    IF p_code IS NULL OR length(p_code) <> u.digits OR p_code !~ '^[0-9]+$' THEN
        RETURN NULL;
    END IF;
    FOR s IN greatest(cur - p_window, 0) .. cur + p_window LOOP
        IF twofactor.totp_code(p_secret, u.algorithm, u.digits, s) = p_code THEN
            newest := s;
        END IF;
    END LOOP;
    RETURN newest;
END
$$;

-- Counts a failure on the locked row; returns the lock it started, in seconds.
CREATE OR REPLACE FUNCTION twofactor.fail(p_name text, p_max integer, p_lock bigint)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
DECLARE
    u twofactor.users;
    lim twofactor.settings;
    secs bigint;
BEGIN
    SELECT * INTO lim FROM twofactor.settings;
    SELECT * INTO u FROM twofactor.users WHERE name = p_name;
    p_max := least(greatest(p_max, 1), lim.max_failures_cap);
    p_lock := greatest(p_lock, lim.lock_seconds_floor);
    IF u.failures + 1 < p_max THEN
        UPDATE twofactor.users SET failures = failures + 1 WHERE name = p_name;
        RETURN NULL;
    END IF;
    secs := least(p_lock * (2::numeric ^ least(u.locks, 40)), 86400)::bigint;
    UPDATE twofactor.users
       SET failures = 0, locks = locks + 1, locked_until = twofactor.now_s() + secs
     WHERE name = p_name;
    RETURN secs;
END
$$;

CREATE OR REPLACE FUNCTION twofactor.facts_of(p_name text) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
    SELECT jsonb_build_object(
        'authenticator', CASE WHEN u.secret IS NULL THEN NULL ELSE jsonb_build_object(
            'id', encode(u.authenticator_id, 'hex'),
            'algorithm', u.algorithm, 'digits', u.digits, 'period', u.period,
            'enabled', u.enabled, 'enrolled_at', u.enrolled_at,
            'last_step', u.last_step, 'window', u.window_steps) END,
        'backup_codes_left', (SELECT count(*) FROM twofactor.backup_codes b
                               WHERE b.name = u.name AND b.used_at IS NULL),
        'failures', u.failures, 'locks', u.locks, 'locked_until', u.locked_until,
        'backup_codes_voided', u.codes_voided_at IS NOT NULL,
        'grace_logins_used', coalesce((SELECT p.grace_logins_used FROM twofactor.pending p
                                        WHERE p.name = u.name), 0),
        -- Trust granted on one host never lets a client skip the code on another.
        'trusted', coalesce((SELECT jsonb_agg(jsonb_build_object(
                    'id', t.id, 'service', t.service, 'host', t.host, 'kind', t.kind,
                    'created', t.created, 'expires', t.expires) ORDER BY t.created)
                  FROM twofactor.trusted_hosts t
                 WHERE t.name = u.name AND t.expires > twofactor.now_s()
                   AND (t.granted_by = twofactor.caller()
                        OR twofactor.is_admin())), '[]'::jsonb))
    FROM twofactor.users u WHERE u.name = p_name
    UNION ALL
    -- A user who has not enrolled has at most a grace count.
    SELECT jsonb_build_object('authenticator', NULL, 'backup_codes_left', 0, 'failures', 0,
                              'locks', 0, 'locked_until', NULL,
                              'grace_logins_used', p.grace_logins_used, 'trusted', '[]'::jsonb)
    FROM twofactor.pending p
    WHERE p.name = p_name AND NOT EXISTS (SELECT 1 FROM twofactor.users WHERE name = p_name)
$$;

-- Locks the user's row; all NULL when there is none (nothing is created).
CREATE OR REPLACE FUNCTION twofactor.hold(p_name text) RETURNS twofactor.users
LANGUAGE plpgsql SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
DECLARE
    u twofactor.users;
BEGIN
    SELECT * INTO u FROM twofactor.users WHERE name = twofactor.valid_name(p_name) FOR UPDATE;
    RETURN u;
END
$$;

-- Locks the user's row, creating it: for enrolment only, once its code has verified.
CREATE OR REPLACE FUNCTION twofactor.hold_new(p_name text) RETURNS twofactor.users
LANGUAGE plpgsql SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
DECLARE
    u twofactor.users;
BEGIN
    INSERT INTO twofactor.users (name) VALUES (twofactor.valid_name(p_name)) ON CONFLICT DO NOTHING;
    SELECT * INTO u FROM twofactor.users WHERE name = p_name FOR UPDATE;
    RETURN u;
END
$$;

-- Spends the caller's ticket for p_name, if it is the one handed out; true when it was.
CREATE OR REPLACE FUNCTION twofactor.spend_ticket(p_name text, p_ticket bytea)
RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
DECLARE
    ok boolean;
BEGIN
    UPDATE twofactor.users
       SET ticket = NULL, ticket_host = NULL, ticket_until = NULL
     WHERE name = p_name AND ticket = digest(p_ticket, 'sha256')
       AND ticket_host = twofactor.caller() AND ticket_until > twofactor.now_s()
    RETURNING true INTO ok;
    RETURN coalesce(ok, false);
END
$$;

-- A user's own change from a host needs the ticket of a code verified on that host. The
-- refusal rolls back the whole call, so it is the host's log that records it.
CREATE OR REPLACE FUNCTION twofactor.need_ticket(p_name text, p_ticket bytea, p_what text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
BEGIN
    IF NOT twofactor.spend_ticket(p_name, p_ticket) THEN
        RAISE EXCEPTION 'twofactor: % needs a current code verified on this host', p_what
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;

-- Stores new backup codes (already normalised) for p_name, replacing the old ones.
CREATE OR REPLACE FUNCTION twofactor.put_codes(p_name text, p_codes text[])
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
DECLARE
    k integer := twofactor.current_key();
BEGIN
    DELETE FROM twofactor.backup_codes WHERE name = p_name;
    INSERT INTO twofactor.backup_codes (name, hash, key_id)
    SELECT p_name, twofactor.code_hash(c, k), k FROM unnest(p_codes) AS c
    ON CONFLICT DO NOTHING;
    UPDATE twofactor.users SET codes_voided_at = NULL WHERE name = p_name;
END
$$;

-- Saves an authenticator confirmed at p_step (NULL: provisioned without a code).
CREATE OR REPLACE FUNCTION twofactor.install(p_name text, p_secret bytea, p_algorithm text,
                                             p_digits integer, p_period integer,
                                             p_step bigint, p_window integer)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
DECLARE
    k integer := twofactor.current_key();
BEGIN
    UPDATE twofactor.users
       SET secret = twofactor.encrypt(p_secret, k), key_id = k,
           authenticator_id = twofactor.authenticator_id(p_secret),
           algorithm = p_algorithm, digits = p_digits, period = p_period,
           enabled = true, enrolled_at = twofactor.now_s(), last_step = p_step,
           window_steps = p_window, codes_voided_at = NULL,
           ticket = NULL, ticket_host = NULL, ticket_until = NULL
     WHERE name = p_name;
    DELETE FROM twofactor.trusted_hosts WHERE name = p_name;
    DELETE FROM twofactor.pending WHERE name = p_name;
END
$$;

-- ---------------------------------------------------------------------------------
-- Functions for hosts (and administrators).

CREATE OR REPLACE FUNCTION twofactor.h_version() RETURNS integer
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
    SELECT version FROM twofactor.meta
$$;

CREATE OR REPLACE FUNCTION twofactor.h_facts(p_name text) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
    SELECT twofactor.facts_of(twofactor.valid_name(p_name))
$$;

-- The facts of a login, and the host's report of whether its config requires the user:
-- the database cannot know that otherwise, and the admin view shows it per host. A
-- report is refreshed at most hourly; a host may keep at most pending_per_host_cap.
CREATE OR REPLACE FUNCTION twofactor.h_login_facts(p_name text, p_required boolean,
                                                   p_cert_not_after bigint)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp SET lock_timeout = '1s' AS $$
DECLARE
    v_name text := twofactor.valid_name(p_name);
    v_host text := twofactor.caller();
BEGIN
    -- The host's own certificate expiry, for `fleet hosts`: written only when it changed.
    UPDATE twofactor.hosts SET cert_not_after = to_timestamp(p_cert_not_after)
     WHERE role = session_user AND p_cert_not_after IS NOT NULL
       AND cert_not_after IS DISTINCT FROM to_timestamp(p_cert_not_after);
    IF NOT p_required THEN
        DELETE FROM twofactor.required_by WHERE name = v_name AND host = v_host;
    ELSIF NOT EXISTS (SELECT 1 FROM twofactor.required_by
                       WHERE name = v_name AND host = v_host
                         AND reported_at > clock_timestamp() - interval '1 hour') THEN
        UPDATE twofactor.required_by SET reported_at = clock_timestamp()
         WHERE name = v_name AND host = v_host;
        IF NOT FOUND AND (SELECT count(*) FROM twofactor.required_by WHERE host = v_host)
                         < (SELECT pending_per_host_cap FROM twofactor.settings) THEN
            INSERT INTO twofactor.required_by (name, host) VALUES (v_name, v_host)
            ON CONFLICT DO NOTHING;
        END IF;
    END IF;
    RETURN twofactor.facts_of(v_name);
END
$$;

-- The fleet's issuer, set by `fleet init --issuer`; NULL when none was.
CREATE OR REPLACE FUNCTION twofactor.h_issuer() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
    SELECT issuer FROM twofactor.settings
$$;

-- One decision on a typed code, in one transaction: the row is locked, the attempt
-- counted, the code checked, and the outcome written with its audit row, or nothing is.
-- p_purpose 'login' or 'change' ('change' also checks a disabled authenticator).
-- Returns {result, step|left|locked_for|seconds_left, ticket}.
CREATE OR REPLACE FUNCTION twofactor.h_verify(p_name text, p_totp text, p_backup text,
                                              p_purpose text, p_window integer,
                                              p_max_failures integer, p_lock_seconds bigint)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp SET lock_timeout = '1s' AS $$
DECLARE
    u twofactor.users;
    lim twofactor.settings;
    v_secret bytea;
    step bigint;
    locked bigint;
    spent text;
    v_ticket bytea;
    now_s bigint := twofactor.now_s();
BEGIN
    SELECT * INTO lim FROM twofactor.settings;
    u := twofactor.hold(p_name);
    IF u.locked_until > now_s THEN
        PERFORM twofactor.log(p_name, 'verify', 'locked');
        RETURN jsonb_build_object('result', 'locked', 'seconds_left', u.locked_until - now_s);
    END IF;
    IF u.secret IS NULL OR NOT (u.enabled OR p_purpose = 'change') THEN
        RETURN jsonb_build_object('result', 'not_enrolled');
    END IF;
    v_secret := twofactor.decrypt(u.secret, u.key_id);
    step := twofactor.matching_step(u, v_secret,
                                    p_totp, least(coalesce(u.window_steps, p_window), lim.window_cap));
    -- A replay cannot log anyone in: it neither counts as a failure nor clears the count,
    -- so one code typed into several sessions at once burns no strikes.
    IF step IS NOT NULL AND step <= coalesce(u.last_step, -1) THEN
        PERFORM twofactor.log(p_name, 'verify', 'replayed');
        RETURN jsonb_build_object('result', 'replayed');
    END IF;
    IF step IS NULL AND p_backup IS NOT NULL THEN
        UPDATE twofactor.backup_codes b SET used_at = clock_timestamp(), used_by = twofactor.caller()
         WHERE b.name = p_name AND b.used_at IS NULL
           AND b.hash = twofactor.code_hash(p_backup, b.key_id)
        RETURNING b.name INTO spent;
    END IF;
    -- A backup code of ours (never a TOTP code's shape) typed by a user whose codes an
    -- administrator voided: it cannot succeed, so it is said and not counted. The user
    -- typing backup codes is likely the one who lost the phone.
    IF step IS NULL AND spent IS NULL AND u.codes_voided_at IS NOT NULL
       AND octet_length(p_backup) = @BACKUP_CODE_CHARS@
       AND NOT EXISTS (SELECT 1 FROM twofactor.backup_codes b
                        WHERE b.name = p_name AND b.used_at IS NULL) THEN
        PERFORM twofactor.log(p_name, 'verify', 'voided backup code');
        RETURN jsonb_build_object('result', 'voided');
    END IF;
    IF step IS NULL AND spent IS NULL THEN
        locked := twofactor.fail(p_name, p_max_failures, p_lock_seconds);
        PERFORM twofactor.log(p_name, 'verify', 'wrong code');
        RETURN jsonb_build_object('result', 'wrong', 'locked_for', locked);
    END IF;
    v_ticket := gen_random_bytes(32);
    UPDATE twofactor.users
       SET last_step = coalesce(step, last_step), failures = 0, locks = 0, locked_until = NULL,
           ticket = digest(v_ticket, 'sha256'), ticket_host = twofactor.caller(),
           ticket_until = now_s + 600
     WHERE name = p_name;
    IF step IS NOT NULL THEN
        PERFORM twofactor.log(p_name, 'verify', 'totp');
        RETURN jsonb_build_object('result', 'totp', 'ticket', encode(v_ticket, 'hex'));
    END IF;
    PERFORM twofactor.log(p_name, 'verify', 'backup code');
    RETURN jsonb_build_object('result', 'backup', 'ticket', encode(v_ticket, 'hex'),
        'left', (SELECT count(*) FROM twofactor.backup_codes
                  WHERE name = p_name AND used_at IS NULL));
END
$$;

-- Enrols p_name once p_code verifies against the new secret. A host may enrol a user
-- without an enabled authenticator, or replace one with the ticket of a verify on it.
-- The code is checked first, so a mistyped code spends no ticket and creates no row.
-- Returns {result: 'saved'|'wrong'|'changed'}.
CREATE OR REPLACE FUNCTION twofactor.h_enrol(p_name text, p_secret bytea, p_algorithm text,
                                             p_digits integer, p_period integer,
                                             p_code text, p_expected bytea, p_ticket bytea,
                                             p_window integer, p_codes text[])
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp SET lock_timeout = '1s' AS $$
DECLARE
    u twofactor.users;
    candidate twofactor.users;
    step bigint;
BEGIN
    candidate.algorithm := p_algorithm;
    candidate.digits := p_digits;
    candidate.period := p_period;
    step := twofactor.matching_step(candidate, p_secret, p_code,
                                    least(p_window, (SELECT window_cap FROM twofactor.settings)));
    IF step IS NULL THEN
        PERFORM twofactor.valid_name(p_name);
        -- In the audit too, so that 'twofactor log' shows a user stuck at enrolment.
        PERFORM twofactor.log(p_name, 'enrol', 'wrong code');
        RETURN jsonb_build_object('result', 'wrong');
    END IF;
    u := twofactor.hold_new(p_name);
    IF u.authenticator_id IS DISTINCT FROM p_expected THEN
        RETURN jsonb_build_object('result', 'changed');
    END IF;
    -- Replacing an enabled authenticator needs proof of it; a turned-off one cannot log
    -- in, and a required user replaces it at login as on the file store. An administrator
    -- may replace one without a code, as a_install does.
    IF u.secret IS NOT NULL AND u.enabled AND NOT twofactor.is_admin() THEN
        PERFORM twofactor.need_ticket(p_name, p_ticket, 'replacing an authenticator');
    END IF;
    PERFORM twofactor.install(p_name, p_secret, p_algorithm, p_digits, p_period, step, NULL);
    PERFORM twofactor.put_codes(p_name, p_codes);
    PERFORM twofactor.log(p_name, 'enrol', 'saved');
    RETURN jsonb_build_object('result', 'saved');
END
$$;

-- Counts one grace login of a user who has not enrolled; the logins left, or NULL when
-- none is. A host may start counts for at most pending_per_host_cap names: a host that
-- names made-up users fills its own share only, and its users then must enrol.
CREATE OR REPLACE FUNCTION twofactor.h_count_grace_login(p_name text, p_allowed integer)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp SET lock_timeout = '1s' AS $$
DECLARE
    lim twofactor.settings;
    allowed integer;
    used integer;
BEGIN
    SELECT * INTO lim FROM twofactor.settings;
    allowed := least(p_allowed, lim.grace_logins_cap);
    SELECT grace_logins_used INTO used FROM twofactor.pending
     WHERE name = twofactor.valid_name(p_name) FOR UPDATE;
    IF used IS NULL THEN
        IF (SELECT count(*) FROM twofactor.pending WHERE created_by = twofactor.caller())
           >= lim.pending_per_host_cap THEN
            PERFORM twofactor.log(p_name, 'grace', 'refused: this host''s share of pending users is full');
            RETURN NULL;
        END IF;
        INSERT INTO twofactor.pending (name, created_by) VALUES (p_name, twofactor.caller())
        ON CONFLICT (name) DO NOTHING;
        SELECT grace_logins_used INTO used FROM twofactor.pending WHERE name = p_name FOR UPDATE;
    END IF;
    IF used >= allowed THEN
        PERFORM twofactor.log(p_name, 'grace', 'none left');
        RETURN NULL;
    END IF;
    UPDATE twofactor.pending SET grace_logins_used = used + 1, updated_at = clock_timestamp()
     WHERE name = p_name;
    PERFORM twofactor.log(p_name, 'grace', 'counted');
    RETURN allowed - used - 1;
END
$$;

-- Trusts a client for p_name on the calling host, with the ticket of the verify that
-- just succeeded there.
CREATE OR REPLACE FUNCTION twofactor.h_trust(p_name text, p_ticket bytea, p_service text,
                                             p_host text, p_kind text, p_days integer)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp SET lock_timeout = '1s' AS $$
DECLARE
    v_id text := encode(gen_random_bytes(6), 'hex');
    now_s bigint := twofactor.now_s();
    days integer := least(p_days, (SELECT trust_days_cap FROM twofactor.settings));
BEGIN
    PERFORM twofactor.valid_text(p_service, 'service'), twofactor.valid_text(p_host, 'host'),
            twofactor.valid_text(p_kind, 'kind');
    PERFORM twofactor.hold(p_name);
    PERFORM twofactor.need_ticket(p_name, p_ticket, 'trusting a host');
    DELETE FROM twofactor.trusted_hosts
     WHERE name = p_name AND (expires <= now_s OR (granted_by = twofactor.caller()
           AND service = p_service AND host = p_host));
    INSERT INTO twofactor.trusted_hosts (name, id, granted_by, service, host, kind, created, expires)
    VALUES (p_name, v_id, twofactor.caller(), p_service, p_host, p_kind, now_s, now_s + days * 86400);
    PERFORM twofactor.log(p_name, 'trust', p_service || ' ' || p_host);
    RETURN v_id;
END
$$;

-- The user's own changes, each with the ticket of a verify on this host.
CREATE OR REPLACE FUNCTION twofactor.h_new_codes(p_name text, p_ticket bytea, p_codes text[])
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp SET lock_timeout = '1s' AS $$
DECLARE
    u twofactor.users := twofactor.hold(p_name);
BEGIN
    PERFORM twofactor.need_ticket(p_name, p_ticket, 'new backup codes');
    RETURN twofactor.new_codes(p_name, u, p_codes, 'replaced');
END
$$;

CREATE OR REPLACE FUNCTION twofactor.h_revoke_trust(p_name text, p_ticket bytea, p_id text)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp SET lock_timeout = '1s' AS $$
DECLARE
    n integer;
BEGIN
    PERFORM twofactor.hold(p_name);
    PERFORM twofactor.need_ticket(p_name, p_ticket, 'revoking trust');
    DELETE FROM twofactor.trusted_hosts
     WHERE name = p_name AND granted_by = twofactor.caller() AND (p_id IS NULL OR id = p_id);
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM twofactor.log(p_name, 'trust revoke', n::text);
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION twofactor.h_set_enabled(p_name text, p_ticket bytea, p_enabled boolean)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp SET lock_timeout = '1s' AS $$
DECLARE
    u twofactor.users := twofactor.hold(p_name);
BEGIN
    PERFORM twofactor.need_ticket(p_name, p_ticket, 'turning it on or off');
    RETURN twofactor.set_enabled(p_name, u, p_enabled, p_enabled::text);
END
$$;

-- New backup codes for a held user who has an authenticator; false if there is none.
CREATE OR REPLACE FUNCTION twofactor.new_codes(p_name text, u twofactor.users, p_codes text[],
                                               p_how text)
RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
BEGIN
    IF u.secret IS NULL THEN
        RETURN false;
    END IF;
    PERFORM twofactor.put_codes(p_name, p_codes);
    PERFORM twofactor.log(p_name, 'backup codes', p_how);
    RETURN true;
END
$$;

-- Turns a held user's authenticator on or off; false if there is none.
CREATE OR REPLACE FUNCTION twofactor.set_enabled(p_name text, u twofactor.users,
                                                 p_enabled boolean, p_how text)
RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
BEGIN
    IF u.secret IS NULL THEN
        RETURN false;
    END IF;
    UPDATE twofactor.users SET enabled = p_enabled WHERE name = p_name;
    PERFORM twofactor.log(p_name, 'enabled', p_how);
    RETURN true;
END
$$;

-- Removes the authenticator, its backup codes and trust of a held user; true if it had one.
CREATE OR REPLACE FUNCTION twofactor.forget(p_name text, u twofactor.users) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
BEGIN
    UPDATE twofactor.users
       SET secret = NULL, key_id = NULL, authenticator_id = NULL, algorithm = NULL,
           digits = NULL, period = NULL, enabled = true, enrolled_at = NULL,
           last_step = NULL, window_steps = NULL, ticket = NULL, ticket_host = NULL,
           ticket_until = NULL
     WHERE name = p_name;
    DELETE FROM twofactor.backup_codes WHERE name = p_name;
    DELETE FROM twofactor.trusted_hosts WHERE name = p_name;
    PERFORM twofactor.log(p_name, 'remove', 'authenticator');
    RETURN u.secret IS NOT NULL;
END
$$;

-- The user removes their own authenticator (`twofactor disable --remove`).
CREATE OR REPLACE FUNCTION twofactor.h_remove(p_name text, p_ticket bytea)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp SET lock_timeout = '1s' AS $$
DECLARE
    u twofactor.users := twofactor.hold(p_name);
BEGIN
    PERFORM twofactor.need_ticket(p_name, p_ticket, 'removing the authenticator');
    RETURN twofactor.forget(p_name, u);
END
$$;

-- ---------------------------------------------------------------------------------
-- Functions for administrators only.

CREATE OR REPLACE FUNCTION twofactor.a_users() RETURNS SETOF text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
    SELECT name FROM twofactor.users ORDER BY name
$$;

-- Provisions or imports an authenticator without a code. p_only_new: refuse over one.
CREATE OR REPLACE FUNCTION twofactor.a_install(p_name text, p_secret bytea, p_algorithm text,
                                               p_digits integer, p_period integer,
                                               p_expected bytea, p_window integer,
                                               p_codes text[], p_last_step bigint)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp SET lock_timeout = '1s' AS $$
DECLARE
    u twofactor.users := twofactor.hold_new(p_name);
BEGIN
    IF u.authenticator_id IS DISTINCT FROM p_expected THEN
        RETURN 'changed';
    END IF;
    PERFORM twofactor.install(p_name, p_secret, p_algorithm, p_digits, p_period,
                              p_last_step, p_window);
    IF p_codes IS NOT NULL THEN
        PERFORM twofactor.put_codes(p_name, p_codes);
    END IF;
    PERFORM twofactor.log(p_name, 'install', 'saved');
    RETURN 'saved';
END
$$;

-- `twofactor fleet import`: one user's authenticator from a host's file store. A user
-- with no authenticator here takes it; the same key keeps the later replay step; another
-- key is a conflict unless p_replace, which also drops the codes that went with it.
CREATE OR REPLACE FUNCTION twofactor.a_import(p_name text, p_secret bytea, p_algorithm text,
                                              p_digits integer, p_period integer,
                                              p_window integer, p_last_step bigint,
                                              p_enabled boolean, p_replace boolean)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp SET lock_timeout = '1s' AS $$
DECLARE
    u twofactor.users := twofactor.hold_new(p_name);
    outcome text;
BEGIN
    IF u.secret IS NOT NULL AND u.authenticator_id = twofactor.authenticator_id(p_secret) THEN
        UPDATE twofactor.users
           SET last_step = CASE WHEN last_step IS NULL OR p_last_step > last_step
                                THEN p_last_step ELSE last_step END
         WHERE name = p_name;
        outcome := 'merged';
    ELSIF u.secret IS NOT NULL AND NOT p_replace THEN
        outcome := 'conflict';
    ELSE
        outcome := CASE WHEN u.secret IS NULL THEN 'imported' ELSE 'replaced' END;
        DELETE FROM twofactor.backup_codes WHERE name = p_name;
        PERFORM twofactor.install(p_name, p_secret, p_algorithm, p_digits, p_period,
                                  p_last_step, p_window);
        UPDATE twofactor.users SET enabled = p_enabled WHERE name = p_name;
    END IF;
    PERFORM twofactor.log(p_name, 'import', outcome);
    RETURN outcome;
END
$$;

CREATE OR REPLACE FUNCTION twofactor.a_new_codes(p_name text, p_codes text[])
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp SET lock_timeout = '1s' AS $$
DECLARE
    u twofactor.users := twofactor.hold(p_name);
BEGIN
    RETURN twofactor.new_codes(p_name, u, p_codes, 'replaced by an administrator');
END
$$;

CREATE OR REPLACE FUNCTION twofactor.a_set_enabled(p_name text, p_enabled boolean)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp SET lock_timeout = '1s' AS $$
DECLARE
    u twofactor.users := twofactor.hold(p_name);
BEGIN
    RETURN twofactor.set_enabled(p_name, u, p_enabled, p_enabled::text || ' by an administrator');
END
$$;

CREATE OR REPLACE FUNCTION twofactor.a_revoke_trust(p_name text, p_id text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    DELETE FROM twofactor.trusted_hosts
     WHERE name = twofactor.valid_name(p_name) AND (p_id IS NULL OR id = p_id);
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM twofactor.log(p_name, 'trust revoke', n::text || ' by an administrator');
    RETURN n;
END
$$;

-- p_all: everything; otherwise the authenticator, codes and trust (lock and grace stay).
CREATE OR REPLACE FUNCTION twofactor.a_reset(p_name text, p_all boolean) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp SET lock_timeout = '1s' AS $$
DECLARE
    u twofactor.users := twofactor.hold(p_name);
BEGIN
    IF p_all THEN
        DELETE FROM twofactor.users WHERE name = p_name;
        DELETE FROM twofactor.pending WHERE name = p_name;
        PERFORM twofactor.log(p_name, 'reset', 'everything');
        RETURN u.secret IS NOT NULL;
    END IF;
    RETURN twofactor.forget(p_name, u);
END
$$;

CREATE OR REPLACE FUNCTION twofactor.a_unlock(p_name text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp SET lock_timeout = '1s' AS $$
DECLARE
    u twofactor.users := twofactor.hold(p_name);
    left_s bigint := CASE WHEN u.locked_until > twofactor.now_s()
                          THEN u.locked_until - twofactor.now_s() END;
BEGIN
    UPDATE twofactor.users SET failures = 0, locks = 0, locked_until = NULL WHERE name = p_name;
    PERFORM twofactor.log(p_name, 'unlock', coalesce(left_s::text, 'not locked'));
    RETURN left_s;
END
$$;

-- Hosts' reports of requiring users: p_name's, or everyone's when NULL.
CREATE OR REPLACE FUNCTION twofactor.a_required_by(p_name text)
RETURNS TABLE (name text, host text, reported_at bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
    -- A host refreshes its report at most hourly; its latest login of the user, in the
    -- audit, is newer when there was one since.
    SELECT r.name, r.host,
           extract(epoch FROM greatest(r.reported_at,
               (SELECT max(a.at) FROM twofactor.audit a WHERE a.name = r.name AND a.host = r.host)))::bigint
      FROM twofactor.required_by r
     WHERE p_name IS NULL OR r.name = p_name
     ORDER BY r.name, r.host
$$;

-- The audit, newest first, filtered by whichever arguments are not NULL.
CREATE OR REPLACE FUNCTION twofactor.a_audit(p_name text, p_host text, p_outcome text,
                                             p_since bigint, p_limit integer)
RETURNS TABLE (at double precision, host text, role text, name text, action text, outcome text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, twofactor, twofactor_ext, pg_temp AS $$
    SELECT extract(epoch FROM a.at)::double precision, a.host, a.role, a.name, a.action, a.outcome
      FROM twofactor.audit a
     WHERE (p_name IS NULL OR a.name = p_name)
       AND (p_host IS NULL OR a.host = p_host)
       AND (p_outcome IS NULL OR a.outcome = p_outcome)
       AND (p_since IS NULL OR a.at >= to_timestamp(p_since))
     ORDER BY a.at DESC
     LIMIT greatest(coalesce(p_limit, 1000), 0)
$$;

-- ---------------------------------------------------------------------------------
-- Who may run what: nothing by default, then function by function.

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA twofactor FROM PUBLIC, twofactor_hosts, twofactor_admin;
GRANT EXECUTE ON FUNCTION
    twofactor.h_version(), twofactor.h_facts(text),
    twofactor.h_login_facts(text, boolean, bigint), twofactor.h_issuer(),
    twofactor.h_verify(text, text, text, text, integer, integer, bigint),
    twofactor.h_enrol(text, bytea, text, integer, integer, text, bytea, bytea, integer, text[]),
    twofactor.h_count_grace_login(text, integer),
    twofactor.h_trust(text, bytea, text, text, text, integer),
    twofactor.h_new_codes(text, bytea, text[]),
    twofactor.h_revoke_trust(text, bytea, text),
    twofactor.h_set_enabled(text, bytea, boolean),
    twofactor.h_remove(text, bytea)
TO twofactor_hosts, twofactor_admin;
GRANT EXECUTE ON FUNCTION
    twofactor.a_users(),
    twofactor.a_required_by(text),
    twofactor.a_audit(text, text, text, bigint, integer),
    twofactor.a_install(text, bytea, text, integer, integer, bytea, integer, text[], bigint),
    twofactor.a_new_codes(text, text[]),
    twofactor.a_import(text, bytea, text, integer, integer, integer, bigint, boolean, boolean),
    twofactor.a_set_enabled(text, boolean),
    twofactor.a_revoke_trust(text, text),
    twofactor.a_reset(text, boolean),
    twofactor.a_unlock(text)
TO twofactor_admin;

RESET ROLE;
