/* log.c - leveled logging to stderr or syslog, with a replaceable sink. */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static const char *log_ident = "dfs";
static int log_level = LOG_LVL_INFO;
static log_sink_fn log_sink;
static void *log_sink_arg;
static int log_syslog;

static const char *const level_names[] = {
    [LOG_LVL_ERR] = "err",   [LOG_LVL_WARNING] = "warning", [LOG_LVL_NOTICE] = "notice",
    [LOG_LVL_INFO] = "info", [LOG_LVL_DEBUG] = "debug",     [LOG_LVL_TRACE] = "trace",
};

int log_level_parse(const char *s)
{
    if (s == NULL || *s == '\0')
        return -1;
    for (int i = LOG_LVL_ERR; i <= LOG_LVL_TRACE; i++)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    if (strcasecmp(s, "error") == 0)
        return LOG_LVL_ERR;
    if (strcasecmp(s, "warn") == 0)
        return LOG_LVL_WARNING;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end == '\0' && v >= 0 && v <= LOG_LVL_TRACE)
        return (int)v;
    return -1;
}

void log_init(const char *ident)
{
    if (ident)
        log_ident = ident;
    const char *t = getenv("DFS_TRACE");
    const char *l = getenv("DFS_LOG");
    if (l && log_level_parse(l) >= 0)
        log_level = log_level_parse(l);
    if (t && *t && strcmp(t, "0") != 0)
        log_level = LOG_LVL_TRACE;
}

void log_set_level(int level)
{
    log_level = level;
}

int log_get_level(void)
{
    return log_level;
}

void log_set_sink(log_sink_fn fn, void *arg)
{
    log_sink = fn;
    log_sink_arg = arg;
}

void log_use_syslog(void)
{
    openlog(log_ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
    log_syslog = 1;
}

static void log_emit(int level, const char *line)
{
    if (log_sink) {
        log_sink(level, line, log_sink_arg);
        return;
    }
    if (log_syslog) {
        syslog(level > LOG_LVL_DEBUG ? LOG_DEBUG : level, "%s", line);
        return;
    }
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    /* One fprintf per line keeps lines from different threads whole. */
    fprintf(stderr, "%02d:%02d:%02d.%03ld %s[%d] %s: %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
            ts.tv_nsec / 1000000, log_ident, (int)getpid(),
            level >= LOG_LVL_ERR && level <= LOG_LVL_TRACE ? level_names[level] : "?", line);
}

static void log_v(int level, int err, const char *fmt, va_list ap)
{
    if (level > log_level)
        return;
    char line[2048];
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    if (n < 0)
        return;
    if (err && (size_t)n < sizeof(line)) {
        char eb[128];
        snprintf(line + n, sizeof(line) - (size_t)n, ": %s", strerror_r(err, eb, sizeof(eb)));
    }
    log_emit(level, line);
}

void log_msg(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_v(level, 0, fmt, ap);
    va_end(ap);
}

void log_errno(int level, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_v(level, err ? err : EIO, fmt, ap);
    va_end(ap);
}
