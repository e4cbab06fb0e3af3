/* test_metad_raft.c - the journal FSM under raft_fixture: replicas and replays reach identical states. */
#include <raft.h>
#include <raft/fixture.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../metad/chunks.h"
#include "../../metad/fs.h"
#include "../../metad/journal.h"
#include "testlib.h"

#define N 3

static uint64_t fake_ms;
static uint64_t fake_now(void *a)
{
    (void)a;
    return fake_ms;
}
static uint64_t fake_rand(void *a)
{
    (void)a;
    return 12345;
}

struct node {
    struct chunks *cm;
    struct fs *fs;
    struct raft_fsm fsm;
};

static struct node nodes[N];
static struct raft_fixture fx;
static int keep;
static struct raft_buffer kept[256];
static unsigned nkept;

static void cluster_up(unsigned n)
{
    struct chunks_opts o = {0};
    struct chunks_clock c = {fake_now, fake_rand, NULL};
    ck_assert_int_eq(raft_fixture_initialize(&fx), 0);
    for (unsigned i = 0; i < n; i++) {
        nodes[i].cm = chunks_new(&o, &c);
        nodes[i].fs = fs_new(nodes[i].cm);
        journal_fsm_init(&nodes[i].fsm, nodes[i].fs);
        ck_assert_int_eq(raft_fixture_grow(&fx, &nodes[i].fsm), 0);
    }
    struct raft_configuration conf;
    ck_assert_int_eq(raft_fixture_configuration(&fx, n, &conf), 0);
    ck_assert_int_eq(raft_fixture_bootstrap(&fx, &conf), 0);
    raft_configuration_close(&conf);
    ck_assert_int_eq(raft_fixture_start(&fx), 0);
    raft_fixture_elect(&fx, 0);
}

static void cluster_down(unsigned n)
{
    raft_fixture_close(&fx);
    for (unsigned i = 0; i < n; i++) {
        journal_fsm_close(&nodes[i].fsm);
        fs_free(nodes[i].fs);
        chunks_free(nodes[i].cm);
    }
}

/* Propose `count` entries of `per` ops each: a mixed namespace workload. */
static raft_index propose(unsigned count, unsigned per, unsigned seed)
{
    struct raft *leader = raft_fixture_get(&fx, raft_fixture_leader_index(&fx));
    static char names[64][16], names2[64][16];
    static struct raft_apply reqs[4096];
    static unsigned nreq;
    raft_index last = 0;
    for (unsigned e = 0; e < count; e++) {
        struct fs_op ops[64];
        memset(ops, 0, sizeof(ops));
        for (unsigned i = 0; i < per && i < 64; i++) {
            seed = seed * 1103515245u + 12345u;
            unsigned k = (seed >> 16) % 6, a = (seed >> 8) % 30, b = (seed >> 20) % 30;
            snprintf(names[i], 16, "x%u", a);
            snprintf(names2[i], 16, "x%u", b);
            struct fs_op *op = &ops[i];
            op->now = 1000 + e * 100 + i;
            op->cred.session = 9;
            op->cred.seq = e * 100 + i + 1;
            op->parent = 1;
            op->name = names[i];
            op->namelen = (uint32_t)strlen(names[i]);
            op->mode = 0644;
            switch (k) {
            case 0: op->type = FS_OP_CREATE; break;
            case 1: op->type = FS_OP_MKDIR; break;
            case 2: op->type = FS_OP_UNLINK; break;
            case 3:
                op->type = FS_OP_RENAME;
                op->newparent = 1;
                op->name2 = names2[i];
                op->name2len = (uint32_t)strlen(names2[i]);
                break;
            case 4:
                op->type = FS_OP_CHUNK_NEW;
                op->ino = a + 1;
                op->index = b % 3;
                break;
            default: op->type = FS_OP_RMDIR; break;
            }
        }
        struct raft_buffer buf;
        ck_assert_int_eq(journal_encode_batch(ops, per, 1, e + 1, &buf), DFS_OK);
        ck_assert_uint_eq(buf.len % 8, 0);
        if (keep && nkept < 256) {
            kept[nkept].base = malloc(buf.len);
            kept[nkept].len = buf.len;
            memcpy(kept[nkept].base, buf.base, buf.len);
            nkept++;
        }
        struct raft_apply *req = &reqs[nreq++ % 4096];
        ck_assert_int_eq(raft_apply(leader, req, &buf, 1, NULL), 0);
        last = raft_last_index(leader);
        if (e % 16 == 15) raft_fixture_step_until_applied(&fx, N, last, 10000);
    }
    return last;
}

START_TEST(test_replicas_identical)
{
    cluster_up(N);
    raft_index last = propose(200, 20, 1);
    ck_assert(raft_fixture_step_until_applied(&fx, N, last, 60000));
    uint64_t d0 = fs_digest(nodes[0].fs);
    for (unsigned i = 1; i < N; i++) ck_assert_uint_eq(fs_digest(nodes[i].fs), d0);
    struct fs_stats st;
    fs_stats(nodes[0].fs, &st);
    ck_assert_uint_gt(st.inodes, 5);
    cluster_down(N);
}
END_TEST

START_TEST(test_snapshot_catch_up)
{
    cluster_up(N);
    /* Server 2 is cut off while the others take snapshots and compact their
     * logs, so it must catch up from a snapshot plus the entries after it. */
    for (unsigned i = 0; i < N; i++) {
        raft_set_snapshot_threshold(raft_fixture_get(&fx, i), 32);
        raft_set_snapshot_trailing(raft_fixture_get(&fx, i), 8);
    }
    raft_fixture_disconnect(&fx, 0, 2);
    raft_fixture_disconnect(&fx, 1, 2);
    raft_index last = propose(150, 10, 7);
    ck_assert(raft_fixture_step_until_applied(&fx, 1, last, 60000));
    raft_fixture_reconnect(&fx, 0, 2);
    raft_fixture_reconnect(&fx, 1, 2);
    ck_assert(raft_fixture_step_until_applied(&fx, N, last, 60000));
    uint64_t d0 = fs_digest(nodes[0].fs);
    ck_assert_uint_eq(fs_digest(nodes[1].fs), d0);
    ck_assert_uint_eq(fs_digest(nodes[2].fs), d0);
    cluster_down(N);
}
END_TEST

START_TEST(test_replay_from_log)
{
    /* Re-applying the same entry bytes to a fresh state gives the same state:
     * apply depends on nothing but the entries. */
    cluster_up(N);
    keep = 1;
    raft_index last = propose(100, 16, 3);
    ck_assert(raft_fixture_step_until_applied(&fx, N, last, 60000));
    struct chunks_opts o = {0};
    struct chunks_clock c = {fake_now, fake_rand, NULL};
    struct chunks *cm = chunks_new(&o, &c);
    struct fs *fresh = fs_new(cm);
    struct raft_fsm fsm;
    journal_fsm_init(&fsm, fresh);
    for (unsigned i = 0; i < nkept; i++) {
        void *res;
        ck_assert_int_eq(fsm.apply(&fsm, &kept[i], &res), 0);
        free(kept[i].base);
    }
    nkept = 0;
    keep = 0;
    ck_assert_uint_eq(fs_digest(fresh), fs_digest(nodes[0].fs));
    /* and a snapshot of it restores to the same digest */
    struct raft_buffer *bufs;
    unsigned nb;
    ck_assert_int_eq(fsm.snapshot(&fsm, &bufs, &nb), 0);
    struct chunks *cm3 = chunks_new(&o, &c);
    struct fs *third = fs_new(cm3);
    struct raft_fsm fsm3;
    journal_fsm_init(&fsm3, third);
    struct raft_buffer copy = {raft_malloc(bufs[0].len), bufs[0].len};
    memcpy(copy.base, bufs[0].base, copy.len);
    ck_assert_int_eq(fsm3.restore(&fsm3, &copy), 0);
    ck_assert_uint_eq(fs_digest(third), fs_digest(fresh));
    fsm.snapshot_finalize(&fsm, &bufs, &nb);
    journal_fsm_close(&fsm3);
    fs_free(third);
    chunks_free(cm3);
    cluster_down(N);
    journal_fsm_close(&fsm);
    fs_free(fresh);
    chunks_free(cm);
}
END_TEST

TEST_SUITE(metad_raft)
{
    Suite *s = suite_create("metad_raft");
    TCase *tc = tcase_create("fixture");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_replicas_identical);
    tcase_add_test(tc, test_snapshot_catch_up);
    tcase_add_test(tc, test_replay_from_log);
    suite_add_tcase(s, tc);
    return s;
}
