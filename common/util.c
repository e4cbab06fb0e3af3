/* util.c - time, randomness, address parsing, errno mapping, daemon helpers. */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"

int64_t dfs_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

uint64_t dfs_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t dfs_mono_ms(void)
{
    return dfs_mono_ns() / 1000000ULL;
}

void dfs_cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
}

uint64_t dfs_random_u64(void)
{
    uint64_t v = 0;
    while (v == 0) {
        if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v))
            v = dfs_mono_ns() ^ ((uint64_t)getpid() << 32);
    }
    return v;
}

int dfs_parse_hostport(const char *s, int defport, char *hostbuf, size_t hostlen, int *port,
                       char *err, size_t errlen)
{
    const char *colon = strrchr(s, ':');
    size_t hl = colon ? (size_t)(colon - s) : strlen(s);
    if (s[0] == '[') { /* [v6]:port */
        const char *rb = strchr(s, ']');
        if (rb == NULL) {
            snprintf(err, errlen, "'%s': missing ']'", s);
            return -1;
        }
        hl = (size_t)(rb - s - 1);
        colon = rb[1] == ':' ? rb + 1 : NULL;
        s++;
    }
    if (hl == 0 || hl >= hostlen) {
        snprintf(err, errlen, "'%s': bad host", s);
        return -1;
    }
    memcpy(hostbuf, s, hl);
    hostbuf[hl] = '\0';
    if (colon == NULL) {
        *port = defport;
        return 0;
    }
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end != '\0' || p < 0 || p > 65535 || end == colon + 1) {
        snprintf(err, errlen, "'%s': bad port", s);
        return -1;
    }
    *port = (int)p;
    return 0;
}

static const struct {
    int st, err;
} errmap[] = {
    {DFS_OK, 0},
    {DFS_EPERM, EPERM},
    {DFS_ENOENT, ENOENT},
    {DFS_EIO, EIO},
    {DFS_EEXIST, EEXIST},
    {DFS_ENOTDIR, ENOTDIR},
    {DFS_EISDIR, EISDIR},
    {DFS_EINVAL, EINVAL},
    {DFS_ENOSPC, ENOSPC},
    {DFS_ENOTEMPTY, ENOTEMPTY},
    {DFS_ENAMETOOLONG, ENAMETOOLONG},
    {DFS_EACCES, EACCES},
    {DFS_ELOOP, ELOOP},
    {DFS_ENODATA, ENODATA},
    {DFS_ERANGE, ERANGE},
    {DFS_E2BIG, E2BIG},
    {DFS_ENOTSUP, EOPNOTSUPP},
    {DFS_ETIMEDOUT, ETIMEDOUT},
    {DFS_ECONN, EIO},
    {DFS_EPROTO, EPROTO},
    {DFS_ECORRUPT, EIO},
    {DFS_ESTALE, ESTALE},
    {DFS_ENOTLEADER, EAGAIN},
    {DFS_ENOCHUNK, EIO},
    {DFS_EBUSY, EBUSY},
    {DFS_EAGAIN, EAGAIN},
    {DFS_ENOMEM, ENOMEM},
    {DFS_EROFS, EROFS},
    {DFS_EFBIG, EFBIG},
    {DFS_ENOSYS, ENOSYS},
    {DFS_EAUTH, EACCES},
    {DFS_ENOSERVERS, ENOSPC},
    {DFS_EMLINK, EMLINK},
    {DFS_EVERSION, EPROTO},
    {DFS_ECANCELED, ECANCELED},
    {DFS_EBADF, EBADF},
    {DFS_EXDEV, EXDEV},
    {DFS_ECONFIG, EINVAL},
    {DFS_EDISK, EIO},
};

int dfs_status_to_errno(int status)
{
    for (size_t i = 0; i < sizeof(errmap) / sizeof(errmap[0]); i++)
        if (errmap[i].st == status)
            return errmap[i].err;
    return EIO;
}

int dfs_errno_to_status(int err)
{
    if (err == 0)
        return DFS_OK;
    if (err == EDQUOT)
        return DFS_ENOSPC;
    if (err == EROFS)
        return DFS_EROFS;
    for (size_t i = 1; i < sizeof(errmap) / sizeof(errmap[0]); i++)
        if (errmap[i].err == err)
            return errmap[i].st;
    return DFS_EIO;
}

int dfs_write_pidfile(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "pid file %s: %s", path, strerror(errno));
        return -1;
    }
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
    if (write(fd, buf, (size_t)n) != n) {
        snprintf(err, errlen, "pid file %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

int dfs_daemonize(int logfd)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid > 0)
        _exit(0);
    if (setsid() < 0)
        return -1;
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid > 0)
        _exit(0);
    umask(022);
    if (chdir("/") != 0)
        return -1;
    int nfd = open("/dev/null", O_RDWR);
    if (nfd >= 0) {
        dup2(nfd, 0);
        dup2(nfd, 1);
        dup2(logfd >= 0 ? logfd : nfd, 2);
        if (nfd > 2)
            close(nfd);
    }
    return 0;
}
