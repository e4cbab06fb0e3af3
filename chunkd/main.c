/* main.c - chunkd: configuration, daemon life cycle and the ordered module start-up. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "config.h"
#include "csserv.h"
#include "log.h"
#include "masterconn.h"
#include "scrub.h"
#include "store.h"
#include "util.h"

/* Every key, with its default; packaging/chunkd.conf documents the same. */
static const struct cfg_key keys[] = {
    {"listen", CFG_STR, "0.0.0.0:9530", 0, 0, "data port, HOST:PORT"},
    {"advertise", CFG_STR, "", 0, 0, "address metad hands to clients (empty: listen host, or 127.0.0.1 for a wildcard)"},
    {"data_dir", CFG_LIST, "/var/lib/dfs/chunkd", 0, 0, "data directory; repeat once per disk"},
    {"metad", CFG_STR, "127.0.0.1:9520", 0, 0, "metad address(es) HOST:PORT[,HOST:PORT]; empty = none"},
    {"label", CFG_STR, "", 0, 0, "failure domain (rack) of this server"},
    {"cluster", CFG_STR, "", 0, 0, "cluster name sent in HELLO"},
    {"scrub_rate", CFG_SIZE, "8M", 0, UINT64_MAX, "background verification, bytes/s; 0 = off"},
    {"scrub_interval_s", CFG_U64, "600", 0, 30 * 86400, "least seconds between the starts of two scrub passes"},
    {"heartbeat_ms", CFG_U64, "1000", 100, 60000, "heartbeat period to metad"},
    {"io_threads_per_dir", CFG_U64, "4", 1, 64, "disk jobs in flight per data dir"},
    {"forward_timeout_ms", CFG_U64, "5000", 100, 600000, "deadline of a request forwarded down a chain"},
    {"replicate_max", CFG_U64, "2", 1, 64, "concurrent REPLICATE pulls"},
    {"idle_close_ms", CFG_U64, "30000", 100, 86400000, "close the file of a chunk idle for this long"},
    {"pid_file", CFG_STR, "/run/dfs/chunkd.pid", 0, 0, "pid file when daemonized (empty: none)"},
    {"log_level", CFG_STR, "info", 0, 0, "err, warning, notice, info, debug, trace"},
    {"log_file", CFG_STR, "", 0, 0, "log file when daemonized (empty: syslog)"},
    {NULL, 0, NULL, 0, 0, NULL},
};

static struct {
    const char *conf;
    char **overrides;
    int noverrides;
    bool foreground;
    struct cfg *cfg;
    struct store *st;
    uv_loop_t *loop;
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t house;
    uv_work_t house_work;
    bool house_busy, stopping;
    uint64_t idle_close_ms;
    char *pid_file;
} G;

static void usage(FILE *f)
{
    fprintf(f, "usage: chunkd [-c FILE] [-f] [-o key=value]...\n"
               "  -c FILE  config file (see packaging/chunkd.conf)\n"
               "  -f       stay in the foreground, log to stderr\n"
               "  -o K=V   override a config key (repeatable)\n");
}

/* Build a config from the file and the overrides; NULL with err set on error. */
static struct cfg *load_config(char *err, size_t errlen)
{
    struct cfg *c = cfg_new(keys);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (G.conf && cfg_load(c, G.conf, err, errlen) != 0) goto fail;
    for (int i = 0; i < G.noverrides; i++) {
        char *kv = G.overrides[i];
        char *eq = strchr(kv, '=');
        if (!eq) {
            snprintf(err, errlen, "-o %s: expected key=value", kv);
            goto fail;
        }
        *eq = '\0';
        int r = cfg_set(c, kv, eq + 1, "-o", err, errlen);
        *eq = '=';
        if (r != 0) goto fail;
    }
    if (log_level_parse(cfg_str(c, "log_level")) < 0) {
        snprintf(err, errlen, "%s: log_level: unknown level '%s'", G.conf ? G.conf : "-o",
                 cfg_str(c, "log_level"));
        goto fail;
    }
    return c;
fail:
    cfg_free(c);
    return NULL;
}

/* ----- housekeeping: capacity, dir failures, idle files ----- */

static void house_run(uv_work_t *w)
{
    store_refresh(G.st);
    store_trim(G.st, G.idle_close_ms);
}

static void house_done(uv_work_t *w, int status) { G.house_busy = false; }

static void on_house(uv_timer_t *t)
{
    if (G.house_busy || G.stopping) return;
    G.house_busy = true;
    uv_queue_work(G.loop, &G.house_work, house_run, house_done);
}

/* ----- signals ----- */

static void on_stop_signal(uv_signal_t *s, int signum)
{
    if (G.stopping) return;
    G.stopping = true;
    log_notice("signal %d: stopping", signum);
    scrub_stop();
    masterconn_stop();
    csserv_stop();
    uv_timer_stop(&G.house);
    uv_close((uv_handle_t *)&G.house, NULL);
    uv_close((uv_handle_t *)&G.sigterm, NULL);
    uv_close((uv_handle_t *)&G.sigint, NULL);
    uv_close((uv_handle_t *)&G.sighup, NULL);
}

static void on_sighup(uv_signal_t *s, int signum)
{
    char err[512];
    struct cfg *c = load_config(err, sizeof(err));
    if (!c) {
        log_err("reload failed, keeping the old configuration: %s", err);
        return;
    }
    log_set_level(log_level_parse(cfg_str(c, "log_level")));
    scrub_set_rate(cfg_u64(c, "scrub_rate"));
    scrub_set_interval(cfg_u64(c, "scrub_interval_s"));
    masterconn_set_heartbeat_ms((uint32_t)cfg_u64(c, "heartbeat_ms"));
    log_notice("configuration reloaded (log_level %s, scrub_rate %llu B/s, heartbeat %llu ms); "
               "other keys need a restart",
               cfg_str(c, "log_level"), (unsigned long long)cfg_u64(c, "scrub_rate"),
               (unsigned long long)cfg_u64(c, "heartbeat_ms"));
    cfg_free(G.cfg);
    G.cfg = c;
}

/* ----- start-up ----- */

static char *absolute(const char *p)
{
    if (p[0] == '/') return strdup(p);
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof(cwd))) return NULL;
    char *r;
    return asprintf(&r, "%s/%s", cwd, p) < 0 ? NULL : r;
}

int main(int argc, char **argv)
{
    int opt;
    G.overrides = calloc((size_t)argc, sizeof(char *));
    while ((opt = getopt(argc, argv, "c:fo:h")) != -1) {
        switch (opt) {
        case 'c': G.conf = optarg; break;
        case 'f': G.foreground = true; break;
        case 'o': G.overrides[G.noverrides++] = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    log_init("chunkd");
    char err[1024];
    G.cfg = load_config(err, sizeof(err));
    if (!G.cfg) {
        fprintf(stderr, "chunkd: %s\n", err);
        return 2;
    }
    log_set_level(log_level_parse(cfg_str(G.cfg, "log_level")));

    /* 1. Addresses and dirs: all checked before daemonizing, so mistakes
     *    reach the terminal. */
    char lhost[256];
    int lport;
    if (dfs_parse_hostport(cfg_str(G.cfg, "listen"), DFS_PORT_CHUNKD, lhost, sizeof(lhost), &lport,
                           err, sizeof(err)) != 0) {
        fprintf(stderr, "chunkd: listen: %s\n", err);
        return 2;
    }
    const char *adv = cfg_str(G.cfg, "advertise");
    if (!*adv) {
        bool wild = !*lhost || !strcmp(lhost, "0.0.0.0") || !strcmp(lhost, "::");
        adv = wild ? "127.0.0.1" : lhost;
        if (wild && *cfg_str(G.cfg, "metad"))
            log_warn("listen is a wildcard and advertise is unset: advertising 127.0.0.1");
    }
    const char *const *dirv;
    size_t ndirs = cfg_list(G.cfg, "data_dir", &dirv);
    if (ndirs == 0) {
        fprintf(stderr, "chunkd: no data_dir configured\n");
        return 2;
    }
    char **dirs = calloc(ndirs, sizeof(char *));
    for (size_t i = 0; i < ndirs; i++) {
        if (!(dirs[i] = absolute(dirv[i]))) {
            fprintf(stderr, "chunkd: data_dir %s: cannot resolve\n", dirv[i]);
            return 2;
        }
    }

    /* 2. Thread pool: io_threads_per_dir per disk plus replication and
     *    housekeeping; must be set before libuv starts its pool. */
    uint32_t per_dir = (uint32_t)cfg_u64(G.cfg, "io_threads_per_dir");
    uint32_t repl = (uint32_t)cfg_u64(G.cfg, "replicate_max");
    if (!getenv("UV_THREADPOOL_SIZE")) {
        char n[16];
        snprintf(n, sizeof(n), "%u", DFS_MIN(1024u, per_dir * (uint32_t)(ndirs + 1) + repl + 2));
        setenv("UV_THREADPOOL_SIZE", n, 1);
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }

    /* 3. Daemonize (before taking dir locks and threads, which fork drops). */
    if (!G.foreground) {
        int logfd = -1;
        const char *lf = cfg_str(G.cfg, "log_file");
        if (*lf) {
            logfd = open(lf, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            if (logfd < 0) {
                fprintf(stderr, "chunkd: log_file %s: %s\n", lf, strerror(errno));
                return 2;
            }
        }
        if (dfs_daemonize(logfd) != 0) {
            fprintf(stderr, "chunkd: daemonize: %s\n", strerror(errno));
            return 1;
        }
        if (logfd < 0) log_use_syslog();
        const char *pf = cfg_str(G.cfg, "pid_file");
        if (*pf) {
            if (dfs_write_pidfile(pf, err, sizeof(err)) != 0) {
                log_err("%s", err);
                return 1;
            }
            G.pid_file = strdup(pf);
        }
    }

    /* 4. The store: scans every chunk before we accept a request. */
    struct store_opts so = {.dirs = (const char *const *)dirs, .ndirs = ndirs, .lock_dirs = true};
    if (store_open(&G.st, &so, err, sizeof(err)) != DFS_OK) {
        log_err("cannot open the chunk store: %s", err);
        return 1;
    }
    uint32_t sid = 0;
    if (masterconn_load_server_id(dirs[0], &sid, err, sizeof(err)) != 0) {
        log_err("%s", err);
        return 1;
    }
    csserv_set_server_id(sid);

    /* 5. Data port, then the metad link (it serves metad's requests with
     *    csserv's handlers), then the scrubber. */
    G.loop = uv_default_loop();
    struct csserv_opts co = {
        .loop = G.loop,
        .st = G.st,
        .host = *lhost ? lhost : "0.0.0.0",
        .port = lport,
        .cluster = cfg_str(G.cfg, "cluster"),
        .io_per_dir = per_dir,
        .forward_timeout_ms = (uint32_t)cfg_u64(G.cfg, "forward_timeout_ms"),
        .replicate_max = repl,
    };
    if (csserv_start(&co, err, sizeof(err)) != 0) {
        log_err("cannot listen on %s: %s", cfg_str(G.cfg, "listen"), err);
        return 1;
    }
    struct masterconn_opts mo = {
        .loop = G.loop,
        .st = G.st,
        .metad = cfg_str(G.cfg, "metad"),
        .host = adv,
        .port = csserv_port(),
        .label = cfg_str(G.cfg, "label"),
        .cluster = cfg_str(G.cfg, "cluster"),
        .heartbeat_ms = (uint32_t)cfg_u64(G.cfg, "heartbeat_ms"),
        .handlers = csserv_handlers(),
    };
    if (masterconn_start(&mo, err, sizeof(err)) != 0) {
        log_err("%s", err);
        return 2;
    }
    scrub_set_interval(cfg_u64(G.cfg, "scrub_interval_s"));
    if (scrub_start(G.st, cfg_u64(G.cfg, "scrub_rate")) != 0) {
        log_err("cannot start the scrubber thread");
        return 1;
    }
    G.idle_close_ms = cfg_u64(G.cfg, "idle_close_ms");
    uv_timer_init(G.loop, &G.house);
    uv_timer_start(&G.house, on_house, 1000, 1000);
    uv_signal_init(G.loop, &G.sigterm);
    uv_signal_start(&G.sigterm, on_stop_signal, SIGTERM);
    uv_signal_init(G.loop, &G.sigint);
    uv_signal_start(&G.sigint, on_stop_signal, SIGINT);
    uv_signal_init(G.loop, &G.sighup);
    uv_signal_start(&G.sighup, on_sighup, SIGHUP);
    signal(SIGPIPE, SIG_IGN);

    log_notice("chunkd listening on %s:%d (server id %u, %zu data dirs, metad %s)",
               co.host, csserv_port(), sid, ndirs,
               *cfg_str(G.cfg, "metad") ? cfg_str(G.cfg, "metad") : "none");

    uv_run(G.loop, UV_RUN_DEFAULT);

    /* The loop ends once every handle is closed and every disk job is done. */
    csserv_free();
    store_close(G.st);
    if (uv_loop_close(G.loop) != 0) log_warn("loop closed with handles still open");
    if (G.pid_file) unlink(G.pid_file);
    log_notice("stopped");
    for (size_t i = 0; i < ndirs; i++) free(dirs[i]);
    free(dirs);
    free(G.pid_file);
    free(G.overrides);
    cfg_free(G.cfg);
    return 0;
}
