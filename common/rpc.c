/* rpc.c - framed, pipelined request/response connections over libuv TCP. */
#include "rpc.h"

#include "frame.h"
#include "log.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define RPC_BACKOFF_MIN_MS     100
#define RPC_BACKOFF_MAX_MS     5000
#define RPC_CONNECT_TIMEOUT_MS 3000
/* Bodies still missing at least this much are read straight into their
 * buffer instead of through the connection's read buffer. */
#define RPC_DIRECT_MIN (32u << 10)
#define RPC_RBUF_SIZE  (256u << 10)
#define RPC_SOCKBUF    (4 << 20)
/* The HELLO exchange uses this req_id; calls start at 1. */
#define RPC_HELLO_ID 0

/* ----- outgoing requests ----- */

struct rpc_write;

/* A call waiting for its response. It is in the conn's id table and
 * deadline heap; until it is written it is also in the send queue. */
struct rpc_pending {
    uint64_t req_id;
    uint64_t deadline; /* uv_now() ms */
    rpc_reply_cb cb;
    void *arg;
    struct dfs_wbuf wb;        /* encoded request while queued (sent: moved to w) */
    struct rpc_write *w;       /* its write while libuv holds it */
    struct rpc_pending *hnext; /* id table chain */
    struct rpc_pending *qnext; /* send queue */
    size_t heap_idx;
    bool sent;
};

/* One uv_write: header bytes we own plus borrowed bulk bytes. */
struct rpc_write {
    uv_write_t req;
    struct rpc_conn *c;
    struct dfs_wbuf wb;
    struct rpc_pending *p; /* the call it carries, NULL for replies */
    rpc_done_cb done;
    void *done_arg;
    bool close_after; /* refused HELLO: close once flushed */
};

/* rpc_req plus what only we need. */
struct rpc_ireq {
    struct rpc_req pub;
    uint64_t gen; /* socket generation it arrived on */
};

struct rpc_conn {
    uv_loop_t *loop;
    struct rpc_conn_opts opts;
    char *cluster;
    char host[256];
    int port;
    char peer[300];
    struct rpc_server *server;      /* accepting side */
    struct rpc_conn *snext, *sprev; /* server's list */
    bool outgoing;

    int refs;
    bool closed;   /* rpc_conn_close() was called (or accepted conn gone) */
    bool tcp_open; /* tcp handle initialized and not yet closed */
    bool tcp_closing;
    bool connected; /* TCP connected (before/after HELLO) */
    bool ready;     /* HELLO exchange done */
    bool down;      /* outgoing: an attempt failed or the link was lost since
                     * the last successful HELLO (opts.fail_fast) */
    bool gone_notified;
    bool refused;   /* we refused the peer's HELLO: ignore the rest */
    bool finalized; /* timers closed, owner reference dropped */
    uint64_t gen;   /* increments for every socket */
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_getaddrinfo_t gai_req;
    bool gai_pending;
    uv_timer_t retry_timer; /* backoff before reconnecting; connect timeout */
    uv_timer_t dl_timer;    /* earliest deadline */
    uint64_t dl_armed;      /* deadline the timer is armed for, 0 = none */
    uint32_t backoff_ms;
    bool hello_failed_logged;

    struct frame_rd rd;
    char *rbuf;

    /* calls */
    uint64_t next_id;
    struct rpc_pending **tab;
    size_t tab_size, count;
    struct rpc_pending **heap;
    size_t heap_len, heap_cap;
    struct rpc_pending *q_head, *q_tail;

    uint32_t peer_role;
    uint64_t peer_node;
    uint64_t bytes_in, bytes_out;
};

struct rpc_server {
    uv_loop_t *loop;
    uv_tcp_t tcp;
    struct rpc_conn_opts opts;
    char *cluster;
    int port;
    struct rpc_conn *conns;
};

static void conn_drop_socket(struct rpc_conn *c, int status);
static void conn_start_connect(struct rpc_conn *c);
static void retry_timer_cb(uv_timer_t *t);
static void connect_timeout_cb(uv_timer_t *t);
static void conn_flush_queue(struct rpc_conn *c);

/* ----- references ----- */

static void conn_free(struct rpc_conn *c)
{
    frame_rd_reset(&c->rd);
    free(c->rbuf);
    free(c->tab);
    free(c->heap);
    free(c->cluster);
    free(c);
}

void rpc_conn_ref(struct rpc_conn *c)
{
    c->refs++;
}

void rpc_conn_unref(struct rpc_conn *c)
{
    DFS_ASSERT(c->refs > 0);
    if (--c->refs == 0)
        conn_free(c);
}

/* ----- id table and deadline heap ----- */

static size_t tab_slot(const struct rpc_conn *c, uint64_t id)
{
    return (size_t)(id * 0x9E3779B97F4A7C15ull >> 20) & (c->tab_size - 1);
}

static int tab_grow(struct rpc_conn *c)
{
    size_t nsize = c->tab_size ? c->tab_size * 2 : 64;
    struct rpc_pending **nt = calloc(nsize, sizeof(*nt));
    if (nt == NULL)
        return -1;
    struct rpc_pending **old = c->tab;
    size_t osize = c->tab_size;
    c->tab = nt;
    c->tab_size = nsize;
    for (size_t i = 0; i < osize; i++) {
        struct rpc_pending *p = old[i], *next;
        for (; p != NULL; p = next) {
            next = p->hnext;
            size_t s = tab_slot(c, p->req_id);
            p->hnext = nt[s];
            nt[s] = p;
        }
    }
    free(old);
    return 0;
}

static struct rpc_pending *tab_find(struct rpc_conn *c, uint64_t id)
{
    if (c->tab_size == 0)
        return NULL;
    struct rpc_pending *p = c->tab[tab_slot(c, id)];
    while (p != NULL && p->req_id != id)
        p = p->hnext;
    return p;
}

static void tab_remove(struct rpc_conn *c, struct rpc_pending *p)
{
    struct rpc_pending **pp = &c->tab[tab_slot(c, p->req_id)];
    while (*pp != p)
        pp = &(*pp)->hnext;
    *pp = p->hnext;
    c->count--;
}

static void heap_swap(struct rpc_conn *c, size_t a, size_t b)
{
    struct rpc_pending *t = c->heap[a];
    c->heap[a] = c->heap[b];
    c->heap[b] = t;
    c->heap[a]->heap_idx = a;
    c->heap[b]->heap_idx = b;
}

static void heap_up(struct rpc_conn *c, size_t i)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (c->heap[parent]->deadline <= c->heap[i]->deadline)
            break;
        heap_swap(c, parent, i);
        i = parent;
    }
}

static void heap_down(struct rpc_conn *c, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < c->heap_len && c->heap[l]->deadline < c->heap[m]->deadline)
            m = l;
        if (r < c->heap_len && c->heap[r]->deadline < c->heap[m]->deadline)
            m = r;
        if (m == i)
            break;
        heap_swap(c, i, m);
        i = m;
    }
}

static void heap_remove(struct rpc_conn *c, struct rpc_pending *p)
{
    size_t i = p->heap_idx;
    c->heap_len--;
    if (i != c->heap_len) {
        c->heap[i] = c->heap[c->heap_len];
        c->heap[i]->heap_idx = i;
        heap_down(c, i);
        heap_up(c, i);
    }
}

static void dl_timer_cb(uv_timer_t *t);

/* Arm the timer for the earliest deadline, unless it already fires sooner
 * (a timer that fires early finds nothing due and re-arms). */
static void dl_arm(struct rpc_conn *c)
{
    if (c->heap_len == 0 || c->closed)
        return;
    uint64_t d = c->heap[0]->deadline;
    if (c->dl_armed != 0 && c->dl_armed <= d)
        return;
    uint64_t now = uv_now(c->loop);
    c->dl_armed = d;
    uv_timer_start(&c->dl_timer, dl_timer_cb, d > now ? d - now : 0, 0);
}

/* Take p out of every structure (not the send queue: see queue_remove). */
static void pending_unlink(struct rpc_conn *c, struct rpc_pending *p)
{
    tab_remove(c, p);
    heap_remove(c, p);
    if (p->w != NULL) {
        p->w->p = NULL;
        p->w = NULL;
    }
}

static void queue_remove(struct rpc_conn *c, struct rpc_pending *p)
{
    struct rpc_pending **pp = &c->q_head, *prev = NULL;
    while (*pp != NULL && *pp != p) {
        prev = *pp;
        pp = &(*pp)->qnext;
    }
    if (*pp == NULL)
        return;
    *pp = p->qnext;
    if (c->q_tail == p)
        c->q_tail = prev;
    p->qnext = NULL;
}

static void pending_finish(struct rpc_pending *p, int status, struct dfs_frame *f)
{
    codec_wbuf_free(&p->wb);
    rpc_reply_cb cb = p->cb;
    void *arg = p->arg;
    free(p);
    cb(arg, status, f);
}

/* Fail every call: sent ones only (socket lost), or all of them. */
static void fail_calls(struct rpc_conn *c, int status, bool queued_too)
{
    struct rpc_pending *list = NULL;

    for (size_t i = 0; i < c->tab_size; i++) {
        struct rpc_pending **pp = &c->tab[i];
        while (*pp != NULL) {
            struct rpc_pending *p = *pp;
            if (p->sent || queued_too) {
                *pp = p->hnext;
                c->count--;
                heap_remove(c, p);
                if (p->w != NULL) {
                    p->w->p = NULL;
                    p->w = NULL;
                }
                if (!p->sent)
                    queue_remove(c, p);
                p->hnext = list;
                list = p;
            } else {
                pp = &p->hnext;
            }
        }
    }
    rpc_conn_ref(c);
    while (list != NULL) {
        struct rpc_pending *p = list;
        list = p->hnext;
        pending_finish(p, status, NULL);
    }
    rpc_conn_unref(c);
}

static void dl_timer_cb(uv_timer_t *t)
{
    struct rpc_conn *c = t->data;
    uint64_t now = uv_now(c->loop);
    struct rpc_pending *list = NULL;
    bool stuck = false;

    c->dl_armed = 0;
    while (c->heap_len > 0 && c->heap[0]->deadline <= now) {
        struct rpc_pending *p = c->heap[0];
        if (p->w != NULL)
            stuck = true;
        pending_unlink(c, p);
        if (!p->sent)
            queue_remove(c, p);
        p->hnext = list;
        list = p;
    }
    rpc_conn_ref(c);
    /* Its bytes are still queued in libuv: the peer does not drain the
     * socket.  Close it first so libuv lets go of the bulk buffers. */
    if (stuck) {
        log_warn("rpc %s: request timed out before it could be sent; closing", c->peer);
        conn_drop_socket(c, DFS_ETIMEDOUT);
    }
    while (list != NULL) {
        struct rpc_pending *p = list;
        list = p->hnext;
        pending_finish(p, DFS_ETIMEDOUT, NULL);
    }
    dl_arm(c);
    rpc_conn_unref(c);
}

/* ----- writes ----- */

static void write_cb(uv_write_t *req, int status)
{
    struct rpc_write *w = req->data;
    struct rpc_conn *c = w->c;

    if (w->p != NULL)
        w->p->w = NULL;
    codec_wbuf_free(&w->wb);
    if (w->done != NULL)
        w->done(w->done_arg, status == 0 ? DFS_OK : DFS_ECANCELED);
    if (w->close_after)
        conn_drop_socket(c, DFS_EVERSION);
    free(w);
    rpc_conn_unref(c);
}

/* Queue wb on the socket; takes wb (and on failure runs done with
 * DFS_ECANCELED).  Returns DFS_OK or DFS_ECONN. */
static int conn_write(struct rpc_conn *c, struct dfs_wbuf *wb, struct rpc_pending *p,
                      rpc_done_cb done, void *done_arg, bool close_after)
{
    struct rpc_write *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        codec_wbuf_free(wb);
        if (done != NULL)
            done(done_arg, DFS_ECANCELED);
        return DFS_ENOMEM;
    }
    w->c = c;
    w->wb = *wb;
    memset(wb, 0, sizeof(*wb));
    w->p = p;
    w->done = done;
    w->done_arg = done_arg;
    w->close_after = close_after;
    w->req.data = w;

    uv_buf_t bufs[2];
    unsigned n = 1;
    bufs[0] = uv_buf_init(w->wb.data, (unsigned)w->wb.len);
    if (w->wb.bulk_len > 0)
        bufs[n++] = uv_buf_init((char *)w->wb.bulk, w->wb.bulk_len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, n, write_cb);
    if (rc != 0) {
        codec_wbuf_free(&w->wb);
        if (done != NULL)
            done(done_arg, DFS_ECANCELED);
        free(w);
        return DFS_ECONN;
    }
    c->bytes_out += w->wb.len + w->wb.bulk_len;
    if (p != NULL)
        p->w = w;
    rpc_conn_ref(c);
    return DFS_OK;
}

static void conn_flush_queue(struct rpc_conn *c)
{
    while (c->ready && c->q_head != NULL) {
        struct rpc_pending *p = c->q_head;
        c->q_head = p->qnext;
        if (c->q_head == NULL)
            c->q_tail = NULL;
        p->qnext = NULL;
        p->sent = true;
        if (conn_write(c, &p->wb, p, NULL, NULL, false) != DFS_OK) {
            /* The socket is unusable: the drop fails p (now "sent"). */
            conn_drop_socket(c, DFS_ECONN);
            return;
        }
    }
}

/* ----- socket life cycle ----- */

static void tcp_close_cb(uv_handle_t *h)
{
    struct rpc_conn *c = h->data;
    c->tcp_open = false;
    c->tcp_closing = false;
    if (!c->closed && c->outgoing) {
        /* Reconnect after the backoff. */
        uint32_t ms = c->backoff_ms;
        c->backoff_ms = ms * 2 > RPC_BACKOFF_MAX_MS ? RPC_BACKOFF_MAX_MS : ms * 2;
        uv_timer_start(&c->retry_timer, retry_timer_cb, ms, 0);
    }
    rpc_conn_unref(c);
}

static void server_forget(struct rpc_conn *c);
static void timer_close_cb(uv_handle_t *h);

/* The conn is gone for good: close its timers, leave the server's list and
 * drop the owner's reference.  Callers hold their own reference. */
static void conn_finalize(struct rpc_conn *c)
{
    if (c->finalized)
        return;
    c->finalized = true;
    c->closed = true;
    uv_close((uv_handle_t *)&c->retry_timer, timer_close_cb);
    uv_close((uv_handle_t *)&c->dl_timer, timer_close_cb);
    if (c->server != NULL)
        server_forget(c);
    rpc_conn_unref(c);
}

/* The current socket is gone (or must go): close it, fail the calls that
 * were sent on it, tell the owner.  Calls not yet sent stay queued on an
 * outgoing conn (reconnect). */
static void conn_drop_socket(struct rpc_conn *c, int status)
{
    if (!c->tcp_open || c->tcp_closing)
        return;
    bool was_ready = c->ready;
    c->tcp_closing = true;
    c->connected = false;
    c->ready = false;
    c->gen++;
    uv_timer_stop(&c->retry_timer);
    uv_close((uv_handle_t *)&c->tcp, tcp_close_cb);
    frame_rd_reset(&c->rd);
    rpc_conn_ref(c);
    if (c->outgoing && !c->closed)
        c->down = true;
    fail_calls(c, c->closed ? DFS_ECANCELED : DFS_ECONN,
               !c->outgoing || c->closed || c->opts.fail_fast);
    if (!c->outgoing) {
        /* An accepted conn never comes back. */
        c->closed = true;
        if (c->opts.on_disconnected != NULL && !c->gone_notified) {
            c->gone_notified = true;
            c->opts.on_disconnected(c, status);
        }
        conn_finalize(c);
    } else if (was_ready && !c->closed && c->opts.on_disconnected != NULL) {
        c->opts.on_disconnected(c, status);
    }
    rpc_conn_unref(c);
}

static void conn_protocol_error(struct rpc_conn *c, const char *reason)
{
    log_warn("rpc %s: %s; closing the connection", c->peer, reason);
    conn_drop_socket(c, DFS_EPROTO);
}

static void tune_socket(struct rpc_conn *c)
{
    uv_tcp_nodelay(&c->tcp, 1);
    uv_tcp_keepalive(&c->tcp, 1, 30);
    int sz = RPC_SOCKBUF;
    uv_send_buffer_size((uv_handle_t *)&c->tcp, &sz);
    sz = RPC_SOCKBUF;
    uv_recv_buffer_size((uv_handle_t *)&c->tcp, &sz);
}

/* ----- incoming frames ----- */

static void handle_request(struct rpc_conn *c, struct dfs_frame *f)
{
    const rpc_handler_fn *h = c->opts.handlers;
    if (h == NULL || f->op >= DFS_OP_MAX || h[f->op] == NULL || f->op == DFS_OP_HELLO) {
        if (f->kind == DFS_KIND_REQUEST) {
            struct dfs_wbuf wb;
            if (codec_encode_status(&wb, f->req_id, f->op, DFS_ENOSYS) == DFS_OK)
                conn_write(c, &wb, NULL, NULL, NULL, false);
        }
        codec_frame_free(f);
        return;
    }
    struct rpc_ireq *ir = malloc(sizeof(*ir));
    if (ir == NULL) {
        codec_frame_free(f);
        return;
    }
    ir->pub.conn = c;
    ir->pub.f = *f;
    ir->gen = c->gen;
    rpc_conn_ref(c);
    h[f->op](&ir->pub);
}

static void handle_response(struct rpc_conn *c, struct dfs_frame *f)
{
    struct rpc_pending *p = tab_find(c, f->req_id);
    if (p == NULL || !p->sent) {
        if (f->req_id != RPC_HELLO_ID && f->req_id < c->next_id) {
            /* A late answer to a call that already timed out. */
            log_debug("rpc %s: dropping late response %llu", c->peer,
                      (unsigned long long)f->req_id);
            codec_frame_free(f);
            return;
        }
        char why[96];
        snprintf(why, sizeof(why), "response to unknown request %llu",
                 (unsigned long long)f->req_id);
        codec_frame_free(f);
        conn_protocol_error(c, why);
        return;
    }
    struct dfs_frame *rf = malloc(sizeof(*rf));
    if (rf == NULL) {
        codec_frame_free(f);
        return;
    }
    *rf = *f;
    pending_unlink(c, p);
    pending_finish(p, DFS_OK, rf);
}

/* Accepting side: the first frame must be HELLO. */
static void handle_hello_req(struct rpc_conn *c, struct dfs_frame *f)
{
    const struct dfs_msg_hello *h = f->body;
    struct dfs_msg_hello_resp resp;
    char msg[128];

    memset(&resp, 0, sizeof(resp));
    resp.proto_version = DFS_PROTO_VERSION;
    resp.role = c->opts.role;
    resp.node_id = c->opts.node_id;
    if (h->proto_version != DFS_PROTO_VERSION) {
        snprintf(msg, sizeof(msg), "protocol version %u, expected %u", h->proto_version,
                 DFS_PROTO_VERSION);
        resp.status = DFS_EVERSION;
        resp.message.ptr = msg;
        resp.message.len = (uint32_t)strlen(msg);
    } else if (c->opts.on_hello != NULL) {
        c->opts.on_hello(c, h, &resp);
    }
    c->peer_role = h->role;
    c->peer_node = h->node_id;

    struct dfs_wbuf wb;
    int rc = codec_encode(&wb, DFS_KIND_RESPONSE, f->req_id, DFS_OP_HELLO, &resp);
    codec_frame_free(f);
    if (rc != DFS_OK) {
        conn_protocol_error(c, "cannot encode the HELLO answer");
        return;
    }
    if (resp.status != DFS_OK) {
        log_warn("rpc %s: refused HELLO: %s%s%.*s", c->peer, dfs_strerror((int)resp.status),
                 resp.message.len ? ": " : "", (int)resp.message.len,
                 resp.message.ptr ? resp.message.ptr : "");
        /* Stop reading; close once the answer is flushed. */
        c->refused = true;
        uv_read_stop((uv_stream_t *)&c->tcp);
        conn_write(c, &wb, NULL, NULL, NULL, true);
        return;
    }
    c->ready = true;
    uv_timer_stop(&c->retry_timer);
    if (conn_write(c, &wb, NULL, NULL, NULL, false) == DFS_OK)
        conn_flush_queue(c);
}

/* Connecting side: the answer to our HELLO. */
static void handle_hello_resp(struct rpc_conn *c, struct dfs_frame *f)
{
    const struct dfs_msg_hello_resp *r = f->body;
    if (f->kind != DFS_KIND_RESPONSE || f->op != DFS_OP_HELLO || f->req_id != RPC_HELLO_ID) {
        codec_frame_free(f);
        conn_protocol_error(c, "first frame is not the HELLO answer");
        return;
    }
    if (r->status != DFS_OK) {
        /* Log once per failure streak, not on every reconnect. */
        if (!c->hello_failed_logged)
            log_warn("rpc %s: HELLO refused: %s%s%s", c->peer, dfs_strerror((int)r->status),
                     r->message.len ? ": " : "", r->message.len ? r->message.ptr : "");
        c->hello_failed_logged = true;
        int st = (int)r->status;
        codec_frame_free(f);
        conn_drop_socket(c, st);
        /* Nobody will take these calls soon: fail them instead of letting
         * them sit until their deadline. */
        fail_calls(c, DFS_ECONN, true);
        return;
    }
    c->hello_failed_logged = false;
    c->peer_role = r->role;
    c->peer_node = r->node_id;
    c->ready = true;
    c->down = false;
    c->backoff_ms = RPC_BACKOFF_MIN_MS;
    uv_timer_stop(&c->retry_timer);
    uint64_t gen = c->gen;
    rpc_conn_ref(c);
    if (c->opts.on_connected != NULL)
        c->opts.on_connected(c, r);
    codec_frame_free(f);
    if (c->gen == gen && !c->closed)
        conn_flush_queue(c);
    rpc_conn_unref(c);
}

/* frame_fn: one complete body.  Returns nonzero to stop reading. */
static int on_frame(void *arg, char *body, uint32_t len)
{
    struct rpc_conn *c = arg;
    struct dfs_frame f;
    char err[160];
    uint64_t gen = c->gen;

    if (c->refused) {
        free(body);
        return 1;
    }
    memset(&f, 0, sizeof(f));
    int rc = codec_decode(body, len, &f, err, sizeof(err));
    if (rc == DFS_ENOSYS && c->ready && f.kind != DFS_KIND_RESPONSE) {
        free(body);
        if (f.kind == DFS_KIND_REQUEST) {
            struct dfs_wbuf wb;
            if (codec_encode_status(&wb, f.req_id, f.op, DFS_ENOSYS) == DFS_OK)
                conn_write(c, &wb, NULL, NULL, NULL, false);
        }
        return 0;
    }
    if (rc != DFS_OK) {
        free(body);
        conn_protocol_error(c, err);
        return 1;
    }
    if (!c->ready) {
        if (c->outgoing) {
            handle_hello_resp(c, &f);
        } else if (f.kind == DFS_KIND_REQUEST && f.op == DFS_OP_HELLO) {
            handle_hello_req(c, &f);
        } else {
            codec_frame_free(&f);
            conn_protocol_error(c, "first frame is not HELLO");
        }
    } else if (f.kind == DFS_KIND_RESPONSE) {
        handle_response(c, &f);
    } else {
        handle_request(c, &f);
    }
    /* Stop if a callback closed or replaced the socket. */
    return (c->gen != gen || !c->tcp_open || c->tcp_closing || !c->connected || c->refused) ? 1 : 0;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct rpc_conn *c = h->data;
    size_t room;
    char *p = frame_rd_direct(&c->rd, RPC_DIRECT_MIN, &room);
    if (p != NULL) {
        *buf = uv_buf_init(p, (unsigned)room);
        return;
    }
    if (c->rbuf == NULL)
        c->rbuf = malloc(RPC_RBUF_SIZE);
    *buf = uv_buf_init(c->rbuf, c->rbuf ? RPC_RBUF_SIZE : 0);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct rpc_conn *c = s->data;
    char err[160];

    if (nread == 0)
        return;
    if (nread < 0) {
        if (nread == UV_ENOBUFS) {
            log_warn("rpc %s: out of memory for the read buffer; closing", c->peer);
        } else if (nread != UV_EOF) {
            log_info("rpc %s: connection lost: %s", c->peer, uv_strerror((int)nread));
        } else {
            log_debug("rpc %s: connection closed by peer", c->peer);
        }
        conn_drop_socket(c, DFS_ECONN);
        return;
    }
    c->bytes_in += (uint64_t)nread;
    rpc_conn_ref(c);
    int rc;
    if (buf->base != c->rbuf)
        rc = frame_rd_direct_done(&c->rd, (size_t)nread, on_frame, c);
    else
        rc = frame_rd_feed(&c->rd, buf->base, (size_t)nread, on_frame, c, err, sizeof(err));
    if (rc < 0)
        conn_protocol_error(c, err);
    rpc_conn_unref(c);
}

static int conn_start_reading(struct rpc_conn *c)
{
    frame_rd_init(&c->rd, c->opts.max_frame_in ? c->opts.max_frame_in : DFS_MAX_FRAME_ANY);
    return uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

/* ----- outgoing connections ----- */

static void connect_cb(uv_connect_t *req, int status)
{
    struct rpc_conn *c = req->data;

    if (c->closed || !c->tcp_open || c->tcp_closing) {
        rpc_conn_unref(c);
        return;
    }
    if (status != 0) {
        log_debug("rpc %s: connect: %s", c->peer, uv_strerror(status));
        conn_drop_socket(c, DFS_ECONN);
        rpc_conn_unref(c);
        return;
    }
    c->connected = true;
    tune_socket(c);
    if (conn_start_reading(c) != 0) {
        conn_drop_socket(c, DFS_ECONN);
        rpc_conn_unref(c);
        return;
    }
    struct dfs_msg_hello h;
    memset(&h, 0, sizeof(h));
    h.proto_version = DFS_PROTO_VERSION;
    h.role = c->opts.role;
    h.node_id = c->opts.node_id;
    if (c->cluster != NULL) {
        h.cluster.ptr = c->cluster;
        h.cluster.len = (uint32_t)strlen(c->cluster);
    }
    struct dfs_wbuf wb;
    if (codec_encode(&wb, DFS_KIND_REQUEST, RPC_HELLO_ID, DFS_OP_HELLO, &h) != DFS_OK ||
        conn_write(c, &wb, NULL, NULL, NULL, false) != DFS_OK)
        conn_drop_socket(c, DFS_ECONN);
    rpc_conn_unref(c);
}

/* The connect timeout covers connect + HELLO (on the accepting side: the
 * time from accept to the peer's HELLO). */
static void connect_timeout_cb(uv_timer_t *t)
{
    struct rpc_conn *c = t->data;
    if (!c->ready) {
        log_debug("rpc %s: connect timed out", c->peer);
        conn_drop_socket(c, DFS_ETIMEDOUT);
    }
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct rpc_conn *c = req->data;
    c->gai_pending = false;
    if (c->closed) {
        uv_freeaddrinfo(res);
        rpc_conn_unref(c);
        return;
    }
    int rc = status;
    if (rc == 0) {
        rc = uv_tcp_init(c->loop, &c->tcp);
        if (rc == 0) {
            c->tcp.data = c;
            c->tcp_open = true;
            c->tcp_closing = false;
            rpc_conn_ref(c);
            c->connect_req.data = c;
            rc = uv_tcp_connect(&c->connect_req, &c->tcp, res->ai_addr, connect_cb);
            if (rc == 0) {
                rpc_conn_ref(c);
                uint32_t to = c->opts.connect_timeout_ms ? c->opts.connect_timeout_ms
                                                         : RPC_CONNECT_TIMEOUT_MS;
                uv_timer_start(&c->retry_timer, connect_timeout_cb, to, 0);
            } else {
                log_debug("rpc %s: connect: %s", c->peer, uv_strerror(rc));
                conn_drop_socket(c, DFS_ECONN); /* schedules the retry */
            }
            uv_freeaddrinfo(res);
            rpc_conn_unref(c);
            return;
        }
    }
    log_debug("rpc %s: %s", c->peer, uv_strerror(rc));
    uv_freeaddrinfo(res);
    c->down = true;
    if (c->opts.fail_fast)
        fail_calls(c, DFS_ECONN, true);
    uint32_t ms = c->backoff_ms;
    c->backoff_ms = ms * 2 > RPC_BACKOFF_MAX_MS ? RPC_BACKOFF_MAX_MS : ms * 2;
    uv_timer_start(&c->retry_timer, retry_timer_cb, ms, 0);
    rpc_conn_unref(c);
}

static void conn_start_connect(struct rpc_conn *c)
{
    if (c->closed || c->tcp_open || c->gai_pending)
        return;
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    char port[16];
    snprintf(port, sizeof(port), "%d", c->port);
    c->gai_req.data = c;
    rpc_conn_ref(c);
    c->gai_pending = true;
    int rc = uv_getaddrinfo(c->loop, &c->gai_req, gai_cb, c->host, port, &hints);
    if (rc != 0) {
        c->gai_pending = false;
        rpc_conn_unref(c);
        uv_timer_start(&c->retry_timer, retry_timer_cb, c->backoff_ms, 0);
    }
}

static void retry_timer_cb(uv_timer_t *t)
{
    conn_start_connect(t->data);
}

static void timer_close_cb(uv_handle_t *h)
{
    rpc_conn_unref(h->data);
}

static struct rpc_conn *conn_new(uv_loop_t *loop, const struct rpc_conn_opts *opts)
{
    struct rpc_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->loop = loop;
    c->opts = *opts;
    if (opts->cluster != NULL) {
        c->cluster = strdup(opts->cluster);
        if (c->cluster == NULL) {
            free(c);
            return NULL;
        }
        c->opts.cluster = c->cluster;
    }
    c->refs = 3; /* owner + two timers */
    c->next_id = 1;
    c->backoff_ms = RPC_BACKOFF_MIN_MS;
    uv_timer_init(loop, &c->retry_timer);
    uv_timer_init(loop, &c->dl_timer);
    c->retry_timer.data = c;
    c->dl_timer.data = c;
    frame_rd_init(&c->rd, opts->max_frame_in ? opts->max_frame_in : DFS_MAX_FRAME_ANY);
    return c;
}

struct rpc_conn *rpc_connect(uv_loop_t *loop, const char *host, int port,
                             const struct rpc_conn_opts *opts)
{
    struct rpc_conn *c = conn_new(loop, opts);
    if (c == NULL)
        return NULL;
    c->outgoing = true;
    snprintf(c->host, sizeof(c->host), "%s", host);
    c->port = port;
    snprintf(c->peer, sizeof(c->peer), "%s:%d", host, port);
    conn_start_connect(c);
    return c;
}

void rpc_conn_close(struct rpc_conn *c)
{
    if (c == NULL || c->finalized)
        return;
    rpc_conn_ref(c);
    c->closed = true;
    if (c->gai_pending)
        uv_cancel((uv_req_t *)&c->gai_req);
    conn_drop_socket(c, DFS_ECANCELED);
    fail_calls(c, DFS_ECANCELED, true);
    conn_finalize(c);
    rpc_conn_unref(c);
}

bool rpc_conn_ready(const struct rpc_conn *c)
{
    return c->ready;
}

void *rpc_conn_data(const struct rpc_conn *c)
{
    return c->opts.data;
}

void rpc_conn_set_data(struct rpc_conn *c, void *data)
{
    c->opts.data = data;
}

uint32_t rpc_conn_peer_role(const struct rpc_conn *c)
{
    return c->peer_role;
}

uint64_t rpc_conn_peer_node(const struct rpc_conn *c)
{
    return c->peer_node;
}

const char *rpc_conn_peer_name(const struct rpc_conn *c)
{
    return c->peer;
}

uint64_t rpc_conn_bytes_in(const struct rpc_conn *c)
{
    return c->bytes_in;
}

uint64_t rpc_conn_bytes_out(const struct rpc_conn *c)
{
    return c->bytes_out;
}

/* ----- listening ----- */

static void server_forget(struct rpc_conn *c)
{
    struct rpc_server *s = c->server;
    if (s == NULL)
        return;
    if (c->sprev != NULL)
        c->sprev->snext = c->snext;
    else
        s->conns = c->snext;
    if (c->snext != NULL)
        c->snext->sprev = c->sprev;
    c->snext = c->sprev = NULL;
    c->server = NULL;
}

static void accept_cb(uv_stream_t *ls, int status)
{
    struct rpc_server *s = ls->data;
    if (status != 0) {
        log_warn("rpc: accept on port %d: %s", s->port, uv_strerror(status));
        return;
    }
    struct rpc_conn *c = conn_new(s->loop, &s->opts);
    if (c == NULL)
        return;
    if (uv_tcp_init(s->loop, &c->tcp) != 0) {
        /* Nothing to do but drop it; closing the timers frees c. */
        conn_finalize(c);
        return;
    }
    c->tcp.data = c;
    c->tcp_open = true;
    rpc_conn_ref(c); /* the tcp handle */
    if (uv_accept(ls, (uv_stream_t *)&c->tcp) != 0) {
        c->tcp_closing = true;
        uv_close((uv_handle_t *)&c->tcp, tcp_close_cb);
        conn_finalize(c);
        return;
    }
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof(ip));
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof(ip));
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
    }
    snprintf(c->peer, sizeof(c->peer), "%s:%d", ip, port);
    snprintf(c->host, sizeof(c->host), "%s", ip);
    c->port = port;
    c->connected = true;
    c->server = s;
    c->snext = s->conns;
    if (s->conns != NULL)
        s->conns->sprev = c;
    s->conns = c;
    tune_socket(c);
    if (conn_start_reading(c) != 0) {
        conn_drop_socket(c, DFS_ECONN);
        return;
    }
    /* A peer that connects and never says HELLO does not keep the slot. */
    uv_timer_start(&c->retry_timer, connect_timeout_cb,
                   c->opts.connect_timeout_ms ? c->opts.connect_timeout_ms : RPC_CONNECT_TIMEOUT_MS,
                   0);
}

static void server_close_cb(uv_handle_t *h)
{
    struct rpc_server *s = h->data;
    free(s->cluster);
    free(s);
}

struct rpc_server *rpc_listen(uv_loop_t *loop, const char *host, int port,
                              const struct rpc_conn_opts *opts, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    int rc;

    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
        snprintf(err, errlen, "%s:%d: not a numeric IP address", host, port);
        return NULL;
    }
    struct rpc_server *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(err, errlen, "%s:%d: out of memory", host, port);
        return NULL;
    }
    s->loop = loop;
    s->opts = *opts;
    if (opts->cluster != NULL) {
        s->cluster = strdup(opts->cluster);
        s->opts.cluster = s->cluster;
    }
    uv_tcp_init(loop, &s->tcp);
    s->tcp.data = s;
    if ((rc = uv_tcp_bind(&s->tcp, (struct sockaddr *)&ss, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&s->tcp, 512, accept_cb)) != 0) {
        snprintf(err, errlen, "%s:%d: %s", host, port, uv_strerror(rc));
        /* The handle is initialized: free in its close callback.  Close
         * callbacks run on the next loop turn; mark the failure for it. */
        uv_close((uv_handle_t *)&s->tcp, server_close_cb);
        return NULL;
    }
    struct sockaddr_storage bound;
    int len = sizeof(bound);
    uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&bound, &len);
    s->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    return s;
}

int rpc_server_port(const struct rpc_server *s)
{
    return s->port;
}

void rpc_server_close(struct rpc_server *s)
{
    if (s == NULL)
        return;
    while (s->conns != NULL)
        rpc_conn_close(s->conns); /* leaves the list */
    uv_close((uv_handle_t *)&s->tcp, server_close_cb);
}

/* ----- calls ----- */

static int call_queue(struct rpc_conn *c, struct dfs_wbuf *wb, uint32_t timeout_ms, rpc_reply_cb cb,
                      void *arg)
{
    if (c->closed) {
        codec_wbuf_free(wb);
        return c->outgoing ? DFS_ECANCELED : DFS_ECONN;
    }
    if (c->opts.fail_fast && c->outgoing && !c->ready && c->down) {
        codec_wbuf_free(wb);
        return DFS_ECONN;
    }
    if (timeout_ms == 0)
        timeout_ms = 1;
    if ((c->count + 1) * 2 > c->tab_size && tab_grow(c) != 0)
        goto err_nomem;
    if (c->heap_len == c->heap_cap) {
        size_t ncap = c->heap_cap ? c->heap_cap * 2 : 64;
        struct rpc_pending **nh = realloc(c->heap, ncap * sizeof(*nh));
        if (nh == NULL)
            goto err_nomem;
        c->heap = nh;
        c->heap_cap = ncap;
    }
    struct rpc_pending *p = calloc(1, sizeof(*p));
    if (p == NULL)
        goto err_nomem;
    p->req_id = c->next_id++;
    if (codec_wbuf_set_req_id(wb, p->req_id) != DFS_OK) {
        free(p);
        codec_wbuf_free(wb);
        return DFS_EINVAL;
    }
    p->deadline = uv_now(c->loop) + timeout_ms;
    p->cb = cb;
    p->arg = arg;
    p->wb = *wb;
    memset(wb, 0, sizeof(*wb));
    size_t slot = tab_slot(c, p->req_id);
    p->hnext = c->tab[slot];
    c->tab[slot] = p;
    c->count++;
    p->heap_idx = c->heap_len;
    c->heap[c->heap_len++] = p;
    heap_up(c, p->heap_idx);
    if (c->q_tail != NULL)
        c->q_tail->qnext = p;
    else
        c->q_head = p;
    c->q_tail = p;
    dl_arm(c);
    if (c->ready)
        conn_flush_queue(c);
    return DFS_OK;

err_nomem:
    codec_wbuf_free(wb);
    return DFS_ENOMEM;
}

int rpc_call_encoded(struct rpc_conn *c, struct dfs_wbuf *wb, uint32_t timeout_ms, rpc_reply_cb cb,
                     void *arg)
{
    return call_queue(c, wb, timeout_ms, cb, arg);
}

int rpc_call(struct rpc_conn *c, unsigned op, const void *body, uint32_t timeout_ms,
             rpc_reply_cb cb, void *arg)
{
    struct dfs_wbuf wb;
    if (c->closed)
        return c->outgoing ? DFS_ECANCELED : DFS_ECONN;
    int rc = codec_encode(&wb, DFS_KIND_REQUEST, UINT64_MAX, op, body);
    if (rc != DFS_OK)
        return rc;
    return call_queue(c, &wb, timeout_ms, cb, arg);
}

int rpc_push(struct rpc_conn *c, unsigned op, const void *body)
{
    if (!c->ready)
        return c->closed ? DFS_ECANCELED : DFS_ECONN;
    struct dfs_wbuf wb;
    int rc = codec_encode(&wb, DFS_KIND_PUSH, 0, op, body);
    if (rc != DFS_OK)
        return rc;
    return conn_write(c, &wb, NULL, NULL, NULL, false);
}

/* ----- replies ----- */

void rpc_req_free(struct rpc_req *req)
{
    if (req == NULL)
        return;
    struct rpc_conn *c = req->conn;
    codec_frame_free(&req->f);
    free(req);
    rpc_conn_unref(c);
}

/* Reply still deliverable on the socket the request came in on? */
static bool req_live(const struct rpc_req *req)
{
    const struct rpc_ireq *ir = (const struct rpc_ireq *)req;
    const struct rpc_conn *c = req->conn;
    return c->ready && !c->closed && c->gen == ir->gen;
}

int rpc_reply(struct rpc_req *req, const void *body, rpc_done_cb done, void *done_arg)
{
    struct rpc_conn *c = req->conn;
    int rc = DFS_ECANCELED;

    if (req->f.kind == DFS_KIND_REQUEST && req_live(req)) {
        struct dfs_wbuf wb;
        rc = codec_encode(&wb, DFS_KIND_RESPONSE, req->f.req_id, req->f.op, body);
        if (rc == DFS_OK) {
            rc = conn_write(c, &wb, NULL, done, done_arg, false);
            done = NULL; /* conn_write ran or will run it */
            if (rc != DFS_OK)
                rc = DFS_ECANCELED;
        } else {
            log_warn("rpc %s: cannot encode the %s answer: %s", c->peer,
                     dfs_op_name(req->f.op) ? dfs_op_name(req->f.op) : "?", dfs_strerror(rc));
            struct dfs_wbuf sw;
            if (codec_encode_status(&sw, req->f.req_id, req->f.op, DFS_EIO) == DFS_OK)
                conn_write(c, &sw, NULL, NULL, NULL, false);
        }
    }
    if (done != NULL)
        done(done_arg, rc == DFS_OK ? DFS_OK : DFS_ECANCELED);
    rpc_req_free(req);
    return rc;
}

int rpc_reply_status(struct rpc_req *req, uint32_t status)
{
    struct rpc_conn *c = req->conn;
    int rc = DFS_ECANCELED;
    if (req->f.kind == DFS_KIND_REQUEST && req_live(req)) {
        struct dfs_wbuf wb;
        rc = codec_encode_status(&wb, req->f.req_id, req->f.op, status);
        if (rc == DFS_OK)
            rc = conn_write(c, &wb, NULL, NULL, NULL, false);
    }
    rpc_req_free(req);
    return rc == DFS_OK ? DFS_OK : DFS_ECANCELED;
}

void rpc_frame_release(struct dfs_frame *f)
{
    if (f == NULL)
        return;
    codec_frame_free(f);
    free(f);
}

/* ----- rpc_mt: a loop in its own thread ----- */

struct mt_job {
    void (*fn)(void *arg);
    void *arg;
    struct mt_job *next;
};

struct mt_conn {
    struct rpc_conn *c;
    struct mt_conn *next;
};

struct rpc_mt {
    uv_loop_t loop;
    uv_async_t async;
    pthread_t thread;
    char name[16];
    pthread_mutex_t mu;
    struct mt_job *head, *tail; /* FIFO, protected by mu */
    struct mt_conn *conns;      /* loop thread only */
};

static void mt_async_cb(uv_async_t *a)
{
    struct rpc_mt *mt = a->data;
    for (;;) {
        pthread_mutex_lock(&mt->mu);
        struct mt_job *j = mt->head;
        mt->head = NULL;
        mt->tail = NULL;
        pthread_mutex_unlock(&mt->mu);
        if (j == NULL)
            return;
        while (j != NULL) {
            struct mt_job *next = j->next;
            j->fn(j->arg);
            free(j);
            j = next;
        }
    }
}

static void *mt_main(void *arg)
{
    struct rpc_mt *mt = arg;
    pthread_setname_np(pthread_self(), mt->name);
    uv_run(&mt->loop, UV_RUN_DEFAULT);
    return NULL;
}

struct rpc_mt *rpc_mt_start(const char *name)
{
    struct rpc_mt *mt = calloc(1, sizeof(*mt));
    if (mt == NULL)
        return NULL;
    snprintf(mt->name, sizeof(mt->name), "%s", name ? name : "rpc");
    if (uv_loop_init(&mt->loop) != 0)
        goto err_free;
    if (uv_async_init(&mt->loop, &mt->async, mt_async_cb) != 0)
        goto err_loop;
    mt->async.data = mt;
    pthread_mutex_init(&mt->mu, NULL);
    if (pthread_create(&mt->thread, NULL, mt_main, mt) != 0)
        goto err_async;
    return mt;

err_async:
    pthread_mutex_destroy(&mt->mu);
    uv_close((uv_handle_t *)&mt->async, NULL);
    uv_run(&mt->loop, UV_RUN_DEFAULT);
err_loop:
    uv_loop_close(&mt->loop);
err_free:
    free(mt);
    return NULL;
}

uv_loop_t *rpc_mt_loop(struct rpc_mt *mt)
{
    return &mt->loop;
}

/* Queue fn(arg) for the loop thread (FIFO).  Returns 0 or -1 (no memory). */
static int mt_post(struct rpc_mt *mt, void (*fn)(void *), void *arg)
{
    struct mt_job *j = malloc(sizeof(*j));
    if (j == NULL)
        return -1;
    j->fn = fn;
    j->arg = arg;
    j->next = NULL;
    pthread_mutex_lock(&mt->mu);
    if (mt->tail != NULL)
        mt->tail->next = j;
    else
        mt->head = j;
    mt->tail = j;
    pthread_mutex_unlock(&mt->mu);
    uv_async_send(&mt->async);
    return 0;
}

struct mt_sync {
    void (*fn)(void *arg);
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
};

static void mt_sync_run(void *arg)
{
    struct mt_sync *s = arg;
    s->fn(s->arg);
    pthread_mutex_lock(&s->mu);
    s->done = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void rpc_mt_exec(struct rpc_mt *mt, void (*fn)(void *arg), void *arg)
{
    if (pthread_equal(pthread_self(), mt->thread)) {
        fn(arg);
        return;
    }
    struct mt_sync s = {.fn = fn, .arg = arg, .done = false};
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    while (mt_post(mt, mt_sync_run, &s) != 0)
        usleep(1000);
    pthread_mutex_lock(&s.mu);
    while (!s.done)
        pthread_cond_wait(&s.cv, &s.mu);
    pthread_mutex_unlock(&s.mu);
    pthread_cond_destroy(&s.cv);
    pthread_mutex_destroy(&s.mu);
}

struct mt_connect_args {
    struct rpc_mt *mt;
    const char *host;
    int port;
    const struct rpc_conn_opts *opts;
    struct rpc_conn *c;
};

static void mt_connect_fn(void *arg)
{
    struct mt_connect_args *a = arg;
    struct mt_conn *mc = malloc(sizeof(*mc));
    if (mc == NULL)
        return;
    a->c = rpc_connect(&a->mt->loop, a->host, a->port, a->opts);
    if (a->c == NULL) {
        free(mc);
        return;
    }
    mc->c = a->c;
    mc->next = a->mt->conns;
    a->mt->conns = mc;
}

struct rpc_conn *rpc_mt_connect(struct rpc_mt *mt, const char *host, int port,
                                const struct rpc_conn_opts *opts)
{
    struct mt_connect_args a = {.mt = mt, .host = host, .port = port, .opts = opts};
    rpc_mt_exec(mt, mt_connect_fn, &a);
    return a.c;
}

struct mt_close_args {
    struct rpc_mt *mt;
    struct rpc_conn *c;
};

static void mt_close_fn(void *arg)
{
    struct mt_close_args *a = arg;
    for (struct mt_conn **pp = &a->mt->conns; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->c == a->c) {
            struct mt_conn *mc = *pp;
            *pp = mc->next;
            free(mc);
            rpc_conn_close(a->c);
            break;
        }
    }
    free(a);
}

void rpc_mt_close(struct rpc_mt *mt, struct rpc_conn *c)
{
    if (c == NULL)
        return;
    struct mt_close_args *a;
    while ((a = malloc(sizeof(*a))) == NULL)
        usleep(1000);
    a->mt = mt;
    a->c = c;
    /* Posted, not waited for: keeps the order with calls posted before. */
    while (mt_post(mt, mt_close_fn, a) != 0)
        usleep(1000);
}

struct mt_ready_args {
    struct rpc_conn *c;
    bool ready;
};

static void mt_ready_fn(void *arg)
{
    struct mt_ready_args *a = arg;
    a->ready = rpc_conn_ready(a->c);
}

bool rpc_mt_ready(struct rpc_mt *mt, struct rpc_conn *c)
{
    struct mt_ready_args a = {.c = c, .ready = false};
    rpc_mt_exec(mt, mt_ready_fn, &a);
    return a.ready;
}

static void mt_stop_fn(void *arg)
{
    struct rpc_mt *mt = arg;
    while (mt->conns != NULL) {
        struct mt_conn *mc = mt->conns;
        mt->conns = mc->next;
        rpc_conn_close(mc->c);
        free(mc);
    }
    uv_close((uv_handle_t *)&mt->async, NULL);
}

void rpc_mt_stop(struct rpc_mt *mt)
{
    if (mt == NULL)
        return;
    /* Runs last (FIFO); then the loop has no handles left and returns. */
    while (mt_post(mt, mt_stop_fn, mt) != 0)
        usleep(1000);
    pthread_join(mt->thread, NULL);
    /* Jobs posted after the stop (a caller bug) are dropped. */
    struct mt_job *j = mt->head;
    while (j != NULL) {
        struct mt_job *next = j->next;
        free(j);
        j = next;
    }
    if (uv_loop_close(&mt->loop) != 0)
        log_warn("rpc_mt %s: loop still has handles at stop", mt->name);
    pthread_mutex_destroy(&mt->mu);
    free(mt);
}

/* ----- batches ----- */

void rpc_batch_init(struct rpc_batch *b)
{
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    b->pending = 0;
}

void rpc_batch_destroy(struct rpc_batch *b)
{
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
}

static void batch_done(struct rpc_result *r, int status, struct dfs_frame *reply)
{
    struct rpc_batch *b = r->batch;
    r->status = status;
    r->reply = reply;
    pthread_mutex_lock(&b->mu);
    if (--b->pending == 0)
        pthread_cond_broadcast(&b->cv);
    /* The waiter may free b as soon as the lock is released. */
    pthread_mutex_unlock(&b->mu);
}

static void submit_reply_cb(void *arg, int status, struct dfs_frame *reply)
{
    batch_done(arg, status, reply);
}

struct mt_submit {
    struct rpc_conn *c;
    struct dfs_wbuf wb;
    uint32_t timeout_ms;
    struct rpc_result *r;
};

static void mt_submit_fn(void *arg)
{
    struct mt_submit *s = arg;
    int rc = rpc_call_encoded(s->c, &s->wb, s->timeout_ms, submit_reply_cb, s->r);
    if (rc != DFS_OK)
        batch_done(s->r, rc, NULL);
    free(s);
}

int rpc_mt_submit(struct rpc_mt *mt, struct rpc_conn *c, unsigned op, const void *body,
                  uint32_t timeout_ms, struct rpc_batch *b, struct rpc_result *r)
{
    r->batch = b;
    r->reply = NULL;
    struct mt_submit *s = malloc(sizeof(*s));
    if (s == NULL) {
        r->status = DFS_ENOMEM;
        return DFS_ENOMEM;
    }
    /* The placeholder id forces the fixed-size form (see codec_wbuf_set_req_id). */
    int rc = codec_encode(&s->wb, DFS_KIND_REQUEST, UINT64_MAX, op, body);
    if (rc != DFS_OK) {
        free(s);
        r->status = rc;
        return rc;
    }
    s->c = c;
    s->timeout_ms = timeout_ms;
    s->r = r;
    r->status = DFS_EAGAIN; /* until it completes */
    pthread_mutex_lock(&b->mu);
    b->pending++;
    pthread_mutex_unlock(&b->mu);
    if (mt_post(mt, mt_submit_fn, s) != 0) {
        codec_wbuf_free(&s->wb);
        free(s);
        pthread_mutex_lock(&b->mu);
        b->pending--;
        pthread_mutex_unlock(&b->mu);
        r->status = DFS_ENOMEM;
        return DFS_ENOMEM;
    }
    return DFS_OK;
}

void rpc_batch_wait(struct rpc_batch *b)
{
    pthread_mutex_lock(&b->mu);
    while (b->pending > 0)
        pthread_cond_wait(&b->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
}

int rpc_mt_call(struct rpc_mt *mt, struct rpc_conn *c, unsigned op, const void *body,
                uint32_t timeout_ms, struct dfs_frame **reply)
{
    struct rpc_batch b;
    struct rpc_result r;
    rpc_batch_init(&b);
    int rc = rpc_mt_submit(mt, c, op, body, timeout_ms, &b, &r);
    if (rc == DFS_OK) {
        rpc_batch_wait(&b);
        rc = r.status;
    }
    rpc_batch_destroy(&b);
    *reply = rc == DFS_OK ? r.reply : NULL;
    if (rc != DFS_OK)
        rpc_frame_release(r.reply);
    return rc;
}
