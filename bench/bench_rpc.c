/* bench_rpc.c - rpc.c throughput over loopback compared with a plain TCP stream. */
#include "codec.h"
#include "log.h"
#include "rpc.h"
#include "util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * One connection; the server (its own loop thread) answers every WRITE with
 * a write_resp, the client (main thread, its own loop) keeps `depth` WRITEs
 * with `size` bytes of bulk in flight for `secs` seconds.  Then a plain TCP
 * socket pair moves 1 MiB buffers from one thread to another for the same
 * time: the ceiling the rpc layer is compared with.
 *
 *   bench_rpc [seconds]
 */

static double g_secs = 3.0;

/* ----- server ----- */

static void h_write(struct rpc_req *req)
{
    const struct dfs_msg_write *w = req->f.body;
    struct dfs_msg_write_resp r = {.status = DFS_OK, .length = w->data.len};
    rpc_reply(req, &r, NULL, NULL);
}

static rpc_handler_fn handlers[DFS_OP_MAX] = {[DFS_OP_WRITE] = h_write};

struct srv {
    struct rpc_mt *mt;
    struct rpc_server *s;
    int port;
};

static void srv_listen(void *arg)
{
    struct srv *sv = arg;
    struct rpc_conn_opts o = {.role = DFS_ROLE_CHUNKD,
                              .node_id = 1,
                              .max_frame_in = DFS_MAX_FRAME_CHUNKD,
                              .handlers = handlers};
    char err[256];
    sv->s = rpc_listen(rpc_mt_loop(sv->mt), "127.0.0.1", 0, &o, err, sizeof(err));
    if (sv->s == NULL) {
        fprintf(stderr, "bench_rpc: listen: %s\n", err);
        exit(1);
    }
    sv->port = rpc_server_port(sv->s);
}

static void srv_close(void *arg)
{
    struct srv *sv = arg;
    rpc_server_close(sv->s);
}

/* ----- client ----- */

struct run {
    uv_loop_t *loop;
    struct rpc_conn *c;
    struct dfs_msg_write w;
    uint64_t end_ns;
    uint64_t frames, bytes;
    unsigned inflight;
    int errors;
    bool connected;
};

static void issue(struct run *r);

static void done_cb(void *arg, int status, struct dfs_frame *f)
{
    struct run *r = arg;
    r->inflight--;
    if (status != DFS_OK || f->status != DFS_OK) {
        r->errors++;
    } else {
        r->frames++;
        r->bytes += r->w.data.len;
    }
    rpc_frame_release(f);
    if (dfs_mono_ns() < r->end_ns && r->errors == 0)
        issue(r);
}

static void issue(struct run *r)
{
    if (rpc_call(r->c, DFS_OP_WRITE, &r->w, 10000, done_cb, r) == DFS_OK)
        r->inflight++;
    else
        r->errors++;
}

static void on_connected(struct rpc_conn *c, const struct dfs_msg_hello_resp *resp)
{
    struct run *r = rpc_conn_data(c);
    r->connected = true;
}

/* Returns MB/s (1 MB = 1e6 bytes). */
static double bench_rpc(int port, uint32_t size, unsigned depth)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct run r;
    memset(&r, 0, sizeof(r));
    r.loop = &loop;
    char *buf = malloc(size);
    memset(buf, 0x5a, size);
    r.w.chunk_id = 1;
    r.w.version = 1;
    r.w.data.ptr = buf;
    r.w.data.len = size;
    r.w.csum = 0;
    struct rpc_conn_opts o = {.role = DFS_ROLE_CLIENT,
                              .node_id = 2,
                              .max_frame_in = DFS_MAX_FRAME_CHUNKD,
                              .on_connected = on_connected,
                              .data = &r};
    r.c = rpc_connect(&loop, "127.0.0.1", port, &o);
    while (!r.connected)
        uv_run(&loop, UV_RUN_ONCE);
    uint64_t t0 = dfs_mono_ns();
    r.end_ns = t0 + (uint64_t)(g_secs * 1e9);
    for (unsigned i = 0; i < depth; i++)
        issue(&r);
    while (r.inflight > 0)
        uv_run(&loop, UV_RUN_ONCE);
    double secs = (double)(dfs_mono_ns() - t0) / 1e9;
    rpc_conn_close(r.c);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free(buf);
    double mbs = (double)r.bytes / secs / 1e6;
    printf("rpc   %8u B x %2u in flight: %9.0f frames/s %9.1f MB/s%s\n", size, depth,
           (double)r.frames / secs, mbs, r.errors ? "  (errors!)" : "");
    return mbs;
}

/* ----- plain TCP ----- */

struct raw {
    int fd;
    uint64_t end_ns;
    uint64_t bytes;
};

static void *raw_send(void *arg)
{
    struct raw *x = arg;
    size_t n = 1 << 20;
    char *b = malloc(n);
    memset(b, 0x5a, n);
    while (dfs_mono_ns() < x->end_ns) {
        size_t off = 0;
        while (off < n) {
            ssize_t k = send(x->fd, b + off, n - off, MSG_NOSIGNAL);
            if (k <= 0)
                goto out;
            off += (size_t)k;
        }
        x->bytes += n;
    }
out:
    shutdown(x->fd, SHUT_WR);
    free(b);
    return NULL;
}

static void *raw_recv(void *arg)
{
    struct raw *x = arg;
    size_t n = 1 << 20;
    char *b = malloc(n);
    for (;;) {
        ssize_t k = recv(x->fd, b, n, 0);
        if (k <= 0)
            break;
        x->bytes += (uint64_t)k;
    }
    free(b);
    return NULL;
}

static double bench_raw(int bufsize)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof(a);
    if (bind(ls, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(ls, 1) != 0 ||
        getsockname(ls, (struct sockaddr *)&a, &al) != 0) {
        perror("bench_rpc: raw listen");
        exit(1);
    }
    int cfd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(cfd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        perror("bench_rpc: raw connect");
        exit(1);
    }
    int sfd = accept(ls, NULL, NULL);
    close(ls);
    if (bufsize > 0) {
        setsockopt(cfd, SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof(bufsize));
        setsockopt(sfd, SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof(bufsize));
    }
    struct raw tx = {.fd = cfd}, rx = {.fd = sfd};
    uint64_t t0 = dfs_mono_ns();
    tx.end_ns = t0 + (uint64_t)(g_secs * 1e9);
    pthread_t t1, t2;
    pthread_create(&t2, NULL, raw_recv, &rx);
    pthread_create(&t1, NULL, raw_send, &tx);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    double secs = (double)(dfs_mono_ns() - t0) / 1e9;
    close(cfd);
    close(sfd);
    double mbs = (double)rx.bytes / secs / 1e6;
    printf("raw   1 MiB send() -> recv() loopback, %s:%*s%9.1f MB/s\n",
           bufsize ? "4 MiB socket buffers" : "default buffers", bufsize ? 4 : 9, "", mbs);
    return mbs;
}

int main(int argc, char **argv)
{
    log_init("bench_rpc");
    log_set_level(LOG_LVL_WARNING);
    if (argc > 1)
        g_secs = atof(argv[1]);
    if (g_secs <= 0)
        g_secs = 3.0;

    struct srv sv = {0};
    sv.mt = rpc_mt_start("bench-srv");
    rpc_mt_exec(sv.mt, srv_listen, &sv);

    /* The better of default and large socket buffers (rpc.c uses large). */
    double raw = bench_raw(0);
    double raw_big = bench_raw(4 << 20);
    if (raw_big > raw)
        raw = raw_big;
    double m1_16 = bench_rpc(sv.port, 1u << 20, 16);
    double m1_64 = bench_rpc(sv.port, 1u << 20, 64);
    double k64_16 = bench_rpc(sv.port, 64u << 10, 16);
    double k64_64 = bench_rpc(sv.port, 64u << 10, 64);
    bench_rpc(sv.port, 4u << 10, 64);

    printf("ratio rpc/raw: 1 MiB x16 %.0f%%, 1 MiB x64 %.0f%%, 64 KiB x16 %.0f%%, "
           "64 KiB x64 %.0f%%\n",
           100 * m1_16 / raw, 100 * m1_64 / raw, 100 * k64_16 / raw, 100 * k64_64 / raw);
    double best = m1_16 > m1_64 ? m1_16 : m1_64;
    printf("target (1 MiB >= 50%% of raw): %s\n", best >= raw / 2 ? "met" : "NOT met");

    rpc_mt_exec(sv.mt, srv_close, &sv);
    rpc_mt_stop(sv.mt);
    return 0;
}
