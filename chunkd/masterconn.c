/* masterconn.c - chunkd's link to metad: REGISTER, REPORT pages, HEARTBEAT. */
#include "masterconn.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "csserv.h"
#include "log.h"
#include "util.h"

#define CALL_MS 5000
#define SWITCH_AFTER_MS 3000 /* try the next metad after this long without a link */
#define KICK_MS 50           /* early heartbeat delay (coalesces bursts) */

struct maddr {
    char host[256];
    int port;
};

static struct {
    uv_loop_t *loop;
    struct store *st;
    struct maddr *addrs;
    size_t naddrs, cur;
    char *host, *label, *cluster, *id_path;
    int port;
    uint32_t hb_ms;
    const rpc_handler_fn *handlers;
    struct rpc_conn *c;
    uint64_t gen;           /* bumped on every (dis)connect; stale callbacks ignore */
    bool registered, reg_inflight, hb_inflight, started;
    uint64_t down_since_ms; /* 0 while connected */
    struct maddr want;      /* leader to move to (port 0: none) */
    uv_timer_t tick;
    uv_timer_t kick; /* early heartbeat after a capacity change */
    int nclosed;     /* timers closed by masterconn_stop */
    /* report in progress */
    struct dfs_chunkrep *rep;
    size_t nrep, rep_off;
    struct dfs_dirinfo *dirs;
} M;

static void connect_cur(void);

/* ----- server id file ----- */

int masterconn_load_server_id(const char *dir, uint32_t *id, char *err, size_t errlen)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/server_id", dir);
    *id = 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT) return 0;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    unsigned long v = 0;
    int n = fscanf(f, "%lu", &v);
    fclose(f);
    if (n != 1 || v == 0 || v > UINT32_MAX) {
        snprintf(err, errlen, "%s: not a server id", path);
        return -1;
    }
    *id = (uint32_t)v;
    return 0;
}

static void save_server_id(uint32_t id)
{
    char tmp[4300];
    snprintf(tmp, sizeof(tmp), "%s.tmp", M.id_path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%u\n", id);
    if (fd < 0 || write(fd, buf, (size_t)n) != n || fsync(fd) != 0 || close(fd) != 0 ||
        rename(tmp, M.id_path) != 0) {
        log_errno(LOG_LVL_ERR, errno, "cannot save server id to %s", M.id_path);
        if (fd >= 0) close(fd);
        return;
    }
    char *slash = strrchr(M.id_path, '/');
    if (slash) {
        *slash = '\0';
        int dfd = open(M.id_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        *slash = '/';
        if (dfd >= 0) {
            (void)fsync(dfd);
            close(dfd);
        }
    }
}

/* ----- messages ----- */

static uint32_t fill_dirs(void)
{
    size_t n = store_ndirs(M.st);
    for (size_t i = 0; i < n; i++) store_dirinfo(M.st, i, &M.dirs[i]);
    return (uint32_t)n;
}

static void send_report_page(void);

static void report_cb(void *arg, int status, struct dfs_frame *reply)
{
    uint64_t gen = (uint64_t)(uintptr_t)arg;
    uint32_t st = status != DFS_OK ? (uint32_t)status : reply->status;
    rpc_frame_release(reply);
    if (gen != M.gen) return;
    if (st != DFS_OK) {
        log_warn("metad rejected a chunk report: %s; registering again", dfs_strerror((int)st));
        free(M.rep);
        M.rep = NULL;
        M.reg_inflight = false;
        return;
    }
    if (M.rep_off < M.nrep) {
        send_report_page();
        return;
    }
    log_notice("registered with metad %s as server %u (%zu chunks reported)",
               rpc_conn_peer_name(M.c), csserv_server_id(), M.nrep);
    free(M.rep);
    M.rep = NULL;
    M.reg_inflight = false;
    M.registered = true;
}

static void send_report_page(void)
{
    size_t n = DFS_MIN(M.nrep - M.rep_off, (size_t)DFS_REPORT_PAGE);
    struct dfs_msg_report r = {.server_id = csserv_server_id(),
                               .chunks = M.rep + M.rep_off,
                               .chunks_count = (uint32_t)n,
                               .last = M.rep_off + n >= M.nrep};
    M.rep_off += n;
    if (rpc_call(M.c, DFS_OP_REPORT, &r, CALL_MS, report_cb, (void *)(uintptr_t)M.gen) != DFS_OK) {
        free(M.rep);
        M.rep = NULL;
        M.reg_inflight = false;
    }
}

static void register_cb(void *arg, int status, struct dfs_frame *reply)
{
    uint64_t gen = (uint64_t)(uintptr_t)arg;
    uint32_t st = status != DFS_OK ? (uint32_t)status : reply->status;
    uint32_t id = (st == DFS_OK) ? ((struct dfs_msg_register_resp *)reply->body)->server_id : 0;
    rpc_frame_release(reply);
    if (gen != M.gen) return;
    if (st != DFS_OK || id == 0) {
        log_warn("REGISTER with metad %s failed: %s", rpc_conn_peer_name(M.c),
                 dfs_strerror(st != DFS_OK ? (int)st : DFS_EPROTO));
        M.reg_inflight = false;
        if (st == DFS_ENOTLEADER && M.naddrs > 1 && M.want.port == 0) {
            M.want = M.addrs[(M.cur + 1) % M.naddrs];
        }
        return;
    }
    if (id != csserv_server_id()) {
        if (csserv_server_id() != 0)
            log_warn("metad assigned server id %u (we had %u)", id, csserv_server_id());
        csserv_set_server_id(id);
        save_server_id(id);
    }
    /* The full report supersedes queued changes. */
    struct dfs_chunkrep *chg = NULL;
    store_take_changes(M.st, &chg);
    free(chg);
    free(M.rep);
    M.rep = NULL;
    M.nrep = store_list(M.st, &M.rep);
    M.rep_off = 0;
    if (!M.rep) {
        M.reg_inflight = false;
        return;
    }
    send_report_page();
}

static void send_register(void)
{
    struct dfs_msg_register r = {
        .server_id = csserv_server_id(),
        .host = {M.host, (uint32_t)strlen(M.host)},
        .port = (uint32_t)M.port,
        .label = {M.label, (uint32_t)strlen(M.label)},
        .dirs = M.dirs,
        .dirs_count = fill_dirs(),
    };
    M.reg_inflight = true;
    if (rpc_call(M.c, DFS_OP_REGISTER, &r, CALL_MS, register_cb, (void *)(uintptr_t)M.gen) != DFS_OK)
        M.reg_inflight = false;
}

struct hb_ctx {
    uint64_t gen;
    struct dfs_chunkrep *chg;
    size_t n;
};

static void heartbeat_cb(void *arg, int status, struct dfs_frame *reply)
{
    struct hb_ctx *h = arg;
    uint32_t st = status != DFS_OK ? (uint32_t)status : reply->status;
    rpc_frame_release(reply);
    if (st != DFS_OK && M.st) store_requeue_changes(M.st, h->chg, h->n);
    if (M.st && h->gen == M.gen) {
        M.hb_inflight = false;
        if (status == DFS_OK && st != DFS_OK) {
            /* metad answered but does not know us (restarted, or lost us): register again. */
            log_warn("metad refused a heartbeat: %s; registering again", dfs_strerror((int)st));
            M.registered = false;
        }
    }
    free(h->chg);
    free(h);
}

static void send_heartbeat(void)
{
    struct hb_ctx *h = calloc(1, sizeof(*h));
    if (!h) return;
    h->gen = M.gen;
    h->n = store_take_changes(M.st, &h->chg);
    struct dfs_msg_heartbeat hb = {
        .server_id = csserv_server_id(),
        .dirs = M.dirs,
        .dirs_count = fill_dirs(),
        .load = csserv_load(),
        .changes = h->chg,
        .changes_count = (uint32_t)h->n,
        .bytes_read = store_bytes_read(M.st),
        .bytes_written = store_bytes_written(M.st),
        .bytes_replicated = csserv_bytes_replicated(),
    };
    uint32_t to = DFS_MAX(3 * M.hb_ms, (uint32_t)CALL_MS);
    M.hb_inflight = true;
    if (rpc_call(M.c, DFS_OP_HEARTBEAT, &hb, to, heartbeat_cb, h) != DFS_OK) {
        M.hb_inflight = false;
        store_requeue_changes(M.st, h->chg, h->n);
        free(h->chg);
        free(h);
    }
}

/* ----- connection ----- */

static void on_connected(struct rpc_conn *c, const struct dfs_msg_hello_resp *resp)
{
    if (c != M.c) return;
    M.gen++;
    M.down_since_ms = 0;
    M.registered = M.reg_inflight = M.hb_inflight = false;
    if (resp->leader.len > 0 && M.naddrs > 0) {
        struct maddr a;
        char err[128];
        if (dfs_parse_hostport(resp->leader.ptr, DFS_PORT_METAD, a.host, sizeof(a.host), &a.port,
                               err, sizeof(err)) == 0 &&
            !(a.port == M.addrs[M.cur].port && strcmp(a.host, M.addrs[M.cur].host) == 0)) {
            log_info("metad %s is not the leader; moving to %s", rpc_conn_peer_name(c),
                     resp->leader.ptr);
            M.want = a;
            return;
        }
    }
    send_register();
}

static void on_disconnected(struct rpc_conn *c, int status)
{
    if (c != M.c) return;
    M.gen++;
    if (M.registered) log_warn("lost the metad link (%s); reconnecting", dfs_strerror(status));
    M.registered = M.reg_inflight = M.hb_inflight = false;
    if (M.down_since_ms == 0) M.down_since_ms = dfs_mono_ms();
}

static void switch_to(const struct maddr *a)
{
    /* Keep the address list; remember a leader outside it as the current one. */
    size_t i;
    for (i = 0; i < M.naddrs; i++)
        if (M.addrs[i].port == a->port && strcmp(M.addrs[i].host, a->host) == 0) break;
    if (i == M.naddrs) {
        struct maddr *n = realloc(M.addrs, (M.naddrs + 1) * sizeof(*n));
        if (!n) return;
        M.addrs = n;
        M.addrs[M.naddrs++] = *a;
    }
    M.cur = i;
    if (M.c) rpc_conn_close(M.c);
    M.c = NULL;
    M.gen++;
    M.registered = M.reg_inflight = M.hb_inflight = false;
    connect_cur();
}

static void on_tick(uv_timer_t *t)
{
    if (!M.c && M.want.port == 0) return;
    if (M.want.port) {
        struct maddr a = M.want;
        M.want.port = 0;
        switch_to(&a);
        return;
    }
    if (!rpc_conn_ready(M.c)) {
        if (M.naddrs > 1 && M.down_since_ms && dfs_mono_ms() - M.down_since_ms > SWITCH_AFTER_MS) {
            struct maddr a = M.addrs[(M.cur + 1) % M.naddrs];
            log_info("metad %s:%d unreachable; trying %s:%d", M.addrs[M.cur].host,
                     M.addrs[M.cur].port, a.host, a.port);
            switch_to(&a);
        }
        return;
    }
    if (!M.registered) {
        if (!M.reg_inflight) send_register();
        return;
    }
    if (!M.hb_inflight) send_heartbeat();
}

static void connect_cur(void)
{
    struct rpc_conn_opts o = {
        .role = DFS_ROLE_CHUNKD,
        .node_id = csserv_server_id(),
        .cluster = M.cluster,
        .max_frame_in = DFS_MAX_FRAME_FROM_METAD,
        .handlers = M.handlers,
        .on_connected = on_connected,
        .on_disconnected = on_disconnected,
    };
    M.down_since_ms = dfs_mono_ms();
    M.c = rpc_connect(M.loop, M.addrs[M.cur].host, M.addrs[M.cur].port, &o);
    if (!M.c) log_err("cannot allocate the metad connection");
}

int masterconn_start(const struct masterconn_opts *o, char *err, size_t errlen)
{
    if (!o->metad || !*o->metad) {
        log_notice("no metad configured: serving without registration");
        return 0;
    }
    M.loop = o->loop;
    M.st = o->st;
    M.hb_ms = o->heartbeat_ms ? o->heartbeat_ms : 1000;
    M.handlers = o->handlers;
    M.port = o->port;
    M.host = strdup(o->host);
    M.label = strdup(o->label ? o->label : "");
    M.cluster = o->cluster ? strdup(o->cluster) : NULL;
    M.dirs = calloc(store_ndirs(o->st), sizeof(*M.dirs));
    if (asprintf(&M.id_path, "%s/server_id", store_dir_path(o->st, 0)) < 0) M.id_path = NULL;
    char *list = strdup(o->metad);
    if (!M.host || !M.label || !M.dirs || !M.id_path || !list) {
        free(list);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char *save = NULL;
    for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') tok++;
        if (!*tok) continue;
        struct maddr a;
        char perr[200];
        if (dfs_parse_hostport(tok, DFS_PORT_METAD, a.host, sizeof(a.host), &a.port, perr,
                               sizeof(perr)) != 0) {
            snprintf(err, errlen, "metad: %s", perr);
            free(list);
            return -1;
        }
        struct maddr *n = realloc(M.addrs, (M.naddrs + 1) * sizeof(*n));
        if (!n) {
            free(list);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        M.addrs = n;
        M.addrs[M.naddrs++] = a;
    }
    free(list);
    if (M.naddrs == 0) return 0;
    uv_timer_init(M.loop, &M.tick);
    uv_timer_start(&M.tick, on_tick, M.hb_ms, M.hb_ms);
    uv_timer_init(M.loop, &M.kick);
    M.started = true;
    connect_cur();
    return 0;
}

void masterconn_set_heartbeat_ms(uint32_t ms)
{
    if (!M.started || ms == 0 || ms == M.hb_ms) return;
    M.hb_ms = ms;
    uv_timer_start(&M.tick, on_tick, ms, ms);
}

int masterconn_registered(void) { return M.registered; }

static void on_kick(uv_timer_t *t)
{
    if (!M.started || !M.c || !M.registered || M.hb_inflight || !rpc_conn_ready(M.c)) return;
    store_refresh(M.st); /* fresh capacity figures */
    send_heartbeat();
}

void masterconn_kick(void)
{
    /* Coalesce bursts (a full disk fails many writes at once; GC deletes
     * come in batches): one early heartbeat per KICK_MS at most. */
    if (!M.started || uv_is_active((uv_handle_t *)&M.kick)) return;
    uv_timer_start(&M.kick, on_kick, KICK_MS, 0);
}

static void tick_closed(uv_handle_t *h)
{
    if (++M.nclosed < 2) return; /* both timers */
    free(M.addrs);
    free(M.host);
    free(M.label);
    free(M.cluster);
    free(M.id_path);
    free(M.dirs);
    free(M.rep);
    memset(&M, 0, sizeof(M));
}

void masterconn_stop(void)
{
    if (!M.started) return;
    M.started = false;
    M.gen++;
    if (M.c) rpc_conn_close(M.c);
    M.c = NULL;
    uv_timer_stop(&M.tick);
    uv_timer_stop(&M.kick);
    M.nclosed = 0;
    uv_close((uv_handle_t *)&M.kick, tick_closed);
    uv_close((uv_handle_t *)&M.tick, tick_closed);
}
