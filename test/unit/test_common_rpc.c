/* test_common_rpc.c - rpc.c over real loopback sockets: framing, deadlines, failures. */
#include "checksum.h"
#include "codec.h"
#include "frame.h"
#include "log.h"
#include "rpc.h"
#include "testlib.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ----- server side handlers (run on whichever loop serves) ----- */

#define MAX_HELD 64
static struct rpc_req *held[MAX_HELD];
static _Atomic int nheld;
static _Atomic int nserved;

static void h_ping(struct rpc_req *req)
{
    atomic_fetch_add(&nserved, 1);
    rpc_reply_status(req, DFS_OK);
}

static void h_getattr(struct rpc_req *req)
{
    const struct dfs_msg_ino_req *b = req->f.body;
    struct dfs_msg_attr_resp r;
    memset(&r, 0, sizeof(r));
    r.attr.ino = b->ino;
    r.attr.size = b->cred.seq;
    atomic_fetch_add(&nserved, 1);
    rpc_reply(req, &r, NULL, NULL);
}

static void h_write(struct rpc_req *req)
{
    const struct dfs_msg_write *b = req->f.body;
    struct dfs_msg_write_resp r;
    memset(&r, 0, sizeof(r));
    r.length = b->data.len;
    if (csum_buf(b->data.ptr, b->data.len) != b->csum)
        r.status = DFS_ECORRUPT;
    atomic_fetch_add(&nserved, 1);
    rpc_reply(req, &r, NULL, NULL);
}

/* Never answers (deadline tests); freed by free_held() at the end. */
static void h_lookup(struct rpc_req *req)
{
    int i = atomic_fetch_add(&nheld, 1);
    if (i < MAX_HELD)
        held[i] = req;
    else
        rpc_req_free(req);
}

/* Closes the connection it arrived on. */
static void h_unlink(struct rpc_req *req)
{
    struct rpc_conn *c = req->conn;
    rpc_req_free(req);
    rpc_conn_close(c);
}

static void free_held(void *arg)
{
    int n = atomic_exchange(&nheld, 0);
    for (int i = 0; i < n && i < MAX_HELD; i++)
        rpc_req_free(held[i]);
}

/* Answer the first held request late (after its caller's deadline). */
static void answer_held(void *arg)
{
    if (atomic_load(&nheld) > 0) {
        int n = atomic_fetch_sub(&nheld, 1) - 1;
        struct dfs_msg_attr_resp r;
        memset(&r, 0, sizeof(r));
        rpc_reply(held[n], &r, NULL, NULL);
    }
}

static rpc_handler_fn handlers[DFS_OP_MAX];

static void setup_handlers(void)
{
    handlers[DFS_OP_PING] = h_ping;
    handlers[DFS_OP_GETATTR] = h_getattr;
    handlers[DFS_OP_WRITE] = h_write;
    handlers[DFS_OP_LOOKUP] = h_lookup;
    handlers[DFS_OP_UNLINK] = h_unlink;
    atomic_store(&nheld, 0);
    atomic_store(&nserved, 0);
}

static struct rpc_conn_opts server_opts(void)
{
    struct rpc_conn_opts o;
    memset(&o, 0, sizeof(o));
    o.role = DFS_ROLE_METAD;
    o.node_id = 7;
    o.max_frame_in = DFS_MAX_FRAME_CHUNKD;
    o.handlers = handlers;
    return o;
}

static struct rpc_conn_opts client_opts(void)
{
    struct rpc_conn_opts o;
    memset(&o, 0, sizeof(o));
    o.role = DFS_ROLE_CLIENT;
    o.node_id = 42;
    o.max_frame_in = DFS_MAX_FRAME_CHUNKD;
    o.connect_timeout_ms = 1000;
    return o;
}

/* ----- one loop in the test thread ----- */

struct env {
    uv_loop_t loop;
    uv_timer_t tick; /* keeps uv_run(ONCE) from blocking for long */
    struct rpc_server *srv;
    struct rpc_conn *cli;
    int port;
    int connected, disconnected;
};

static void tick_cb(uv_timer_t *t)
{
}

#define RUN_UNTIL(e, cond, ms)                                                                     \
    ({                                                                                             \
        uint64_t end_ = dfs_mono_ms() + (uint64_t)(ms);                                            \
        while (!(cond) && dfs_mono_ms() < end_)                                                    \
            uv_run(&(e)->loop, UV_RUN_ONCE);                                                       \
        (cond);                                                                                    \
    })

static void env_on_connected(struct rpc_conn *c, const struct dfs_msg_hello_resp *r)
{
    struct env *e = rpc_conn_data(c);
    ck_assert_uint_eq(r->role, DFS_ROLE_METAD);
    ck_assert_uint_eq(r->node_id, 7);
    e->connected++;
}

static void env_on_disconnected(struct rpc_conn *c, int status)
{
    struct env *e = rpc_conn_data(c);
    e->disconnected++;
}

static void env_listen(struct env *e, int port)
{
    char err[256];
    struct rpc_conn_opts so = server_opts();
    e->srv = rpc_listen(&e->loop, "127.0.0.1", port, &so, err, sizeof(err));
    ck_assert_msg(e->srv != NULL, "listen: %s", err);
    e->port = rpc_server_port(e->srv);
    ck_assert_int_gt(e->port, 0);
}

static void env_init(struct env *e)
{
    memset(e, 0, sizeof(*e));
    setup_handlers();
    ck_assert_int_eq(uv_loop_init(&e->loop), 0);
    uv_timer_init(&e->loop, &e->tick);
    uv_timer_start(&e->tick, tick_cb, 5, 5);
    env_listen(e, 0);
    struct rpc_conn_opts co = client_opts();
    co.on_connected = env_on_connected;
    co.on_disconnected = env_on_disconnected;
    co.data = e;
    e->cli = rpc_connect(&e->loop, "127.0.0.1", e->port, &co);
    ck_assert_ptr_nonnull(e->cli);
}

static void env_fini(struct env *e)
{
    free_held(NULL);
    if (e->cli != NULL)
        rpc_conn_close(e->cli);
    if (e->srv != NULL)
        rpc_server_close(e->srv);
    uv_close((uv_handle_t *)&e->tick, NULL);
    uint64_t end = dfs_mono_ms() + 3000;
    while (uv_loop_alive(&e->loop) && dfs_mono_ms() < end)
        uv_run(&e->loop, UV_RUN_ONCE);
    ck_assert_int_eq(uv_loop_close(&e->loop), 0);
}

/* A call's outcome. */
struct res {
    int done;
    int status;
    struct dfs_frame *f;
    uint64_t t_done;
};

static void res_cb(void *arg, int status, struct dfs_frame *f)
{
    struct res *r = arg;
    ck_assert_int_eq(r->done, 0); /* exactly once */
    r->done = 1;
    r->status = status;
    r->f = f;
    r->t_done = dfs_mono_ms();
}

static void res_free(struct res *r)
{
    rpc_frame_release(r->f);
    r->f = NULL;
}

static int ping(struct env *e, uint32_t timeout_ms)
{
    struct res r = {0};
    struct dfs_msg_empty b;
    ck_assert_int_eq(rpc_call(e->cli, DFS_OP_PING, &b, timeout_ms, res_cb, &r), DFS_OK);
    ck_assert(RUN_UNTIL(e, r.done, timeout_ms + 2000));
    int st = r.status == DFS_OK ? (int)r.f->status : -r.status;
    res_free(&r);
    return st;
}

/* ----- raw sockets (the test thread talks bytes to a server on an rpc_mt) ----- */

static int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval tv = {.tv_sec = 3};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
    const char *b = p;
    while (n > 0) {
        ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return; /* the peer closed: the test checks for that */
        b += k;
        n -= (size_t)k;
    }
}

/* Encode one frame into flat bytes (header + body + bulk); malloc'ed. */
static char *enc(unsigned kind, uint64_t id, unsigned op, const void *body, size_t *len)
{
    struct dfs_wbuf wb;
    ck_assert_int_eq(codec_encode(&wb, kind, id, op, body), DFS_OK);
    *len = wb.len + wb.bulk_len;
    char *p = malloc(*len);
    memcpy(p, wb.data, wb.len);
    if (wb.bulk_len)
        memcpy(p + wb.len, wb.bulk, wb.bulk_len);
    codec_wbuf_free(&wb);
    return p;
}

static char *enc_hello(uint32_t version, size_t *len)
{
    struct dfs_msg_hello h;
    memset(&h, 0, sizeof(h));
    h.proto_version = version;
    h.role = DFS_ROLE_CLIENT;
    h.node_id = 99;
    h.cluster.ptr = "test";
    h.cluster.len = 4;
    return enc(DFS_KIND_REQUEST, 0, DFS_OP_HELLO, &h, len);
}

static int recv_all(int fd, void *p, size_t n)
{
    char *b = p;
    while (n > 0) {
        ssize_t k = recv(fd, b, n, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Read and decode one frame (3 s limit). 0 or -1 (EOF, timeout, garbage). */
static int raw_read_frame(int fd, struct dfs_frame *f)
{
    uint8_t hdr[4];
    if (recv_all(fd, hdr, 4) != 0)
        return -1;
    uint32_t len = frame_get_be32(hdr);
    if (len == 0 || len > DFS_MAX_FRAME_ANY)
        return -1;
    char *body = malloc(len);
    char err[128];
    if (recv_all(fd, body, len) != 0 || codec_decode(body, len, f, err, sizeof(err)) != DFS_OK) {
        free(body);
        return -1;
    }
    return 0;
}

/* True if the peer closes the connection within 3 s. */
static int raw_sees_close(int fd)
{
    char b[256];
    for (;;) {
        ssize_t k = recv(fd, b, sizeof(b), 0);
        if (k == 0 || (k < 0 && errno == ECONNRESET))
            return 1;
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return 0; /* timeout */
    }
}

struct mtsrv {
    struct rpc_mt *mt;
    struct rpc_server *srv;
    struct rpc_conn_opts opts;
    int port;
};

static void mtsrv_listen_fn(void *arg)
{
    struct mtsrv *s = arg;
    char err[256];
    s->srv = rpc_listen(rpc_mt_loop(s->mt), "127.0.0.1", s->port, &s->opts, err, sizeof(err));
    if (s->srv != NULL)
        s->port = rpc_server_port(s->srv);
}

static void mtsrv_close_fn(void *arg)
{
    struct mtsrv *s = arg;
    free_held(NULL);
    rpc_server_close(s->srv);
    s->srv = NULL;
}

static void mtsrv_start(struct mtsrv *s, uint32_t max_in)
{
    memset(s, 0, sizeof(*s));
    setup_handlers();
    s->opts = server_opts();
    s->opts.connect_timeout_ms = 1500; /* HELLO must come within that */
    if (max_in)
        s->opts.max_frame_in = max_in;
    s->mt = rpc_mt_start("srv");
    ck_assert_ptr_nonnull(s->mt);
    rpc_mt_exec(s->mt, mtsrv_listen_fn, s);
    ck_assert_ptr_nonnull(s->srv);
}

static void mtsrv_stop(struct mtsrv *s)
{
    rpc_mt_exec(s->mt, mtsrv_close_fn, s);
    rpc_mt_stop(s->mt);
}

/* HELLO over a raw socket, answer checked. */
static void raw_hello(int fd)
{
    size_t n;
    char *h = enc_hello(DFS_PROTO_VERSION, &n);
    send_all(fd, h, n);
    free(h);
    struct dfs_frame f;
    ck_assert_int_eq(raw_read_frame(fd, &f), 0);
    ck_assert_uint_eq(f.op, DFS_OP_HELLO);
    ck_assert_uint_eq(f.status, DFS_OK);
    codec_frame_free(&f);
}

/* A server on an rpc_mt still answers a fresh connection. */
static void raw_check_serves(int port)
{
    int fd = raw_connect(port);
    raw_hello(fd);
    size_t n;
    struct dfs_msg_empty e;
    char *p = enc(DFS_KIND_REQUEST, 5, DFS_OP_PING, &e, &n);
    send_all(fd, p, n);
    free(p);
    struct dfs_frame f;
    ck_assert_int_eq(raw_read_frame(fd, &f), 0);
    ck_assert_uint_eq(f.kind, DFS_KIND_RESPONSE);
    ck_assert_uint_eq(f.req_id, 5);
    ck_assert_uint_eq(f.status, DFS_OK);
    codec_frame_free(&f);
    close(fd);
}

/* ----- frame splitter, no sockets ----- */

struct collect {
    int n;
    uint32_t lens[16];
    char first[16];
};

static int collect_fn(void *arg, char *body, uint32_t len)
{
    struct collect *c = arg;
    ck_assert_int_lt(c->n, 16);
    c->lens[c->n] = len;
    c->first[c->n] = body[0];
    c->n++;
    free(body);
    return 0;
}

START_TEST(test_frame_split_every_boundary)
{
    /* Three frames of 1, 5 and 300 bytes back to back. */
    char stream[4 + 1 + 4 + 5 + 4 + 300];
    size_t off = 0;
    uint32_t lens[3] = {1, 5, 300};
    for (int i = 0; i < 3; i++) {
        frame_put_be32(stream + off, lens[i]);
        off += 4;
        memset(stream + off, 'a' + i, lens[i]);
        off += lens[i];
    }
    ck_assert_uint_eq(off, sizeof(stream));
    char err[128];
    for (size_t cut = 0; cut <= sizeof(stream); cut++) {
        struct frame_rd r;
        struct collect c = {0};
        frame_rd_init(&r, 1000);
        ck_assert_int_eq(frame_rd_feed(&r, stream, cut, collect_fn, &c, err, sizeof(err)), 0);
        ck_assert_int_eq(
            frame_rd_feed(&r, stream + cut, sizeof(stream) - cut, collect_fn, &c, err, sizeof(err)),
            0);
        ck_assert_int_eq(c.n, 3);
        for (int i = 0; i < 3; i++) {
            ck_assert_uint_eq(c.lens[i], lens[i]);
            ck_assert_int_eq(c.first[i], 'a' + i);
        }
        frame_rd_reset(&r);
    }
    /* One byte at a time. */
    struct frame_rd r;
    struct collect c = {0};
    frame_rd_init(&r, 1000);
    for (size_t i = 0; i < sizeof(stream); i++)
        ck_assert_int_eq(frame_rd_feed(&r, stream + i, 1, collect_fn, &c, err, sizeof(err)), 0);
    ck_assert_int_eq(c.n, 3);
    frame_rd_reset(&r);
}
END_TEST

START_TEST(test_frame_limits)
{
    char err[128];
    struct frame_rd r;
    struct collect c = {0};
    char hdr[4];

    frame_rd_init(&r, 100);
    frame_put_be32(hdr, 101);
    ck_assert_int_eq(frame_rd_feed(&r, hdr, 4, collect_fn, &c, err, sizeof(err)), FRAME_ETOOBIG);
    ck_assert_ptr_null(r.body); /* nothing allocated */
    ck_assert_ptr_nonnull(strstr(err, "101"));
    frame_rd_reset(&r);
    frame_put_be32(hdr, 0xffffffffu);
    ck_assert_int_eq(frame_rd_feed(&r, hdr, 4, collect_fn, &c, err, sizeof(err)), FRAME_ETOOBIG);
    frame_rd_reset(&r);
    frame_put_be32(hdr, 0);
    ck_assert_int_eq(frame_rd_feed(&r, hdr, 4, collect_fn, &c, err, sizeof(err)), FRAME_EEMPTY);
    frame_rd_reset(&r);
    /* Exactly the limit is fine; read directly into the body. */
    frame_put_be32(hdr, 100);
    ck_assert_int_eq(frame_rd_feed(&r, hdr, 4, collect_fn, &c, err, sizeof(err)), 0);
    size_t room = 0;
    char *p = frame_rd_direct(&r, 10, &room);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(room, 100);
    memset(p, 'z', 60);
    ck_assert_int_eq(frame_rd_direct_done(&r, 60, collect_fn, &c), 0);
    ck_assert_ptr_null(frame_rd_direct(&r, 41, &room));
    p = frame_rd_direct(&r, 40, &room);
    ck_assert_uint_eq(room, 40);
    memset(p, 'z', 40);
    ck_assert_int_eq(frame_rd_direct_done(&r, 40, collect_fn, &c), 0);
    ck_assert_int_eq(c.n, 1);
    ck_assert_uint_eq(c.lens[0], 100);
    frame_rd_reset(&r);
}
END_TEST

/* ----- loopback tests ----- */

START_TEST(test_roundtrip)
{
    struct env e;
    env_init(&e);
    ck_assert_int_eq(ping(&e, 2000), DFS_OK);
    ck_assert(rpc_conn_ready(e.cli));
    ck_assert_int_eq(e.connected, 1);
    ck_assert_uint_eq(rpc_conn_peer_role(e.cli), DFS_ROLE_METAD);
    ck_assert_uint_eq(rpc_conn_peer_node(e.cli), 7);

    /* A WRITE with 300 KiB of bulk data arrives intact. */
    size_t n = 300 << 10;
    char *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (char)(i * 31 + 7);
    struct dfs_msg_write w;
    memset(&w, 0, sizeof(w));
    w.chunk_id = 1;
    w.data.ptr = data;
    w.data.len = (uint32_t)n;
    w.csum = csum_buf(data, n);
    struct res r = {0};
    ck_assert_int_eq(rpc_call(e.cli, DFS_OP_WRITE, &w, 3000, res_cb, &r), DFS_OK);
    ck_assert(RUN_UNTIL(&e, r.done, 5000));
    ck_assert_int_eq(r.status, DFS_OK);
    ck_assert_uint_eq(r.f->status, DFS_OK);
    ck_assert_uint_eq(((struct dfs_msg_write_resp *)r.f->body)->length, n);
    res_free(&r);
    free(data);
    ck_assert_uint_gt(rpc_conn_bytes_out(e.cli), n);
    ck_assert_uint_gt(rpc_conn_bytes_in(e.cli), 0);

    /* No handler for the op -> DFS_ENOSYS, connection stays up. */
    struct dfs_msg_ino_req ir;
    memset(&ir, 0, sizeof(ir));
    memset(&r, 0, sizeof(r));
    ck_assert_int_eq(rpc_call(e.cli, DFS_OP_STATFS, &ir, 2000, res_cb, &r), DFS_OK);
    ck_assert(RUN_UNTIL(&e, r.done, 3000));
    ck_assert_int_eq(r.status, DFS_OK);
    ck_assert_uint_eq(r.f->status, DFS_ENOSYS);
    res_free(&r);
    ck_assert_int_eq(ping(&e, 2000), DFS_OK);
    ck_assert_int_eq(e.disconnected, 0);
    env_fini(&e);
}
END_TEST

struct pipe_ctx {
    int done, bad;
};
struct pipe_call {
    struct pipe_ctx *ctx;
    uint64_t ino;
};

static void pipe_cb(void *arg, int status, struct dfs_frame *f)
{
    struct pipe_call *pc = arg;
    if (status != DFS_OK || f->status != DFS_OK ||
        ((struct dfs_msg_attr_resp *)f->body)->attr.ino != pc->ino)
        pc->ctx->bad++;
    pc->ctx->done++;
    rpc_frame_release(f);
}

START_TEST(test_pipelined_1000)
{
    struct env e;
    env_init(&e);
    struct pipe_ctx ctx = {0};
    static struct pipe_call calls[1000];
    /* Issued before the connection is even up: they queue, then flow. */
    for (int i = 0; i < 1000; i++) {
        struct dfs_msg_ino_req b;
        memset(&b, 0, sizeof(b));
        b.ino = 1000000 + (uint64_t)i * 7;
        calls[i].ctx = &ctx;
        calls[i].ino = b.ino;
        ck_assert_int_eq(rpc_call(e.cli, DFS_OP_GETATTR, &b, 5000, pipe_cb, &calls[i]), DFS_OK);
    }
    ck_assert(RUN_UNTIL(&e, ctx.done == 1000, 8000));
    ck_assert_int_eq(ctx.bad, 0);
    ck_assert_int_eq(atomic_load(&nserved), 1000);
    env_fini(&e);
}
END_TEST

/* HELLO + PING + GETATTR as one byte string, cut at every point, and one
 * byte per send(). */
START_TEST(test_split_on_the_wire)
{
    struct mtsrv s;
    mtsrv_start(&s, 0);
    size_t n1, n2, n3;
    char *h = enc_hello(DFS_PROTO_VERSION, &n1);
    struct dfs_msg_empty em;
    char *p = enc(DFS_KIND_REQUEST, 11, DFS_OP_PING, &em, &n2);
    struct dfs_msg_ino_req ir;
    memset(&ir, 0, sizeof(ir));
    ir.ino = 77;
    char *g = enc(DFS_KIND_REQUEST, 12, DFS_OP_GETATTR, &ir, &n3);
    size_t total = n1 + n2 + n3;
    char *all = malloc(total);
    memcpy(all, h, n1);
    memcpy(all + n1, p, n2);
    memcpy(all + n1 + n2, g, n3);
    free(h);
    free(p);
    free(g);

    for (size_t cut = 0; cut <= total + 1; cut++) {
        int fd = raw_connect(s.port);
        if (cut <= total) {
            send_all(fd, all, cut);
            usleep(2000); /* let the server see the first part alone */
            send_all(fd, all + cut, total - cut);
        } else {
            for (size_t i = 0; i < total; i++) {
                send_all(fd, all + i, 1);
                usleep(200);
            }
        }
        struct dfs_frame f;
        ck_assert_int_eq(raw_read_frame(fd, &f), 0);
        ck_assert_uint_eq(f.op, DFS_OP_HELLO);
        ck_assert_uint_eq(f.status, DFS_OK);
        codec_frame_free(&f);
        ck_assert_int_eq(raw_read_frame(fd, &f), 0);
        ck_assert_uint_eq(f.req_id, 11);
        ck_assert_uint_eq(f.status, DFS_OK);
        codec_frame_free(&f);
        ck_assert_msg(raw_read_frame(fd, &f) == 0, "cut %zu", cut);
        ck_assert_uint_eq(f.req_id, 12);
        ck_assert_uint_eq(((struct dfs_msg_attr_resp *)f.body)->attr.ino, 77);
        codec_frame_free(&f);
        close(fd);
    }
    free(all);
    mtsrv_stop(&s);
}
END_TEST

START_TEST(test_oversize_frame)
{
    struct mtsrv s;
    mtsrv_start(&s, 4096);
    /* After HELLO. */
    int fd = raw_connect(s.port);
    raw_hello(fd);
    char hdr[4];
    frame_put_be32(hdr, 4097);
    send_all(fd, hdr, 4);
    ck_assert(raw_sees_close(fd));
    close(fd);
    /* Instead of HELLO, with the largest length there is. */
    fd = raw_connect(s.port);
    frame_put_be32(hdr, 0xffffffffu);
    send_all(fd, hdr, 4);
    ck_assert(raw_sees_close(fd));
    close(fd);
    /* The server survives and serves a new connection. */
    raw_check_serves(s.port);
    mtsrv_stop(&s);
}
END_TEST

START_TEST(test_garbage_body)
{
    struct mtsrv s;
    mtsrv_start(&s, 0);
    static const char junk[][12] = {
        {0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8},             /* not msgpack array */
        {0, 0, 0, 5, (char)0x94, 0, 1, 2, (char)0xc1},    /* reserved byte */
        {0, 0, 0, 4, (char)0x94, 9, 1, 2},                /* bad kind, truncated */
        {0, 0, 0, 6, (char)0x94, 0, 1, 1, (char)0xdd, 0}, /* truncated array32 */
    };
    static const size_t junklen[] = {12, 9, 8, 10};
    for (size_t i = 0; i < DFS_ARRAY_SIZE(junk); i++) {
        /* As the first frame ... */
        int fd = raw_connect(s.port);
        send_all(fd, junk[i], junklen[i]);
        ck_assert_msg(raw_sees_close(fd), "junk %zu first", i);
        close(fd);
        /* ... and after a good HELLO. */
        fd = raw_connect(s.port);
        raw_hello(fd);
        send_all(fd, junk[i], junklen[i]);
        ck_assert_msg(raw_sees_close(fd), "junk %zu after hello", i);
        close(fd);
    }
    /* A request before HELLO is refused too. */
    int fd = raw_connect(s.port);
    size_t n;
    struct dfs_msg_empty em;
    char *p = enc(DFS_KIND_REQUEST, 3, DFS_OP_PING, &em, &n);
    send_all(fd, p, n);
    free(p);
    ck_assert(raw_sees_close(fd));
    close(fd);
    raw_check_serves(s.port);
    mtsrv_stop(&s);
}
END_TEST

/* Silence after connecting, or a frame cut short: closed after the HELLO
 * timeout, and the server goes on serving. */
START_TEST(test_hello_timeout)
{
    struct mtsrv s;
    mtsrv_start(&s, 0);
    uint64_t t0 = dfs_mono_ms();
    int fd = raw_connect(s.port);
    int fd2 = raw_connect(s.port);
    send_all(fd2, "\0\0\0\x20\x94", 5);
    raw_check_serves(s.port);
    ck_assert(raw_sees_close(fd));
    ck_assert(raw_sees_close(fd2));
    uint64_t el = dfs_mono_ms() - t0;
    ck_assert_uint_ge(el, 1400);
    ck_assert_uint_lt(el, 3000);
    close(fd);
    close(fd2);
    mtsrv_stop(&s);
}
END_TEST

START_TEST(test_version_mismatch)
{
    struct mtsrv s;
    mtsrv_start(&s, 0);
    int fd = raw_connect(s.port);
    size_t n;
    char *h = enc_hello(DFS_PROTO_VERSION + 98, &n);
    send_all(fd, h, n);
    free(h);
    struct dfs_frame f;
    ck_assert_int_eq(raw_read_frame(fd, &f), 0);
    ck_assert_uint_eq(f.op, DFS_OP_HELLO);
    ck_assert_uint_eq(f.status, DFS_EVERSION);
    const struct dfs_msg_hello_resp *r = f.body;
    char want[64];
    snprintf(want, sizeof(want), "protocol version %u, expected %u", DFS_PROTO_VERSION + 98,
             DFS_PROTO_VERSION);
    ck_assert_str_eq(r->message.ptr, want);
    codec_frame_free(&f);
    ck_assert(raw_sees_close(fd));
    close(fd);
    raw_check_serves(s.port);
    mtsrv_stop(&s);
}
END_TEST

/* The connecting side: a refused HELLO fails queued calls fast and is
 * logged once, not on every reconnect. */
static _Atomic int client_logs, server_logs;
static void count_sink(int level, const char *line, void *arg)
{
    if (strstr(line, "HELLO refused") != NULL && strstr(line, "go away") != NULL)
        atomic_fetch_add(&client_logs, 1);
    if (strstr(line, "refused HELLO") != NULL && strstr(line, "go away") != NULL)
        atomic_fetch_add(&server_logs, 1);
}

static void refuse_hello(struct rpc_conn *c, const struct dfs_msg_hello *h,
                         struct dfs_msg_hello_resp *resp)
{
    resp->status = DFS_EAUTH;
    resp->message.ptr = "go away";
    resp->message.len = 7;
}

START_TEST(test_hello_refused_client)
{
    struct env e;
    memset(&e, 0, sizeof(e));
    setup_handlers();
    log_set_sink(count_sink, NULL);
    log_set_level(LOG_LVL_INFO);
    uv_loop_init(&e.loop);
    uv_timer_init(&e.loop, &e.tick);
    uv_timer_start(&e.tick, tick_cb, 5, 5);
    char err[256];
    struct rpc_conn_opts so = server_opts();
    so.on_hello = refuse_hello;
    e.srv = rpc_listen(&e.loop, "127.0.0.1", 0, &so, err, sizeof(err));
    ck_assert_ptr_nonnull(e.srv);
    struct rpc_conn_opts co = client_opts();
    e.cli = rpc_connect(&e.loop, "127.0.0.1", rpc_server_port(e.srv), &co);
    struct res r = {0};
    struct dfs_msg_empty em;
    uint64_t t0 = dfs_mono_ms();
    ck_assert_int_eq(rpc_call(e.cli, DFS_OP_PING, &em, 10000, res_cb, &r), DFS_OK);
    ck_assert(RUN_UNTIL(&e, r.done, 3000));
    ck_assert_int_eq(r.status, DFS_ECONN);
    ck_assert_uint_lt(r.t_done - t0, 2000);
    /* Let it retry a few times (100, 200, 400 ms backoff). */
    RUN_UNTIL(&e, 0, 1000);
    ck_assert(!rpc_conn_ready(e.cli));
    log_set_sink(NULL, NULL);
    /* One line from the client; the server logs each refusal itself. */
    ck_assert_int_eq(atomic_load(&client_logs), 1);
    ck_assert_int_ge(atomic_load(&server_logs), 2); /* so it did reconnect */
    env_fini(&e);
}
END_TEST

START_TEST(test_deadline)
{
    struct env e;
    env_init(&e);
    ck_assert_int_eq(ping(&e, 2000), DFS_OK);
    struct dfs_msg_name_req b;
    memset(&b, 0, sizeof(b));
    b.name.ptr = "x";
    b.name.len = 1;
    struct res r1 = {0}, r2 = {0};
    uint64_t t0 = dfs_mono_ms();
    ck_assert_int_eq(rpc_call(e.cli, DFS_OP_LOOKUP, &b, 300, res_cb, &r1), DFS_OK);
    ck_assert_int_eq(rpc_call(e.cli, DFS_OP_LOOKUP, &b, 150, res_cb, &r2), DFS_OK);
    ck_assert(RUN_UNTIL(&e, r1.done && r2.done, 3000));
    ck_assert_int_eq(r1.status, DFS_ETIMEDOUT);
    ck_assert_int_eq(r2.status, DFS_ETIMEDOUT);
    ck_assert_ptr_null(r1.f);
    ck_assert_uint_ge(r2.t_done - t0, 145);
    ck_assert_uint_lt(r2.t_done - t0, 150 + 250);
    ck_assert_uint_ge(r1.t_done - t0, 295);
    ck_assert_uint_lt(r1.t_done - t0, 300 + 250);
    ck_assert_int_eq(atomic_load(&nheld), 2);
    /* A late answer is dropped quietly; the connection stays. */
    answer_held(NULL);
    ck_assert_int_eq(ping(&e, 2000), DFS_OK);
    ck_assert_int_eq(e.disconnected, 0);
    ck_assert(rpc_conn_ready(e.cli));
    env_fini(&e);
}
END_TEST

/* Calls queued while nothing listens time out too. */
START_TEST(test_deadline_unconnected)
{
    struct env e;
    env_init(&e);
    rpc_server_close(e.srv);
    e.srv = NULL;
    rpc_conn_close(e.cli);
    struct rpc_conn_opts co = client_opts();
    e.cli = rpc_connect(&e.loop, "127.0.0.1", e.port, &co);
    struct res r = {0};
    struct dfs_msg_empty em;
    uint64_t t0 = dfs_mono_ms();
    ck_assert_int_eq(rpc_call(e.cli, DFS_OP_PING, &em, 400, res_cb, &r), DFS_OK);
    ck_assert(RUN_UNTIL(&e, r.done, 3000));
    ck_assert_int_eq(r.status, DFS_ETIMEDOUT);
    ck_assert_uint_ge(r.t_done - t0, 395);
    ck_assert_uint_lt(r.t_done - t0, 400 + 300);
    env_fini(&e);
}
END_TEST

START_TEST(test_peer_closes)
{
    struct env e;
    env_init(&e);
    ck_assert_int_eq(ping(&e, 2000), DFS_OK);
    struct dfs_msg_name_req b;
    memset(&b, 0, sizeof(b));
    struct res r1 = {0}, r2 = {0};
    uint64_t t0 = dfs_mono_ms();
    ck_assert_int_eq(rpc_call(e.cli, DFS_OP_LOOKUP, &b, 10000, res_cb, &r1), DFS_OK);
    ck_assert(RUN_UNTIL(&e, atomic_load(&nheld) == 1, 2000));
    /* UNLINK makes the server close this connection. */
    ck_assert_int_eq(rpc_call(e.cli, DFS_OP_UNLINK, &b, 10000, res_cb, &r2), DFS_OK);
    ck_assert(RUN_UNTIL(&e, r1.done && r2.done, 3000));
    ck_assert_int_eq(r1.status, DFS_ECONN);
    ck_assert_int_eq(r2.status, DFS_ECONN);
    ck_assert_uint_lt(r1.t_done - t0, 2000);
    ck_assert_int_eq(e.disconnected, 1);
    /* The held request's reply goes nowhere (its conn is gone). */
    ck_assert_int_eq(rpc_reply_status(held[0], DFS_OK), DFS_ECANCELED);
    atomic_store(&nheld, 0);
    /* It reconnects by itself. */
    ck_assert(RUN_UNTIL(&e, e.connected == 2, 3000));
    ck_assert_int_eq(ping(&e, 2000), DFS_OK);
    env_fini(&e);
}
END_TEST

/* The server is another process, killed with SIGKILL mid-call. */
static void child_server(int wfd)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    setup_handlers();
    struct rpc_conn_opts so = server_opts();
    char err[256];
    struct rpc_server *s = rpc_listen(&loop, "127.0.0.1", 0, &so, err, sizeof(err));
    int port = s ? rpc_server_port(s) : -1;
    if (write(wfd, &port, sizeof(port)) != sizeof(port))
        _exit(1);
    close(wfd);
    alarm(20);
    uv_run(&loop, UV_RUN_DEFAULT);
    _exit(0);
}

START_TEST(test_peer_killed)
{
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(pfd[0]);
        child_server(pfd[1]);
    }
    close(pfd[1]);
    int port = -1;
    ck_assert_int_eq(read(pfd[0], &port, sizeof(port)), (ssize_t)sizeof(port));
    close(pfd[0]);
    ck_assert_int_gt(port, 0);

    struct env e;
    memset(&e, 0, sizeof(e));
    uv_loop_init(&e.loop);
    uv_timer_init(&e.loop, &e.tick);
    uv_timer_start(&e.tick, tick_cb, 5, 5);
    struct rpc_conn_opts co = client_opts();
    co.on_connected = env_on_connected;
    co.on_disconnected = env_on_disconnected;
    co.data = &e;
    e.cli = rpc_connect(&e.loop, "127.0.0.1", port, &co);
    ck_assert_int_eq(ping(&e, 3000), DFS_OK);
    struct dfs_msg_name_req b;
    memset(&b, 0, sizeof(b));
    struct res r = {0};
    ck_assert_int_eq(rpc_call(e.cli, DFS_OP_LOOKUP, &b, 10000, res_cb, &r), DFS_OK);
    RUN_UNTIL(&e, 0, 100); /* the request reaches the child */
    uint64_t t0 = dfs_mono_ms();
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    ck_assert(RUN_UNTIL(&e, r.done, 3000));
    ck_assert_int_eq(r.status, DFS_ECONN);
    ck_assert_uint_lt(r.t_done - t0, 1000);
    ck_assert_int_eq(e.disconnected, 1);
    env_fini(&e);
}
END_TEST

START_TEST(test_reconnect_same_port)
{
    struct env e;
    env_init(&e);
    ck_assert_int_eq(ping(&e, 2000), DFS_OK);
    int port = e.port;
    rpc_server_close(e.srv);
    e.srv = NULL;
    ck_assert(RUN_UNTIL(&e, e.disconnected == 1, 2000));
    ck_assert(!rpc_conn_ready(e.cli));
    /* Issued while the server is down: waits for the reconnect. */
    struct res r = {0};
    struct dfs_msg_empty em;
    ck_assert_int_eq(rpc_call(e.cli, DFS_OP_PING, &em, 8000, res_cb, &r), DFS_OK);
    RUN_UNTIL(&e, 0, 700); /* a few failed attempts (backoff grows) */
    ck_assert_int_eq(r.done, 0);
    env_listen(&e, port);
    ck_assert_int_eq(e.port, port);
    ck_assert(RUN_UNTIL(&e, r.done, 6000));
    ck_assert_int_eq(r.status, DFS_OK);
    ck_assert_uint_eq(r.f->status, DFS_OK);
    res_free(&r);
    ck_assert_int_eq(e.connected, 2);
    env_fini(&e);
}
END_TEST

/* A raw server that answers HELLO, then a response nobody asked for. */
START_TEST(test_unknown_response_id)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(ls, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(ls, 4), 0);
    socklen_t al = sizeof(a);
    getsockname(ls, (struct sockaddr *)&a, &al);
    int port = ntohs(a.sin_port);

    struct rpc_mt *mt = rpc_mt_start("cli");
    struct env e; /* only the counters */
    memset(&e, 0, sizeof(e));
    struct rpc_conn_opts co = client_opts();
    co.on_disconnected = env_on_disconnected;
    co.data = &e;
    struct rpc_conn *c = rpc_mt_connect(mt, "127.0.0.1", port, &co);
    ck_assert_ptr_nonnull(c);
    int fd = accept(ls, NULL, NULL);
    ck_assert_int_ge(fd, 0);
    struct timeval tv = {.tv_sec = 3};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct dfs_frame f;
    ck_assert_int_eq(raw_read_frame(fd, &f), 0);
    ck_assert_uint_eq(f.op, DFS_OP_HELLO);
    const struct dfs_msg_hello *h = f.body;
    ck_assert_uint_eq(h->proto_version, DFS_PROTO_VERSION);
    ck_assert_uint_eq(h->role, DFS_ROLE_CLIENT);
    ck_assert_uint_eq(h->node_id, 42);
    struct dfs_msg_hello_resp hr;
    memset(&hr, 0, sizeof(hr));
    hr.proto_version = DFS_PROTO_VERSION;
    hr.role = DFS_ROLE_METAD;
    size_t n;
    char *p = enc(DFS_KIND_RESPONSE, f.req_id, DFS_OP_HELLO, &hr, &n);
    codec_frame_free(&f);
    send_all(fd, p, n);
    free(p);
    uint64_t end = dfs_mono_ms() + 2000;
    while (!rpc_mt_ready(mt, c) && dfs_mono_ms() < end)
        usleep(5000);
    ck_assert(rpc_mt_ready(mt, c));
    struct dfs_msg_status st = {.status = DFS_OK};
    p = enc(DFS_KIND_RESPONSE, 999999, DFS_OP_PING, &st, &n);
    send_all(fd, p, n);
    free(p);
    ck_assert(raw_sees_close(fd));
    close(fd);
    close(ls);
    rpc_mt_stop(mt); /* closes c */
    ck_assert_int_eq(e.disconnected, 1);
}
END_TEST

/* ----- threads ----- */

struct thr {
    struct rpc_mt *mt;
    struct rpc_conn *c;
    int id, bad;
};

static void *thr_main(void *arg)
{
    struct thr *t = arg;
    for (int i = 0; i < 200; i++) {
        struct dfs_msg_ino_req b;
        memset(&b, 0, sizeof(b));
        b.ino = (uint64_t)t->id * 100000 + (uint64_t)i;
        struct dfs_frame *f = NULL;
        int rc = rpc_mt_call(t->mt, t->c, DFS_OP_GETATTR, &b, 5000, &f);
        if (rc != DFS_OK || f->status != DFS_OK ||
            ((struct dfs_msg_attr_resp *)f->body)->attr.ino != b.ino)
            t->bad++;
        rpc_frame_release(f);
    }
    /* A batch of WRITEs with borrowed bulk data. */
    enum { NB = 16 };
    static char data[64 << 10];
    struct rpc_batch batch;
    struct rpc_result res[NB];
    rpc_batch_init(&batch);
    for (int i = 0; i < NB; i++) {
        struct dfs_msg_write w;
        memset(&w, 0, sizeof(w));
        w.data.ptr = data;
        w.data.len = (uint32_t)(sizeof(data) - (size_t)i);
        w.csum = csum_buf(data, w.data.len);
        if (rpc_mt_submit(t->mt, t->c, DFS_OP_WRITE, &w, 5000, &batch, &res[i]) != DFS_OK)
            t->bad++;
    }
    rpc_batch_wait(&batch);
    rpc_batch_destroy(&batch);
    for (int i = 0; i < NB; i++) {
        if (res[i].status != DFS_OK || res[i].reply->status != DFS_OK ||
            ((struct dfs_msg_write_resp *)res[i].reply->body)->length != sizeof(data) - (size_t)i)
            t->bad++;
        rpc_frame_release(res[i].reply);
    }
    return NULL;
}

START_TEST(test_mt_threads)
{
    struct mtsrv s;
    mtsrv_start(&s, 0);
    struct rpc_mt *mt = rpc_mt_start("cli");
    ck_assert_ptr_nonnull(mt);
    struct rpc_conn_opts co = client_opts();
    struct rpc_conn *c = rpc_mt_connect(mt, "127.0.0.1", s.port, &co);
    ck_assert_ptr_nonnull(c);
    enum { NT = 4 };
    struct thr t[NT];
    pthread_t tid[NT];
    for (int i = 0; i < NT; i++) {
        t[i] = (struct thr){.mt = mt, .c = c, .id = i + 1};
        ck_assert_int_eq(pthread_create(&tid[i], NULL, thr_main, &t[i]), 0);
    }
    for (int i = 0; i < NT; i++) {
        pthread_join(tid[i], NULL);
        ck_assert_int_eq(t[i].bad, 0);
    }
    ck_assert_int_eq(atomic_load(&nserved), NT * (200 + 16));
    ck_assert(rpc_mt_ready(mt, c));
    rpc_mt_close(mt, c);
    /* After the close, calls on a fresh conn still work; stop closes it. */
    c = rpc_mt_connect(mt, "127.0.0.1", s.port, &co);
    struct dfs_msg_empty em;
    struct dfs_frame *f = NULL;
    ck_assert_int_eq(rpc_mt_call(mt, c, DFS_OP_PING, &em, 3000, &f), DFS_OK);
    ck_assert_uint_eq(f->status, DFS_OK);
    rpc_frame_release(f);
    rpc_mt_stop(mt);
    mtsrv_stop(&s);
}
END_TEST

/* rpc_mt_call on a conn that gets closed meanwhile: DFS_ECANCELED, no hang. */
START_TEST(test_mt_close_cancels)
{
    struct mtsrv s;
    mtsrv_start(&s, 0);
    struct rpc_mt *mt = rpc_mt_start("cli");
    struct rpc_conn_opts co = client_opts();
    struct rpc_conn *c = rpc_mt_connect(mt, "127.0.0.1", s.port, &co);
    struct dfs_msg_name_req b;
    memset(&b, 0, sizeof(b));
    struct rpc_batch batch;
    struct rpc_result r;
    rpc_batch_init(&batch);
    ck_assert_int_eq(rpc_mt_submit(mt, c, DFS_OP_LOOKUP, &b, 10000, &batch, &r), DFS_OK);
    uint64_t end = dfs_mono_ms() + 3000;
    while (atomic_load(&nheld) == 0 && dfs_mono_ms() < end)
        usleep(2000);
    ck_assert_int_eq(atomic_load(&nheld), 1);
    uint64_t t0 = dfs_mono_ms();
    rpc_mt_close(mt, c);
    rpc_batch_wait(&batch);
    rpc_batch_destroy(&batch);
    ck_assert_int_eq(r.status, DFS_ECANCELED);
    ck_assert_ptr_null(r.reply);
    ck_assert_uint_lt(dfs_mono_ms() - t0, 1000);
    rpc_mt_stop(mt);
    mtsrv_stop(&s);
}
END_TEST

/* fail_fast: the first call waits for the first attempt (and fails with
 * ECONN as soon as it fails, not at its deadline); while the link is down
 * calls fail at once; after a reconnect calls work again. */
START_TEST(test_fail_fast)
{
    struct env e;
    env_init(&e);
    int port = e.port;
    rpc_server_close(e.srv);
    e.srv = NULL;
    rpc_conn_close(e.cli);
    struct rpc_conn_opts co = client_opts();
    co.on_connected = env_on_connected;
    co.on_disconnected = env_on_disconnected;
    co.data = &e;
    co.fail_fast = true;
    e.connected = e.disconnected = 0;
    e.cli = rpc_connect(&e.loop, "127.0.0.1", port, &co);
    struct dfs_msg_empty em;
    /* Nothing listens: the call issued during the first attempt fails when
     * the attempt does, long before its deadline. */
    struct res r = {0};
    uint64_t t0 = dfs_mono_ms();
    ck_assert_int_eq(rpc_call(e.cli, DFS_OP_PING, &em, 5000, res_cb, &r), DFS_OK);
    ck_assert(RUN_UNTIL(&e, r.done, 3000));
    ck_assert_int_eq(r.status, DFS_ECONN);
    ck_assert_uint_lt(r.t_done - t0, 1000);
    /* Down: calls fail synchronously (the callback never runs). */
    struct res r2 = {0};
    ck_assert_int_eq(rpc_call(e.cli, DFS_OP_PING, &em, 5000, res_cb, &r2), DFS_ECONN);
    RUN_UNTIL(&e, 0, 50);
    ck_assert_int_eq(r2.done, 0);
    /* The server comes back: the conn reconnects by itself and serves. */
    env_listen(&e, port);
    ck_assert(RUN_UNTIL(&e, e.connected == 1, 8000));
    ck_assert_int_eq(ping(&e, 2000), DFS_OK);
    /* Lost again: queued/in-flight calls fail with ECONN, new ones at once. */
    rpc_server_close(e.srv);
    e.srv = NULL;
    ck_assert(RUN_UNTIL(&e, e.disconnected == 1, 2000));
    struct res r3 = {0};
    ck_assert_int_eq(rpc_call(e.cli, DFS_OP_PING, &em, 5000, res_cb, &r3), DFS_ECONN);
    /* The default (no fail_fast) still waits for the reconnect: see
     * test_reconnect_same_port. */
    env_fini(&e);
}
END_TEST

/* Same through rpc_mt: the result completes with ECONN at once. */
START_TEST(test_fail_fast_mt)
{
    int port;
    {
        /* a port with nothing listening */
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        socklen_t l = sizeof(a);
        getsockname(fd, (struct sockaddr *)&a, &l);
        port = ntohs(a.sin_port);
        close(fd);
    }
    struct rpc_mt *mt = rpc_mt_start("ff");
    ck_assert_ptr_nonnull(mt);
    struct rpc_conn_opts co = client_opts();
    co.fail_fast = true;
    struct rpc_conn *c = rpc_mt_connect(mt, "127.0.0.1", port, &co);
    ck_assert_ptr_nonnull(c);
    struct dfs_msg_empty em;
    struct dfs_frame *f = NULL;
    uint64_t t0 = dfs_mono_ms();
    ck_assert_int_eq(rpc_mt_call(mt, c, DFS_OP_PING, &em, 5000, &f), DFS_ECONN);
    ck_assert_uint_lt(dfs_mono_ms() - t0, 1000);
    t0 = dfs_mono_ms();
    ck_assert_int_eq(rpc_mt_call(mt, c, DFS_OP_PING, &em, 5000, &f), DFS_ECONN);
    ck_assert_uint_lt(dfs_mono_ms() - t0, 100);
    ck_assert_ptr_null(f);
    rpc_mt_close(mt, c);
    rpc_mt_stop(mt);
}
END_TEST

TEST_SUITE(rpc)
{
    Suite *s = suite_create("rpc");
    TCase *tc = tcase_create("frame");
    tcase_add_test(tc, test_frame_split_every_boundary);
    tcase_add_test(tc, test_frame_limits);
    tcase_set_timeout(tc, 10);
    suite_add_tcase(s, tc);

    tc = tcase_create("loopback");
    tcase_add_test(tc, test_roundtrip);
    tcase_add_test(tc, test_pipelined_1000);
    tcase_add_test(tc, test_split_on_the_wire);
    tcase_add_test(tc, test_oversize_frame);
    tcase_add_test(tc, test_garbage_body);
    tcase_add_test(tc, test_version_mismatch);
    tcase_add_test(tc, test_hello_timeout);
    tcase_add_test(tc, test_hello_refused_client);
    tcase_add_test(tc, test_deadline);
    tcase_add_test(tc, test_deadline_unconnected);
    tcase_add_test(tc, test_peer_closes);
    tcase_add_test(tc, test_peer_killed);
    tcase_add_test(tc, test_reconnect_same_port);
    tcase_add_test(tc, test_unknown_response_id);
    tcase_add_test(tc, test_fail_fast);
    tcase_add_test(tc, test_fail_fast_mt);
    tcase_set_timeout(tc, 30);
    suite_add_tcase(s, tc);

    tc = tcase_create("threads");
    tcase_add_test(tc, test_mt_threads);
    tcase_add_test(tc, test_mt_close_cancels);
    tcase_set_timeout(tc, 30);
    suite_add_tcase(s, tc);
    return s;
}
