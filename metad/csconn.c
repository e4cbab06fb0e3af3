/* csconn.c - metad's links to chunkd: REGISTER/REPORT/HEARTBEAT in, SETVERSION/TRUNCATE/DELETE out. */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mserv.h"
#include "util.h"

/*
 * A chunkd opens one connection to metad and keeps it; metad sends its own
 * requests (SETVERSION, TRUNCATE, DELETE) back over that same connection.
 * The server struct (chunks.h) holds the conn with a reference while it is
 * registered.
 */

static void attach(struct cm_server *s, struct rpc_conn *c)
{
    if (s->conn == c) return;
    if (s->conn) rpc_conn_unref(s->conn);
    rpc_conn_ref(c);
    s->conn = c;
    /* remember which server this conn belongs to, for on_disconnected */
    rpc_conn_set_data(c, (void *)(uintptr_t)s->id);
}

struct regctx {
    struct rpc_req *req;
    uint32_t id;
};

static void do_register(struct metad *m, struct rpc_req *req, uint32_t id)
{
    const struct dfs_msg_register *b = req->f.body;
    struct cm_server *s = chunks_server_register(m->cm, id, b->host.ptr, (int)b->port,
                                                 b->label.ptr, b->dirs, b->dirs_count);
    attach(s, req->conn);
    log_notice("chunkd %u registered: %s:%u label \"%s\", %u dirs, %llu bytes free", id,
               s->host, b->port, s->label, b->dirs_count, (unsigned long long)s->avail);
    struct dfs_msg_register_resp r = {.status = DFS_OK, .server_id = id};
    rpc_reply(req, &r, NULL, NULL);
}

/* The chunkd stores its id for good: answer only once the allocation is on
 * disk, so a power loss of metad can never hand the same id out again. */
static void newid_synced(void *arg, int status)
{
    struct regctx *x = arg;
    if (status != 0) rpc_reply_status(x->req, DFS_EIO);
    else do_register(metad_g, x->req, x->id);
    free(x);
}

static void newid_done(void *arg, int status, struct fs_result *res)
{
    struct regctx *x = arg;
    if (status != DFS_OK || res->status != DFS_OK) {
        rpc_reply_status(x->req, (uint32_t)(status != DFS_OK ? status : res->status));
        free(x);
        return;
    }
    x->id = (uint32_t)res->val;
    if (journal_sync(metad_g->j, newid_synced, x) != DFS_OK) {
        rpc_reply_status(x->req, DFS_ENOTLEADER);
        free(x);
    }
}

void csconn_register(struct rpc_req *req)
{
    struct metad *m = metad_g;
    if (!journal_ready(m->j)) return (void)rpc_reply_status(req, DFS_ENOTLEADER);
    const struct dfs_msg_register *b = req->f.body;
    if (b->server_id) {
        struct cm_server *s = chunks_server(m->cm, b->server_id);
        if (s && s->conn && s->conn != req->conn && s->state != DFS_SS_DOWN) {
            log_warn("chunkd %u registers again from %s while still connected; taking the new link",
                     b->server_id, rpc_conn_peer_name(req->conn));
        }
        return do_register(m, req, b->server_id);
    }
    /* First start of this chunkd: allocate an id through the log so it is
     * never handed out twice. */
    struct regctx *x = calloc(1, sizeof(*x));
    if (!x) return (void)rpc_reply_status(req, DFS_ENOMEM);
    x->req = req;
    struct fs_op op;
    memset(&op, 0, sizeof(op));
    op.type = FS_OP_SERVER_NEW;
    op.now = dfs_now_ns();
    if (journal_submit(m->j, &op, newid_done, x) != DFS_OK) {
        free(x);
        rpc_reply_status(req, DFS_ENOTLEADER);
    }
}

/* ----- version adoption ----- */

/*
 * A copy reports a version newer than the chunk's: a GRANT's SETVERSION
 * reached the chunkd but the leader died before committing the bump.  The
 * copy is current (chunks_report took it as OK), but until the version is
 * in the log, GRANT and repair only count copies at the committed version,
 * so a chunk whose copies are all like that would be stuck -- and the next
 * bump would hand out the very version that copy already has.  Commit it.
 */
struct adopt_ctx {
    uint64_t chunk;
    uint32_t version;
};

static void adopt_done(void *arg, int status, struct fs_result *res)
{
    struct adopt_ctx *x = arg;
    struct metad *m = metad_g;
    struct cm_chunk *c = chunks_get(m->cm, x->chunk);
    if (c) chunks_adopt_done(m->cm, c);
    if (status == DFS_OK && res->status == DFS_OK) {
        log_notice("chunk %llu: adopted version %u reported by its copies",
                   (unsigned long long)x->chunk, x->version);
        if (m->rp && c) repair_note_chunk(m->rp, x->chunk);
    } else {
        log_warn("chunk %llu: committing adopted version %u failed: %s",
                 (unsigned long long)x->chunk, x->version,
                 dfs_strerror(status != DFS_OK ? status : res->status));
    }
    free(x);
}

static void adopt_check(struct metad *m, uint64_t id)
{
    struct cm_chunk *c = chunks_get(m->cm, id);
    if (!c || !m->j || !journal_ready(m->j)) return;
    uint32_t v = chunks_adopt_version(m->cm, c);
    if (!v) return;
    struct adopt_ctx *x = calloc(1, sizeof(*x));
    if (!x) return;
    x->chunk = id;
    x->version = v;
    struct fs_op op;
    memset(&op, 0, sizeof(op));
    op.type = FS_OP_CHUNK_VERSION;
    op.id = id;
    op.version = v;
    op.now = dfs_now_ns();
    chunks_adopt_start(m->cm, c, v);
    if (journal_submit(m->j, &op, adopt_done, x) != DFS_OK) {
        chunks_adopt_done(m->cm, c);
        free(x);
    }
}

void csconn_report(struct rpc_req *req)
{
    struct metad *m = metad_g;
    const struct dfs_msg_report *b = req->f.body;
    struct cm_server *s = chunks_server(m->cm, b->server_id);
    if (!s || !s->registered) return (void)rpc_reply_status(req, DFS_ENOENT);
    attach(s, req->conn);
    unsigned orphans = 0, stale = 0;
    for (uint32_t i = 0; i < b->chunks_count; i++) {
        const struct dfs_chunkrep *r = &b->chunks[i];
        int del = chunks_report(m->cm, s->id, r);
        if (m->rp && chunks_get(m->cm, r->chunk_id)) repair_note_chunk(m->rp, r->chunk_id);
        adopt_check(m, r->chunk_id);
        if (del) {
            if (!chunks_get(m->cm, r->chunk_id)) {
                /* No file owns it (deleted while this server was away). */
                if (journal_ready(m->j)) csconn_delete(m, s->id, r->chunk_id, r->version);
                orphans++;
            } else {
                stale++;
            }
        }
    }
    if (orphans || stale)
        log_info("chunkd %u report: %u chunks, %u orphans deleted, %u stale", s->id,
                 b->chunks_count, orphans, stale);
    rpc_reply_status(req, DFS_OK);
}

void csconn_heartbeat(struct rpc_req *req)
{
    struct metad *m = metad_g;
    const struct dfs_msg_heartbeat *b = req->f.body;
    int st = chunks_server_heartbeat(m->cm, b, dfs_now_ns());
    if (st == DFS_OK) {
        struct cm_server *s = chunks_server(m->cm, b->server_id);
        attach(s, req->conn);
        for (uint32_t i = 0; m->rp && i < b->changes_count; i++) {
            if (b->changes[i].state == DFS_RS_CORRUPT || b->changes[i].state == DFS_RS_LOST)
                log_notice("chunkd %u: chunk %llu %s", s->id,
                           (unsigned long long)b->changes[i].chunk_id,
                           b->changes[i].state == DFS_RS_CORRUPT ? "corrupt" : "lost");
            repair_note_chunk(m->rp, b->changes[i].chunk_id);
        }
        for (uint32_t i = 0; i < b->changes_count; i++) adopt_check(m, b->changes[i].chunk_id);
    }
    rpc_reply_status(req, (uint32_t)st);
}

void csconn_disconnected(struct rpc_conn *c)
{
    struct metad *m = metad_g;
    uint32_t id = (uint32_t)(uintptr_t)rpc_conn_data(c);
    struct cm_server *s = chunks_server(m->cm, id);
    if (!s || s->conn != c) return;
    log_notice("chunkd %u disconnected", id);
    chunks_server_lost(m->cm, id); /* clears s->conn */
    rpc_conn_unref(c);
}

/* ----- metad -> chunkd ----- */

struct callctx {
    void (*cb)(void *arg, uint32_t server_id, int status);
    void (*cb2)(void *arg, int status, uint64_t length); /* REPLICATE, DELETE with callback */
    void *arg;
    uint32_t server_id;
    uint64_t chunk;
    uint32_t version; /* TRUNCATE: version the replica should now have */
};

static void call_done(void *arg, int status, struct dfs_frame *reply)
{
    struct callctx *x = arg;
    int st = status == DFS_OK ? (int)reply->status : status;
    if (x->cb2) {
        uint64_t len = 0;
        if (st == DFS_OK && reply && reply->op == DFS_OP_REPLICATE)
            len = ((const struct dfs_msg_write_resp *)reply->body)->length;
        x->cb2(x->arg, st, len);
    } else if (x->cb) {
        x->cb(x->arg, x->server_id, st);
    } else if (st != DFS_OK && st != DFS_ENOCHUNK) {
        log_info("chunkd %u: chunk %llu: %s", x->server_id, (unsigned long long)x->chunk,
                 dfs_strerror(st));
        /* A failed TRUNCATE leaves that copy behind: mark it stale. */
        struct cm_chunk *c = x->version ? chunks_get(metad_g->cm, x->chunk) : NULL;
        for (unsigned i = 0; c && i < c->nrep; i++)
            if (c->reps[i].server_id == x->server_id) c->reps[i].state = DFS_RS_STALE;
    }
    rpc_frame_release(reply);
    free(x);
}

static int call_t(struct metad *m, uint32_t server_id, unsigned op, const void *body,
                  struct callctx *x, uint32_t timeout_ms)
{
    struct cm_server *s = chunks_server(m->cm, server_id);
    if (!s || !s->conn || !rpc_conn_ready(s->conn)) {
        free(x);
        return DFS_ECONN;
    }
    int st = rpc_call(s->conn, op, body, timeout_ms, call_done, x);
    if (st != DFS_OK) free(x);
    return st;
}

static int call(struct metad *m, uint32_t server_id, unsigned op, const void *body,
                struct callctx *x)
{
    return call_t(m, server_id, op, body, x, m->o.rpc_timeout_ms);
}

int csconn_setversion(struct metad *m, uint32_t server_id, uint64_t chunk, uint32_t oldv,
                      uint32_t newv, void (*cb)(void *arg, uint32_t server_id, int status),
                      void *arg)
{
    struct callctx *x = calloc(1, sizeof(*x));
    if (!x) return DFS_ENOMEM;
    *x = (struct callctx){cb, NULL, arg, server_id, chunk, 0};
    struct dfs_msg_setversion b = {.chunk_id = chunk, .old_version = oldv, .version = newv};
    return call(m, server_id, DFS_OP_SETVERSION, &b, x);
}

int csconn_truncate(struct metad *m, uint32_t server_id, uint64_t chunk, uint32_t oldv,
                    uint32_t newv, uint64_t length)
{
    struct callctx *x = calloc(1, sizeof(*x));
    if (!x) return DFS_ENOMEM;
    *x = (struct callctx){NULL, NULL, NULL, server_id, chunk, newv};
    struct dfs_msg_truncate b = {.chunk_id = chunk, .old_version = oldv, .version = newv,
                                 .length = length};
    return call(m, server_id, DFS_OP_TRUNCATE, &b, x);
}

int csconn_delete_cb(struct metad *m, uint32_t server_id, uint64_t chunk, uint32_t version,
                     void (*cb)(void *arg, int status, uint64_t length), void *arg)
{
    struct callctx *x = calloc(1, sizeof(*x));
    if (!x) return DFS_ENOMEM;
    *x = (struct callctx){NULL, cb, arg, server_id, chunk, 0};
    struct dfs_msg_chunk_req b;
    memset(&b, 0, sizeof(b));
    b.chunk_id = chunk;
    b.version = version;
    return call(m, server_id, DFS_OP_DELETE, &b, x);
}

int csconn_delete(struct metad *m, uint32_t server_id, uint64_t chunk, uint32_t version)
{
    return csconn_delete_cb(m, server_id, chunk, version, NULL, NULL);
}

int csconn_replicate(struct metad *m, uint32_t target, uint64_t chunk, uint32_t version,
                     const uint32_t *sources, unsigned nsources, uint32_t timeout_ms,
                     void (*cb)(void *arg, int status, uint64_t length), void *arg)
{
    struct dfs_replica src[2 * DFS_MAX_GOAL + 2];
    unsigned n = 0;
    for (unsigned i = 0; i < nsources && n < sizeof(src) / sizeof(src[0]); i++) {
        struct cm_server *s = chunks_server(m->cm, sources[i]);
        if (!s || !s->port) continue;
        chunks_fill_replica(m->cm, sources[i], DFS_RS_OK, &src[n++]);
    }
    if (!n) return DFS_ENOSERVERS;
    struct callctx *x = calloc(1, sizeof(*x));
    if (!x) return DFS_ENOMEM;
    *x = (struct callctx){NULL, cb, arg, target, chunk, 0};
    struct dfs_msg_replicate b;
    memset(&b, 0, sizeof(b));
    b.chunk_id = chunk;
    b.version = version;
    b.sources = src;
    b.sources_count = n;
    return call_t(m, target, DFS_OP_REPLICATE, &b, x, timeout_ms);
}
