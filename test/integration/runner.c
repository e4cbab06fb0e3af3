/* runner.c - runs every integration test (shell scripts and itest_ programs) under Check. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

/*
 * Each integration test is a separate program (a bash script sourcing
 * lib.sh, or a Check binary built from itest_*.c) that starts real daemons
 * and mounts.  The runner gives each one a process group of its own and a
 * deadline; on the deadline the whole group gets SIGTERM (so the script's
 * trap unmounts and stops what it started), then SIGKILL.  Output goes to
 * build/test/logs/<name>.log and its tail is printed on failure.
 * DFS_ITEST=a,b runs only tests whose name contains one of the words.
 */

#define MAX_TESTS 128

static char *tests[MAX_TESTS];
static int ntests;
static int test_timeout_s = 300;

static int selected(const char *name)
{
    const char *sel = getenv("DFS_ITEST");
    if (sel == NULL || *sel == '\0')
        return 1;
    char *copy = strdup(sel), *save = NULL;
    int ok = 0;
    for (char *w = strtok_r(copy, ",", &save); w; w = strtok_r(NULL, ",", &save))
        if (strstr(name, w))
            ok = 1;
    free(copy);
    return ok;
}

static int cmp(const void *a, const void *b)
{
    const char *x = strrchr(*(char *const *)a, '/'), *y = strrchr(*(char *const *)b, '/');
    return strcmp(x, y);
}

static void collect(const char *dir, const char *prefix, const char *suffix)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) && ntests < MAX_TESTS) {
        size_t n = strlen(e->d_name), sl = strlen(suffix);
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0 || n < sl ||
            strcmp(e->d_name + n - sl, suffix) != 0 || strcmp(e->d_name, "lib.sh") == 0)
            continue;
        if (!selected(e->d_name))
            continue;
        char *p;
        if (asprintf(&p, "%s/%s", dir, e->d_name) >= 0)
            tests[ntests++] = p;
    }
    closedir(d);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

START_TEST(run_one)
{
    const char *path = tests[_i];
    const char *name = strrchr(path, '/') + 1;
    const char *testdir = getenv("DFS_TEST_DIR") ? getenv("DFS_TEST_DIR") : "build/test";
    char logdir[4096], logpath[4200];
    snprintf(logdir, sizeof(logdir), "%s/logs", testdir);
    mkdir(logdir, 0755);
    snprintf(logpath, sizeof(logpath), "%s/%s.log", logdir, name);
    unlink(logpath);

    double t0 = now_s();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        setpgid(0, 0);
        int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0)
            dup2(nul, 0);
        size_t n = strlen(path);
        if (n > 3 && strcmp(path + n - 3, ".sh") == 0)
            execlp("bash", "bash", path, (char *)NULL);
        else
            execl(path, path, (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid);
    int status = 0, timed_out = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (now_s() - t0 > test_timeout_s) {
            timed_out = 1;
            kill(-pid, SIGTERM);
            double t1 = now_s();
            while (waitpid(pid, &status, WNOHANG) == 0 && now_s() - t1 < 20)
                usleep(100000);
            kill(-pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        usleep(50000);
    }
    double el = now_s() - t0;
    int ok = !timed_out && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    printf("%-28s %s  %.1fs\n", name, ok ? "PASS" : "FAIL", el);
    if (!ok) {
        char cmd[8400];
        snprintf(cmd, sizeof(cmd), "tail -n 40 '%s'", logpath);
        fflush(stdout);
        if (system(cmd) != 0)
            printf("(no log)\n");
    }
    fflush(stdout);
    ck_assert_msg(ok, "%s %s (see %s)", name,
                  timed_out ? "timed out" : "failed", logpath);
}
END_TEST

int main(void)
{
    const char *src = getenv("DFS_SRC_DIR") ? getenv("DFS_SRC_DIR") : ".";
    const char *testdir = getenv("DFS_TEST_DIR") ? getenv("DFS_TEST_DIR") : "build/test";
    if (getenv("DFS_ITEST_TIMEOUT"))
        test_timeout_s = atoi(getenv("DFS_ITEST_TIMEOUT"));
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/test/integration", src);
    collect(dir, "", ".sh");
    collect(testdir, "itest_", "");
    qsort(tests, (size_t)ntests, sizeof(tests[0]), cmp);
    printf("integration: %d tests\n", ntests);
    fflush(stdout);
    Suite *s = suite_create("integration");
    TCase *tc = tcase_create("integration");
    tcase_set_timeout(tc, test_timeout_s + 60);
    tcase_add_loop_test(tc, run_one, 0, ntests);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
