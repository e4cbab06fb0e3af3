/* csserv.c - the chunkd data port: WRITE/READ/SYNC/... handlers, chain forwarding. */
#include "csserv.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checksum.h"
#include "log.h"
#include "masterconn.h"
#include "util.h"

/* A peer chunkd we forward chain requests to. */
struct peer {
    struct peer *next;
    char host[256];
    int port;
    struct rpc_conn *c;
    uint64_t down_since_ms; /* 0 while connected */
};

struct job;
typedef void (*job_fn)(struct job *j);

/* One request's disk work (and, for chain ops, its forward). */
struct job {
    uv_work_t w;
    struct job *qnext;
    struct rpc_req *req;
    unsigned op;
    int q;           /* queue index */
    job_fn work;     /* pool thread */
    job_fn done;     /* loop thread, after work */
    int status;      /* local outcome */
    /* chain ops */
    int pending;     /* local work + forward still running */
    int fwd_status;
    uint32_t fwd_failed;
    uint64_t length;
    /* READ */
    void *buf;
    const void *data;
    uint32_t n;
    uint64_t csum;
};

struct jobq {
    uint32_t inflight, limit;
    struct job *head, *tail;
};

static struct {
    uv_loop_t *loop;
    struct store *st;
    struct rpc_server *srv;
    rpc_handler_fn handlers[DFS_OP_MAX];
    struct jobq *q;
    size_t nq; /* ndirs + QMISC/QREPL */
    uint32_t fwd_timeout_ms;
    uint32_t server_id;
    uint32_t load;
    struct peer *peers;
    char *cluster;
    struct rpc_mt *mt; /* REPLICATE pulls (blocking calls from pool threads) */
    uint64_t bytes_repl; /* atomic */
    bool stopped;
} S;

#define QMISC(S_) ((S_).nq - 2) /* jobs for chunks not (yet) in any dir */
#define QREPL(S_) ((S_).nq - 1) /* REPLICATE pulls */
#define REPL_IO DFS_MAX_IO
#define REPL_WINDOW 4
#define REPL_CALL_MS 10000

/* ----- peers ----- */

static void peer_on_connected(struct rpc_conn *c, const struct dfs_msg_hello_resp *resp)
{
    struct peer *p = rpc_conn_data(c);
    if (p) p->down_since_ms = 0;
}

static void peer_on_disconnected(struct rpc_conn *c, int status)
{
    struct peer *p = rpc_conn_data(c);
    if (p && p->down_since_ms == 0) p->down_since_ms = dfs_mono_ms();
}

static struct rpc_conn_opts peer_opts(void *data)
{
    struct rpc_conn_opts o = {
        .role = DFS_ROLE_CHUNKD,
        .node_id = S.server_id,
        .cluster = S.cluster,
        .max_frame_in = DFS_MAX_FRAME_CHUNKD,
        .on_connected = data ? peer_on_connected : NULL,
        .on_disconnected = data ? peer_on_disconnected : NULL,
        .data = data,
        /* A chain member that is down fails the forward at once (the writer
         * gets it named and asks for a new chain) instead of waiting. */
        .fail_fast = data != NULL,
    };
    return o;
}

/* The connection to host:port (fail_fast: a call on it while it is down
 * fails at once with DFS_ECONN, so a dead chain member costs no deadline). */
static struct rpc_conn *peer_get(const struct dfs_replica *r, int *status)
{
    struct peer *p;
    for (p = S.peers; p; p = p->next)
        if (p->port == (int)r->port && strcmp(p->host, r->host.ptr) == 0) break;
    if (!p) {
        p = calloc(1, sizeof(*p));
        if (!p) {
            *status = DFS_ENOMEM;
            return NULL;
        }
        snprintf(p->host, sizeof(p->host), "%s", r->host.ptr);
        p->port = (int)r->port;
        p->down_since_ms = dfs_mono_ms();
        struct rpc_conn_opts o = peer_opts(p);
        p->c = rpc_connect(S.loop, p->host, p->port, &o);
        if (!p->c) {
            free(p);
            *status = DFS_ENOMEM;
            return NULL;
        }
        p->next = S.peers;
        S.peers = p;
    }
    return p->c;
}

static bool replica_ok(const struct dfs_replica *r)
{
    return r->host.ptr && r->host.len > 0 && r->host.len < 256 && r->port > 0 && r->port < 65536;
}

/* ----- job queues ----- */

static void job_after(uv_work_t *w, int status);

static void job_work(uv_work_t *w)
{
    struct job *j = w->data;
    j->work(j);
}

static void job_start(struct job *j)
{
    struct jobq *q = &S.q[j->q];
    q->inflight++;
    j->w.data = j;
    int r = uv_queue_work(S.loop, &j->w, job_work, job_after);
    DFS_ASSERT(r == 0); /* only fails for a NULL work_cb */
}

static void job_submit(struct job *j)
{
    struct jobq *q = &S.q[j->q];
    if (q->inflight < q->limit) {
        job_start(j);
        return;
    }
    j->qnext = NULL;
    if (q->tail)
        q->tail->qnext = j;
    else
        q->head = j;
    q->tail = j;
}

static void job_after(uv_work_t *w, int status)
{
    struct job *j = w->data;
    struct jobq *q = &S.q[j->q];
    q->inflight--;
    while (q->head && q->inflight < q->limit) {
        struct job *n = q->head;
        q->head = n->qnext;
        if (!q->head) q->tail = NULL;
        job_start(n);
    }
    j->done(j);
}

static struct job *job_new(struct rpc_req *req, job_fn work, job_fn done, int q)
{
    struct job *j = calloc(1, sizeof(*j));
    if (!j) return NULL;
    j->req = req;
    j->op = req->f.op;
    j->work = work;
    j->done = done;
    j->q = q;
    S.load++;
    return j;
}

static void job_free(struct job *j)
{
    S.load--;
    free(j->buf);
    free(j);
}

static int queue_for(uint64_t id, bool create)
{
    int d = store_dir_of(S.st, id);
    if (d < 0 && create) d = store_pick_dir(S.st);
    return d < 0 ? (int)QMISC(S) : d;
}

/* ----- chain ops: WRITE, SYNC, DELETE ----- */

static void chain_finish(struct job *j)
{
    if (--j->pending > 0) return;
    uint32_t status = (uint32_t)j->status;
    uint32_t failed = 0;
    if (status != DFS_OK) {
        failed = S.server_id;
        /* Out of space: tell metad now, so placement stops choosing us before
         * the writer asks it for a new chain. */
        if (status == DFS_ENOSPC) masterconn_kick();
    } else if (j->fwd_status != DFS_OK) {
        status = (uint32_t)j->fwd_status;
        failed = j->fwd_failed;
    }
    if (j->op == DFS_OP_DELETE) {
        /* Space came back: let metad know soon (it places by free space). */
        if (j->status == DFS_OK) masterconn_kick();
        rpc_reply_status(j->req, status);
    } else {
        struct dfs_msg_write_resp r = {.status = status, .length = j->length, .failed_server = failed};
        rpc_reply(j->req, &r, NULL, NULL);
    }
    job_free(j);
}

static void chain_local_done(struct job *j) { chain_finish(j); }

static void fwd_cb(void *arg, int status, struct dfs_frame *reply)
{
    struct job *j = arg;
    const struct dfs_replica *next;
    if (j->op == DFS_OP_WRITE)
        next = &((struct dfs_msg_write *)j->req->f.body)->chain[0];
    else
        next = &((struct dfs_msg_chunk_req *)j->req->f.body)->chain[0];
    if (status != DFS_OK) {
        j->fwd_status = status;
        j->fwd_failed = next->server_id;
        log_warn("%s of chunk to %s:%u failed: %s", dfs_op_name(j->op), next->host.ptr, next->port,
                 dfs_strerror(status));
    } else if (reply->status != DFS_OK) {
        j->fwd_status = (int)reply->status;
        j->fwd_failed = next->server_id;
        if (j->op != DFS_OP_DELETE) {
            const struct dfs_msg_write_resp *wr = reply->body;
            if (wr->failed_server) j->fwd_failed = wr->failed_server;
        }
    }
    rpc_frame_release(reply);
    chain_finish(j);
}

/*
 * Deadline of a forward with `count` servers left in the chain (us
 * excluded).  Every hop downstream must give up before the one upstream, so
 * the failure reaches the writer naming the server that really failed:
 * T(count) = X * count / (count + 1) shrinks along the chain.  A peer that is
 * not connected right now gets X = 2 s at most (a live server on a LAN
 * connects in milliseconds), so a dead server costs 2 s, not the deadline.
 */
static uint32_t hop_timeout(struct rpc_conn *c, uint32_t count)
{
    uint64_t x = S.fwd_timeout_ms;
    if (!rpc_conn_ready(c) && x > 2000) x = 2000;
    return (uint32_t)DFS_MAX(x * count / (count + 1), 50u);
}

/* Forward the request to chain[0]; on a synchronous failure record it. */
static void chain_forward(struct job *j, const struct dfs_replica *chain, uint32_t count)
{
    if (count == 0) return;
    const struct dfs_replica *next = &chain[0];
    int st = DFS_OK;
    struct rpc_conn *c = peer_get(next, &st);
    if (c) {
        union {
            struct dfs_msg_write w;
            struct dfs_msg_chunk_req cr;
        } fw;
        if (j->op == DFS_OP_WRITE) {
            fw.w = *(struct dfs_msg_write *)j->req->f.body;
            fw.w.chain = fw.w.chain + 1;
            fw.w.chain_count--;
        } else {
            fw.cr = *(struct dfs_msg_chunk_req *)j->req->f.body;
            fw.cr.chain = fw.cr.chain + 1;
            fw.cr.chain_count--;
        }
        st = rpc_call(c, j->op, &fw, hop_timeout(c, count), fwd_cb, j);
        if (st == DFS_OK) {
            j->pending++;
            return;
        }
    }
    j->fwd_status = st;
    j->fwd_failed = next->server_id;
}

static void write_work(struct job *j)
{
    const struct dfs_msg_write *m = j->req->f.body;
    if (m->data.len && csum_buf(m->data.ptr, m->data.len) != m->csum) {
        log_warn("WRITE of chunk %016" PRIx64 " from %s: payload checksum mismatch", m->chunk_id,
                 rpc_conn_peer_name(j->req->conn));
        j->status = DFS_ECORRUPT;
        return;
    }
    j->status = store_write(S.st, m->chunk_id, m->version, m->flags, m->offset, m->data.ptr,
                            m->data.len, &j->length);
}

static void sync_work(struct job *j)
{
    const struct dfs_msg_chunk_req *m = j->req->f.body;
    j->status = store_sync(S.st, m->chunk_id, m->version, &j->length);
}

static void delete_work(struct job *j)
{
    const struct dfs_msg_chunk_req *m = j->req->f.body;
    j->status = store_delete(S.st, m->chunk_id, m->version);
    if (j->status == DFS_ENOCHUNK) j->status = DFS_OK; /* already gone: idempotent */
}

static bool chain_valid(const struct dfs_replica *chain, uint32_t n)
{
    if (n > DFS_MAX_GOAL) return false;
    for (uint32_t i = 0; i < n; i++)
        if (!replica_ok(&chain[i])) return false;
    return true;
}

static void on_write(struct rpc_req *req)
{
    const struct dfs_msg_write *m = req->f.body;
    if (m->data.len > DFS_MAX_IO || !chain_valid(m->chain, m->chain_count)) {
        rpc_reply_status(req, DFS_EINVAL);
        return;
    }
    struct job *j = job_new(req, write_work, chain_local_done,
                            queue_for(m->chunk_id, m->flags & DFS_WF_CREATE));
    if (!j) {
        rpc_reply_status(req, DFS_ENOMEM);
        return;
    }
    j->pending = 1;
    chain_forward(j, m->chain, m->chain_count);
    job_submit(j);
}

static void on_chunk_req(struct rpc_req *req, job_fn work)
{
    const struct dfs_msg_chunk_req *m = req->f.body;
    if (!chain_valid(m->chain, m->chain_count)) {
        rpc_reply_status(req, DFS_EINVAL);
        return;
    }
    struct job *j = job_new(req, work, chain_local_done, queue_for(m->chunk_id, false));
    if (!j) {
        rpc_reply_status(req, DFS_ENOMEM);
        return;
    }
    j->pending = 1;
    chain_forward(j, m->chain, m->chain_count);
    job_submit(j);
}

static void on_sync(struct rpc_req *req) { on_chunk_req(req, sync_work); }
static void on_delete(struct rpc_req *req) { on_chunk_req(req, delete_work); }

/* ----- READ ----- */

static void read_work(struct job *j)
{
    const struct dfs_msg_read *m = j->req->f.body;
    j->status = store_read(S.st, m->chunk_id, m->version, m->offset, m->length, &j->buf, &j->data,
                           &j->n, &j->length);
    if (j->status == DFS_OK) j->csum = csum_buf(j->data, j->n);
}

static void read_sent(void *arg, int status) { job_free(arg); }

static void read_done(struct job *j)
{
    if (j->status != DFS_OK) {
        rpc_reply_status(j->req, (uint32_t)j->status);
        job_free(j);
        return;
    }
    struct dfs_msg_read_resp r = {
        .status = DFS_OK, .length = j->length, .csum = j->csum, .data = {j->data, j->n}};
    rpc_reply(j->req, &r, read_sent, j); /* read_sent runs in every case */
}

static void on_read(struct rpc_req *req)
{
    const struct dfs_msg_read *m = req->f.body;
    if (m->length > DFS_MAX_IO) {
        rpc_reply_status(req, DFS_EINVAL);
        return;
    }
    struct job *j = job_new(req, read_work, read_done, queue_for(m->chunk_id, false));
    if (!j) {
        rpc_reply_status(req, DFS_ENOMEM);
        return;
    }
    job_submit(j);
}

/* ----- SETVERSION, TRUNCATE ----- */

static void status_done(struct job *j)
{
    rpc_reply_status(j->req, (uint32_t)j->status);
    job_free(j);
}

static void setversion_work(struct job *j)
{
    const struct dfs_msg_setversion *m = j->req->f.body;
    j->status = store_setversion(S.st, m->chunk_id, m->old_version, m->version);
}

static void truncate_work(struct job *j)
{
    const struct dfs_msg_truncate *m = j->req->f.body;
    j->status = store_truncate(S.st, m->chunk_id, m->old_version, m->version, m->length);
}

static void on_setversion(struct rpc_req *req)
{
    const struct dfs_msg_setversion *m = req->f.body;
    struct job *j = job_new(req, setversion_work, status_done, queue_for(m->chunk_id, false));
    if (!j) {
        rpc_reply_status(req, DFS_ENOMEM);
        return;
    }
    job_submit(j);
}

static void on_truncate(struct rpc_req *req)
{
    const struct dfs_msg_truncate *m = req->f.body;
    struct job *j = job_new(req, truncate_work, status_done, queue_for(m->chunk_id, false));
    if (!j) {
        rpc_reply_status(req, DFS_ENOMEM);
        return;
    }
    job_submit(j);
}

/* ----- REPLICATE ----- */

static bool wait_ready(struct rpc_conn *c, int ms)
{
    for (int waited = 0; waited < ms; waited += 10) {
        if (rpc_mt_ready(S.mt, c)) return true;
        if (__atomic_load_n(&S.stopped, __ATOMIC_RELAXED)) return false;
        usleep(10000);
    }
    return rpc_mt_ready(S.mt, c);
}

/* Pull the chunk from one source into a temp file; returns a status. */
static int pull_from(const struct dfs_msg_replicate *m, const struct dfs_replica *src,
                     uint64_t *len_out)
{
    struct rpc_conn_opts o = peer_opts(NULL);
    struct rpc_conn *c = rpc_mt_connect(S.mt, src->host.ptr, (int)src->port, &o);
    if (!c) return DFS_ENOMEM;
    if (!wait_ready(c, 3000)) {
        rpc_mt_close(S.mt, c);
        return DFS_ECONN;
    }
    struct store_tmp *t = NULL;
    int r = store_tmp_begin(S.st, m->chunk_id, m->version, &t);
    uint64_t off = 0, total = UINT64_MAX;
    while (r == DFS_OK && off < total) {
        struct rpc_batch b;
        struct rpc_result res[REPL_WINDOW];
        struct dfs_msg_read rq[REPL_WINDOW];
        int k = 0;
        rpc_batch_init(&b);
        for (; k < REPL_WINDOW && off + (uint64_t)k * REPL_IO < total; k++) {
            rq[k] = (struct dfs_msg_read){m->chunk_id, m->version, off + (uint64_t)k * REPL_IO, REPL_IO};
            if (rpc_mt_submit(S.mt, c, DFS_OP_READ, &rq[k], REPL_CALL_MS, &b, &res[k]) != DFS_OK)
                res[k].reply = NULL;
            if (total == UINT64_MAX) {
                k++;
                break; /* the first answer tells the length */
            }
        }
        rpc_batch_wait(&b);
        rpc_batch_destroy(&b);
        for (int i = 0; i < k; i++) {
            struct dfs_frame *f = res[i].reply;
            if (r == DFS_OK) {
                if (res[i].status != DFS_OK || !f) {
                    r = res[i].status != DFS_OK ? res[i].status : DFS_EIO;
                } else if (f->status != DFS_OK) {
                    r = (int)f->status;
                } else {
                    const struct dfs_msg_read_resp *rr = f->body;
                    if (total == UINT64_MAX) total = rr->length;
                    uint64_t want = DFS_MIN((uint64_t)REPL_IO, total - off);
                    if (rr->length != total || rr->data.len != want) {
                        r = DFS_EPROTO;
                    } else if (csum_buf(rr->data.ptr, rr->data.len) != rr->csum) {
                        r = DFS_ECORRUPT;
                    } else {
                        r = store_tmp_append(t, rr->data.ptr, rr->data.len);
                        off += rr->data.len;
                        __atomic_add_fetch(&S.bytes_repl, rr->data.len, __ATOMIC_RELAXED);
                    }
                }
            }
            rpc_frame_release(f);
        }
        if (total == 0) break;
    }
    rpc_mt_close(S.mt, c);
    if (r == DFS_OK) {
        r = store_tmp_commit(t);
        *len_out = off;
    } else {
        store_tmp_abort(t);
    }
    return r;
}

static void replicate_work(struct job *j)
{
    const struct dfs_msg_replicate *m = j->req->f.body;
    struct dfs_chunkrep cur;
    if (store_stat(S.st, m->chunk_id, &cur) == DFS_OK && cur.version == m->version &&
        cur.state == DFS_RS_OK) {
        j->status = DFS_OK; /* already here */
        j->length = cur.length;
        return;
    }
    j->status = DFS_ENOSERVERS;
    for (uint32_t i = 0; i < m->sources_count; i++) {
        const struct dfs_replica *src = &m->sources[i];
        uint64_t t0 = dfs_mono_ms();
        int r = pull_from(m, src, &j->length);
        if (r == DFS_OK) {
            log_info("replicated chunk %016" PRIx64 " v%u (%" PRIu64 " bytes) from %s:%u in %" PRIu64
                     " ms",
                     m->chunk_id, m->version, j->length, src->host.ptr, src->port,
                     dfs_mono_ms() - t0);
            j->status = DFS_OK;
            return;
        }
        log_warn("replicate chunk %016" PRIx64 " v%u from %s:%u: %s", m->chunk_id, m->version,
                 src->host.ptr, src->port, dfs_strerror(r));
        j->status = r;
        j->fwd_failed = src->server_id;
        if (r == DFS_ENOSPC || r == DFS_EDISK) return; /* our problem, not the source's */
    }
}

static void replicate_done(struct job *j)
{
    if (j->status == DFS_ENOSPC) masterconn_kick();
    struct dfs_msg_write_resp r = {
        .status = (uint32_t)j->status, .length = j->length,
        .failed_server = j->status == DFS_OK ? 0 : j->fwd_failed};
    rpc_reply(j->req, &r, NULL, NULL);
    job_free(j);
}

static void on_replicate(struct rpc_req *req)
{
    const struct dfs_msg_replicate *m = req->f.body;
    if (m->sources_count == 0 || !chain_valid(m->sources, m->sources_count)) {
        rpc_reply_status(req, DFS_EINVAL);
        return;
    }
    struct job *j = job_new(req, replicate_work, replicate_done, (int)QREPL(S));
    if (!j) {
        rpc_reply_status(req, DFS_ENOMEM);
        return;
    }
    job_submit(j);
}

/* ----- LIST, PING ----- */

static void on_list(struct rpc_req *req)
{
    struct dfs_chunkrep *v = NULL;
    size_t n = store_list(S.st, &v);
    /* One frame; a chunkrep is at most ~30 bytes encoded. */
    size_t cap = (DFS_MAX_FRAME_CHUNKD - 1024) / 32;
    struct dfs_msg_list_resp r = {.status = v ? DFS_OK : DFS_ENOMEM, .chunks = v,
                                  .chunks_count = (uint32_t)DFS_MIN(n, cap)};
    rpc_reply(req, &r, NULL, NULL);
    free(v);
}

static void on_ping(struct rpc_req *req) { rpc_reply_status(req, DFS_OK); }

/* ----- module ----- */

int csserv_start(const struct csserv_opts *o, char *err, size_t errlen)
{
    S.loop = o->loop;
    S.st = o->st;
    S.fwd_timeout_ms = o->forward_timeout_ms ? o->forward_timeout_ms : 5000;
    S.cluster = o->cluster ? strdup(o->cluster) : NULL;
    S.nq = store_ndirs(o->st) + 2;
    S.q = calloc(S.nq, sizeof(*S.q));
    if (!S.q) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < S.nq; i++) S.q[i].limit = o->io_per_dir ? o->io_per_dir : 4;
    S.q[QREPL(S)].limit = o->replicate_max ? o->replicate_max : 2;
    S.handlers[DFS_OP_PING] = on_ping;
    S.handlers[DFS_OP_WRITE] = on_write;
    S.handlers[DFS_OP_READ] = on_read;
    S.handlers[DFS_OP_SYNC] = on_sync;
    S.handlers[DFS_OP_DELETE] = on_delete;
    S.handlers[DFS_OP_SETVERSION] = on_setversion;
    S.handlers[DFS_OP_TRUNCATE] = on_truncate;
    S.handlers[DFS_OP_REPLICATE] = on_replicate;
    S.handlers[DFS_OP_LIST] = on_list;
    S.mt = rpc_mt_start("chunkd-repl");
    if (!S.mt) {
        snprintf(err, errlen, "cannot start the replication thread");
        return -1;
    }
    struct rpc_conn_opts co = {
        .role = DFS_ROLE_CHUNKD,
        .node_id = S.server_id,
        .cluster = S.cluster,
        .max_frame_in = DFS_MAX_FRAME_CHUNKD,
        .handlers = S.handlers,
    };
    S.srv = rpc_listen(o->loop, o->host, o->port, &co, err, errlen);
    if (!S.srv) return -1;
    return 0;
}

int csserv_port(void) { return S.srv ? rpc_server_port(S.srv) : 0; }
const rpc_handler_fn *csserv_handlers(void) { return S.handlers; }
void csserv_set_server_id(uint32_t id) { S.server_id = id; }
uint32_t csserv_server_id(void) { return S.server_id; }
uint32_t csserv_load(void) { return S.load; }
uint64_t csserv_bytes_replicated(void) { return __atomic_load_n(&S.bytes_repl, __ATOMIC_RELAXED); }

void csserv_stop(void)
{
    __atomic_store_n(&S.stopped, true, __ATOMIC_RELAXED);
    if (S.srv) rpc_server_close(S.srv);
    S.srv = NULL;
    while (S.peers) {
        struct peer *p = S.peers;
        S.peers = p->next;
        rpc_conn_set_data(p->c, NULL);
        rpc_conn_close(p->c);
        free(p);
    }
}

void csserv_free(void)
{
    if (S.mt) rpc_mt_stop(S.mt);
    S.mt = NULL;
    free(S.q);
    S.q = NULL;
    free(S.cluster);
    S.cluster = NULL;
}
