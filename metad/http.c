/* http.c - metad's HTTP endpoint: dashboard, JSON API, Prometheus metrics. */
#include "http.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "chunks.h"
#include "fs.h"
#include "journal.h"
#include "log.h"
#include "mserv.h"
#include "repair.h"
#include "util.h"

/* ------------------------------------------------------------------------ */
/* growing output buffer */

struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

static bool sb_reserve(struct sbuf *b, size_t more)
{
    if (b->oom) return false;
    if (b->len + more + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (!sb_reserve(b, n)) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sb_puts(struct sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    if (!sb_reserve(b, 128)) return;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= b->cap - b->len) {
        if (!sb_reserve(b, (size_t)n)) return;
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

/* Return the buffer (NUL-terminated) or NULL if an allocation failed. */
static char *sb_take(struct sbuf *b, size_t *len)
{
    if (!b->p) sb_reserve(b, 0);
    if (b->oom) {
        free(b->p);
        return NULL;
    }
    if (len) *len = b->len;
    return b->p;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80) return 1;
    size_t k;
    uint32_t cp;
    if ((s[0] & 0xe0) == 0xc0) k = 2, cp = s[0] & 0x1f;
    else if ((s[0] & 0xf0) == 0xe0) k = 3, cp = s[0] & 0x0f;
    else if ((s[0] & 0xf8) == 0xf0) k = 4, cp = s[0] & 0x07;
    else return 0;
    if (k > n) return 0;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    static const uint32_t minv[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < minv[k] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return k;
}

/* A JSON string literal.  Control characters, quotes, backslashes and <>&
 * (so the text is safe inside HTML too) are escaped; invalid UTF-8 bytes
 * become U+FFFD, so the document is always valid JSON. */
static void sb_json_str(struct sbuf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    size_t n = strlen((const char *)p);
    sb_add(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        size_t k = utf8_len(p + i, n - i);
        if (k == 0) {
            sb_puts(b, "\\ufffd");
            i++;
            continue;
        }
        if (k > 1) {
            sb_add(b, (const char *)p + i, k);
            i += k;
            continue;
        }
        switch (c) {
        case '"': sb_puts(b, "\\\""); break;
        case '\\': sb_puts(b, "\\\\"); break;
        case '\n': sb_puts(b, "\\n"); break;
        case '\r': sb_puts(b, "\\r"); break;
        case '\t': sb_puts(b, "\\t"); break;
        default:
            if (c < 0x20 || c == 0x7f || c == '<' || c == '>' || c == '&')
                sb_printf(b, "\\u%04x", c);
            else
                sb_add(b, (const char *)&p[i], 1);
        }
        i++;
    }
    sb_add(b, "\"", 1);
}

/* A Prometheus label value: backslash, quote and newline escaped; other
 * control characters and invalid UTF-8 become '?'. */
static void sb_prom_label(struct sbuf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    size_t n = strlen((const char *)p);
    for (size_t i = 0; i < n;) {
        size_t k = utf8_len(p + i, n - i);
        if (k == 0) {
            sb_add(b, "?", 1);
            i++;
        } else if (k > 1) {
            sb_add(b, (const char *)p + i, k);
            i += k;
        } else {
            if (p[i] == '\\') sb_puts(b, "\\\\");
            else if (p[i] == '"') sb_puts(b, "\\\"");
            else if (p[i] == '\n') sb_puts(b, "\\n");
            else if (p[i] < 0x20 || p[i] == 0x7f) sb_add(b, "?", 1);
            else sb_add(b, (const char *)p + i, 1);
            i++;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* collecting the status (the same sources as mserv.c's STATUS handler) */

struct hsrv {
    const struct cm_server *s;
    uint64_t chunks;
    uint64_t ago_ms; /* since the last heartbeat/registration; UINT64_MAX never */
};

struct hstatus {
    bool leader_ready;
    uint64_t node_id, leader_id;
    char leader[300];
    uint64_t raft_index, log_bytes, log_flushes;
    struct hsrv *srv;
    uint32_t nsrv, up, down, draining;
    uint64_t cap_total, cap_used, cap_avail;
    uint64_t bytes_read, bytes_written, bytes_replicated;
    struct chunks_health h;
    struct repair_stats rs;
    uint64_t gc_pending;
    struct fs_stats fst;
    int64_t now_ns;
};

static const char *state_name(uint32_t st)
{
    switch (st) {
    case DFS_SS_UP: return "up";
    case DFS_SS_DOWN: return "down";
    case DFS_SS_DRAINING: return "draining";
    default: return "unknown";
    }
}

static const char *dir_state_name(uint32_t st)
{
    switch (st) {
    case DFS_DS_OK: return "ok";
    case DFS_DS_FAILED: return "failed";
    case DFS_DS_FULL: return "full";
    default: return "unknown";
    }
}

static uint32_t goal_of(void *arg, uint64_t ino)
{
    uint32_t g = DFS_DEFAULT_GOAL;
    fs_file_info(arg, ino, NULL, NULL, &g, NULL);
    return g;
}

/* Client address of metad node id from client_peers ("ID@HOST:PORT,..."). */
static bool client_addr_of(const char *peers, uint64_t id, char *buf, size_t len)
{
    const char *p = peers;
    while (p && *p) {
        char *end;
        unsigned long long nid = strtoull(p, &end, 10);
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (end > p && *end == '@' && nid == id && (size_t)(end + 1 - p) <= n) {
            size_t a = n - (size_t)(end + 1 - p);
            if (a + 1 > len) return false;
            memcpy(buf, end + 1, a);
            buf[a] = 0;
            return true;
        }
        p = comma ? comma + 1 : NULL;
    }
    return false;
}

static int collect(struct metad *m, struct hstatus *st)
{
    memset(st, 0, sizeof(*st));
    st->now_ns = dfs_now_ns();
    st->node_id = m->o.node_id;
    st->leader_ready = m->j && journal_ready(m->j);
    if (m->j) {
        uint64_t id = 0;
        const char *raft = journal_leader(m->j, &id);
        st->leader_id = id;
        if (raft && !(id && client_addr_of(m->client_peers, id, st->leader, sizeof(st->leader))))
            snprintf(st->leader, sizeof(st->leader), "%s", raft);
        st->raft_index = journal_applied(m->j);
        journal_log_stats(m->j, &st->log_bytes, &st->log_flushes);
    }
    uint32_t n = 0;
    while (chunks_server_at(m->cm, n)) n++;
    st->srv = calloc(n + 1, sizeof(*st->srv));
    if (!st->srv) return -1;
    uint64_t now_ms = chunks_now_ms(m->cm);
    for (uint32_t i = 0; i < n; i++) {
        const struct cm_server *s = chunks_server_at(m->cm, i);
        struct hsrv *o = &st->srv[i];
        o->s = s;
        o->chunks = s->nchunks;
        if (!o->chunks)
            for (uint32_t d = 0; d < s->ndirs; d++) o->chunks += s->dirs[d].chunks;
        o->ago_ms = s->last_seen_ms && now_ms >= s->last_seen_ms ? now_ms - s->last_seen_ms
                                                                  : UINT64_MAX;
        if (s->state == DFS_SS_DOWN) {
            st->down++;
        } else {
            st->up++;
            if (s->state == DFS_SS_DRAINING) st->draining++;
            st->cap_used += s->used;
        }
        st->bytes_read += s->bytes_read;
        st->bytes_written += s->bytes_written;
        st->bytes_replicated += s->bytes_replicated;
    }
    st->nsrv = n;
    chunks_capacity(m->cm, &st->cap_total, &st->cap_avail);
    chunks_health(m->cm, goal_of, m->fs, &st->h);
    fs_stats(m->fs, &st->fst);
    if (m->rp) repair_stats(m->rp, &st->rs);
    st->gc_pending = st->rs.gc_queued ? st->rs.gc_queued : chunks_gc_pending(m->cm);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* JSON */

static void json_server(struct sbuf *b, const struct hsrv *o)
{
    const struct cm_server *s = o->s;
    char addr[96];
    snprintf(addr, sizeof(addr), "%s:%d", s->host, s->port);
    sb_printf(b, "{\"id\":%u,\"address\":", s->id);
    sb_json_str(b, addr);
    sb_puts(b, ",\"host\":");
    sb_json_str(b, s->host);
    sb_printf(b, ",\"port\":%d,\"label\":", s->port);
    sb_json_str(b, s->label);
    sb_printf(b,
              ",\"state\":\"%s\",\"registered\":%s,\"total_bytes\":%llu,\"used_bytes\":%llu,"
              "\"avail_bytes\":%llu,\"chunks\":%llu,\"load\":%u,",
              state_name(s->state), s->registered ? "true" : "false",
              (unsigned long long)s->total, (unsigned long long)s->used,
              (unsigned long long)s->avail, (unsigned long long)o->chunks, s->load);
    if (s->last_seen_ns > 0)
        sb_printf(b, "\"last_seen\":%lld.%03lld,", (long long)(s->last_seen_ns / 1000000000),
                  (long long)(s->last_seen_ns % 1000000000 / 1000000));
    else
        sb_puts(b, "\"last_seen\":null,");
    if (o->ago_ms != UINT64_MAX)
        sb_printf(b, "\"last_seen_ago_ms\":%llu,", (unsigned long long)o->ago_ms);
    else
        sb_puts(b, "\"last_seen_ago_ms\":null,");
    sb_printf(b, "\"bytes_read\":%llu,\"bytes_written\":%llu,\"bytes_replicated\":%llu,\"dirs\":[",
              (unsigned long long)s->bytes_read, (unsigned long long)s->bytes_written,
              (unsigned long long)s->bytes_replicated);
    for (uint32_t d = 0; d < s->ndirs; d++) {
        const struct dfs_dirinfo *di = &s->dirs[d];
        sb_puts(b, d ? ",{\"path\":" : "{\"path\":");
        sb_json_str(b, di->path.ptr);
        sb_printf(b,
                  ",\"state\":\"%s\",\"total_bytes\":%llu,\"used_bytes\":%llu,"
                  "\"avail_bytes\":%llu,\"chunks\":%u}",
                  dir_state_name(di->state), (unsigned long long)di->total,
                  (unsigned long long)di->used, (unsigned long long)di->avail, di->chunks);
    }
    sb_puts(b, "]}");
}

static void json_servers(struct sbuf *b, const struct hstatus *st)
{
    sb_add(b, "[", 1);
    for (uint32_t i = 0; i < st->nsrv; i++) {
        if (i) sb_add(b, ",", 1);
        json_server(b, &st->srv[i]);
    }
    sb_add(b, "]", 1);
}

char *http_status_json(struct metad *m, size_t *len)
{
    struct hstatus st;
    struct sbuf b = {0};
    if (collect(m, &st) != 0) return NULL;
    sb_printf(&b,
              "{\"status\":\"%s\",\"node_id\":%llu,\"is_leader\":%s,\"leader_id\":%llu,"
              "\"leader\":",
              st.leader_ready ? "ok" : "not_leader", (unsigned long long)st.node_id,
              st.leader_ready ? "true" : "false", (unsigned long long)st.leader_id);
    sb_json_str(&b, st.leader);
    sb_printf(&b,
              ",\"raft_index\":%llu,\"time\":%lld.%03lld,"
              "\"servers_up\":%u,\"servers_down\":%u,\"servers_draining\":%u,"
              "\"servers_total\":%u,"
              "\"capacity\":{\"total_bytes\":%llu,\"used_bytes\":%llu,\"avail_bytes\":%llu},"
              "\"traffic\":{\"bytes_read\":%llu,\"bytes_written\":%llu,\"bytes_replicated\":%llu},"
              "\"chunks\":{\"total\":%llu,\"healthy\":%llu,\"under_goal\":%llu,"
              "\"over_goal\":%llu,\"missing\":%llu},"
              "\"repairs\":{\"queue\":%llu,\"running\":%llu,\"deleting\":%llu,\"done\":%llu,"
              "\"failed\":%llu,\"bytes_replicated\":%llu,\"deleted\":%llu,\"moves\":%llu,"
              "\"gc_pending\":%llu,\"gc_sent\":%llu},"
              "\"files\":%llu,\"dirs\":%llu,\"inodes\":%llu,\"orphans\":%llu,\"sessions\":%llu,"
              "\"servers\":",
              (unsigned long long)st.raft_index, (long long)(st.now_ns / 1000000000),
              (long long)(st.now_ns % 1000000000 / 1000000), st.up, st.down, st.draining,
              st.nsrv, (unsigned long long)st.cap_total, (unsigned long long)st.cap_used,
              (unsigned long long)st.cap_avail, (unsigned long long)st.bytes_read,
              (unsigned long long)st.bytes_written, (unsigned long long)st.bytes_replicated,
              (unsigned long long)st.h.chunks, (unsigned long long)st.h.healthy,
              (unsigned long long)st.h.under_goal, (unsigned long long)st.h.over_goal,
              (unsigned long long)st.h.missing, (unsigned long long)st.rs.queued,
              (unsigned long long)st.rs.running, (unsigned long long)st.rs.deleting,
              (unsigned long long)st.rs.done, (unsigned long long)st.rs.failed,
              (unsigned long long)st.rs.bytes, (unsigned long long)st.rs.deleted,
              (unsigned long long)st.rs.moves, (unsigned long long)st.gc_pending,
              (unsigned long long)st.rs.gc_sent, (unsigned long long)st.fst.files,
              (unsigned long long)st.fst.dirs, (unsigned long long)st.fst.inodes,
              (unsigned long long)st.fst.orphans, (unsigned long long)st.fst.sessions);
    json_servers(&b, &st);
    sb_puts(&b, "}\n");
    free(st.srv);
    return sb_take(&b, len);
}

char *http_servers_json(struct metad *m, size_t *len)
{
    struct hstatus st;
    struct sbuf b = {0};
    if (collect(m, &st) != 0) return NULL;
    sb_puts(&b, "{\"servers\":");
    json_servers(&b, &st);
    sb_puts(&b, "}\n");
    free(st.srv);
    return sb_take(&b, len);
}

/* ------------------------------------------------------------------------ */
/* Prometheus text format 0.0.4 */

static void prom_head(struct sbuf *b, const char *name, const char *type, const char *help)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void prom_u64(struct sbuf *b, const char *name, const char *type, const char *help,
                     uint64_t v)
{
    prom_head(b, name, type, help);
    sb_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

/* One per-server series family: get(o) for every server. */
static void prom_per_server(struct sbuf *b, const struct hstatus *st, const char *name,
                            const char *type, const char *help,
                            uint64_t (*get)(const struct hsrv *o))
{
    prom_head(b, name, type, help);
    for (uint32_t i = 0; i < st->nsrv; i++)
        sb_printf(b, "%s{id=\"%u\"} %llu\n", name, st->srv[i].s->id,
                  (unsigned long long)get(&st->srv[i]));
}

static uint64_t g_up(const struct hsrv *o) { return o->s->state != DFS_SS_DOWN; }
static uint64_t g_draining(const struct hsrv *o) { return o->s->state == DFS_SS_DRAINING; }
static uint64_t g_total(const struct hsrv *o) { return o->s->total; }
static uint64_t g_used(const struct hsrv *o) { return o->s->used; }
static uint64_t g_avail(const struct hsrv *o) { return o->s->avail; }
static uint64_t g_chunks(const struct hsrv *o) { return o->chunks; }
static uint64_t g_load(const struct hsrv *o) { return o->s->load; }
static uint64_t g_read(const struct hsrv *o) { return o->s->bytes_read; }
static uint64_t g_written(const struct hsrv *o) { return o->s->bytes_written; }
static uint64_t g_repl(const struct hsrv *o) { return o->s->bytes_replicated; }

char *http_metrics_text(struct metad *m, size_t *len)
{
    struct hstatus st;
    struct sbuf b = {0};
    if (collect(m, &st) != 0) return NULL;
    prom_u64(&b, "dfs_is_leader", "gauge", "1 if this metad is the serving raft leader",
             st.leader_ready);
    prom_u64(&b, "dfs_raft_applied_index", "gauge", "last raft log index applied",
             st.raft_index);
    prom_u64(&b, "dfs_raft_log_bytes_total", "counter", "bytes written to the raft log",
             st.log_bytes);
    prom_u64(&b, "dfs_raft_log_flushes_total", "counter", "fdatasync calls of the raft log",
             st.log_flushes);
    prom_u64(&b, "dfs_servers_up", "gauge", "chunk servers not down (up or draining)", st.up);
    prom_u64(&b, "dfs_servers_down", "gauge", "chunk servers down", st.down);
    prom_u64(&b, "dfs_servers_draining", "gauge", "chunk servers draining", st.draining);
    prom_u64(&b, "dfs_servers_total", "gauge", "chunk servers known", st.nsrv);
    prom_u64(&b, "dfs_capacity_bytes", "gauge", "total space of servers that are not down",
             st.cap_total);
    prom_u64(&b, "dfs_used_bytes", "gauge", "used space of servers that are not down",
             st.cap_used);
    prom_u64(&b, "dfs_avail_bytes", "gauge", "free space of servers that are not down",
             st.cap_avail);
    prom_head(&b, "dfs_chunks", "gauge", "chunks by health (total = all chunks)");
    sb_printf(&b,
              "dfs_chunks{state=\"total\"} %llu\ndfs_chunks{state=\"healthy\"} %llu\n"
              "dfs_chunks{state=\"under_goal\"} %llu\ndfs_chunks{state=\"over_goal\"} %llu\n"
              "dfs_chunks{state=\"missing\"} %llu\n",
              (unsigned long long)st.h.chunks, (unsigned long long)st.h.healthy,
              (unsigned long long)st.h.under_goal, (unsigned long long)st.h.over_goal,
              (unsigned long long)st.h.missing);
    prom_u64(&b, "dfs_repairs_queued", "gauge", "chunks waiting for repair", st.rs.queued);
    prom_u64(&b, "dfs_repairs_running", "gauge", "replications in flight", st.rs.running);
    prom_u64(&b, "dfs_repairs_deleting", "gauge", "copy deletions in flight", st.rs.deleting);
    prom_u64(&b, "dfs_repairs_done_total", "counter", "replications that produced a copy",
             st.rs.done);
    prom_u64(&b, "dfs_repairs_failed_total", "counter", "replications that failed",
             st.rs.failed);
    prom_u64(&b, "dfs_repairs_bytes_replicated_total", "counter",
             "bytes copied by repair replications", st.rs.bytes);
    prom_u64(&b, "dfs_repairs_deleted_total", "counter",
             "stale, corrupt, surplus or drained copies deleted", st.rs.deleted);
    prom_u64(&b, "dfs_repairs_moves_total", "counter", "rebalance copies started", st.rs.moves);
    prom_u64(&b, "dfs_gc_pending", "gauge", "replicas of deleted chunks waiting for DELETE",
             st.gc_pending);
    prom_u64(&b, "dfs_gc_sent_total", "counter", "GC deletes sent", st.rs.gc_sent);
    prom_u64(&b, "dfs_files", "gauge", "regular files", st.fst.files);
    prom_u64(&b, "dfs_dirs", "gauge", "directories", st.fst.dirs);
    prom_u64(&b, "dfs_inodes", "gauge", "inodes", st.fst.inodes);
    prom_u64(&b, "dfs_sessions", "gauge", "client sessions", st.fst.sessions);

    prom_head(&b, "dfs_server_info", "gauge", "chunk server identity and state (always 1)");
    for (uint32_t i = 0; i < st.nsrv; i++) {
        const struct cm_server *s = st.srv[i].s;
        sb_printf(&b, "dfs_server_info{id=\"%u\",address=\"", s->id);
        sb_prom_label(&b, s->host);
        sb_printf(&b, ":%d\",label=\"", s->port);
        sb_prom_label(&b, s->label);
        sb_printf(&b, "\",state=\"%s\"} 1\n", state_name(s->state));
    }
    prom_per_server(&b, &st, "dfs_server_up", "gauge", "1 if the server is not down", g_up);
    prom_per_server(&b, &st, "dfs_server_draining", "gauge", "1 if the server is draining",
                    g_draining);
    prom_per_server(&b, &st, "dfs_server_capacity_bytes", "gauge", "total space", g_total);
    prom_per_server(&b, &st, "dfs_server_used_bytes", "gauge", "used space", g_used);
    prom_per_server(&b, &st, "dfs_server_avail_bytes", "gauge", "free space", g_avail);
    prom_per_server(&b, &st, "dfs_server_chunks", "gauge", "chunk replicas stored", g_chunks);
    prom_per_server(&b, &st, "dfs_server_load", "gauge", "load reported by the server", g_load);
    prom_per_server(&b, &st, "dfs_server_read_bytes_total", "counter", "bytes served", g_read);
    prom_per_server(&b, &st, "dfs_server_written_bytes_total", "counter", "bytes written",
                    g_written);
    prom_per_server(&b, &st, "dfs_server_replicated_bytes_total", "counter",
                    "bytes received by replication", g_repl);
    prom_head(&b, "dfs_server_last_seen_seconds", "gauge",
              "seconds since the server's last heartbeat");
    for (uint32_t i = 0; i < st.nsrv; i++)
        if (st.srv[i].ago_ms != UINT64_MAX)
            sb_printf(&b, "dfs_server_last_seen_seconds{id=\"%u\"} %.3f\n", st.srv[i].s->id,
                      (double)st.srv[i].ago_ms / 1000.0);
    free(st.srv);
    return sb_take(&b, len);
}

/* ------------------------------------------------------------------------ */
/* dashboard */

static const char dashboard_html[] =
    "<!DOCTYPE html>\n"
    "<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
    "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n"
    "<title>dfs metad</title>\n"
    "<style>\n"
    ":root{--bg:#f4f6f8;--card:#fff;--fg:#1d2733;--mut:#6b7785;--line:#e3e7ec;"
    "--ok:#2e9d5b;--warn:#e0a100;--bad:#d64545;--info:#3b7dd8;--bar:#e8ecf0}\n"
    "*{box-sizing:border-box}\n"
    "body{margin:0;font:14px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;"
    "background:var(--bg);color:var(--fg)}\n"
    "header{display:flex;align-items:center;gap:16px;padding:12px 24px;background:#1d2733;"
    "color:#fff}\n"
    "header h1{font-size:18px;margin:0;font-weight:600}\n"
    "header .meta{color:#b8c2cc;font-size:13px}\n"
    "header .right{margin-left:auto;display:flex;align-items:center;gap:8px;font-size:13px}\n"
    ".dot{width:10px;height:10px;border-radius:50%;display:inline-block;background:#888}\n"
    ".dot.ok{background:var(--ok)}.dot.bad{background:var(--bad)}\n"
    "main{padding:20px 24px;max-width:1300px;margin:0 auto}\n"
    ".cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(190px,1fr));gap:14px}\n"
    ".card{background:var(--card);border:1px solid var(--line);border-radius:8px;"
    "padding:14px 16px}\n"
    ".card h3{margin:0 0 6px;font-size:12px;text-transform:uppercase;letter-spacing:.05em;"
    "color:var(--mut);font-weight:600}\n"
    ".big{font-size:22px;font-weight:600;white-space:nowrap;overflow:hidden;"
    "text-overflow:ellipsis}\n"
    ".sub{color:var(--mut);font-size:12px;margin-top:4px}\n"
    "section{margin-top:20px}\n"
    "section h2{font-size:15px;margin:0 0 8px}\n"
    ".bar{height:10px;background:var(--bar);border-radius:5px;overflow:hidden;display:flex;"
    "min-width:80px}\n"
    ".bar .fill{height:100%;background:var(--info)}\n"
    ".fill.ok{background:var(--ok)}.fill.warn{background:var(--warn)}"
    ".fill.bad{background:var(--bad)}.fill.info{background:var(--info)}\n"
    ".legend{display:flex;gap:18px;flex-wrap:wrap;margin-top:8px;font-size:13px}\n"
    ".legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;"
    "vertical-align:-1px}\n"
    "table{width:100%;border-collapse:collapse;background:var(--card);border:1px solid "
    "var(--line);border-radius:8px;overflow:hidden}\n"
    "th,td{padding:8px 10px;text-align:left;border-bottom:1px solid var(--line);"
    "white-space:nowrap}\n"
    "th{font-size:12px;color:var(--mut);font-weight:600;background:#fafbfc}\n"
    "td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}\n"
    "tr:last-child td{border-bottom:none}\n"
    ".badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;"
    "font-weight:600;color:#fff}\n"
    ".badge.up{background:var(--ok)}.badge.down{background:var(--bad)}"
    ".badge.draining{background:var(--warn)}.badge.unknown{background:#888}\n"
    ".capcell{display:flex;align-items:center;gap:8px;min-width:220px}\n"
    ".capcell .bar{flex:1}\n"
    "#err{color:var(--bad);font-weight:600}\n"
    ".empty{color:var(--mut);padding:16px;text-align:center}\n"
    "</style></head><body>\n"
    "<header><h1>dfs</h1><span class=\"meta\" id=\"meta\">connecting&hellip;</span>\n"
    "<span class=\"right\"><span id=\"err\"></span><span id=\"upd\"></span>"
    "<span class=\"dot\" id=\"conn\"></span></span></header>\n"
    "<main>\n"
    "<div class=\"cards\">\n"
    "<div class=\"card\"><h3>Servers</h3><div class=\"big\" id=\"c-srv\">-</div>"
    "<div class=\"sub\" id=\"c-srv2\"></div></div>\n"
    "<div class=\"card\"><h3>Capacity</h3><div class=\"big\" id=\"c-cap\">-</div>"
    "<div class=\"bar\" style=\"margin-top:6px\"><div class=\"fill\" id=\"c-capbar\" "
    "style=\"width:0\"></div></div><div class=\"sub\" id=\"c-cap2\"></div></div>\n"
    "<div class=\"card\"><h3>Chunks</h3><div class=\"big\" id=\"c-chk\">-</div>"
    "<div class=\"sub\" id=\"c-chk2\"></div></div>\n"
    "<div class=\"card\"><h3>Throughput</h3><div class=\"big\" id=\"c-tp\">-</div>"
    "<div class=\"sub\" id=\"c-tp2\"></div></div>\n"
    "<div class=\"card\"><h3>Repairs</h3><div class=\"big\" id=\"c-rep\">-</div>"
    "<div class=\"sub\" id=\"c-rep2\"></div></div>\n"
    "<div class=\"card\"><h3>Namespace</h3><div class=\"big\" id=\"c-ns\">-</div>"
    "<div class=\"sub\" id=\"c-ns2\"></div></div>\n"
    "</div>\n"
    "<section><h2>Chunk health</h2><div class=\"card\">"
    "<div class=\"bar\" id=\"hbar\" style=\"height:16px\"></div>"
    "<div class=\"legend\" id=\"hleg\"></div></div></section>\n"
    "<section><h2>Repair progress</h2><div class=\"card\">"
    "<div class=\"bar\" style=\"height:16px\"><div class=\"fill ok\" id=\"rbar\" "
    "style=\"width:0\"></div></div><div class=\"legend\" id=\"rleg\"></div></div></section>\n"
    "<section><h2>Chunk servers</h2><table><thead><tr><th class=\"num\">id</th>"
    "<th>address</th><th>label</th><th>state</th><th>capacity</th>"
    "<th class=\"num\">chunks</th><th class=\"num\">load</th><th class=\"num\">read/s</th>"
    "<th class=\"num\">write/s</th><th class=\"num\">read</th><th class=\"num\">written</th>"
    "<th class=\"num\">replicated</th><th class=\"num\">last seen</th></tr></thead>"
    "<tbody id=\"srv\"><tr><td colspan=\"13\" class=\"empty\">loading&hellip;</td></tr>"
    "</tbody></table></section>\n"
    "</main>\n"
    "<script>\n"
    "'use strict';\n"
    "const $=id=>document.getElementById(id);\n"
    "const U=['B','KiB','MiB','GiB','TiB','PiB','EiB'];\n"
    "function fb(n){n=Number(n)||0;let i=0;while(n>=1024&&i<U.length-1){n/=1024;i++;}"
    "return (i?n.toFixed(n<10?2:1):String(n))+' '+U[i];}\n"
    "function fr(n){return fb(n)+'/s';}\n"
    "function fn(n){return Number(n||0).toLocaleString();}\n"
    "function pl(n,w){return fn(n)+' '+w+(Number(n)===1?'':'s');}\n"
    "function pct(a,b){return b>0?(100*a/b):0;}\n"
    "function el(tag,cls,text){const e=document.createElement(tag);if(cls)e.className=cls;"
    "if(text!==undefined)e.textContent=text;return e;}\n"
    "function bar(frac,cls){const b=el('div','bar');const f=el('div','fill '+(cls||''));"
    "f.style.width=Math.max(0,Math.min(100,frac*100)).toFixed(1)+'%';b.appendChild(f);return b;}\n"
    "function ago(ms){if(ms===null||ms===undefined)return 'never';if(ms<1000)return 'now';"
    "const s=ms/1000;if(s<90)return s.toFixed(0)+' s ago';if(s<5400)return (s/60).toFixed(0)+"
    "' min ago';return (s/3600).toFixed(1)+' h ago';}\n"
    "function legend(id,items){const l=$(id);l.replaceChildren();for(const [c,t] of items){"
    "const s=el('span');const i=el('i');i.style.background=c;s.appendChild(i);"
    "s.appendChild(document.createTextNode(t));l.appendChild(s);}}\n"
    "let prev=null;\n"
    "function rates(s){const now=performance.now();const r={};let tr=0,tw=0,tp=0;"
    "if(prev){const dt=(now-prev.t)/1000;if(dt>0)for(const v of s.servers){const p=prev.s[v.id];"
    "if(!p)continue;const x={r:Math.max(0,v.bytes_read-p.r)/dt,w:Math.max(0,v.bytes_written-p.w)/dt,"
    "p:Math.max(0,v.bytes_replicated-p.p)/dt};r[v.id]=x;tr+=x.r;tw+=x.w;tp+=x.p;}}"
    "const m={};for(const v of s.servers)m[v.id]={r:v.bytes_read,w:v.bytes_written,"
    "p:v.bytes_replicated};prev={t:now,s:m};return {per:r,r:tr,w:tw,p:tp,have:Object.keys(r)"
    ".length>0};}\n"
    "function render(s){\n"
    " $('meta').textContent='metad '+s.node_id+(s.is_leader?' (leader)':' (not leader; leader: '+"
    "(s.leader||'unknown')+')')+' \\u00b7 raft index '+fn(s.raft_index);\n"
    " $('upd').textContent='updated '+new Date().toLocaleTimeString();\n"
    " $('c-srv').textContent=s.servers_up+' / '+s.servers_total+' up';\n"
    " $('c-srv2').textContent=s.servers_down+' down, '+s.servers_draining+' draining';\n"
    " const c=s.capacity;const uf=c.total_bytes>0?c.used_bytes/c.total_bytes:0;\n"
    " $('c-cap').textContent=fb(c.used_bytes);\n"
    " const cb=$('c-capbar');cb.style.width=(uf*100).toFixed(1)+'%';"
    "cb.className='fill '+(uf>0.9?'bad':uf>0.75?'warn':'info');\n"
    " $('c-cap2').textContent=pct(c.used_bytes,c.total_bytes).toFixed(1)+'% of '+"
    "fb(c.total_bytes)+' used, '+fb(c.avail_bytes)+' free';\n"
    " const h=s.chunks;\n"
    " $('c-chk').textContent=fn(h.total);\n"
    " $('c-chk2').textContent=(h.total?pct(h.healthy,h.total).toFixed(1):'100.0')+'% healthy'+"
    "(h.missing?', '+fn(h.missing)+' MISSING':'');\n"
    " const hb=$('hbar');hb.replaceChildren();\n"
    " const parts=[[h.healthy,'ok'],[h.under_goal,'warn'],[h.over_goal,'info'],[h.missing,'bad']];\n"
    " if(h.total>0)for(const [n,cl] of parts){if(!n)continue;const f=el('div','fill '+cl);"
    "f.style.width=pct(n,h.total).toFixed(2)+'%';hb.appendChild(f);}\n"
    " legend('hleg',[['var(--ok)',fn(h.healthy)+' healthy'],['var(--warn)',fn(h.under_goal)+"
    "' under goal'],['var(--info)',fn(h.over_goal)+' over goal'],['var(--bad)',fn(h.missing)+"
    "' missing']]);\n"
    " const rp=s.repairs;const work=rp.done+rp.queue+rp.running;\n"
    " $('c-rep').textContent=fn(rp.queue)+' queued';\n"
    " $('c-rep2').textContent=fn(rp.running)+' running, '+fn(rp.done)+' done, '+"
    "fb(rp.bytes_replicated)+' moved';\n"
    " $('rbar').style.width=(work>0?pct(rp.done,work):100).toFixed(1)+'%';\n"
    " legend('rleg',[['var(--ok)',fn(rp.done)+' done'],['var(--info)',fn(rp.running)+' running'],"
    "['var(--bar)',fn(rp.queue)+' queued'],['var(--bad)',fn(rp.failed)+' failed'],"
    "['var(--mut)',fb(rp.bytes_replicated)+' replicated'],['var(--mut)',fn(rp.deleted)+"
    "' copies deleted'],['var(--mut)',fn(rp.gc_pending)+' GC pending']]);\n"
    " const t=rates(s);\n"
    " $('c-tp').textContent=t.have?fr(t.r+t.w):'-';\n"
    " $('c-tp2').textContent=t.have?('read '+fr(t.r)+', write '+fr(t.w)+', repl '+fr(t.p)):"
    "'measuring\\u2026';\n"
    " $('c-ns').textContent=pl(s.files,'file');\n"
    " $('c-ns2').textContent=fn(s.dirs)+(s.dirs===1?' directory, ':' directories, ')+"
    "pl(s.sessions,'client session');\n"
    " const tb=$('srv');tb.replaceChildren();\n"
    " if(!s.servers.length){const tr=el('tr');const td=el('td','empty','no chunk servers "
    "registered');td.colSpan=13;tr.appendChild(td);tb.appendChild(tr);}\n"
    " for(const v of s.servers){const tr=el('tr');\n"
    "  tr.appendChild(el('td','num',String(v.id)));tr.appendChild(el('td','',v.address));\n"
    "  tr.appendChild(el('td','',v.label||'-'));\n"
    "  const st=el('td');st.appendChild(el('span','badge '+(['up','down','draining']"
    ".includes(v.state)?v.state:'unknown'),v.state));tr.appendChild(st);\n"
    "  const cc=el('td');const cd=el('div','capcell');const f=v.total_bytes>0?v.used_bytes/"
    "v.total_bytes:0;\n"
    "  cd.appendChild(bar(f,f>0.9?'bad':f>0.75?'warn':'info'));cd.appendChild(el('span','',"
    "fb(v.used_bytes)+' / '+fb(v.total_bytes)+' ('+(f*100).toFixed(0)+'%)'));cc.appendChild(cd);"
    "tr.appendChild(cc);\n"
    "  const x=t.per[v.id];\n"
    "  for(const val of [fn(v.chunks),String(v.load),x?fr(x.r):'-',x?fr(x.w):'-',fb(v.bytes_read),"
    "fb(v.bytes_written),fb(v.bytes_replicated),ago(v.last_seen_ago_ms)])tr.appendChild(el('td',"
    "'num',val));\n"
    "  tb.appendChild(tr);}\n"
    "}\n"
    "async function poll(){try{const r=await fetch('/api/v1/status',{cache:'no-store'});"
    "if(!r.ok)throw new Error('HTTP '+r.status);render(await r.json());$('conn').className="
    "'dot ok';$('err').textContent='';}catch(e){$('conn').className='dot bad';"
    "$('err').textContent='metad unreachable: '+e.message;}finally{setTimeout(poll,2000);}}\n"
    "poll();\n"
    "</script></body></html>\n";

/* ------------------------------------------------------------------------ */
/* request parsing */

static bool is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

int http_parse_request(const char *buf, size_t len, int *is_head, char *pathbuf,
                       size_t pathlen)
{
    const char *p = buf, *end = buf + len;
    if (memchr(buf, 0, len)) return 400;
    /* RFC 9112 2.2: ignore empty lines before the request line */
    while (p < end && (*p == '\r' || *p == '\n')) p++;
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol) return 400;
    const char *lend = eol > p && eol[-1] == '\r' ? eol - 1 : eol;

    /* method */
    const char *m = p;
    while (p < lend && is_tchar((unsigned char)*p)) p++;
    size_t mlen = (size_t)(p - m);
    if (mlen == 0 || mlen > 32 || p >= lend || *p != ' ') return 400;
    p++;
    /* target: origin-form only */
    const char *t = p;
    while (p < lend && *p != ' ') {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c == 0x7f) return 400;
        p++;
    }
    size_t tlen = (size_t)(p - t);
    if (tlen == 0 || *t != '/' || p >= lend) return 400;
    p++;
    /* version */
    size_t vlen = (size_t)(lend - p);
    if (vlen != 8 || memcmp(p, "HTTP/", 5) != 0 || p[5] < '0' || p[5] > '9' || p[6] != '.' ||
        p[7] < '0' || p[7] > '9')
        return 400;
    if (p[5] != '1') return 505;

    /* header fields: name ":" value, no obsolete line folding */
    p = eol + 1;
    for (;;) {
        if (p >= end) return 400; /* the caller passes a complete head */
        eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) return 400;
        lend = eol > p && eol[-1] == '\r' ? eol - 1 : eol;
        if (lend == p) break; /* blank line: end of head */
        const char *q = p;
        while (q < lend && is_tchar((unsigned char)*q)) q++;
        if (q == p || q >= lend || *q != ':') return 400;
        for (q++; q < lend; q++) {
            unsigned char c = (unsigned char)*q;
            if ((c < 0x20 && c != '\t') || c == 0x7f) return 400;
        }
        p = eol + 1;
    }

    bool get = mlen == 3 && memcmp(m, "GET", 3) == 0;
    bool head = mlen == 4 && memcmp(m, "HEAD", 4) == 0;
    if (!get && !head) return 405;
    const char *qm = memchr(t, '?', tlen);
    if (qm) tlen = (size_t)(qm - t);
    if (tlen + 1 > pathlen) return 414;
    memcpy(pathbuf, t, tlen);
    pathbuf[tlen] = 0;
    *is_head = head;
    return 200;
}

/* ------------------------------------------------------------------------ */
/* connections */

struct hconn;

struct http_server {
    uv_tcp_t tcp;
    struct metad *m;
    struct hconn *conns; /* open, newest first */
    unsigned nconns;     /* allocated (including those closing) */
    unsigned nlive;      /* in conns */
    bool stopping, listener_closed;
    uint64_t served, rejected;
};

struct hconn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wr;
    uv_shutdown_t sd;
    struct http_server *h;
    struct hconn *next, **pprev;
    int nclosed;
    bool closing, responded;
    char *resp;
    size_t len;
    char buf[HTTP_MAX_REQUEST + 1];
};

static void server_maybe_free(struct http_server *h)
{
    if (h->stopping && h->listener_closed && h->nconns == 0) free(h);
}

static void conn_closed(uv_handle_t *hd)
{
    struct hconn *c = hd->data;
    if (++c->nclosed < 2) return;
    struct http_server *h = c->h;
    free(c->resp);
    free(c);
    h->nconns--;
    server_maybe_free(h);
}

static void conn_close(struct hconn *c)
{
    if (c->closing) return;
    c->closing = true;
    c->h->nlive--;
    *c->pprev = c->next;
    if (c->next) c->next->pprev = c->pprev;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
    uv_close((uv_handle_t *)&c->timer, conn_closed);
}

static void timer_cb(uv_timer_t *t)
{
    struct hconn *c = t->data;
    log_debug("http: connection %s timed out", c->responded ? "write" : "read");
    conn_close(c);
}

static void shutdown_cb(uv_shutdown_t *req, int status)
{
    (void)status;
    conn_close(req->data);
}

static void write_cb(uv_write_t *req, int status)
{
    struct hconn *c = req->data;
    if (status < 0) conn_close(c);
}

static const char *reason(int code)
{
    switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

/* Send one response (body is copied; NULL body = error text) and close. */
static void respond(struct hconn *c, int code, const char *ctype, const char *body,
                    size_t blen, bool head_only)
{
    if (c->responded || c->closing) return;
    c->responded = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    char ebody[128];
    if (!body) {
        snprintf(ebody, sizeof(ebody), "%d %s\n", code, reason(code));
        body = ebody;
        blen = strlen(ebody);
        ctype = "text/plain; charset=utf-8";
    }
    struct sbuf b = {0};
    sb_printf(&b,
              "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
              "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
              "Connection: close\r\n",
              code, reason(code), ctype, blen);
    if (code == 405) sb_puts(&b, "Allow: GET, HEAD\r\n");
    if (strncmp(ctype, "text/html", 9) == 0)
        sb_puts(&b, "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; "
                    "script-src 'unsafe-inline'; connect-src 'self'; img-src 'self'\r\n"
                    "X-Frame-Options: DENY\r\n");
    sb_puts(&b, "\r\n");
    if (!head_only) sb_add(&b, body, blen);
    c->resp = sb_take(&b, &c->len);
    if (!c->resp) return conn_close(c);
    uv_timer_start(&c->timer, timer_cb, HTTP_WRITE_TIMEOUT_MS, 0);
    uv_buf_t ub = uv_buf_init(c->resp, (unsigned)c->len);
    c->wr.data = c;
    c->sd.data = c;
    if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &ub, 1, write_cb) != 0) return conn_close(c);
    if (uv_shutdown(&c->sd, (uv_stream_t *)&c->tcp, shutdown_cb) != 0) conn_close(c);
    if (code >= 400) c->h->rejected++;
    else c->h->served++;
}

static void handle(struct hconn *c, size_t headlen)
{
    char path[256];
    int is_head = 0;
    int code = http_parse_request(c->buf, headlen, &is_head, path, sizeof(path));
    if (code != 200) {
        log_debug("http: bad request (%d)", code);
        return respond(c, code, NULL, NULL, 0, false);
    }
    struct metad *m = c->h->m;
    char *doc = NULL;
    size_t len = 0;
    const char *ctype = "application/json; charset=utf-8";
    if (strcmp(path, "/") == 0 || strcmp(path, "/index.html") == 0)
        return respond(c, 200, "text/html; charset=utf-8", dashboard_html,
                       sizeof(dashboard_html) - 1, is_head);
    if (strcmp(path, "/api/v1/status") == 0) {
        doc = http_status_json(m, &len);
    } else if (strcmp(path, "/api/v1/servers") == 0) {
        doc = http_servers_json(m, &len);
    } else if (strcmp(path, "/metrics") == 0) {
        doc = http_metrics_text(m, &len);
        ctype = "text/plain; version=0.0.4; charset=utf-8";
    } else {
        return respond(c, 404, NULL, NULL, 0, is_head);
    }
    if (!doc) return respond(c, 500, NULL, NULL, 0, is_head);
    respond(c, 200, ctype, doc, len, is_head);
    free(doc);
}

/* End of the request head in buf[0..len): offset just past the blank line,
 * or 0 if not complete yet.  Searches from `from`. */
static size_t head_end(const char *buf, size_t len, size_t from)
{
    for (size_t i = from; i < len; i++) {
        if (buf[i] != '\n') continue;
        if (i + 1 < len && buf[i + 1] == '\n') return i + 2;
        if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n') return i + 3;
    }
    return 0;
}

static void alloc_cb(uv_handle_t *hd, size_t suggested, uv_buf_t *ub)
{
    (void)suggested;
    struct hconn *c = hd->data;
    /* never 0 here: a full buffer is answered and reading stopped (and a
     * 0-length buffer would only make libuv report UV_ENOBUFS) */
    *ub = uv_buf_init(c->buf + c->len, (unsigned)(HTTP_MAX_REQUEST - c->len));
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *ub)
{
    (void)ub;
    struct hconn *c = s->data;
    if (c->responded || c->closing) return;
    if (nread < 0) return conn_close(c); /* EOF or error before a full request */
    if (nread == 0) return;
    size_t old = c->len;
    c->len += (size_t)nread;
    c->buf[c->len] = 0;
    size_t he = head_end(c->buf, c->len, old > 2 ? old - 2 : 0);
    if (he) return handle(c, he);
    if (c->len >= HTTP_MAX_REQUEST) {
        /* no end of line at all: the request line itself is too long */
        int code = memchr(c->buf, '\n', c->len) ? 431 : 414;
        log_debug("http: request head over %u bytes (%d)", HTTP_MAX_REQUEST, code);
        respond(c, code, NULL, NULL, 0, false);
    }
}

static void reject_closed(uv_handle_t *hd) { free(hd); }

static void accept_cb(uv_stream_t *ls, int status)
{
    struct http_server *h = ls->data;
    if (status < 0) {
        log_warn("http: accept: %s", uv_strerror(status));
        return;
    }
    if (h->nlive >= HTTP_MAX_CONNS) {
        /* Full: make room by dropping the oldest connection that has not sent
         * a whole request yet (idle or slow clients must not lock out the
         * dashboard), else accept and drop the new one. */
        struct hconn *old = NULL;
        for (struct hconn *x = h->conns; x; x = x->next)
            if (!x->responded) old = x;
        if (old) {
            log_debug("http: too many connections: dropping the oldest idle one");
            conn_close(old);
        }
    }
    if (h->nlive >= HTTP_MAX_CONNS || h->nconns >= 2 * HTTP_MAX_CONNS) {
        /* accept and drop, so the backlog does not fill up */
        uv_tcp_t *t = malloc(sizeof(*t));
        if (!t) return;
        uv_tcp_init(ls->loop, t);
        if (uv_accept(ls, (uv_stream_t *)t) == 0) log_debug("http: too many connections");
        uv_close((uv_handle_t *)t, reject_closed);
        h->rejected++;
        return;
    }
    struct hconn *c = calloc(1, sizeof(*c));
    if (!c) return;
    c->h = h;
    uv_tcp_init(ls->loop, &c->tcp);
    uv_timer_init(ls->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    h->nconns++;
    h->nlive++;
    c->next = h->conns;
    if (c->next) c->next->pprev = &c->next;
    h->conns = c;
    c->pprev = &h->conns;
    if (uv_accept(ls, (uv_stream_t *)&c->tcp) != 0) return conn_close(c);
    uv_tcp_nodelay(&c->tcp, 1);
    uv_timer_start(&c->timer, timer_cb, HTTP_READ_TIMEOUT_MS, 0);
    if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0) conn_close(c);
}

static void listener_closed(uv_handle_t *hd)
{
    struct http_server *h = hd->data;
    h->listener_closed = true;
    server_maybe_free(h);
}

struct http_server *http_start(struct metad *m, const char *listen, char *err, size_t errlen)
{
    char host[256];
    int port, rc;
    if (dfs_parse_hostport(listen, DFS_PORT_HTTP, host, sizeof(host), &port, err, errlen) != 0)
        return NULL;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
        snprintf(err, errlen, "%s:%d: not a numeric IP address", host, port);
        return NULL;
    }
    struct http_server *h = calloc(1, sizeof(*h));
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->m = m;
    uv_tcp_init(m->loop, &h->tcp);
    h->tcp.data = h;
    if ((rc = uv_tcp_bind(&h->tcp, (struct sockaddr *)&ss, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&h->tcp, 128, accept_cb)) != 0) {
        snprintf(err, errlen, "%s:%d: %s", host, port, uv_strerror(rc));
        h->stopping = true;
        uv_close((uv_handle_t *)&h->tcp, listener_closed);
        return NULL;
    }
    log_notice("http: dashboard on http://%s:%d/", host, port);
    return h;
}

void http_stop(struct http_server *h)
{
    if (!h || h->stopping) return;
    h->stopping = true;
    while (h->conns) conn_close(h->conns);
    uv_close((uv_handle_t *)&h->tcp, listener_closed);
}
