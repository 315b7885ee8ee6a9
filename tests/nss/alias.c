/* A name service module for tests, loaded by nss_wrapper (NSS_WRAPPER_MODULE_SO_PATH,
 * NSS_WRAPPER_MODULE_FN_PREFIX=tfalias). It answers getpwnam for other names of one
 * account the way a case-insensitive or realm-qualifying directory (SSSD with AD, LDAP)
 * does: "ALICE" and "alice@corp.example" give the entry of uid TF_ALIAS_UID, with
 * pw_name as typed. Only getpwuid leads back to the canonical name, which the passwd
 * file (NSS_WRAPPER_PASSWD) holds. Everything else it does not know. */
#include <errno.h>
#include <grp.h>
#include <nss.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int is_alias(const char *typed, const char *canonical)
{
    size_t n = strlen(canonical);
    if (strcmp(typed, canonical) == 0) {
        return 0; /* the canonical name itself comes from the passwd file */
    }
    if (strcasecmp(typed, canonical) == 0) {
        return 1;
    }
    return strncasecmp(typed, canonical, n) == 0 && strcasecmp(typed + n, "@corp.example") == 0;
}

enum nss_status _nss_tfalias_getpwnam_r(const char *name, struct passwd *pw, char *buf,
                                        size_t buflen, int *errnop)
{
    const char *canonical = getenv("TF_ALIAS_NAME");
    const char *uid = getenv("TF_ALIAS_UID");
    size_t len = strlen(name) + 1;
    if (canonical == NULL || uid == NULL || !is_alias(name, canonical)) {
        return NSS_STATUS_NOTFOUND;
    }
    if (buflen < len + 16) {
        *errnop = ERANGE;
        return NSS_STATUS_TRYAGAIN;
    }
    memcpy(buf, name, len);
    strcpy(buf + len, "x");
    strcpy(buf + len + 2, "/");
    pw->pw_name = buf;
    pw->pw_passwd = buf + len;
    pw->pw_uid = (uid_t)strtoul(uid, NULL, 10);
    pw->pw_gid = pw->pw_uid;
    pw->pw_gecos = buf + len + 1;
    pw->pw_dir = buf + len + 2;
    pw->pw_shell = buf + len + 1;
    return NSS_STATUS_SUCCESS;
}

enum nss_status _nss_tfalias_getpwuid_r(uid_t uid, struct passwd *pw, char *buf,
                                        size_t buflen, int *errnop)
{
    (void)uid; (void)pw; (void)buf; (void)buflen; (void)errnop;
    return NSS_STATUS_NOTFOUND;
}

enum nss_status _nss_tfalias_setpwent(void) { return NSS_STATUS_SUCCESS; }
enum nss_status _nss_tfalias_endpwent(void) { return NSS_STATUS_SUCCESS; }
enum nss_status _nss_tfalias_getpwent_r(struct passwd *pw, char *buf, size_t buflen,
                                        int *errnop)
{
    (void)pw; (void)buf; (void)buflen; (void)errnop;
    return NSS_STATUS_NOTFOUND;
}

enum nss_status _nss_tfalias_getgrnam_r(const char *name, struct group *gr, char *buf,
                                        size_t buflen, int *errnop)
{
    (void)name; (void)gr; (void)buf; (void)buflen; (void)errnop;
    return NSS_STATUS_NOTFOUND;
}

enum nss_status _nss_tfalias_getgrgid_r(gid_t gid, struct group *gr, char *buf,
                                        size_t buflen, int *errnop)
{
    (void)gid; (void)gr; (void)buf; (void)buflen; (void)errnop;
    return NSS_STATUS_NOTFOUND;
}

enum nss_status _nss_tfalias_setgrent(void) { return NSS_STATUS_SUCCESS; }
enum nss_status _nss_tfalias_endgrent(void) { return NSS_STATUS_SUCCESS; }
enum nss_status _nss_tfalias_getgrent_r(struct group *gr, char *buf, size_t buflen,
                                        int *errnop)
{
    (void)gr; (void)buf; (void)buflen; (void)errnop;
    return NSS_STATUS_NOTFOUND;
}

enum nss_status _nss_tfalias_initgroups_dyn(const char *user, gid_t group, long int *start,
                                            long int *size, gid_t **groupsp, long int limit,
                                            int *errnop)
{
    (void)user; (void)group; (void)start; (void)size; (void)groupsp; (void)limit;
    (void)errnop;
    return NSS_STATUS_NOTFOUND;
}
