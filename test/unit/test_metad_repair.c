/* test_metad_repair.c - self-healing decisions with a fake clock and fake chunkd calls. */
#include <string.h>

#include "../../metad/chunks.h"
#include "../../metad/repair.h"
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

/* recorded calls */
struct call {
    int del; /* 0 replicate, 1 delete */
    uint32_t server;
    uint64_t chunk;
    uint32_t version;
    uint32_t src0;
    void *token;
};
static struct call calls[4096];
static unsigned ncalls;
static uint32_t goal = 2;

static int f_repl(void *arg, uint32_t target, uint64_t chunk, uint32_t version,
                  const uint32_t *sources, unsigned nsources, void *token)
{
    (void)arg;
    ck_assert_uint_gt(nsources, 0);
    for (unsigned i = 0; i < nsources; i++) ck_assert_uint_ne(sources[i], target);
    calls[ncalls++] = (struct call){0, target, chunk, version, sources[0], token};
    return DFS_OK;
}
static int f_del(void *arg, uint32_t server, uint64_t chunk, uint32_t version, void *token)
{
    (void)arg;
    calls[ncalls++] = (struct call){1, server, chunk, version, 0, token};
    return DFS_OK;
}
static uint32_t f_goal(void *arg, uint64_t ino)
{
    (void)arg;
    (void)ino;
    return goal;
}

static struct chunks *cm;
static struct repair *rp;

static void setup_n(unsigned nsrv, const struct repair_opts *ro)
{
    struct chunks_opts o = {.server_timeout_ms = 5000, .lease_ms = 30000, .min_free = 1 << 20};
    struct chunks_clock c = {fake_now, fake_rand, NULL};
    now_ms = 1000;
    ncalls = 0;
    goal = 2;
    cm = chunks_new(&o, &c);
    for (uint32_t i = 1; i <= nsrv; i++) {
        struct dfs_dirinfo d;
        memset(&d, 0, sizeof(d));
        d.path.ptr = "/d";
        d.path.len = 2;
        d.total = 100ull << 30;
        d.avail = 50ull << 30;
        chunks_server_register(cm, i, "127.0.0.1", 9000 + (int)i, "", &d, 1);
    }
    struct repair_io io = {f_repl, f_del, f_goal, NULL};
    struct repair_opts o2 = {.start_delay_ms = 0, .server_timeout_ms = 5000, .rebalance_pct = 0};
    if (ro) o2 = *ro;
    rp = repair_new(cm, &o2, &io);
    repair_set_leader(rp, true);
}

static void teardown(void)
{
    repair_free(rp);
    chunks_free(cm);
}

/* chunk id with copies on the listed servers, all at version 1 */
static struct cm_chunk *mkchunk(uint64_t id, const uint32_t *srv, unsigned n)
{
    chunks_chunk_add(cm, id, 1, 100 + id, 0);
    struct cm_chunk *c = chunks_get(cm, id);
    c->length = 1 << 20;
    for (unsigned i = 0; i < n; i++) chunks_replica_set(cm, c, srv[i], 1, DFS_RS_OK);
    return c;
}

/* keep servers alive: heartbeat everyone but `dead` */
static void beat(uint32_t nsrv, uint32_t dead)
{
    for (uint32_t i = 1; i <= nsrv; i++) {
        if (i == dead) continue;
        struct dfs_msg_heartbeat hb;
        memset(&hb, 0, sizeof(hb));
        hb.server_id = i;
        chunks_server_heartbeat(cm, &hb, 0);
    }
}

static void advance(uint32_t nsrv, uint32_t dead, uint64_t ms)
{
    for (uint64_t t = 0; t < ms; t += 250) {
        now_ms += 250;
        beat(nsrv, dead);
        chunks_tick(cm);
    }
}

static unsigned live_copies(struct cm_chunk *c)
{
    unsigned n = 0;
    for (unsigned i = 0; i < c->nrep; i++)
        if (chunks_replica_live(cm, &c->reps[i]) && c->reps[i].version == c->version) n++;
    return n;
}

START_TEST(test_most_endangered_first)
{
    struct repair_opts ro = {.max_running = 1, .server_timeout_ms = 5000};
    setup_n(6, &ro);
    goal = 3;
    /* chunk 1: 2 of 3 left after server 6 dies; chunk 2: 1 of 3 left */
    uint32_t a[] = {1, 2, 6}, b[] = {3, 5, 6};
    mkchunk(1, a, 3);
    mkchunk(2, b, 3);
    struct cm_chunk *c2 = chunks_get(cm, 2);
    c2->reps[1].state = DFS_RS_CORRUPT; /* server 5's copy of chunk 2 is corrupt */
    repair_tick(rp);
    /* corrupt copy deleted (chunk 2 has a good copy); nothing else yet */
    ck_assert_uint_eq(ncalls, 1);
    ck_assert_int_eq(calls[0].del, 1);
    ck_assert_uint_eq(calls[0].server, 5);
    repair_delete_done(rp, calls[0].token, DFS_OK);
    ncalls = 0;
    chunks_server_lost(cm, 6);
    advance(6, 6, 6000);
    repair_tick(rp);
    /* one slot: chunk 2 (one copy left) goes first */
    ck_assert_uint_eq(ncalls, 1);
    ck_assert_int_eq(calls[0].del, 0);
    ck_assert_uint_eq(calls[0].chunk, 2);
    ck_assert_uint_eq(calls[0].src0, 3);
    struct repair_stats st;
    repair_stats(rp, &st);
    ck_assert_uint_eq(st.running, 1);
    ck_assert_uint_ge(st.queued, 1);
    repair_replicate_done(rp, calls[0].token, DFS_OK, 1 << 20);
    ck_assert_uint_eq(live_copies(c2), 2);
    ncalls = 0;
    repair_tick(rp);
    /* now both are 2 of 3: one each, either order */
    ck_assert_uint_eq(ncalls, 1);
    uint64_t first = calls[0].chunk;
    repair_replicate_done(rp, calls[0].token, DFS_OK, 1 << 20);
    ncalls = 0;
    repair_tick(rp);
    ck_assert_uint_eq(ncalls, 1);
    ck_assert_uint_ne(calls[0].chunk, first);
    repair_replicate_done(rp, calls[0].token, DFS_OK, 1 << 20);
    ck_assert_uint_eq(live_copies(chunks_get(cm, 1)), 3);
    ck_assert_uint_eq(live_copies(c2), 3);
    repair_stats(rp, &st);
    ck_assert_uint_eq(st.done, 3);
    ck_assert_uint_eq(st.bytes, 3u << 20);
    teardown();
}
END_TEST

START_TEST(test_limits)
{
    struct repair_opts ro = {.max_running = 5, .max_per_target = 2, .max_per_source = 4,
                             .server_timeout_ms = 5000};
    setup_n(4, &ro);
    for (uint64_t id = 1; id <= 40; id++) {
        uint32_t s[] = {1, 4};
        mkchunk(id, s, 2);
    }
    chunks_server_lost(cm, 4);
    advance(4, 4, 6000);
    repair_tick(rp);
    /* targets 2 and 3 (2 each), source 1 at most 4: 4 calls */
    ck_assert_uint_eq(ncalls, 4);
    unsigned per[5] = {0};
    for (unsigned i = 0; i < ncalls; i++) {
        ck_assert_int_eq(calls[i].del, 0);
        ck_assert_uint_eq(calls[i].src0, 1);
        per[calls[i].server]++;
    }
    ck_assert_uint_eq(per[2], 2);
    ck_assert_uint_eq(per[3], 2);
    repair_tick(rp);
    ck_assert_uint_eq(ncalls, 4); /* all busy */
    /* finish everything repeatedly: all 40 get their copy */
    for (int round = 0; round < 100 && ncalls; round++) {
        unsigned n = ncalls;
        ncalls = 0;
        struct call done[64];
        memcpy(done, calls, n * sizeof(*calls));
        for (unsigned i = 0; i < n; i++) repair_replicate_done(rp, done[i].token, DFS_OK, 1 << 20);
        repair_tick(rp);
        ck_assert_uint_le(ncalls, 4);
    }
    for (uint64_t id = 1; id <= 40; id++) ck_assert_uint_eq(live_copies(chunks_get(cm, id)), 2);
    struct repair_stats st;
    repair_stats(rp, &st);
    ck_assert_uint_eq(st.done, 40);
    ck_assert_uint_eq(st.running, 0);
    teardown();
}
END_TEST

START_TEST(test_cluster_limit)
{
    struct repair_opts ro = {.max_running = 3, .max_per_target = 10, .max_per_source = 10,
                             .server_timeout_ms = 5000};
    setup_n(8, &ro);
    for (uint64_t id = 1; id <= 20; id++) {
        uint32_t s[] = {1 + (uint32_t)(id % 3), 8};
        mkchunk(id, s, 2);
    }
    chunks_server_lost(cm, 8);
    advance(8, 8, 6000);
    repair_tick(rp);
    ck_assert_uint_eq(ncalls, 3);
    teardown();
}
END_TEST

START_TEST(test_wait_for_timeout_and_start_delay)
{
    struct repair_opts ro = {.start_delay_ms = 3000, .server_timeout_ms = 5000};
    setup_n(3, &ro);
    uint32_t s[] = {1, 3};
    mkchunk(1, s, 2);
    repair_tick(rp);
    ck_assert_uint_eq(ncalls, 0);
    /* connection drop: wait server_timeout_ms before copying */
    chunks_server_lost(cm, 3);
    advance(3, 3, 2000);
    repair_tick(rp);
    ck_assert_uint_eq(ncalls, 0);
    advance(3, 3, 4000);
    repair_tick(rp);
    ck_assert_uint_eq(ncalls, 1);
    ck_assert_uint_eq(calls[0].server, 2);
    teardown();
}
END_TEST

START_TEST(test_lease_and_version_change)
{
    setup_n(3, NULL);
    uint32_t s[] = {1, 3};
    struct cm_chunk *c = mkchunk(1, s, 2);
    int renewed;
    ck_assert_int_eq(chunks_lease(cm, c, 77, &renewed), DFS_OK);
    chunks_server_lost(cm, 3);
    advance(3, 3, 6000);
    repair_tick(rp);
    ck_assert_uint_eq(ncalls, 0); /* lease held: not now */
    struct repair_stats st;
    repair_stats(rp, &st);
    ck_assert_uint_eq(st.queued, 1);
    chunks_lease_release(cm, c, 77);
    advance(3, 3, 3000);
    repair_tick(rp);
    ck_assert_uint_eq(ncalls, 1);
    ck_assert_uint_eq(calls[0].server, 2);
    /* a PENDING replica is visible meanwhile */
    ck_assert_uint_eq(chunks_replica_state(cm, &c->reps[c->nrep - 1]), DFS_RS_PENDING);
    /* the chunk is bumped while copying: the copy must not count */
    chunks_replica_set(cm, c, 1, 2, DFS_RS_OK);
    chunks_chunk_set_version(cm, 1, 2);
    repair_replicate_done(rp, calls[0].token, DFS_OK, 1 << 20);
    ck_assert_uint_eq(live_copies(c), 1);
    repair_stats(rp, &st);
    ck_assert_uint_eq(st.done, 0);
    ck_assert_uint_eq(st.failed, 1);
    /* next: the stale copy on 2 is deleted, then a fresh copy made */
    ncalls = 0;
    repair_tick(rp);
    ck_assert_uint_eq(ncalls, 1);
    ck_assert_int_eq(calls[0].del, 1);
    ck_assert_uint_eq(calls[0].server, 2);
    ck_assert_uint_eq(calls[0].version, 1);
    repair_delete_done(rp, calls[0].token, DFS_OK);
    ncalls = 0;
    repair_tick(rp);
    ck_assert_uint_eq(ncalls, 1);
    ck_assert_int_eq(calls[0].del, 0);
    ck_assert_uint_eq(calls[0].version, 2);
    repair_replicate_done(rp, calls[0].token, DFS_OK, 1 << 20);
    ck_assert_uint_eq(live_copies(c), 2);
    teardown();
}
END_TEST

/* A corrupt copy is deleted at once even while a writer holds the lease (it
 * can never become good); the replacement copy waits for the lease. */
START_TEST(test_corrupt_under_lease)
{
    setup_n(3, NULL);
    uint32_t s[] = {1, 2};
    struct cm_chunk *c = mkchunk(1, s, 2);
    int renewed;
    ck_assert_int_eq(chunks_lease(cm, c, 77, &renewed), DFS_OK);
    c->reps[1].state = DFS_RS_CORRUPT; /* server 2's copy (BADREPLICA) */
    repair_note_chunk(rp, 1);
    advance(3, 0, 250);
    repair_tick(rp);
    ck_assert_uint_eq(ncalls, 1);
    ck_assert_int_eq(calls[0].del, 1);
    ck_assert_uint_eq(calls[0].server, 2);
    repair_delete_done(rp, calls[0].token, DFS_OK);
    ck_assert_uint_eq(c->nrep, 1);
    ncalls = 0;
    advance(3, 0, 3000);
    repair_tick(rp);
    ck_assert_uint_eq(ncalls, 0); /* lease held: no copy yet */
    chunks_lease_release(cm, c, 77);
    advance(3, 0, 2500);
    repair_tick(rp);
    ck_assert_uint_eq(ncalls, 1);
    ck_assert_int_eq(calls[0].del, 0);
    ck_assert_uint_eq(calls[0].src0, 1);
    repair_replicate_done(rp, calls[0].token, DFS_OK, 1 << 20);
    ck_assert_uint_eq(live_copies(c), 2);
    teardown();
}
END_TEST

/* A rebalance move deletes the copy on the server it moved off, never the
 * new one. */
START_TEST(test_move_deletes_its_source)
{
    struct repair_opts ro = {.rebalance_pct = 5, .rebalance_max = 1, .server_timeout_ms = 5000,
                             .rebalance_min_bytes = 1};
    setup_n(2, &ro);
    goal = 1;
    for (uint64_t id = 1; id <= 20; id++) {
        uint32_t s1[] = {1};
        mkchunk(id, s1, 1);
    }
    repair_tick(rp); /* first scan publishes usage */
    struct dfs_dirinfo d;
    memset(&d, 0, sizeof(d));
    d.total = 100ull << 30;
    d.avail = 90ull << 30;
    chunks_server_register(cm, 3, "127.0.0.1", 9003, "", &d, 1);
    for (int round = 0; round < 100; round++) {
        repair_tick(rp);
        unsigned n = ncalls;
        struct call done[256];
        memcpy(done, calls, n * sizeof(*calls));
        ncalls = 0;
        for (unsigned i = 0; i < n; i++) {
            if (done[i].del) {
                ck_assert_uint_ne(done[i].server, 3); /* never the fresh copy */
                repair_delete_done(rp, done[i].token, DFS_OK);
            } else {
                ck_assert_uint_ne(done[i].server, 1);
                repair_replicate_done(rp, done[i].token, DFS_OK, 1 << 20);
            }
        }
        advance(3, 0, 250);
    }
    unsigned on3 = 0;
    for (uint64_t id = 1; id <= 20; id++) {
        struct cm_chunk *c = chunks_get(cm, id);
        ck_assert_uint_eq(live_copies(c), 1);
        if (c->reps[0].server_id == 3) on3++;
    }
    ck_assert_uint_ge(on3, 3);
    teardown();
}
END_TEST

START_TEST(test_returning_server_stale_and_surplus)
{
    setup_n(3, NULL);
    uint32_t s[] = {1, 2};
    struct cm_chunk *c = mkchunk(1, s, 2);
    struct cm_chunk *d = mkchunk(2, s, 2);
    /* server 3 comes back with an old copy of chunk 1 and a current one of chunk 2 */
    struct dfs_chunkrep r1 = {1, 0, 100, DFS_RS_OK}, r2 = {2, 1, 100, DFS_RS_OK};
    chunks_chunk_set_version(cm, 1, 1);
    c->version = 2;
    c->reps[0].version = c->reps[1].version = 2;
    ck_assert_int_eq(chunks_report(cm, 3, &r1), 1);
    ck_assert_int_eq(chunks_report(cm, 3, &r2), 0);
    repair_note_chunk(rp, 1);
    repair_note_chunk(rp, 2);
    repair_tick(rp);
    /* stale copy deleted; chunk 2 is over goal: one copy deleted */
    ck_assert_uint_eq(ncalls, 2);
    for (unsigned i = 0; i < ncalls; i++) {
        ck_assert_int_eq(calls[i].del, 1);
        if (calls[i].chunk == 1) ck_assert_uint_eq(calls[i].server, 3);
        repair_delete_done(rp, calls[i].token, DFS_OK);
    }
    ck_assert_uint_eq(c->nrep, 2);
    ck_assert_uint_eq(d->nrep, 2);
    ck_assert_uint_eq(live_copies(d), 2);
    teardown();
}
END_TEST

START_TEST(test_drain_never_below_goal)
{
    setup_n(4, NULL);
    for (uint64_t id = 1; id <= 10; id++) {
        uint32_t s[] = {1, 2};
        mkchunk(id, s, 2);
    }
    chunks_server_set_draining(cm, 1, true);
    repair_note_all(rp);
    for (int round = 0; round < 200; round++) {
        repair_tick(rp);
        /* invariant: never fewer live copies than the goal (counting the draining one) */
        for (uint64_t id = 1; id <= 10; id++) ck_assert_uint_ge(live_copies(chunks_get(cm, id)), 2);
        unsigned n = ncalls;
        if (!n) break;
        struct call done[256];
        memcpy(done, calls, n * sizeof(*calls));
        ncalls = 0;
        for (unsigned i = 0; i < n; i++) {
            if (done[i].del) repair_delete_done(rp, done[i].token, DFS_OK);
            else repair_replicate_done(rp, done[i].token, DFS_OK, 1 << 20);
            for (uint64_t id = 1; id <= 10; id++)
                ck_assert_uint_ge(live_copies(chunks_get(cm, id)), 2);
        }
    }
    for (uint64_t id = 1; id <= 10; id++) {
        struct cm_chunk *c = chunks_get(cm, id);
        ck_assert_uint_eq(live_copies(c), 2);
        for (unsigned i = 0; i < c->nrep; i++) ck_assert_uint_ne(c->reps[i].server_id, 1);
    }
    teardown();
}
END_TEST

START_TEST(test_goal_down_deletes_surplus)
{
    setup_n(4, NULL);
    uint32_t s[] = {1, 2, 3};
    struct cm_chunk *c = mkchunk(1, s, 3);
    goal = 3;
    repair_tick(rp);
    ck_assert_uint_eq(ncalls, 0);
    goal = 1;
    repair_note_all(rp);
    repair_tick(rp);
    ck_assert_uint_eq(ncalls, 2);
    for (unsigned i = 0; i < ncalls; i++) {
        ck_assert_int_eq(calls[i].del, 1);
        repair_delete_done(rp, calls[i].token, DFS_OK);
    }
    ck_assert_uint_eq(live_copies(c), 1);
    ncalls = 0;
    goal = 2;
    repair_note_all(rp);
    repair_tick(rp);
    ck_assert_uint_eq(ncalls, 1);
    ck_assert_int_eq(calls[0].del, 0);
    teardown();
}
END_TEST

START_TEST(test_gc_throttled)
{
    struct repair_opts ro = {.gc_rate = 50, .server_timeout_ms = 5000};
    setup_n(2, &ro);
    for (uint64_t id = 1; id <= 300; id++) {
        uint32_t s[] = {1, 2};
        mkchunk(id, s, 2);
    }
    for (uint64_t id = 1; id <= 300; id++) chunks_chunk_del(cm, id);
    repair_tick(rp);
    /* budget: 50 per server */
    ck_assert_uint_eq(ncalls, 100);
    struct repair_stats st;
    repair_stats(rp, &st);
    ck_assert_uint_eq(st.gc_queued, 500);
    for (int i = 0; i < 40; i++) {
        advance(2, 0, 250);
        repair_tick(rp);
    }
    ck_assert_uint_eq(ncalls, 600);
    teardown();
}
END_TEST

START_TEST(test_missing_waits)
{
    setup_n(3, NULL);
    uint32_t s[] = {3};
    mkchunk(1, s, 1);
    chunks_server_lost(cm, 3);
    advance(3, 3, 6000);
    repair_tick(rp);
    ck_assert_uint_eq(ncalls, 0); /* nothing to copy from */
    teardown();
}
END_TEST

START_TEST(test_rebalance_to_empty_server)
{
    struct repair_opts ro = {.rebalance_pct = 5, .rebalance_max = 4, .server_timeout_ms = 5000};
    setup_n(3, &ro);
    for (uint64_t id = 1; id <= 60; id++) {
        uint32_t s[] = {1 + (uint32_t)(id % 3), 1 + (uint32_t)((id + 1) % 3)};
        mkchunk(id, s, 2);
    }
    repair_tick(rp); /* first scan publishes usage */
    ck_assert_uint_eq(ncalls, 0);
    struct dfs_dirinfo d;
    memset(&d, 0, sizeof(d));
    d.total = 100ull << 30;
    d.avail = 90ull << 30;
    chunks_server_register(cm, 4, "127.0.0.1", 9004, "", &d, 1);
    for (int round = 0; round < 400; round++) {
        repair_tick(rp);
        unsigned n = ncalls;
        struct call done[256];
        memcpy(done, calls, n * sizeof(*calls));
        ncalls = 0;
        for (unsigned i = 0; i < n; i++) {
            if (done[i].del) repair_delete_done(rp, done[i].token, DFS_OK);
            else repair_replicate_done(rp, done[i].token, DFS_OK, 1 << 20);
        }
        for (uint64_t id = 1; id <= 60; id++) ck_assert_uint_ge(live_copies(chunks_get(cm, id)), 2);
    }
    unsigned per[5] = {0};
    for (uint64_t id = 1; id <= 60; id++) {
        struct cm_chunk *c = chunks_get(cm, id);
        ck_assert_uint_eq(live_copies(c), 2);
        for (unsigned i = 0; i < c->nrep; i++) per[c->reps[i].server_id]++;
    }
    /* 120 copies over 4 servers: about 30 each */
    for (int i = 1; i <= 4; i++) {
        ck_assert_uint_ge(per[i], 22);
        ck_assert_uint_le(per[i], 38);
    }
    teardown();
}
END_TEST

TEST_SUITE(repair)
{
    Suite *s = suite_create("repair");
    TCase *tc = tcase_create("decisions");
    tcase_add_test(tc, test_most_endangered_first);
    tcase_add_test(tc, test_limits);
    tcase_add_test(tc, test_cluster_limit);
    tcase_add_test(tc, test_wait_for_timeout_and_start_delay);
    tcase_add_test(tc, test_lease_and_version_change);
    tcase_add_test(tc, test_corrupt_under_lease);
    tcase_add_test(tc, test_move_deletes_its_source);
    tcase_add_test(tc, test_returning_server_stale_and_surplus);
    tcase_add_test(tc, test_drain_never_below_goal);
    tcase_add_test(tc, test_goal_down_deletes_surplus);
    tcase_add_test(tc, test_gc_throttled);
    tcase_add_test(tc, test_missing_waits);
    tcase_add_test(tc, test_rebalance_to_empty_server);
    suite_add_tcase(s, tc);
    return s;
}
