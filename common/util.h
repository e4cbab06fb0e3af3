/* util.h - small helpers shared by every binary: time, addresses, ids. */
#ifndef DFS_UTIL_H
#define DFS_UTIL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define DFS_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define DFS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define DFS_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Wall clock, nanoseconds since the epoch. */
int64_t dfs_now_ns(void);
/* Monotonic clock, milliseconds / nanoseconds. */
uint64_t dfs_mono_ms(void);
uint64_t dfs_mono_ns(void);
/* pthread_cond_init with CLOCK_MONOTONIC for pthread_cond_timedwait, so
 * deadlines computed from dfs_mono_ms() hold across wall-clock jumps. */
void dfs_cond_init_mono(pthread_cond_t *cv);

/* A random 64-bit value from getrandom(2) (never 0). */
uint64_t dfs_random_u64(void);

/* Split "host:port" (port optional -> defport).  host is written into
 * hostbuf.  Returns 0 or -1 with a reason in err. */
int dfs_parse_hostport(const char *s, int defport, char *hostbuf, size_t hostlen, int *port,
                       char *err, size_t errlen);

/* Map a DFS_* status to a positive errno value (EIO for unknown). */
int dfs_status_to_errno(int status);
/* Map an errno value to a DFS_* status (DFS_EIO for unknown). */
int dfs_errno_to_status(int err);

/* Write a pid file (O_EXCL semantics relaxed: a stale file is replaced).
 * Returns 0 or -1 with a reason in err. */
int dfs_write_pidfile(const char *path, char *err, size_t errlen);
/* Classic double-fork daemonize; stdin/out/err to /dev/null (keeps a log fd
 * if logfd >= 0 by dup'ing it to 2). Returns 0 in the daemon, -1 on error. */
int dfs_daemonize(int logfd);

#endif /* DFS_UTIL_H */
