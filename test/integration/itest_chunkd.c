/* itest_chunkd.c - real chunkd processes on loopback: chains, corruption, kill -9, REPLICATE. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checksum.h"
#include "codec.h"
#include "proto.h"
#include "rpc.h"
#include "testlib.h"
#include "util.h"

#define MIB (1u << 20)
#define CALL_MS 10000

struct srv {
    pid_t pid;
    int port;
    uint32_t id; /* the server id we use for it in chains */
    char *dir, *log;
    struct rpc_conn *c;
};

static char *base;
static struct rpc_mt *mt;
static struct srv S[3];

/* ----- processes ----- */

static int port_open(void *arg) { return testlib_port_open(*(int *)arg); }

static void start_srv(int i, const char *extra)
{
    struct srv *s = &S[i];
    char bin[4096], listen[64], dd[4200];
    snprintf(bin, sizeof(bin), "%s/chunkd", testlib_bindir());
    if (!s->dir) {
        ck_assert_int_ge(asprintf(&s->dir, "%s/s%d", base, i), 0);
        ck_assert_int_ge(asprintf(&s->log, "%s/s%d.log", base, i), 0);
    }
    s->port = testlib_free_port();
    s->id = (uint32_t)i + 1;
    snprintf(listen, sizeof(listen), "listen=127.0.0.1:%d", s->port);
    snprintf(dd, sizeof(dd), "data_dir=%s", s->dir);
    char *argv[] = {bin, "-f", "-o", listen, "-o", dd, "-o", "metad=", "-o",
                    "forward_timeout_ms=3000", "-o", "scrub_interval_s=1", "-o",
                    (char *)(extra ? extra : "scrub_rate=0"),
                    NULL};
    s->pid = testlib_spawn(argv, s->log);
    ck_assert_int_gt(s->pid, 0);
    ck_assert_msg(testlib_wait_for(port_open, &s->port, 10000), "chunkd %d did not start", i);
    struct rpc_conn_opts o = {.role = DFS_ROLE_CLIENT, .node_id = 77,
                              .max_frame_in = DFS_MAX_FRAME_CHUNKD};
    s->c = rpc_mt_connect(mt, "127.0.0.1", s->port, &o);
    ck_assert_ptr_nonnull(s->c);
    for (int t = 0; t < 500 && !rpc_mt_ready(mt, s->c); t++) usleep(10000);
    ck_assert(rpc_mt_ready(mt, s->c));
}

static void stop_all(void)
{
    for (int i = 0; i < 3; i++) {
        if (S[i].pid > 0) {
            int st = testlib_stop(S[i].pid, SIGTERM, 5000);
            /* A clean stop exits 0 (ASan builds: also no leak report). */
            if (st != -1 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
                fprintf(stderr, "chunkd %d exit status %#x (see %s)\n", i, st, S[i].log);
            S[i].pid = 0;
        }
    }
}

static void setup(void)
{
    base = testlib_tmpdir("itest-chunkd");
    mt = rpc_mt_start("itest");
    ck_assert_ptr_nonnull(mt);
    memset(S, 0, sizeof(S));
    atexit(stop_all); /* a failed check exits the test process */
}

static void teardown(void)
{
    stop_all();
    rpc_mt_stop(mt);
    testlib_rmrf(base);
}

/* ----- calls ----- */

static void fill(uint8_t *p, size_t n, unsigned seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i += 8) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        memcpy(p + i, &x, DFS_MIN((size_t)8, n - i));
    }
}

static struct dfs_replica rep_of(int i)
{
    struct dfs_replica r = {.server_id = S[i].id, .host = {"127.0.0.1", 9}, .port = (uint32_t)S[i].port};
    return r;
}

/* Pipelined writes of data[0..len) in 1 MiB pieces to server `first` with chain. */
static int write_chunk(int first, uint64_t id, uint32_t ver, const uint8_t *d, size_t len,
                       struct dfs_replica *chain, uint32_t nchain, uint32_t *failed)
{
    size_t n = (len + MIB - 1) / MIB;
    struct dfs_msg_write *w = calloc(n, sizeof(*w));
    struct rpc_result *res = calloc(n, sizeof(*res));
    struct rpc_batch b;
    rpc_batch_init(&b);
    for (size_t i = 0; i < n; i++) {
        uint32_t sz = (uint32_t)DFS_MIN((size_t)MIB, len - i * MIB);
        w[i] = (struct dfs_msg_write){.chunk_id = id, .version = ver, .offset = i * MIB,
                                      .flags = DFS_WF_CREATE, .chain = chain,
                                      .chain_count = nchain, .csum = csum_buf(d + i * MIB, sz),
                                      .data = {d + i * MIB, sz}};
        rpc_mt_submit(mt, S[first].c, DFS_OP_WRITE, &w[i], CALL_MS, &b, &res[i]);
    }
    rpc_batch_wait(&b);
    rpc_batch_destroy(&b);
    int status = DFS_OK;
    for (size_t i = 0; i < n; i++) {
        int s = res[i].status;
        if (s == DFS_OK) {
            const struct dfs_msg_write_resp *wr = res[i].reply->body;
            s = (int)wr->status;
            if (s != DFS_OK && failed) *failed = wr->failed_server;
        }
        if (s != DFS_OK && status == DFS_OK) status = s;
        rpc_frame_release(res[i].reply);
    }
    free(w);
    free(res);
    return status;
}

static int sync_chunk(int first, uint64_t id, uint32_t ver, struct dfs_replica *chain,
                      uint32_t nchain, uint64_t *len)
{
    struct dfs_msg_chunk_req r = {.chunk_id = id, .version = ver, .chain = chain, .chain_count = nchain};
    struct dfs_frame *f = NULL;
    int s = rpc_mt_call(mt, S[first].c, DFS_OP_SYNC, &r, CALL_MS, &f);
    if (s == DFS_OK) {
        s = (int)f->status;
        if (len) *len = ((struct dfs_msg_write_resp *)f->body)->length;
    }
    rpc_frame_release(f);
    return s;
}

/* Read the whole chunk (1 MiB reads) from server i and compare. */
static int read_check(int i, uint64_t id, uint32_t ver, const uint8_t *want, size_t len)
{
    for (size_t off = 0; off < len + 1; off += MIB) {
        struct dfs_msg_read r = {.chunk_id = id, .version = ver, .offset = off, .length = MIB};
        struct dfs_frame *f = NULL;
        int s = rpc_mt_call(mt, S[i].c, DFS_OP_READ, &r, CALL_MS, &f);
        if (s != DFS_OK) return s;
        const struct dfs_msg_read_resp *rr = f->body;
        s = (int)f->status;
        if (s == DFS_OK) {
            size_t exp = off < len ? DFS_MIN((size_t)MIB, len - off) : 0;
            ck_assert_uint_eq(rr->length, len);
            ck_assert_uint_eq(rr->data.len, exp);
            ck_assert_uint_eq(rr->csum, csum_buf(rr->data.ptr, rr->data.len));
            ck_assert(exp == 0 || memcmp(rr->data.ptr, want + off, exp) == 0);
        }
        rpc_frame_release(f);
        if (s != DFS_OK) return s;
    }
    return DFS_OK;
}

/* State of chunk id in server i's LIST, -1 if absent. */
static int list_state(int i, uint64_t id)
{
    struct dfs_msg_empty e;
    struct dfs_frame *f = NULL;
    int st = -1;
    if (rpc_mt_call(mt, S[i].c, DFS_OP_LIST, &e, CALL_MS, &f) == DFS_OK && f->status == DFS_OK) {
        const struct dfs_msg_list_resp *l = f->body;
        for (uint32_t k = 0; k < l->chunks_count; k++)
            if (l->chunks[k].chunk_id == id) st = (int)l->chunks[k].state;
    }
    rpc_frame_release(f);
    return st;
}

static char *chunk_file(int i, uint64_t id)
{
    char *p;
    ck_assert_int_ge(asprintf(&p, "%s/chunks/%02X/%016llX.chk", S[i].dir, (unsigned)(id & 0xff),
                              (unsigned long long)id), 0);
    return p;
}

/* ----- tests ----- */

START_TEST(test_chain_write)
{
    for (int i = 0; i < 3; i++) start_srv(i, NULL);
    size_t len = 8 * MIB + 12345;
    uint8_t *d = malloc(len);
    fill(d, len, 1);
    struct dfs_replica chain[2] = {rep_of(1), rep_of(2)};
    uint32_t failed = 0;
    ck_assert_int_eq(write_chunk(0, 0x1001, 1, d, len, chain, 2, &failed), DFS_OK);
    uint64_t L = 0;
    ck_assert_int_eq(sync_chunk(0, 0x1001, 1, chain, 2, &L), DFS_OK);
    ck_assert_uint_eq(L, len);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(read_check(i, 0x1001, 1, d, len), DFS_OK);
        ck_assert_int_eq(list_state(i, 0x1001), DFS_RS_OK);
    }
    /* Wrong version and missing chunk. */
    struct dfs_msg_read r = {.chunk_id = 0x1001, .version = 2, .offset = 0, .length = 10};
    struct dfs_frame *f = NULL;
    ck_assert_int_eq(rpc_mt_call(mt, S[2].c, DFS_OP_READ, &r, CALL_MS, &f), DFS_OK);
    ck_assert_uint_eq(f->status, DFS_ESTALE);
    rpc_frame_release(f);
    r.chunk_id = 0x999;
    ck_assert_int_eq(rpc_mt_call(mt, S[2].c, DFS_OP_READ, &r, CALL_MS, &f), DFS_OK);
    ck_assert_uint_eq(f->status, DFS_ENOCHUNK);
    rpc_frame_release(f);
    /* A payload whose checksum does not match is refused everywhere. */
    struct dfs_msg_write w = {.chunk_id = 0x1001, .version = 1, .offset = 0, .chain = chain,
                              .chain_count = 2, .csum = 1234, .data = {d, 4096}};
    ck_assert_int_eq(rpc_mt_call(mt, S[0].c, DFS_OP_WRITE, &w, CALL_MS, &f), DFS_OK);
    ck_assert_uint_eq(f->status, DFS_ECORRUPT);
    rpc_frame_release(f);
    for (int i = 0; i < 3; i++) ck_assert_int_eq(read_check(i, 0x1001, 1, d, len), DFS_OK);
    /* SETVERSION, TRUNCATE and DELETE as metad sends them. */
    struct dfs_msg_setversion sv = {.chunk_id = 0x1001, .old_version = 1, .version = 2};
    ck_assert_int_eq(rpc_mt_call(mt, S[1].c, DFS_OP_SETVERSION, &sv, CALL_MS, &f), DFS_OK);
    ck_assert_uint_eq(f->status, DFS_OK);
    rpc_frame_release(f);
    struct dfs_msg_truncate tr = {.chunk_id = 0x1001, .old_version = 2, .version = 3, .length = MIB + 7};
    ck_assert_int_eq(rpc_mt_call(mt, S[1].c, DFS_OP_TRUNCATE, &tr, CALL_MS, &f), DFS_OK);
    ck_assert_uint_eq(f->status, DFS_OK);
    rpc_frame_release(f);
    ck_assert_int_eq(read_check(1, 0x1001, 3, d, MIB + 7), DFS_OK);
    struct dfs_msg_chunk_req del = {.chunk_id = 0x1001, .version = 0};
    ck_assert_int_eq(rpc_mt_call(mt, S[1].c, DFS_OP_DELETE, &del, CALL_MS, &f), DFS_OK);
    ck_assert_uint_eq(f->status, DFS_OK);
    rpc_frame_release(f);
    ck_assert_int_eq(list_state(1, 0x1001), -1);
    free(d);
}
END_TEST

START_TEST(test_corruption)
{
    start_srv(0, "scrub_rate=64M");
    size_t len = 3 * MIB;
    uint8_t *d = malloc(len);
    fill(d, len, 2);
    ck_assert_int_eq(write_chunk(0, 0x2002, 1, d, len, NULL, 0, NULL), DFS_OK);
    ck_assert_int_eq(write_chunk(0, 0x2003, 1, d, len, NULL, 0, NULL), DFS_OK);
    ck_assert_int_eq(read_check(0, 0x2002, 1, d, len), DFS_OK);
    /* Flip one byte of each replica file on disk. */
    for (uint64_t id = 0x2002; id <= 0x2003; id++) {
        char *p = chunk_file(0, id);
        int fd = open(p, O_RDWR);
        ck_assert_int_ge(fd, 0);
        uint8_t b;
        off_t off = 16384 + MIB + 777;
        ck_assert_int_eq(pread(fd, &b, 1, off), 1);
        b ^= 1;
        ck_assert_int_eq(pwrite(fd, &b, 1, off), 1);
        close(fd);
        free(p);
    }
    /* READ of the bad block: DFS_ECORRUPT, and the replica is marked. */
    ck_assert_int_eq(read_check(0, 0x2002, 1, d, len), DFS_ECORRUPT);
    ck_assert_int_eq(list_state(0, 0x2002), DFS_RS_CORRUPT);
    /* The scrubber finds the other one by itself. */
    int st = -1;
    for (int t = 0; t < 200 && (st = list_state(0, 0x2003)) != DFS_RS_CORRUPT; t++) usleep(50000);
    ck_assert_int_eq(st, DFS_RS_CORRUPT);
    ck_assert_int_eq(read_check(0, 0x2003, 1, d, len), DFS_ECORRUPT);
    /* It was the scrubber (its log line), not a read. */
    char cmd[4400];
    snprintf(cmd, sizeof(cmd), "grep -q 'scrub: chunk 0000000000002003 block' %s", S[0].log);
    ck_assert_int_eq(system(cmd), 0);
    /* After a restart the corrupt replica is still not served (the last
     * block was fine, so the scan finds it fine; the read still verifies). */
    stop_all();
    start_srv(0, "scrub_rate=0");
    ck_assert_int_eq(read_check(0, 0x2002, 1, d, len), DFS_ECORRUPT);
    free(d);
}
END_TEST

struct bg_writer {
    int stop;
    int writes, errors;
    uint64_t max_ms;
    uint32_t failed;
    int last_status;
};

static void *bg_write(void *arg)
{
    struct bg_writer *w = arg;
    size_t len = 4 * MIB;
    uint8_t *d = malloc(len);
    fill(d, len, 3);
    struct dfs_replica chain[2] = {rep_of(1), rep_of(2)};
    for (uint64_t id = 0x3000; !__atomic_load_n(&w->stop, __ATOMIC_RELAXED); id++) {
        uint64_t t0 = dfs_mono_ms();
        uint32_t failed = 0;
        int s = write_chunk(0, id, 1, d, len, chain, 2, &failed);
        uint64_t ms = dfs_mono_ms() - t0;
        if (ms > w->max_ms) w->max_ms = ms;
        w->writes++;
        if (s != DFS_OK) {
            w->errors++;
            w->failed = failed;
            w->last_status = s;
        }
    }
    free(d);
    return NULL;
}

START_TEST(test_kill_mid_chain)
{
    for (int i = 0; i < 3; i++) start_srv(i, NULL);
    struct bg_writer w = {0};
    pthread_t th;
    pthread_create(&th, NULL, bg_write, &w);
    usleep(500000);
    ck_assert_int_gt(w.writes, 0);
    ck_assert_int_eq(w.errors, 0);
    /* kill -9 the middle of the chain while writes are in flight. */
    kill(S[1].pid, SIGKILL);
    waitpid(S[1].pid, NULL, 0);
    S[1].pid = 0;
    uint64_t t_kill = dfs_mono_ms();
    while (w.errors < 3 && dfs_mono_ms() - t_kill < 30000) usleep(20000);
    __atomic_store_n(&w.stop, 1, __ATOMIC_RELAXED);
    pthread_join(th, NULL);
    ck_assert_msg(w.errors >= 3, "writes kept succeeding without the middle server");
    ck_assert_uint_eq(w.failed, S[1].id);
    ck_assert_msg(w.last_status == DFS_ECONN || w.last_status == DFS_ETIMEDOUT,
                  "status %d", w.last_status);
    /* Every write finished well inside the client's deadline. */
    ck_assert_msg(w.max_ms < CALL_MS, "a write took %llu ms", (unsigned long long)w.max_ms);
    /* The head still serves reads of what was acknowledged, and plain writes. */
    size_t len = 100000;
    uint8_t *d = malloc(len);
    fill(d, len, 4);
    ck_assert_int_eq(write_chunk(0, 0x4000, 1, d, len, NULL, 0, NULL), DFS_OK);
    ck_assert_int_eq(read_check(0, 0x4000, 1, d, len), DFS_OK);
    /* A chain whose last member is dead fails fast too, naming it. */
    kill(S[2].pid, SIGKILL);
    waitpid(S[2].pid, NULL, 0);
    S[2].pid = 0;
    start_srv(1, NULL);
    struct dfs_replica chain[2] = {rep_of(1), rep_of(2)};
    uint32_t failed = 0;
    uint64_t t0 = dfs_mono_ms();
    int s = write_chunk(0, 0x4001, 1, d, len, chain, 2, &failed);
    ck_assert_int_ne(s, DFS_OK);
    ck_assert_uint_eq(failed, S[2].id);
    ck_assert_uint_lt(dfs_mono_ms() - t0, CALL_MS);
    free(d);
}
END_TEST

START_TEST(test_replicate)
{
    for (int i = 0; i < 2; i++) start_srv(i, NULL);
    size_t len = 9 * MIB + 4321;
    uint8_t *d = malloc(len);
    fill(d, len, 5);
    ck_assert_int_eq(write_chunk(0, 0x5005, 7, d, len, NULL, 0, NULL), DFS_OK);
    /* First source unreachable, second good. */
    struct dfs_replica src[2] = {{.server_id = 99, .host = {"127.0.0.1", 9},
                                  .port = (uint32_t)testlib_free_port()},
                                 rep_of(0)};
    struct dfs_msg_replicate r = {.chunk_id = 0x5005, .version = 7, .sources = src, .sources_count = 2};
    struct dfs_frame *f = NULL;
    ck_assert_int_eq(rpc_mt_call(mt, S[1].c, DFS_OP_REPLICATE, &r, 30000, &f), DFS_OK);
    ck_assert_uint_eq(f->status, DFS_OK);
    ck_assert_uint_eq(((struct dfs_msg_write_resp *)f->body)->length, len);
    rpc_frame_release(f);
    ck_assert_int_eq(read_check(1, 0x5005, 7, d, len), DFS_OK);
    ck_assert_int_eq(list_state(1, 0x5005), DFS_RS_OK);
    /* The copy survives a restart (installed durably, checksums right). */
    testlib_stop(S[1].pid, SIGTERM, 5000);
    S[1].pid = 0;
    start_srv(1, NULL);
    ck_assert_int_eq(read_check(1, 0x5005, 7, d, len), DFS_OK);
    /* Wrong version at the source: refused, nothing installed. */
    r.version = 8;
    r.sources = &src[1];
    r.sources_count = 1;
    ck_assert_int_eq(rpc_mt_call(mt, S[1].c, DFS_OP_REPLICATE, &r, 30000, &f), DFS_OK);
    ck_assert_uint_eq(f->status, DFS_ESTALE);
    rpc_frame_release(f);
    ck_assert_int_eq(list_state(1, 0x5005), DFS_RS_OK);
    /* A corrupt source is detected and not copied. */
    char *p = chunk_file(0, 0x5005);
    int fd = open(p, O_RDWR);
    ck_assert_int_eq(pwrite(fd, "X", 1, 16384 + 5 * MIB), 1);
    close(fd);
    free(p);
    struct dfs_msg_chunk_req del = {.chunk_id = 0x5005};
    ck_assert_int_eq(rpc_mt_call(mt, S[1].c, DFS_OP_DELETE, &del, CALL_MS, &f), DFS_OK);
    rpc_frame_release(f);
    r.version = 7;
    ck_assert_int_eq(rpc_mt_call(mt, S[1].c, DFS_OP_REPLICATE, &r, 30000, &f), DFS_OK);
    ck_assert_uint_eq(f->status, DFS_ECORRUPT);
    rpc_frame_release(f);
    ck_assert_int_eq(list_state(1, 0x5005), -1);
    free(d);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("itest_chunkd");
    TCase *tc = tcase_create("chunkd");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_chain_write);
    tcase_add_test(tc, test_corruption);
    tcase_add_test(tc, test_kill_mid_chain);
    tcase_add_test(tc, test_replicate);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
