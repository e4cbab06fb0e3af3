/* bench_chunkd.c - sequential write/read MB/s of chunkd servers: 1 MiB requests, pipelined. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "checksum.h"
#include "log.h"
#include "proto.h"
#include "rpc.h"
#include "util.h"

/*
 * usage: bench_chunkd -s HOST:PORT [-s HOST:PORT ...] [-m MiB] [-q depth] [-t write|read|chain]
 *   write  writes -m MiB to the first server as 64 MiB chunks, 1 MiB WRITEs with
 *          `depth` in flight, then SYNCs every chunk; prints MB/s including the syncs
 *   read   reads the chunks of the last write back (run after write, same -m)
 *   chain  like write, but every WRITE/SYNC is forwarded down the chain of
 *          the other servers (-s order)
 * Chunk ids: -i BASE (default 0xBE0000); write and read must use the same.
 */

#define IO (1u << 20)
#define CHUNK (64u << 20)

static struct {
    uv_loop_t *loop;
    struct rpc_conn *c;
    struct dfs_replica chain[8];
    char hosts[8][256];
    int ports[8];
    int nsrv;
    uint32_t nchain;
    uint64_t total, issued, done;
    uint32_t inflight, depth;
    int mode; /* 0 write, 1 read, 2 chain */
    uint64_t base;
    uint8_t *buf;
    uint64_t csum;
    int errors;
    uint32_t syncs_left;
    bool syncing;
} B;

static void issue(void);

static void finish_if_done(void)
{
    if (B.done >= B.total && B.inflight == 0 && (!B.syncing || B.syncs_left == 0)) uv_stop(B.loop);
}

static void sync_cb(void *arg, int status, struct dfs_frame *f)
{
    if (status != DFS_OK || f->status != DFS_OK) {
        fprintf(stderr, "SYNC failed: %s\n", dfs_strerror(status != DFS_OK ? status : (int)f->status));
        B.errors++;
    }
    rpc_frame_release(f);
    B.syncs_left--;
    finish_if_done();
}

static void start_syncs(void)
{
    B.syncing = true;
    uint32_t nchunks = (uint32_t)((B.total + CHUNK - 1) / CHUNK);
    B.syncs_left = nchunks;
    for (uint32_t i = 0; i < nchunks; i++) {
        struct dfs_msg_chunk_req r = {.chunk_id = B.base + i, .version = 1, .chain = B.chain,
                                      .chain_count = B.nchain};
        if (rpc_call(B.c, DFS_OP_SYNC, &r, 60000, sync_cb, NULL) != DFS_OK) {
            B.errors++;
            B.syncs_left--;
        }
    }
    finish_if_done();
}

static void io_cb(void *arg, int status, struct dfs_frame *f)
{
    int st = status != DFS_OK ? status : (int)f->status;
    if (st == DFS_OK && B.mode == 1) {
        const struct dfs_msg_read_resp *r = f->body;
        if (r->data.len != IO) st = DFS_EIO;
    }
    if (st != DFS_OK) {
        if (B.errors++ < 5) fprintf(stderr, "request failed: %s\n", dfs_strerror(st));
    }
    rpc_frame_release(f);
    B.inflight--;
    B.done += IO;
    if (B.done >= B.total && B.inflight == 0 && B.mode != 1 && !B.syncing) {
        start_syncs();
        return;
    }
    issue();
    finish_if_done();
}

static void issue(void)
{
    while (B.inflight < B.depth && B.issued < B.total) {
        uint64_t off = B.issued;
        uint64_t id = B.base + off / CHUNK;
        int r;
        if (B.mode == 1) {
            struct dfs_msg_read m = {.chunk_id = id, .version = 1, .offset = off % CHUNK, .length = IO};
            r = rpc_call(B.c, DFS_OP_READ, &m, 60000, io_cb, NULL);
        } else {
            struct dfs_msg_write m = {.chunk_id = id, .version = 1, .offset = off % CHUNK,
                                      .flags = DFS_WF_CREATE, .chain = B.chain,
                                      .chain_count = B.nchain, .csum = B.csum,
                                      .data = {B.buf, IO}};
            r = rpc_call(B.c, DFS_OP_WRITE, &m, 60000, io_cb, NULL);
        }
        if (r != DFS_OK) {
            fprintf(stderr, "rpc_call: %s\n", dfs_strerror(r));
            B.errors++;
            B.total = B.issued;
            break;
        }
        B.issued += IO;
        B.inflight++;
    }
}

static void on_connected(struct rpc_conn *c, const struct dfs_msg_hello_resp *resp) { uv_stop(B.loop); }

int main(int argc, char **argv)
{
    const char *mode = "write";
    uint64_t mib = 1024;
    B.depth = 16;
    B.base = 0xBE0000;
    int opt;
    log_init("bench_chunkd");
    while ((opt = getopt(argc, argv, "s:m:q:t:i:")) != -1) {
        char err[256];
        switch (opt) {
        case 's':
            if (B.nsrv == 8 || dfs_parse_hostport(optarg, DFS_PORT_CHUNKD, B.hosts[B.nsrv], 256,
                                                  &B.ports[B.nsrv], err, sizeof(err)) != 0) {
                fprintf(stderr, "bad -s %s\n", optarg);
                return 2;
            }
            B.nsrv++;
            break;
        case 'm': mib = strtoull(optarg, NULL, 0); break;
        case 'q': B.depth = (uint32_t)strtoul(optarg, NULL, 0); break;
        case 't': mode = optarg; break;
        case 'i': B.base = strtoull(optarg, NULL, 0); break;
        default:
            fprintf(stderr, "usage: bench_chunkd -s HOST:PORT [-s ...] [-m MiB] [-q depth] "
                            "[-t write|read|chain] [-i base_id]\n");
            return 2;
        }
    }
    if (B.nsrv == 0 || B.depth == 0 || mib == 0) {
        fprintf(stderr, "bench_chunkd: need -s HOST:PORT\n");
        return 2;
    }
    B.mode = !strcmp(mode, "read") ? 1 : !strcmp(mode, "chain") ? 2 : 0;
    if (B.mode == 2) {
        for (int i = 1; i < B.nsrv; i++) {
            B.chain[B.nchain++] = (struct dfs_replica){
                .server_id = (uint32_t)i + 1, .host = {B.hosts[i], (uint32_t)strlen(B.hosts[i])},
                .port = (uint32_t)B.ports[i]};
        }
    }
    B.total = mib << 20;
    B.buf = malloc(IO);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < IO; i += 8) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        memcpy(B.buf + i, &x, 8);
    }
    B.csum = csum_buf(B.buf, IO);
    B.loop = uv_default_loop();
    struct rpc_conn_opts o = {.role = DFS_ROLE_CLIENT, .node_id = 1,
                              .max_frame_in = DFS_MAX_FRAME_CHUNKD, .on_connected = on_connected};
    B.c = rpc_connect(B.loop, B.hosts[0], B.ports[0], &o);
    uv_run(B.loop, UV_RUN_DEFAULT);
    if (!rpc_conn_ready(B.c)) {
        fprintf(stderr, "cannot connect to %s:%d\n", B.hosts[0], B.ports[0]);
        return 1;
    }
    uint64_t t0 = dfs_mono_ns();
    issue();
    uv_run(B.loop, UV_RUN_DEFAULT);
    double s = (double)(dfs_mono_ns() - t0) / 1e9;
    double mbs = (double)B.done / 1e6 / s;
    printf("%-6s %4d server(s) %6llu MiB  depth %2u  %8.1f MB/s  (%.2f s, %d errors)\n", mode,
           B.mode == 2 ? B.nsrv : 1, (unsigned long long)mib, B.depth, mbs, s, B.errors);
    rpc_conn_close(B.c);
    uv_run(B.loop, UV_RUN_NOWAIT);
    free(B.buf);
    return B.errors ? 1 : 0;
}
