/* test_metad_chunks.c - placement, server liveness and write leases with a fake clock. */
#include <string.h>

#include "../../metad/chunks.h"
#include "testlib.h"

static uint64_t now_ms;
static uint64_t rng_state = 88172645463325252ull;
static uint64_t fake_now(void *arg)
{
    (void)arg;
    return now_ms;
}
static uint64_t fake_rand(void *arg)
{
    (void)arg;
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static struct chunks *mkcm(void)
{
    struct chunks_opts o = {.server_timeout_ms = 5000, .lease_ms = 30000, .min_free = 1 << 20};
    struct chunks_clock c = {fake_now, fake_rand, NULL};
    now_ms = 1000;
    return chunks_new(&o, &c);
}

static void add_server(struct chunks *cm, uint32_t id, const char *label, uint64_t avail)
{
    struct dfs_dirinfo d;
    memset(&d, 0, sizeof(d));
    d.path.ptr = "/d";
    d.path.len = 2;
    d.total = avail * 2;
    d.avail = avail;
    chunks_server_register(cm, id, "127.0.0.1", 9000 + (int)id, label, &d, 1);
}

START_TEST(test_place_distinct)
{
    struct chunks *cm = mkcm();
    for (uint32_t i = 1; i <= 5; i++) add_server(cm, i, "", 1ull << 30);
    for (int k = 0; k < 200; k++) {
        uint32_t out[3];
        ck_assert_uint_eq(chunks_place(cm, 3, NULL, 0, out), 3);
        ck_assert(out[0] != out[1] && out[1] != out[2] && out[0] != out[2]);
    }
    /* want more than there are */
    uint32_t out[9];
    ck_assert_uint_eq(chunks_place(cm, 9, NULL, 0, out), 5);
    chunks_free(cm);
}
END_TEST

START_TEST(test_place_never_full_or_draining)
{
    struct chunks *cm = mkcm();
    add_server(cm, 1, "", 1ull << 30);
    add_server(cm, 2, "", 1000); /* below min_free: full */
    add_server(cm, 3, "", 1ull << 30);
    chunks_server_set_draining(cm, 3, true);
    add_server(cm, 4, "", 1ull << 30);
    chunks_server_lost(cm, 4);
    for (int k = 0; k < 100; k++) {
        uint32_t out[3];
        ck_assert_uint_eq(chunks_place(cm, 3, NULL, 0, out), 1);
        ck_assert_uint_eq(out[0], 1);
    }
    chunks_free(cm);
}
END_TEST

START_TEST(test_place_weighted_and_labels)
{
    struct chunks *cm = mkcm();
    add_server(cm, 1, "rackA", 100ull << 30);
    add_server(cm, 2, "rackA", 100ull << 30);
    add_server(cm, 3, "rackB", 10ull << 30);
    /* goal 2: always one copy on rackB despite its little free space */
    for (int k = 0; k < 200; k++) {
        uint32_t out[2];
        ck_assert_uint_eq(chunks_place(cm, 2, NULL, 0, out), 2);
        ck_assert(out[0] == 3 || out[1] == 3);
    }
    /* goal 1 among servers 1 (100G) and 3 (10G): weighted by free space */
    chunks_server_lost(cm, 2);
    unsigned c1 = 0;
    for (int k = 0; k < 2000; k++) {
        uint32_t out[1];
        chunks_place(cm, 1, NULL, 0, out);
        c1 += out[0] == 1;
    }
    ck_assert_uint_gt(c1, 1600);
    ck_assert_uint_lt(c1, 1950);
    chunks_free(cm);
}
END_TEST

START_TEST(test_server_timeout)
{
    struct chunks *cm = mkcm();
    add_server(cm, 1, "", 1ull << 30);
    now_ms += 4000;
    ck_assert_uint_eq(chunks_tick(cm), 0);
    struct dfs_msg_heartbeat hb;
    memset(&hb, 0, sizeof(hb));
    hb.server_id = 1;
    ck_assert_int_eq(chunks_server_heartbeat(cm, &hb, 0), DFS_OK);
    now_ms += 4999;
    ck_assert_uint_eq(chunks_tick(cm), 0);
    now_ms += 2;
    ck_assert_uint_eq(chunks_tick(cm), 1);
    ck_assert_uint_eq(chunks_server(cm, 1)->state, DFS_SS_DOWN);
    /* replicas on a down server are listed DOWN and are not live */
    chunks_chunk_add(cm, 10, 1, 5, 0);
    struct cm_chunk *c = chunks_get(cm, 10);
    chunks_replica_set(cm, c, 1, 1, DFS_RS_OK);
    ck_assert(!chunks_replica_live(cm, &c->reps[0]));
    ck_assert_uint_eq(chunks_replica_state(cm, &c->reps[0]), DFS_RS_DOWN);
    chunks_server_heartbeat(cm, &hb, 0);
    ck_assert(chunks_replica_live(cm, &c->reps[0]));
    chunks_free(cm);
}
END_TEST

START_TEST(test_lease)
{
    struct chunks *cm = mkcm();
    chunks_chunk_add(cm, 7, 1, 5, 0);
    struct cm_chunk *c = chunks_get(cm, 7);
    int renewed;
    ck_assert_int_eq(chunks_lease(cm, c, 100, &renewed), DFS_OK);
    ck_assert_int_eq(renewed, 0);
    now_ms += 10000;
    ck_assert_int_eq(chunks_lease(cm, c, 200, &renewed), DFS_EBUSY);
    ck_assert_int_eq(chunks_lease(cm, c, 100, &renewed), DFS_OK);
    ck_assert_int_eq(renewed, 1);
    ck_assert_uint_eq(chunks_lease_left(cm, c), 30000);
    now_ms += 29999;
    ck_assert_int_eq(chunks_lease(cm, c, 200, &renewed), DFS_EBUSY);
    now_ms += 1;
    ck_assert_int_eq(chunks_lease(cm, c, 200, &renewed), DFS_OK); /* expired */
    ck_assert_int_eq(renewed, 0);
    chunks_lease_release(cm, c, 200);
    ck_assert_int_eq(chunks_lease(cm, c, 100, &renewed), DFS_OK);
    chunks_free(cm);
}
END_TEST

START_TEST(test_report_versions)
{
    struct chunks *cm = mkcm();
    add_server(cm, 1, "", 1ull << 30);
    chunks_chunk_add(cm, 7, 3, 5, 0);
    struct dfs_chunkrep r = {.chunk_id = 7, .version = 2, .length = 10, .state = DFS_RS_OK};
    ck_assert_int_eq(chunks_report(cm, 1, &r), 1); /* stale */
    ck_assert_uint_eq(chunks_get(cm, 7)->reps[0].state, DFS_RS_STALE);
    r.version = 3;
    ck_assert_int_eq(chunks_report(cm, 1, &r), 0);
    ck_assert_uint_eq(chunks_get(cm, 7)->reps[0].state, DFS_RS_OK);
    r.chunk_id = 99;
    ck_assert_int_eq(chunks_report(cm, 1, &r), 1); /* orphan */
    chunks_chunk_set_version(cm, 7, 4);
    ck_assert_uint_eq(chunks_get(cm, 7)->reps[0].state, DFS_RS_STALE);
    chunks_free(cm);
}
END_TEST

/* A server is full below min_free + one maximal write, or when its dir
 * reported ENOSPC (DFS_DS_FULL); a full cluster makes placement say ENOSPC. */
START_TEST(test_full_servers)
{
    struct chunks *cm = mkcm();
    add_server(cm, 1, "", 1ull << 30);
    add_server(cm, 2, "", (1u << 20) + (2u << 20)); /* above min_free, below one write more */
    ck_assert(!chunks_server_full(cm, 1));
    ck_assert(chunks_server_full(cm, 2));
    uint32_t out[3];
    for (int k = 0; k < 50; k++) {
        ck_assert_uint_eq(chunks_place(cm, 2, NULL, 0, out), 1);
        ck_assert_uint_eq(out[0], 1);
    }
    /* server 1's only dir ran out of space: reported full */
    struct dfs_dirinfo d;
    memset(&d, 0, sizeof(d));
    d.path.ptr = "/d";
    d.path.len = 2;
    d.total = 2ull << 30;
    d.avail = 1ull << 30;
    d.state = DFS_DS_FULL;
    struct dfs_msg_heartbeat hb;
    memset(&hb, 0, sizeof(hb));
    hb.server_id = 1;
    hb.dirs = &d;
    hb.dirs_count = 1;
    ck_assert_int_eq(chunks_server_heartbeat(cm, &hb, 0), DFS_OK);
    ck_assert(chunks_server_full(cm, 1));
    ck_assert_uint_eq(chunks_place(cm, 2, NULL, 0, out), 0);
    ck_assert_int_eq(chunks_place_fail_status(cm), DFS_ENOSPC);
    /* two dirs: one full, one with room -> not full */
    struct dfs_dirinfo two[2] = {d, d};
    two[1].state = DFS_DS_OK;
    two[1].avail = 64ull << 20;
    hb.dirs = two;
    hb.dirs_count = 2;
    ck_assert_int_eq(chunks_server_heartbeat(cm, &hb, 0), DFS_OK);
    ck_assert(!chunks_server_full(cm, 1));
    /* no server up at all: not a space problem */
    chunks_server_lost(cm, 1);
    chunks_server_lost(cm, 2);
    ck_assert_int_eq(chunks_place_fail_status(cm), DFS_ENOSERVERS);
    chunks_free(cm);
}
END_TEST

/* GRANT with a bad server: dropped while another live copy remains; the last
 * live copy is kept and the grant fails with ENOSPC (full) or EIO. */
START_TEST(test_chain_fail)
{
    struct chunks *cm = mkcm();
    add_server(cm, 1, "", 1ull << 30);
    add_server(cm, 2, "", 1ull << 30);
    add_server(cm, 3, "", 1000); /* full */
    chunks_chunk_add(cm, 10, 4, 1, 0);
    struct cm_chunk *c = chunks_get(cm, 10);
    chunks_replica_set(cm, c, 1, 4, DFS_RS_OK);
    chunks_replica_set(cm, c, 3, 4, DFS_RS_OK);
    ck_assert_int_eq(chunks_chain_fail(cm, c, 2), DFS_OK); /* not in the chain */
    ck_assert_int_eq(chunks_chain_fail(cm, c, 1), DFS_OK); /* 3 remains */
    ck_assert_uint_eq(c->reps[0].state, DFS_RS_STALE);
    /* 3 is the last live copy and full */
    ck_assert_int_eq(chunks_chain_fail(cm, c, 3), DFS_ENOSPC);
    ck_assert_uint_eq(c->reps[1].state, DFS_RS_OK);
    /* a last copy on a server with room: EIO, kept */
    chunks_chunk_add(cm, 11, 2, 1, 1);
    c = chunks_get(cm, 11);
    chunks_replica_set(cm, c, 2, 2, DFS_RS_OK);
    ck_assert_int_eq(chunks_chain_fail(cm, c, 2), DFS_EIO);
    ck_assert_uint_eq(c->reps[0].state, DFS_RS_OK);
    chunks_free(cm);
}
END_TEST

/* Copies at a version newer than the committed one are adopted: the newest
 * live one is offered once until the commit is done. */
START_TEST(test_adopt_version)
{
    struct chunks *cm = mkcm();
    add_server(cm, 1, "", 1ull << 30);
    add_server(cm, 2, "", 1ull << 30);
    add_server(cm, 3, "", 1ull << 30);
    chunks_chunk_add(cm, 7, 5, 1, 0);
    struct cm_chunk *c = chunks_get(cm, 7);
    struct dfs_chunkrep r = {.chunk_id = 7, .version = 5, .length = 100, .state = DFS_RS_OK};
    ck_assert_int_eq(chunks_report(cm, 1, &r), 0);
    ck_assert_uint_eq(chunks_adopt_version(cm, c), 0); /* nothing newer */
    r.version = 6;
    ck_assert_int_eq(chunks_report(cm, 2, &r), 0);
    r.version = 7;
    ck_assert_int_eq(chunks_report(cm, 3, &r), 0);
    chunks_server_lost(cm, 3); /* the v7 copy is not reachable */
    ck_assert_uint_eq(chunks_adopt_version(cm, c), 6);
    add_server(cm, 3, "", 1ull << 30); /* back */
    ck_assert_uint_eq(chunks_adopt_version(cm, c), 7);
    /* a bump in progress or an adoption in flight: not now */
    c->busy = 1;
    ck_assert_uint_eq(chunks_adopt_version(cm, c), 0);
    c->busy = 0;
    chunks_adopt_start(cm, c, 7);
    ck_assert_uint_eq(chunks_adopt_version(cm, c), 0);
    /* the commit applies: older copies become stale, the v7 copy is good */
    chunks_chunk_set_version(cm, 7, 7);
    chunks_adopt_done(cm, c);
    ck_assert_uint_eq(c->version, 7);
    ck_assert_uint_eq(chunks_adopt_version(cm, c), 0);
    for (unsigned i = 0; i < c->nrep; i++) {
        if (c->reps[i].server_id == 3)
            ck_assert_uint_eq(c->reps[i].state, DFS_RS_OK);
        else
            ck_assert_uint_eq(c->reps[i].state, DFS_RS_STALE);
    }
    chunks_free(cm);
}
END_TEST

TEST_SUITE(metad_chunks)
{
    Suite *s = suite_create("metad_chunks");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_place_distinct);
    tcase_add_test(tc, test_place_never_full_or_draining);
    tcase_add_test(tc, test_place_weighted_and_labels);
    tcase_add_test(tc, test_server_timeout);
    tcase_add_test(tc, test_lease);
    tcase_add_test(tc, test_report_versions);
    tcase_add_test(tc, test_full_servers);
    tcase_add_test(tc, test_chain_fail);
    tcase_add_test(tc, test_adopt_version);
    suite_add_tcase(s, tc);
    return s;
}
