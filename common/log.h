/* log.h - leveled logging with a replaceable sink and a trace switch. */
#ifndef DFS_LOG_H
#define DFS_LOG_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* Levels follow syslog(3); TRACE is below DEBUG and is enabled by setting the
 * environment variable DFS_TRACE=1 (or log_set_level(LOG_LVL_TRACE)). */
enum log_level {
    LOG_LVL_ERR = 3,
    LOG_LVL_WARNING = 4,
    LOG_LVL_NOTICE = 5,
    LOG_LVL_INFO = 6,
    LOG_LVL_DEBUG = 7,
    LOG_LVL_TRACE = 8,
};

typedef void (*log_sink_fn)(int level, const char *line, void *arg);

/* Set the program name and level (default INFO, or TRACE if DFS_TRACE is set,
 * or the level named by DFS_LOG=err|warning|notice|info|debug|trace).
 * Thread-safe after this call. */
void log_init(const char *ident);
void log_set_level(int level);
int log_get_level(void);
/* Parse "err", "warning", ... or a number; returns -1 if unknown. */
int log_level_parse(const char *s);
/* Replace the sink (default: stderr, or syslog after log_use_syslog()). */
void log_set_sink(log_sink_fn fn, void *arg);
void log_use_syslog(void);

void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Like log_msg, appends ": strerror(err)". */
void log_errno(int level, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define log_enabled(lvl) ((lvl) <= log_get_level())
#define log_err(...) log_msg(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_LVL_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) \
    do { if (log_enabled(LOG_LVL_DEBUG)) log_msg(LOG_LVL_DEBUG, __VA_ARGS__); } while (0)
#define log_trace(...) \
    do { if (log_enabled(LOG_LVL_TRACE)) log_msg(LOG_LVL_TRACE, __VA_ARGS__); } while (0)

/* Always-on check for impossible states: logs file:line and aborts. */
#define DFS_ASSERT(cond)                                                       \
    do {                                                                       \
        if (__builtin_expect(!(cond), 0)) {                                    \
            log_msg(LOG_LVL_ERR, "assertion failed at %s:%d: %s", __FILE__,    \
                    __LINE__, #cond);                                          \
            abort();                                                           \
        }                                                                      \
    } while (0)

#endif /* DFS_LOG_H */
