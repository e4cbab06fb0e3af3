/* itest_metad_repair.c - real metad + 4 chunkd: kill -9 a chunkd -> chunks re-replicated to
 * goal (throughput and time measured); a returning server's stale copies are deleted. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checksum.h"
#include "log.h"
#include "mclient.h"
#include "rpc.h"
#include "testlib.h"
#include "util.h"

#define NCS 4
#define NCHUNKS 12
#define PIECE (4u << 20)
#define PIECES 2 /* 8 MiB per chunk */

static char *tmp;
static int mport, rport, cport[NCS];
static pid_t mpid, cpid[NCS];
static struct rpc_mt *mt;
static struct mclient *mc;
static uint64_t ino;
static unsigned char *data[NCHUNKS]; /* expected content per chunk */

static void start_metad(void)
{
    char bin[512], dd[600], l[64], r[64], lg[600];
    snprintf(bin, sizeof(bin), "%s/metad", testlib_bindir());
    snprintf(dd, sizeof(dd), "data_dir=%s/meta", tmp);
    snprintf(l, sizeof(l), "listen=127.0.0.1:%d", mport);
    snprintf(r, sizeof(r), "raft_listen=127.0.0.1:%d", rport);
    snprintf(lg, sizeof(lg), "%s/metad.log", tmp);
    char *argv[] = {bin, "-f", "-o", dd, "-o", l, "-o", r, "-o", "log_level=info",
                    "-o", "server_timeout_ms=1500", "-o", "repair_start_delay_ms=1000",
                    "-o", "repair_tick_ms=100", "-o", "min_free=0",
                    /* rebalancing is unit-tested; here it would race with the reads */
                    "-o", "rebalance_pct=0", "-o", "http_listen=", NULL};
    mpid = testlib_spawn(argv, lg);
    ck_assert_int_gt(mpid, 0);
}

static void start_chunkd(int i)
{
    char bin[512], dd[600], l[64], m[64], lg[600];
    snprintf(bin, sizeof(bin), "%s/chunkd", testlib_bindir());
    snprintf(dd, sizeof(dd), "data_dir=%s/c%d", tmp, i);
    snprintf(l, sizeof(l), "listen=127.0.0.1:%d", cport[i]);
    snprintf(m, sizeof(m), "metad=127.0.0.1:%d", mport);
    snprintf(lg, sizeof(lg), "%s/chunkd%d.log", tmp, i);
    char d[600];
    snprintf(d, sizeof(d), "%s/c%d", tmp, i);
    mkdir(d, 0755);
    char *argv[] = {bin, "-f", "-o", dd, "-o", l, "-o", m, "-o", "heartbeat_ms=300",
                    "-o", "scrub_rate=0", "-o", "log_level=info", "-o", "pid_file=", NULL};
    cpid[i] = testlib_spawn(argv, lg);
    ck_assert_int_gt(cpid[i], 0);
}

static int port_up(void *arg) { return testlib_port_open(*(int *)arg); }

static struct dfs_frame *status(void)
{
    struct dfs_msg_ino_req b;
    memset(&b, 0, sizeof(b));
    struct dfs_frame *rep = NULL;
    int st = mclient_call(mc, DFS_OP_STATUS, &b, &rep);
    if (st != DFS_OK) return NULL;
    if (rep->status != DFS_OK) {
        rpc_frame_release(rep);
        return NULL;
    }
    return rep;
}

static unsigned up_servers(const struct dfs_msg_status_resp *r)
{
    unsigned n = 0;
    for (uint32_t i = 0; i < r->servers_count; i++) n += r->servers[i].state == DFS_SS_UP;
    return n;
}

struct want {
    unsigned up;
    int healthy; /* all chunks at goal */
};

static int cond(void *arg)
{
    struct want *w = arg;
    struct dfs_frame *f = status();
    if (!f) return 0;
    const struct dfs_msg_status_resp *r = f->body;
    int ok = up_servers(r) >= w->up;
    if (w->healthy)
        ok = ok && r->chunks == NCHUNKS && r->under_goal == 0 && r->missing == 0 &&
             r->over_goal == 0 && r->healthy == NCHUNKS && r->repairs_running == 0 &&
             r->repair_queue == 0;
    rpc_frame_release(f);
    return ok;
}

static struct rpc_conn *cs_conn(const char *host, uint32_t port)
{
    struct rpc_conn_opts o;
    memset(&o, 0, sizeof(o));
    o.role = DFS_ROLE_CLIENT;
    o.node_id = 4242;
    o.max_frame_in = DFS_MAX_FRAME_CHUNKD;
    return rpc_mt_connect(mt, host, (int)port, &o);
}

/* GRANT chunk `index` and write `data[index]` through its chain.  Returns the version. */
static uint32_t write_chunk(uint64_t index)
{
    struct dfs_msg_grant g;
    memset(&g, 0, sizeof(g));
    g.ino = ino;
    g.index = index;
    struct dfs_frame *rep = NULL;
    int st = DFS_EBUSY;
    for (int tries = 0; tries < 100; tries++) {
        st = mclient_do(mc, DFS_OP_GRANT, &g, &rep);
        if (st != DFS_EBUSY && st != DFS_EIO) break;
        usleep(100000);
    }
    ck_assert_msg(st == DFS_OK, "grant %llu: %s", (unsigned long long)index, dfs_strerror(st));
    const struct dfs_msg_grant_resp *gr = rep->body;
    ck_assert_uint_ge(gr->chunk.replicas_count, 1);
    const struct dfs_replica *head = &gr->chunk.replicas[0];
    struct rpc_conn *c = cs_conn(head->host.ptr, head->port);
    for (unsigned p = 0; p < PIECES; p++) {
        struct dfs_msg_write w;
        memset(&w, 0, sizeof(w));
        w.chunk_id = gr->chunk.chunk_id;
        w.version = gr->chunk.version;
        w.offset = (uint64_t)p * PIECE;
        w.flags = DFS_WF_CREATE;
        w.chain = gr->chunk.replicas + 1;
        w.chain_count = gr->chunk.replicas_count - 1;
        w.data.ptr = data[index] + (size_t)p * PIECE;
        w.data.len = PIECE;
        w.csum = csum_buf(w.data.ptr, PIECE);
        struct dfs_frame *wr = NULL;
        int ws = rpc_mt_call(mt, c, DFS_OP_WRITE, &w, 20000, &wr);
        ck_assert_msg(ws == DFS_OK && wr->status == DFS_OK, "write chunk %llu piece %u: %s",
                      (unsigned long long)index, p, dfs_strerror(ws == DFS_OK ? (int)wr->status : ws));
        rpc_frame_release(wr);
    }
    rpc_mt_close(mt, c);
    uint32_t v = gr->chunk.version;
    rpc_frame_release(rep);
    return v;
}

static void commit_release(void)
{
    struct dfs_msg_commit b;
    memset(&b, 0, sizeof(b));
    b.ino = ino;
    b.size = (uint64_t)NCHUNKS * DFS_DEFAULT_CHUNK_SIZE; /* sparse tail: fine for the test */
    b.mtime = dfs_now_ns();
    b.flags = DFS_CF_RELEASE;
    ck_assert_int_eq(mclient_do(mc, DFS_OP_COMMIT, &b, NULL), DFS_OK);
}

/* Every listed replica of every chunk is ok, there are exactly `goal` of them,
 * and each one returns the expected bytes. */
static int verify_all(int check_data)
{
    struct dfs_msg_chunks_req b;
    memset(&b, 0, sizeof(b));
    b.ino = ino;
    b.count = NCHUNKS;
    struct dfs_frame *rep = NULL;
    if (mclient_do(mc, DFS_OP_CHUNKS, &b, &rep) != DFS_OK) return 0;
    const struct dfs_msg_chunks_resp *r = rep->body;
    int ok = r->chunks_count == NCHUNKS;
    unsigned char *buf = malloc(PIECE);
    for (uint32_t i = 0; ok && i < r->chunks_count; i++) {
        const struct dfs_chunk *ch = &r->chunks[i];
        /* copies on a server that is down stay listed (it may come back) */
        uint32_t nok = 0;
        for (uint32_t k = 0; k < ch->replicas_count; k++) {
            if (ch->replicas[k].state == DFS_RS_OK) nok++;
            else if (ch->replicas[k].state != DFS_RS_DOWN) ok = 0;
        }
        if (nok != r->goal) ok = 0;
        for (uint32_t k = 0; ok && k < ch->replicas_count; k++) {
            if (ch->replicas[k].state != DFS_RS_OK) continue;
            if (!check_data) continue;
            struct rpc_conn *c = cs_conn(ch->replicas[k].host.ptr, ch->replicas[k].port);
            for (unsigned p = 0; ok && p < PIECES; p++) {
                struct dfs_msg_read rd = {.chunk_id = ch->chunk_id, .version = ch->version,
                                          .offset = (uint64_t)p * PIECE, .length = PIECE};
                struct dfs_frame *rr = NULL;
                int st = rpc_mt_call(mt, c, DFS_OP_READ, &rd, 20000, &rr);
                const struct dfs_msg_read_resp *x = rr ? rr->body : NULL;
                if (st != DFS_OK || rr->status != DFS_OK || x->data.len != PIECE ||
                    memcmp(x->data.ptr, data[ch->index] + (size_t)p * PIECE, PIECE) != 0) {
                    fprintf(stderr, "chunk %llu replica on server %u: bad read (%s)\n",
                            (unsigned long long)ch->index, ch->replicas[k].server_id,
                            dfs_strerror(st == DFS_OK ? (int)rr->status : st));
                    ok = 0;
                }
                rpc_frame_release(rr);
            }
            rpc_mt_close(mt, c);
        }
    }
    free(buf);
    rpc_frame_release(rep);
    return ok;
}

static int verify_cond(void *arg)
{
    (void)arg;
    return verify_all(0);
}

static void status_print(const char *what, double secs)
{
    struct dfs_frame *f = status();
    if (!f) return;
    const struct dfs_msg_status_resp *r = f->body;
    fprintf(stderr,
            "itest_metad_repair: %s after %.2f s: chunks %llu healthy %llu under %llu over %llu "
            "missing %llu queue %llu running %llu done %llu bytes %llu\n",
            what, secs, (unsigned long long)r->chunks, (unsigned long long)r->healthy,
            (unsigned long long)r->under_goal, (unsigned long long)r->over_goal,
            (unsigned long long)r->missing, (unsigned long long)r->repair_queue,
            (unsigned long long)r->repairs_running, (unsigned long long)r->repairs_done,
            (unsigned long long)r->bytes_replicated);
    rpc_frame_release(f);
}

static uint64_t bytes_replicated(void)
{
    struct dfs_frame *f = status();
    if (!f) return 0;
    uint64_t b = ((const struct dfs_msg_status_resp *)f->body)->bytes_replicated;
    rpc_frame_release(f);
    return b;
}

START_TEST(test_kill_and_stale)
{
    tmp = testlib_tmpdir("itest-repair");
    mport = testlib_free_port();
    rport = testlib_free_port();
    for (int i = 0; i < NCS; i++) cport[i] = testlib_free_port();
    start_metad();
    ck_assert(testlib_wait_for(port_up, &mport, 10000));
    for (int i = 0; i < 3; i++) start_chunkd(i);
    mt = rpc_mt_start("itest");
    char addr[64], err[256];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", mport);
    struct mclient_opts o = {.addrs = addr, .role = DFS_ROLE_ADMIN, .call_timeout_ms = 5000,
                             .total_timeout_ms = 30000};
    mc = mclient_new(mt, &o, err, sizeof(err));
    ck_assert_msg(mc != NULL, "%s", err);
    struct want w3 = {3, 0};
    ck_assert_msg(testlib_wait_for(cond, &w3, 30000), "3 chunkd did not register");

    /* a file with NCHUNKS chunks of 8 MiB, goal 2 */
    struct dfs_msg_mknod mk;
    memset(&mk, 0, sizeof(mk));
    mk.parent = DFS_ROOT_INO;
    mk.name.ptr = "f";
    mk.name.len = 1;
    mk.mode = S_IFREG | 0644;
    struct dfs_frame *rep = NULL;
    ck_assert_int_eq(mclient_do(mc, DFS_OP_CREATE, &mk, &rep), DFS_OK);
    ino = ((const struct dfs_msg_attr_resp *)rep->body)->attr.ino;
    rpc_frame_release(rep);
    for (int i = 0; i < NCHUNKS; i++) {
        data[i] = malloc((size_t)PIECE * PIECES);
        for (size_t k = 0; k < (size_t)PIECE * PIECES / 8; k++)
            ((uint64_t *)data[i])[k] = dfs_random_u64();
        write_chunk((uint64_t)i);
    }
    commit_release();
    struct want hw = {3, 1};
    ck_assert_msg(testlib_wait_for(cond, &hw, 30000), "chunks not healthy after writing");
    ck_assert(verify_all(1));

    /* --- kill -9 a chunkd, add a fourth: back to goal --- */
    uint64_t b0 = bytes_replicated();
    uint64_t t0 = dfs_mono_ms();
    kill(cpid[0], SIGKILL);
    waitpid(cpid[0], NULL, 0);
    cpid[0] = 0;
    start_chunkd(3);
    struct want hw3 = {3, 1};
    int healed = testlib_wait_for(cond, &hw3, 90000);
    double secs = (double)(dfs_mono_ms() - t0) / 1000.0;
    status_print("after kill -9", secs);
    ck_assert_msg(healed, "not back to goal after a chunkd loss");
    uint64_t b1 = bytes_replicated();
    /* detection takes server_timeout_ms (1.5 s); the rest is copying */
    double copy_s = secs > 1.5 ? secs - 1.5 : secs;
    fprintf(stderr,
            "itest_metad_repair: re-replicated %.1f MiB in %.2f s after the loss (%.1f MiB/s "
            "excluding the 1.5 s detection)\n",
            (double)(b1 - b0) / 1048576.0, secs, (double)(b1 - b0) / 1048576.0 / copy_s);
    ck_assert_uint_gt(b1, b0);
    ck_assert(verify_all(1));

    /* --- stale copies: stop a server, overwrite, bring it back --- */
    int victim = 1;
    kill(cpid[victim], SIGKILL);
    waitpid(cpid[victim], NULL, 0);
    cpid[victim] = 0;
    struct want w2 = {2, 0};
    (void)w2;
    /* overwrite every chunk (new version on the live copies only) */
    usleep(200000);
    for (int i = 0; i < NCHUNKS; i++) {
        for (size_t k = 0; k < (size_t)PIECE * PIECES / 8; k += 4096)
            ((uint64_t *)data[i])[k] ^= 0x5a5a5a5a5a5a5a5aull;
        write_chunk((uint64_t)i);
    }
    commit_release();
    start_chunkd(victim);
    struct want hw4 = {3, 1};
    int ok = testlib_wait_for(cond, &hw4, 90000) && testlib_wait_for(verify_cond, NULL, 60000);
    status_print("after the stale server returned", (double)(dfs_mono_ms() - t0) / 1000.0);
    ck_assert_msg(ok, "stale copies not cleaned up");
    ck_assert(verify_all(1));
    /* give GC/deletes a moment, then nothing stale may be counted anywhere */
    ck_assert(testlib_wait_for(cond, &hw4, 10000));

}
END_TEST

/* Also runs after a failed assertion (CK_NOFORK: we are back in main). */
static void cleanup(int failed)
{
    if (mc) mclient_free(mc);
    if (mt) rpc_mt_stop(mt);
    mc = NULL;
    mt = NULL;
    for (int i = 0; i < NCS; i++)
        if (cpid[i] > 0) testlib_stop(cpid[i], SIGTERM, 5000);
    if (mpid > 0) testlib_stop(mpid, SIGTERM, 5000);
    if (tmp) {
        if (failed || getenv("DFS_KEEP_TMP")) fprintf(stderr, "itest_metad_repair: logs kept in %s\n", tmp);
        else testlib_rmrf(tmp);
        free(tmp);
    }
    for (int i = 0; i < NCHUNKS; i++) free(data[i]);
}

int main(void)
{
    log_init("itest_metad_repair");
    log_set_level(LOG_LVL_ERR);
    Suite *s = suite_create("itest_metad_repair");
    TCase *tc = tcase_create("repair");
    tcase_set_timeout(tc, 170);
    tcase_add_test(tc, test_kill_and_stale);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    cleanup(failed);
    return failed ? 1 : 0;
}
