/* test_fuse_data.c - fuse-client data path (striping, buffering, read-ahead,
 * failover) against an in-process fake metad and fake chunk servers. */
#include <stdlib.h>
#include <string.h>

#include "../../fuse-client/data.h"
#include "checksum.h"
#include "testlib.h"
#include "util.h"

#define NSRV 3
#define MAXCH 64
#define CHSZ (1u << 20) /* small chunks: many chunk sets in a few MiB */

/* ----- fake chunk servers: memory, writes applied to the whole chain ----- */
struct fsrv {
    struct rpc_server *srv;
    int port;
    int dead;     /* answer nothing useful: ECONN-like (we close on request) */
    int corrupt;  /* READ answers carry a wrong checksum */
    char *data[MAXCH];
    uint64_t len[MAXCH];
    int reads, writes;
};
static struct fsrv S[NSRV];

static struct fsrv *srv_by_port(uint32_t port)
{
    for (int i = 0; i < NSRV; i++)
        if ((uint32_t)S[i].port == port)
            return &S[i];
    return NULL;
}

static void store(struct fsrv *s, uint64_t id, uint64_t off, const void *p, uint32_t n)
{
    if (s->data[id] == NULL)
        s->data[id] = calloc(1, CHSZ);
    memcpy(s->data[id] + off, p, n);
    if (off + n > s->len[id])
        s->len[id] = off + n;
}

static struct fsrv *self_of(struct rpc_req *req)
{
    return rpc_conn_data(req->conn);
}

static void h_write(struct rpc_req *req)
{
    struct fsrv *s = self_of(req);
    const struct dfs_msg_write *w = req->f.body;
    if (s->dead) {
        rpc_conn_close(req->conn);
        rpc_req_free(req);
        return;
    }
    struct dfs_msg_write_resp r = {0};
    if (w->chunk_id >= MAXCH || w->offset + w->data.len > CHSZ ||
        csum_buf(w->data.ptr, w->data.len) != w->csum) {
        rpc_reply_status(req, DFS_EINVAL);
        return;
    }
    for (uint32_t i = 0; i < w->chain_count; i++) {
        struct fsrv *t = srv_by_port(w->chain[i].port);
        if (t == NULL || t->dead) {
            r.status = DFS_ECONN;
            r.failed_server = w->chain[i].server_id;
            rpc_reply(req, &r, NULL, NULL);
            return;
        }
    }
    store(s, w->chunk_id, w->offset, w->data.ptr, w->data.len);
    s->writes++;
    for (uint32_t i = 0; i < w->chain_count; i++)
        store(srv_by_port(w->chain[i].port), w->chunk_id, w->offset, w->data.ptr, w->data.len);
    r.status = DFS_OK;
    r.length = s->len[w->chunk_id];
    rpc_reply(req, &r, NULL, NULL);
}

static char garbage[4u << 20];

static void h_read(struct rpc_req *req)
{
    struct fsrv *s = self_of(req);
    const struct dfs_msg_read *rd = req->f.body;
    if (s->dead) {
        rpc_conn_close(req->conn);
        rpc_req_free(req);
        return;
    }
    s->reads++;
    if (rd->chunk_id >= MAXCH || s->data[rd->chunk_id] == NULL) {
        rpc_reply_status(req, DFS_ENOCHUNK);
        return;
    }
    struct dfs_msg_read_resp r = {0};
    uint64_t l = s->len[rd->chunk_id];
    uint32_t n = rd->offset >= l ? 0 : (uint32_t)DFS_MIN((uint64_t)rd->length, l - rd->offset);
    r.status = DFS_OK;
    r.length = n;
    r.data.ptr = s->data[rd->chunk_id] + rd->offset;
    r.data.len = n;
    r.csum = csum_buf(r.data.ptr, n);
    if (s->corrupt) {
        r.data.ptr = garbage;
        garbage[0]++;
    }
    rpc_reply(req, &r, NULL, NULL);
}

static void h_sync(struct rpc_req *req)
{
    struct dfs_msg_write_resp r = {0};
    rpc_reply(req, &r, NULL, NULL);
}

/* ----- fake metad: one file, inode 2 ----- */
static const struct dfs_layout LAYOUT = {65536, 2, CHSZ};
struct fchunk {
    int exists;
    uint32_t version;
    int nrep;
    int rep[NSRV];
};
static struct fchunk CH[MAXCH];
static uint64_t fsize;
static int badreports, commits, grants;

static void fill_chunk(struct dfs_chunk *out, struct dfs_replica *reps, uint64_t idx)
{
    memset(out, 0, sizeof(*out));
    out->index = idx;
    out->chunk_id = idx;
    out->version = CH[idx].version;
    out->lease_ms = 20000;
    for (int i = 0; i < CH[idx].nrep; i++) {
        int k = CH[idx].rep[i];
        reps[i].server_id = (uint32_t)k + 1;
        reps[i].host.ptr = "127.0.0.1";
        reps[i].host.len = 9;
        reps[i].port = (uint32_t)S[k].port;
    }
    out->replicas = reps;
    out->replicas_count = (uint32_t)CH[idx].nrep;
}

static void h_chunks(struct rpc_req *req)
{
    const struct dfs_msg_chunks_req *q = req->f.body;
    static struct dfs_chunk out[MAXCH];
    static struct dfs_replica reps[MAXCH][NSRV];
    struct dfs_msg_chunks_resp r = {0};
    r.layout = LAYOUT;
    r.size = fsize;
    r.goal = 2;
    r.chunks = out;
    for (uint64_t i = q->first; i < q->first + q->count && i < MAXCH; i++)
        if (CH[i].exists)
            fill_chunk(&out[r.chunks_count++], reps[i], i);
    rpc_reply(req, &r, NULL, NULL);
}

static void h_grant(struct rpc_req *req)
{
    const struct dfs_msg_grant *q = req->f.body;
    static struct dfs_replica reps[NSRV];
    grants++;
    if (q->index >= MAXCH) {
        rpc_reply_status(req, DFS_EFBIG);
        return;
    }
    struct fchunk *c = &CH[q->index];
    if (!c->exists) {
        c->exists = 1;
        c->nrep = 2;
        c->rep[0] = (int)(q->index % NSRV);
        c->rep[1] = (int)((q->index + 1) % NSRV);
    }
    if (q->bad_server) {
        int k = 0;
        for (int i = 0; i < c->nrep; i++)
            if (c->rep[i] + 1 != (int)q->bad_server)
                c->rep[k++] = c->rep[i];
        c->nrep = k;
    }
    c->version++;
    struct dfs_msg_grant_resp r = {0};
    fill_chunk(&r.chunk, reps, q->index);
    rpc_reply(req, &r, NULL, NULL);
}

static void h_commit(struct rpc_req *req)
{
    const struct dfs_msg_commit *q = req->f.body;
    commits++;
    fsize = q->size;
    struct dfs_msg_attr_resp r = {0};
    r.attr.ino = q->ino;
    r.attr.mode = 0100644;
    r.attr.size = fsize;
    r.attr.mtime = q->mtime;
    rpc_reply(req, &r, NULL, NULL);
}

static void h_badrep(struct rpc_req *req)
{
    badreports++;
    rpc_reply_status(req, DFS_OK);
}

static rpc_handler_fn meta_handlers[DFS_OP_MAX];
static rpc_handler_fn chunk_handlers[DFS_OP_MAX];
static struct rpc_server *meta_srv;
static int meta_port;
static int srv_index;

static void srv_set_data(struct rpc_conn *c, const struct dfs_msg_hello *h,
                         struct dfs_msg_hello_resp *resp)
{
    resp->status = DFS_OK;
    resp->proto_version = DFS_PROTO_VERSION;
}

static void start_servers(void *arg)
{
    char err[256];
    struct rpc_conn_opts o = {0};
    o.role = DFS_ROLE_METAD;
    o.max_frame_in = DFS_MAX_FRAME_TO_METAD;
    o.handlers = meta_handlers;
    meta_srv = rpc_listen(arg, "127.0.0.1", 0, &o, err, sizeof(err));
    ck_assert_msg(meta_srv != NULL, "%s", err);
    meta_port = rpc_server_port(meta_srv);
    for (srv_index = 0; srv_index < NSRV; srv_index++) {
        struct rpc_conn_opts co = {0};
        co.role = DFS_ROLE_CHUNKD;
        co.max_frame_in = DFS_MAX_FRAME_CHUNKD;
        co.handlers = chunk_handlers;
        co.on_hello = srv_set_data;
        co.data = &S[srv_index];
        S[srv_index].srv = rpc_listen(arg, "127.0.0.1", 0, &co, err, sizeof(err));
        ck_assert_msg(S[srv_index].srv != NULL, "%s", err);
        S[srv_index].port = rpc_server_port(S[srv_index].srv);
    }
}

static struct rpc_mt *srv_mt, *cli_mt;
static struct dfsc C;
static struct dnode *N;

static void setup(void)
{
    meta_handlers[DFS_OP_CHUNKS] = h_chunks;
    meta_handlers[DFS_OP_GRANT] = h_grant;
    meta_handlers[DFS_OP_COMMIT] = h_commit;
    meta_handlers[DFS_OP_BADREPLICA] = h_badrep;
    chunk_handlers[DFS_OP_WRITE] = h_write;
    chunk_handlers[DFS_OP_READ] = h_read;
    chunk_handlers[DFS_OP_SYNC] = h_sync;
    srv_mt = rpc_mt_start("fake-servers");
    ck_assert_ptr_nonnull(srv_mt);
    rpc_mt_exec(srv_mt, start_servers, rpc_mt_loop(srv_mt));
    cli_mt = rpc_mt_start("client");
    char addr[64], err[256];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", meta_port);
    struct mclient_opts mo = {addr, DFS_ROLE_CLIENT, 2000, 5000};
    memset(&C, 0, sizeof(C));
    C.mt = cli_mt;
    C.mc = mclient_new(cli_mt, &mo, err, sizeof(err));
    ck_assert_ptr_nonnull(C.mc);
    C.timeout_ms = 5000;
    C.chunk_timeout_ms = 1000;
    C.wbuf_max = 1u << 20;
    ck_assert_int_eq(dfsc_init(&C), 0);
    N = dnode_get(&C, 2);
    struct dfs_attr a = {0};
    a.ino = 2;
    a.mode = 0100644;
    dnode_set_attr(N, &a);
}

static void teardown(void)
{
    /* The test process exits right after (fork mode): nothing to free. */
}

static unsigned char *ref;
static uint64_t reflen;

static void do_write(uint64_t off, size_t len, unsigned seed)
{
    unsigned char *b = malloc(len);
    srand(seed);
    for (size_t i = 0; i < len; i++)
        b[i] = (unsigned char)rand();
    if (off + len > reflen) {
        ref = realloc(ref, off + len);
        memset(ref + reflen, 0, off + len - reflen);
        reflen = off + len;
    }
    memcpy(ref + off, b, len);
    pthread_mutex_lock(&N->mu);
    ck_assert_int_eq(data_write(&C, N, off, b, len), DFS_OK);
    pthread_mutex_unlock(&N->mu);
    free(b);
}

static void check_read(uint64_t off, size_t len)
{
    char *b = malloc(len + 1);
    size_t got = 0;
    pthread_mutex_lock(&N->mu);
    ck_assert_int_eq(data_read(&C, N, off, len, b, &got), DFS_OK);
    pthread_mutex_unlock(&N->mu);
    size_t want = off >= reflen ? 0 : (size_t)DFS_MIN((uint64_t)len, reflen - off);
    ck_assert_uint_eq(got, want);
    ck_assert_msg(memcmp(b, ref + off, got) == 0, "data differs at %llu+%zu",
                  (unsigned long long)off, len);
    free(b);
}

static void commit(void)
{
    pthread_mutex_lock(&N->mu);
    ck_assert_int_eq(data_commit(&C, N, 0), DFS_OK);
    pthread_mutex_unlock(&N->mu);
}

START_TEST(test_seq_write_read)
{
    /* 6 MiB = 3 chunk sets of 2 x 1 MiB chunks, in 128 KiB writes. */
    for (uint64_t off = 0; off < (6u << 20); off += 131072)
        do_write(off, 131072, (unsigned)off);
    commit();
    ck_assert_uint_eq(fsize, 6u << 20);
    for (int i = 0; i < 6; i++)
        ck_assert(CH[i].exists);
    /* Each chunk holds exactly its stripe units (chunk-local layout). */
    ck_assert_uint_eq(S[CH[1].rep[0]].len[1], CHSZ);
    ck_assert(memcmp(S[CH[1].rep[0]].data[1], ref + 65536, 65536) == 0);
    ck_assert(memcmp(S[CH[1].rep[1]].data[1] + 65536, ref + 3 * 65536, 65536) == 0);
    data_invalidate(&C, N);
    for (uint64_t off = 0; off < (6u << 20); off += 100000)
        check_read(off, 100000);
    check_read(0, 6u << 20);
    check_read((6u << 20) - 10, 100);
}
END_TEST

START_TEST(test_random_overwrite_and_holes)
{
    do_write(0, 300000, 1);
    do_write(5u << 20, 1000, 2); /* hole between */
    do_write(70000, 100, 3);
    do_write(299990, 50, 4);     /* extends an extent */
    do_write(1000, 200000, 5);   /* overlaps several */
    /* Read-your-writes before anything is flushed. */
    check_read(0, (size_t)reflen);
    commit();
    srand(99);
    for (int i = 0; i < 200; i++) {
        uint64_t off = (uint64_t)rand() % (reflen + 1000);
        check_read(off, (size_t)(rand() % 200000 + 1));
    }
    /* More random writes mixed with reads. */
    for (int i = 0; i < 300; i++) {
        uint64_t off = (uint64_t)rand() % (6u << 20);
        if (i % 3)
            do_write(off, (size_t)(rand() % 9000 + 1), (unsigned)i);
        else
            check_read(off, (size_t)(rand() % 70000 + 1));
    }
    commit();
    data_invalidate(&C, N);
    check_read(0, (size_t)reflen);
}
END_TEST

START_TEST(test_read_failover)
{
    for (uint64_t off = 0; off < (4u << 20); off += 1u << 20)
        do_write(off, 1u << 20, (unsigned)off + 7);
    commit();
    data_invalidate(&C, N);
    /* Replicas: chunk i on servers i%3 and (i+1)%3. */
    S[0].dead = 1; /* first replica of chunks 0 and 3 */
    check_read(0, 4u << 20);
    S[0].dead = 0;
    data_invalidate(&C, N);
    S[1].corrupt = 1; /* first replica of chunk 1, second of chunk 0 */
    check_read(0, 4u << 20);
    ck_assert_int_gt(badreports, 0);
    S[1].corrupt = 0;
}
END_TEST

START_TEST(test_write_failover)
{
    do_write(0, 2u << 20, 11);
    commit();
    S[1].dead = 1; /* in the chain of chunks 0 and 1 */
    do_write(0, 2u << 20, 12);
    commit();
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < CH[i].nrep; k++)
            ck_assert_int_ne(CH[i].rep[k], 1);
    pthread_mutex_lock(&N->mu);
    ck_assert_int_eq(data_fsync(&C, N), DFS_OK);
    pthread_mutex_unlock(&N->mu);
    data_invalidate(&C, N);
    check_read(0, 2u << 20);
}
END_TEST

START_TEST(test_all_dead_is_bounded)
{
    do_write(0, 1u << 20, 21);
    commit();
    data_invalidate(&C, N);
    for (int i = 0; i < NSRV; i++)
        S[i].dead = 1;
    char *b = malloc(1u << 20);
    size_t got;
    uint64_t t0 = dfs_mono_ms();
    pthread_mutex_lock(&N->mu);
    int st = data_read(&C, N, 0, 1u << 20, b, &got);
    pthread_mutex_unlock(&N->mu);
    ck_assert_int_ne(st, DFS_OK);
    ck_assert_uint_lt(dfs_mono_ms() - t0, 15000);
    free(b);
}
END_TEST

/* chunk 0 as metad hands it out with a CREATE: allocated, chain chosen,
 * leased to us, nothing on the servers yet. */
static void seed_created(void)
{
    static struct dfs_chunk ch;
    static struct dfs_replica reps[NSRV];
    CH[0].exists = 1;
    CH[0].version = 1;
    CH[0].nrep = 2;
    CH[0].rep[0] = 0;
    CH[0].rep[1] = 1;
    fill_chunk(&ch, reps, 0);
    ch.length = 0;
    pthread_mutex_lock(&N->mu);
    data_seed_created(&C, N, &LAYOUT, &ch, 1, 1);
    ck_assert(N->chunks[0].fresh);
    ck_assert_uint_gt(N->chunks[0].grant_until_ms, 0);
    pthread_mutex_unlock(&N->mu);
}

START_TEST(test_create_chunk_no_grant)
{
    seed_created();
    do_write(0, 4096, 31);
    commit();
    ck_assert_int_eq(grants, 0); /* the CREATE's chunk and lease were used */
    ck_assert_ptr_nonnull(S[0].data[0]);
    ck_assert_ptr_nonnull(S[1].data[0]);
    ck_assert(!N->chunks[0].fresh);
    data_invalidate(&C, N);
    check_read(0, 4096);
}
END_TEST

START_TEST(test_create_chunk_sparse)
{
    seed_created();
    /* Only chunk 1 is written (stripe 1): chunk 0 stays fresh, reads as a
     * hole, and is created empty before the size is committed. */
    do_write(65536, 4096, 32);
    pthread_mutex_lock(&N->mu);
    ck_assert_int_eq(data_flush(&C, N), DFS_OK);
    pthread_mutex_unlock(&N->mu);
    ck_assert(N->chunks[0].fresh);
    ck_assert_ptr_null(S[0].data[0]);
    commit();
    ck_assert_int_eq(grants, 1); /* chunk 1 only */
    ck_assert(!N->chunks[0].fresh);
    ck_assert_ptr_nonnull(S[0].data[0]); /* exists, empty */
    ck_assert_ptr_nonnull(S[1].data[0]);
    ck_assert_uint_eq(S[0].len[0], 0);
    data_invalidate(&C, N);
    check_read(0, 65536 + 4096);
}
END_TEST

TEST_SUITE(fuse_data)
{
    Suite *s = suite_create("fuse_data");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_seq_write_read);
    tcase_add_test(tc, test_random_overwrite_and_holes);
    tcase_add_test(tc, test_read_failover);
    tcase_add_test(tc, test_write_failover);
    tcase_add_test(tc, test_all_dead_is_bounded);
    tcase_add_test(tc, test_create_chunk_no_grant);
    tcase_add_test(tc, test_create_chunk_sparse);
    suite_add_tcase(s, tc);
    return s;
}
