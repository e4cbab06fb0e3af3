/* testlib.h - helpers shared by unit and integration tests (Check). */
#ifndef DFS_TESTLIB_H
#define DFS_TESTLIB_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Unit test files register their suite with TEST_SUITE(name) { ... return s; }
 * and test/unit/main.c runs every registered suite in one SRunner (fork mode,
 * so every test runs in its own process).  Run a subset with
 * DFS_TEST_SUITE=name[,name] or CK_RUN_SUITE / CK_RUN_CASE.
 */
typedef Suite *(*testlib_suite_fn)(void);
void testlib_register(const char *name, testlib_suite_fn fn);
#define TEST_SUITE(name)                                                        \
    static Suite *suite_##name(void);                                           \
    __attribute__((constructor)) static void register_##name(void)              \
    {                                                                           \
        testlib_register(#name, suite_##name);                                  \
    }                                                                           \
    static Suite *suite_##name(void)

/* A fresh directory under $TMPDIR (or /tmp), e.g. "/tmp/dfs-test-XXXXXX".
 * Returns a malloc'ed path; testlib_rmrf() removes it. */
char *testlib_tmpdir(const char *prefix);
int testlib_rmrf(const char *path);

/* A TCP port on 127.0.0.1 that was free when asked (bind to 0, read, close). */
int testlib_free_port(void);

/* Spawn argv (argv[0] looked up in PATH or a path); stdout/stderr go to
 * logpath (appended) when non-NULL.  Returns the pid or -1. */
pid_t testlib_spawn(char *const argv[], const char *logpath);
/* Send sig, wait up to timeout_ms for exit; SIGKILL after that.  Returns the
 * wait status, or -1. */
int testlib_stop(pid_t pid, int sig, int timeout_ms);

/* Poll until fn(arg) returns nonzero or timeout_ms passes (checks every
 * 20 ms).  Returns 1 if it became true, 0 on timeout. */
int testlib_wait_for(int (*fn)(void *arg), void *arg, int timeout_ms);
/* True when something accepts TCP connections on 127.0.0.1:port. */
int testlib_port_open(int port);

/* Directory holding the built binaries (DFS_BIN_DIR, default "build/bin"). */
const char *testlib_bindir(void);

#endif /* DFS_TESTLIB_H */
