/* main.c - metad: command line, config, module start-up in order, signals. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chunks.h"
#include "config.h"
#include "fs.h"
#include "http.h"
#include "journal.h"
#include "log.h"
#include "mserv.h"
#include "rlog.h"
#include "util.h"

/* Every key with its default; packaging/metad.conf lists the same. */
static const struct cfg_key keys[] = {
    {"listen", CFG_STR, "0.0.0.0:9520", 0, 0, "client and chunkd RPC address"},
    {"data_dir", CFG_STR, "/var/lib/dfs/metad", 0, 0, "raft log and snapshots"},
    {"raft_listen", CFG_STR, "127.0.0.1:9521", 0, 0, "raft address of this node"},
    {"node_id", CFG_U64, "1", 1, 1u << 30, "raft node id"},
    {"peers", CFG_STR, "", 0, 0, "ID@HOST:PORT,... raft voters (empty: this node alone)"},
    {"http_listen", CFG_STR, "127.0.0.1:9580", 0, 0, "HTTP dashboard, JSON API and /metrics (empty = off)"},
    {"server_timeout_ms", CFG_U64, "5000", 100, 3600000, "chunkd without heartbeat -> down"},
    {"lease_ms", CFG_U64, "30000", 100, 3600000, "write lease of a chunk"},
    {"session_timeout_ms", CFG_U64, "120000", 1000, 86400000,
     "idle client session: its open handles are released"},
    {"reply_cache_idle_s", CFG_U64, "3600", 10, 86400 * 30,
     "reply cache of a session idle this long is dropped"},
    {"raft_sync", CFG_STR, "batch", 0, 0,
     "batch: acknowledge once the raft log is written, flush within raft_sync_ms and on "
     "every fsync; always: flush before acknowledging any change"},
    {"raft_sync_ms", CFG_U64, "50", 1, 10000, "batch mode: longest time a log write waits for its flush"},
    {"raft_segment_size", CFG_SIZE, "8M", 65536, 1ull << 30,
     "raft log segment file size (whole segments are removed after snapshots)"},
    {"snapshot_threshold", CFG_U64, "100000", 64, 100000000, "log entries between snapshots"},
    {"min_free", CFG_SIZE, "1G", 0, 0, "a chunkd with less free space is full"},
    {"chunkd_timeout_ms", CFG_U64, "5000", 100, 600000, "deadline of metad -> chunkd calls"},
    {"client_peers", CFG_STR, "", 0, 0,
     "ID@HOST:PORT,... client address of every metad (HELLO tells clients the leader)"},
    {"repair_tick_ms", CFG_U64, "250", 10, 60000, "period of the self-healing loop"},
    {"repair_max_running", CFG_U64, "16", 1, 100000, "replications in flight, cluster-wide"},
    {"repair_max_per_target", CFG_U64, "2", 1, 1000, "replications per server as target"},
    {"repair_max_per_source", CFG_U64, "4", 1, 1000, "replications per server as source"},
    {"repair_start_delay_ms", CFG_U64, "10000", 0, 3600000,
     "no re-replication this long after becoming leader (servers re-register first)"},
    {"repair_retry_ms", CFG_U64, "2000", 10, 3600000, "back-off of a chunk that could not be repaired"},
    {"repair_scan_per_tick", CFG_U64, "20000", 1, 100000000, "chunks checked per tick by the background scan"},
    {"replicate_timeout_ms", CFG_U64, "600000", 1000, 86400000, "deadline of one REPLICATE"},
    {"gc_rate", CFG_U64, "200", 1, 1000000, "deletes of unreferenced chunks per second per server"},
    {"rebalance_pct", CFG_U64, "5", 0, 100, "rebalance while a server's usage is this far from the mean (0 = off)"},
    {"rebalance_max", CFG_U64, "4", 1, 10000, "rebalance copies in flight"},
    {"pid_file", CFG_STR, "/run/dfs-metad.pid", 0, 0, "pid file (daemon mode)"},
    {"log_level", CFG_STR, "info", 0, 0, "err|warning|notice|info|debug|trace"},
    {NULL, 0, NULL, 0, 0, NULL},
};

static struct metad M;
static struct http_server *http_srv;
static uv_signal_t sig_term, sig_int;

static void usage(FILE *f)
{
    fprintf(f, "usage: metad [-c FILE] [-f] [-o key=value]...\n"
               "  -c FILE   config file (see packaging/metad.conf)\n"
               "  -f        stay in the foreground, log to stderr\n"
               "  -o k=v    override a config key\n");
}

static uint64_t real_now_ms(void *arg)
{
    (void)arg;
    return dfs_mono_ms();
}
static uint64_t real_random(void *arg)
{
    (void)arg;
    return dfs_random_u64();
}

static void closed(void *arg)
{
    (void)arg;
    log_notice("metad stopped");
    exit(0);
}

static void on_signal(uv_signal_t *s, int signum)
{
    (void)s;
    log_notice("signal %d: stopping", signum);
    uv_signal_stop(&sig_term);
    uv_signal_stop(&sig_int);
    http_stop(http_srv);
    http_srv = NULL;
    mserv_stop(&M);
    journal_close(M.j, closed, NULL);
}

/* Bind-test a TCP address so a port in use is reported before daemonizing. */
static int port_free(const char *host, int port, char *err, size_t errlen)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) return 0; /* names: let libuv say */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    int rv = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    int e = errno;
    close(fd);
    if (rv != 0) {
        snprintf(err, errlen, "%s:%d: %s", host, port, strerror(e));
        return -1;
    }
    return 0;
}

/* The configuration lives as long as the process (and stays reachable, so an
 * early exit is not reported as a leak by LeakSanitizer). */
static struct cfg *c;
static char **over;

int main(int argc, char **argv)
{
    const char *conf = NULL;
    int foreground = 0, opt;
    char err[512];
    log_init("metad");
    c = cfg_new(keys);
    if (!c) return 1;
    /* -o may repeat: apply after the file, so collect them first */
    over = calloc((size_t)argc + 1, sizeof(*over));
    int nover = 0;
    while ((opt = getopt(argc, argv, "c:fo:h")) != -1) {
        switch (opt) {
        case 'c': conf = optarg; break;
        case 'f': foreground = 1; break;
        case 'o': over[nover++] = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    if (conf && cfg_load(c, conf, err, sizeof(err)) != 0) {
        fprintf(stderr, "metad: %s\n", err);
        return 2;
    }
    for (int i = 0; i < nover; i++) {
        char *eq = strchr(over[i], '=');
        if (!eq) {
            fprintf(stderr, "metad: -o %s: expected key=value\n", over[i]);
            return 2;
        }
        *eq = 0;
        if (cfg_set(c, over[i], eq + 1, "-o", err, sizeof(err)) != 0) {
            fprintf(stderr, "metad: %s\n", err);
            return 2;
        }
    }
    free(over);
    over = NULL;
    int lvl = log_level_parse(cfg_str(c, "log_level"));
    if (lvl < 0) {
        fprintf(stderr, "metad: log_level: unknown level \"%s\"\n", cfg_str(c, "log_level"));
        return 2;
    }
    log_set_level(lvl);

    char lhost[256], rhost[256];
    int lport, rport;
    if (dfs_parse_hostport(cfg_str(c, "listen"), DFS_PORT_METAD, lhost, sizeof(lhost), &lport,
                           err, sizeof(err)) != 0 ||
        dfs_parse_hostport(cfg_str(c, "raft_listen"), DFS_PORT_RAFT, rhost, sizeof(rhost),
                           &rport, err, sizeof(err)) != 0) {
        fprintf(stderr, "metad: %s\n", err);
        return 2;
    }
    char raft_addr[300];
    snprintf(raft_addr, sizeof(raft_addr), "%s:%d", rhost, rport);

    /* Checks whose failure should reach the terminal, before daemonizing. */
    const char *data_dir = cfg_str(c, "data_dir");
    struct stat sb;
    if (mkdir(data_dir, 0750) != 0 && errno != EEXIST) {
        fprintf(stderr, "metad: data_dir %s: %s\n", data_dir, strerror(errno));
        return 1;
    }
    if (stat(data_dir, &sb) != 0 || !S_ISDIR(sb.st_mode) || access(data_dir, W_OK) != 0) {
        fprintf(stderr, "metad: data_dir %s: not a writable directory\n", data_dir);
        return 1;
    }
    if (port_free(lhost, lport, err, sizeof(err)) || port_free(rhost, rport, err, sizeof(err))) {
        fprintf(stderr, "metad: cannot listen on %s\n", err);
        return 1;
    }
    if (*cfg_str(c, "http_listen")) {
        char hhost[256];
        int hport;
        if (dfs_parse_hostport(cfg_str(c, "http_listen"), DFS_PORT_HTTP, hhost, sizeof(hhost),
                               &hport, err, sizeof(err)) != 0) {
            fprintf(stderr, "metad: http_listen: %s\n", err);
            return 2;
        }
        if (port_free(hhost, hport, err, sizeof(err))) {
            fprintf(stderr, "metad: cannot listen on %s (http_listen)\n", err);
            return 1;
        }
    }
    if (!foreground) {
        if (dfs_daemonize(-1) != 0) {
            fprintf(stderr, "metad: daemonize failed\n");
            return 1;
        }
        log_use_syslog();
        if (dfs_write_pidfile(cfg_str(c, "pid_file"), err, sizeof(err)) != 0) {
            log_err("%s", err);
            return 1;
        }
    }
    signal(SIGPIPE, SIG_IGN);

    /* Start-up order: the chunk map and the namespace exist before the log
     * replays into them; the journal (raft) starts before the RPC server so
     * that requests find a state that is at least replayed. */
    M.loop = uv_default_loop();
    struct chunks_opts co = {
        .server_timeout_ms = (uint32_t)cfg_u64(c, "server_timeout_ms"),
        .lease_ms = (uint32_t)cfg_u64(c, "lease_ms"),
        .min_free = cfg_u64(c, "min_free"),
    };
    struct chunks_clock clk = {real_now_ms, real_random, NULL};
    M.cm = chunks_new(&co, &clk);
    M.fs = fs_new(M.cm);
    M.o.listen_host = lhost;
    M.o.listen_port = lport;
    M.o.node_id = cfg_u64(c, "node_id");
    M.o.session_timeout_ms = (uint32_t)cfg_u64(c, "session_timeout_ms");
    M.o.reply_cache_idle_s = (uint32_t)cfg_u64(c, "reply_cache_idle_s");
    M.o.rpc_timeout_ms = (uint32_t)cfg_u64(c, "chunkd_timeout_ms");
    M.client_peers = cfg_str(c, "client_peers");
    M.replicate_timeout_ms = (uint32_t)cfg_u64(c, "replicate_timeout_ms");
    M.ro = (struct repair_opts){
        .tick_ms = (uint32_t)cfg_u64(c, "repair_tick_ms"),
        .max_running = (uint32_t)cfg_u64(c, "repair_max_running"),
        .max_per_target = (uint32_t)cfg_u64(c, "repair_max_per_target"),
        .max_per_source = (uint32_t)cfg_u64(c, "repair_max_per_source"),
        .gc_rate = (uint32_t)cfg_u64(c, "gc_rate"),
        .rebalance_pct = (uint32_t)cfg_u64(c, "rebalance_pct"),
        .rebalance_max = (uint32_t)cfg_u64(c, "rebalance_max"),
        .server_timeout_ms = (uint32_t)cfg_u64(c, "server_timeout_ms"),
        .start_delay_ms = (uint32_t)cfg_u64(c, "repair_start_delay_ms"),
        .retry_ms = (uint32_t)cfg_u64(c, "repair_retry_ms"),
        .scan_per_tick = (uint32_t)cfg_u64(c, "repair_scan_per_tick"),
    };

    int sync_mode;
    const char *rs = cfg_str(c, "raft_sync");
    if (!strcmp(rs, "batch")) {
        sync_mode = RLOG_SYNC_BATCH;
    } else if (!strcmp(rs, "always")) {
        sync_mode = RLOG_SYNC_ALWAYS;
    } else {
        log_err("raft_sync: \"%s\" is neither \"batch\" nor \"always\"", rs);
        if (!foreground) fprintf(stderr, "metad: raft_sync: \"%s\" is neither \"batch\" nor \"always\"\n", rs);
        return 1;
    }
    struct journal_opts jo = {
        .dir = data_dir,
        .node_id = cfg_u64(c, "node_id"),
        .raft_addr = raft_addr,
        .peers = cfg_str(c, "peers"),
        .snapshot_threshold = (unsigned)cfg_u64(c, "snapshot_threshold"),
        .sync_mode = sync_mode,
        .sync_ms = (unsigned)cfg_u64(c, "raft_sync_ms"),
        .segment_bytes = (size_t)cfg_u64(c, "raft_segment_size"),
        .on_leader = mserv_on_leader,
        .arg = &M,
    };
    M.j = journal_open(M.loop, M.fs, &jo, err, sizeof(err));
    if (!M.j) {
        log_err("%s", err);
        if (!foreground) fprintf(stderr, "metad: %s\n", err);
        return 1;
    }
    if (mserv_start(&M, err, sizeof(err)) != 0) {
        log_err("cannot listen: %s", err);
        return 1;
    }
    if (*cfg_str(c, "http_listen")) {
        http_srv = http_start(&M, cfg_str(c, "http_listen"), err, sizeof(err));
        if (!http_srv) {
            log_err("http_listen: cannot listen: %s", err);
            return 1;
        }
    }
    uv_signal_init(M.loop, &sig_term);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_init(M.loop, &sig_int);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    struct fs_stats st;
    fs_stats(M.fs, &st);
    log_notice("metad %llu listening on %s:%d (raft %s, data %s)",
               (unsigned long long)M.o.node_id, lhost, lport, raft_addr, data_dir);
    uv_run(M.loop, UV_RUN_DEFAULT);
    return 0;
}
