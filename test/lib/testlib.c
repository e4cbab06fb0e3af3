/* testlib.c - helpers shared by unit and integration tests. */
#include "testlib.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct suite_ent {
    const char *name;
    testlib_suite_fn fn;
};
static struct suite_ent suites[128];
static size_t nsuites;

void testlib_register(const char *name, testlib_suite_fn fn)
{
    if (nsuites < sizeof(suites) / sizeof(suites[0]))
        suites[nsuites++] = (struct suite_ent){name, fn};
}

/* Used by test/unit/main.c. */
size_t testlib_suites(const char ***names, testlib_suite_fn **fns);
size_t testlib_suites(const char ***names, testlib_suite_fn **fns)
{
    static const char *n[128];
    static testlib_suite_fn f[128];
    for (size_t i = 0; i < nsuites; i++) {
        n[i] = suites[i].name;
        f[i] = suites[i].fn;
    }
    *names = n;
    *fns = f;
    return nsuites;
}

char *testlib_tmpdir(const char *prefix)
{
    const char *base = getenv("TMPDIR");
    char *path;
    if (asprintf(&path, "%s/%s-XXXXXX", base && *base ? base : "/tmp", prefix ? prefix : "dfs-test") < 0)
        return NULL;
    if (mkdtemp(path) == NULL) {
        free(path);
        return NULL;
    }
    return path;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p) == 0 || errno == ENOENT ? 0 : -1;
}

int testlib_rmrf(const char *path)
{
    if (path == NULL)
        return 0;
    return nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS);
}

int testlib_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

pid_t testlib_spawn(char *const argv[], const char *logpath)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        if (logpath) {
            int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                close(fd);
            }
        }
        execvp(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int testlib_stop(pid_t pid, int sig, int timeout_ms)
{
    if (pid <= 0)
        return -1;
    kill(pid, sig);
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    int status;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0)
            return -1;
        if (now_ms() >= deadline)
            break;
        usleep(10000);
    }
    kill(pid, SIGCONT);
    kill(pid, SIGKILL);
    if (waitpid(pid, &status, 0) == pid)
        return status;
    return -1;
}

int testlib_wait_for(int (*fn)(void *arg), void *arg, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        if (fn(arg))
            return 1;
        if (now_ms() >= deadline)
            return 0;
        usleep(20000);
    }
}

int testlib_port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

const char *testlib_bindir(void)
{
    const char *d = getenv("DFS_BIN_DIR");
    return d && *d ? d : "build/bin";
}
