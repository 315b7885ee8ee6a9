/* A PAM module for tests only: its authenticate puts the content of file=PATH into the
 * PAM environment as SSH_AUTH_INFO_0, as sshd does, so that a stack can hand the module
 * what sshd never would (an expired certificate). Returns PAM_IGNORE. */
#include <security/pam_modules.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv) {
    const char *path = NULL;
    (void)flags;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "file=", 5) == 0) {
            path = argv[i] + 5;
        }
    }
    if (path == NULL) {
        return PAM_SERVICE_ERR;
    }
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return PAM_SERVICE_ERR;
    }
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    size_t size = n + sizeof "SSH_AUTH_INFO_0=";
    char *var = malloc(size);
    if (var == NULL) {
        return PAM_BUF_ERR;
    }
    snprintf(var, size, "SSH_AUTH_INFO_0=%s", buf);
    int r = pam_putenv(pamh, var);
    free(var);
    return r == PAM_SUCCESS ? PAM_IGNORE : PAM_SERVICE_ERR;
}

int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv) {
    (void)pamh;
    (void)flags;
    (void)argc;
    (void)argv;
    return PAM_IGNORE;
}
