/* test_common_rpc_mclient.c - mclient: leader following, retries with a stable seq, deadlines. */
#include "mclient.h"
#include "rpc.h"
#include "testlib.h"
#include "util.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Two metad stand-ins on one loop thread: a leader and a follower that
 * names the leader in its HELLO answer and refuses with DFS_ENOTLEADER. */
enum { LEADER = 1, FOLLOWER = 2 };

struct seen {
    _Atomic int n;
    _Atomic uint64_t session, seq;
};
static struct seen seen_leader, seen_follower;
static _Atomic int rename_drops; /* RENAME: close the conn this many times first */
static char leader_addr[64];

static void h_mkdir(struct rpc_req *req)
{
    const struct dfs_msg_mknod *b = req->f.body;
    int who = (int)(intptr_t)rpc_conn_data(req->conn);
    struct seen *s = who == LEADER ? &seen_leader : &seen_follower;
    atomic_store(&s->session, b->cred.session);
    atomic_store(&s->seq, b->cred.seq);
    atomic_fetch_add(&s->n, 1);
    struct dfs_msg_attr_resp r;
    memset(&r, 0, sizeof(r));
    if (who == FOLLOWER) {
        r.status = DFS_ENOTLEADER;
    } else {
        r.attr.ino = 555;
        r.attr.mode = b->mode;
    }
    rpc_reply(req, &r, NULL, NULL);
}

static void h_getattr(struct rpc_req *req)
{
    const struct dfs_msg_ino_req *b = req->f.body;
    int who = (int)(intptr_t)rpc_conn_data(req->conn);
    struct seen *s = who == LEADER ? &seen_leader : &seen_follower;
    atomic_store(&s->session, b->cred.session);
    atomic_store(&s->seq, b->cred.seq);
    atomic_fetch_add(&s->n, 1);
    struct dfs_msg_attr_resp r;
    memset(&r, 0, sizeof(r));
    r.attr.ino = b->ino;
    rpc_reply(req, &r, NULL, NULL);
}

static void h_rename(struct rpc_req *req)
{
    const struct dfs_msg_rename *b = req->f.body;
    atomic_fetch_add(&seen_leader.n, 1);
    uint64_t prev = atomic_exchange(&seen_leader.seq, b->cred.seq);
    if (atomic_load(&rename_drops) > 0) {
        atomic_fetch_sub(&rename_drops, 1);
        struct rpc_conn *c = req->conn;
        rpc_req_free(req);
        rpc_conn_close(c); /* the answer is "lost" */
        return;
    }
    /* A retry must carry the seq of the first attempt. */
    rpc_reply_status(req, prev == 0 || prev == b->cred.seq ? DFS_OK : DFS_EINVAL);
}

static rpc_handler_fn handlers[DFS_OP_MAX];

static void follower_hello(struct rpc_conn *c, const struct dfs_msg_hello *h,
                           struct dfs_msg_hello_resp *resp)
{
    resp->leader.ptr = leader_addr;
    resp->leader.len = (uint32_t)strlen(leader_addr);
}

struct cluster {
    struct rpc_mt *mt;
    struct rpc_server *leader, *follower;
    int lport, fport;
};

static void cluster_listen(void *arg)
{
    struct cluster *cl = arg;
    char err[256];
    struct rpc_conn_opts o;
    memset(&o, 0, sizeof(o));
    o.role = DFS_ROLE_METAD;
    o.node_id = 1;
    o.max_frame_in = DFS_MAX_FRAME_TO_METAD;
    o.handlers = handlers;
    o.data = (void *)(intptr_t)LEADER;
    cl->leader = rpc_listen(rpc_mt_loop(cl->mt), "127.0.0.1", 0, &o, err, sizeof(err));
    o.data = (void *)(intptr_t)FOLLOWER;
    o.on_hello = follower_hello;
    cl->follower = rpc_listen(rpc_mt_loop(cl->mt), "127.0.0.1", 0, &o, err, sizeof(err));
}

static void cluster_close(void *arg)
{
    struct cluster *cl = arg;
    rpc_server_close(cl->leader);
    rpc_server_close(cl->follower);
}

static void cluster_start(struct cluster *cl)
{
    memset(cl, 0, sizeof(*cl));
    memset(&seen_leader, 0, sizeof(seen_leader));
    memset(&seen_follower, 0, sizeof(seen_follower));
    handlers[DFS_OP_MKDIR] = h_mkdir;
    handlers[DFS_OP_GETATTR] = h_getattr;
    handlers[DFS_OP_RENAME] = h_rename;
    cl->mt = rpc_mt_start("metad");
    ck_assert_ptr_nonnull(cl->mt);
    rpc_mt_exec(cl->mt, cluster_listen, cl);
    ck_assert_ptr_nonnull(cl->leader);
    ck_assert_ptr_nonnull(cl->follower);
    cl->lport = rpc_server_port(cl->leader);
    cl->fport = rpc_server_port(cl->follower);
    snprintf(leader_addr, sizeof(leader_addr), "127.0.0.1:%d", cl->lport);
}

static void cluster_stop(struct cluster *cl)
{
    rpc_mt_exec(cl->mt, cluster_close, cl);
    rpc_mt_stop(cl->mt);
}

static struct mclient *client(struct rpc_mt *mt, const char *addrs, uint32_t call_ms,
                              uint32_t total_ms)
{
    struct mclient_opts o = {.addrs = addrs,
                             .role = DFS_ROLE_CLIENT,
                             .call_timeout_ms = call_ms,
                             .total_timeout_ms = total_ms};
    char err[256];
    struct mclient *m = mclient_new(mt, &o, err, sizeof(err));
    ck_assert_msg(m != NULL, "mclient_new: %s", err);
    return m;
}

START_TEST(test_follows_leader)
{
    struct cluster cl;
    cluster_start(&cl);
    struct rpc_mt *mt = rpc_mt_start("cli");
    char addrs[64];
    snprintf(addrs, sizeof(addrs), "127.0.0.1:%d", cl.fport);
    struct mclient *m = client(mt, addrs, 2000, 8000);
    ck_assert_uint_ne(mclient_session(m), 0);

    struct dfs_msg_mknod b;
    memset(&b, 0, sizeof(b));
    b.parent = 1;
    b.name.ptr = "d";
    b.name.len = 1;
    b.mode = 040755;
    struct dfs_frame *f = NULL;
    ck_assert_int_eq(mclient_do(m, DFS_OP_MKDIR, &b, &f), DFS_OK);
    ck_assert_uint_eq(((struct dfs_msg_attr_resp *)f->body)->attr.ino, 555);
    rpc_frame_release(f);
    /* Tried the follower, then the leader, with the same idempotency key. */
    ck_assert_int_eq(atomic_load(&seen_follower.n), 1);
    ck_assert_int_eq(atomic_load(&seen_leader.n), 1);
    uint64_t seq1 = atomic_load(&seen_leader.seq);
    ck_assert_uint_ne(seq1, 0);
    ck_assert_uint_eq(atomic_load(&seen_follower.seq), seq1);
    ck_assert_uint_eq(atomic_load(&seen_leader.session), mclient_session(m));
    ck_assert_uint_eq(b.cred.seq, seq1);

    /* The next mutation goes straight to the leader with a new seq. */
    b.cred.seq = 0;
    ck_assert_int_eq(mclient_do(m, DFS_OP_MKDIR, &b, NULL), DFS_OK);
    ck_assert_int_eq(atomic_load(&seen_follower.n), 1);
    ck_assert_int_eq(atomic_load(&seen_leader.n), 2);
    ck_assert_uint_gt(atomic_load(&seen_leader.seq), seq1);

    /* Reads carry the session but no seq. */
    struct dfs_msg_ino_req g;
    memset(&g, 0, sizeof(g));
    g.ino = 9;
    ck_assert_int_eq(mclient_do(m, DFS_OP_GETATTR, &g, NULL), DFS_OK);
    ck_assert_uint_eq(atomic_load(&seen_leader.seq), 0);
    ck_assert_uint_eq(atomic_load(&seen_leader.session), mclient_session(m));

    mclient_free(m);
    rpc_mt_stop(mt);
    cluster_stop(&cl);
}
END_TEST

/* The reply is lost twice (connection closed): the retries reuse the seq. */
START_TEST(test_retry_same_seq)
{
    struct cluster cl;
    cluster_start(&cl);
    atomic_store(&rename_drops, 2);
    struct rpc_mt *mt = rpc_mt_start("cli");
    char addrs[64];
    snprintf(addrs, sizeof(addrs), "127.0.0.1:%d", cl.lport);
    struct mclient *m = client(mt, addrs, 2000, 10000);
    struct dfs_msg_rename b;
    memset(&b, 0, sizeof(b));
    b.name.ptr = "a";
    b.name.len = 1;
    b.newname.ptr = "b";
    b.newname.len = 1;
    ck_assert_int_eq(mclient_do(m, DFS_OP_RENAME, &b, NULL), DFS_OK);
    ck_assert_int_eq(atomic_load(&seen_leader.n), 3);
    ck_assert_uint_eq(atomic_load(&seen_leader.seq), b.cred.seq);
    mclient_free(m);
    rpc_mt_stop(mt);
    cluster_stop(&cl);
}
END_TEST

/* A dead first address: the call times out there, then moves on. */
START_TEST(test_dead_address_skipped)
{
    struct cluster cl;
    cluster_start(&cl);
    struct rpc_mt *mt = rpc_mt_start("cli");
    char addrs[128];
    snprintf(addrs, sizeof(addrs), "127.0.0.1:%d,127.0.0.1:%d", testlib_free_port(), cl.lport);
    struct mclient *m = client(mt, addrs, 300, 5000);
    struct dfs_msg_ino_req g;
    memset(&g, 0, sizeof(g));
    uint64_t t0 = dfs_mono_ms();
    ck_assert_int_eq(mclient_do(m, DFS_OP_GETATTR, &g, NULL), DFS_OK);
    ck_assert_uint_lt(dfs_mono_ms() - t0, 3000);
    mclient_free(m);
    rpc_mt_stop(mt);
    cluster_stop(&cl);
}
END_TEST

START_TEST(test_total_deadline)
{
    struct rpc_mt *mt = rpc_mt_start("cli");
    char addrs[64];
    snprintf(addrs, sizeof(addrs), "127.0.0.1:%d", testlib_free_port());
    struct mclient *m = client(mt, addrs, 200, 800);
    struct dfs_msg_ino_req g;
    memset(&g, 0, sizeof(g));
    struct dfs_frame *f = (struct dfs_frame *)1;
    uint64_t t0 = dfs_mono_ms();
    ck_assert_int_eq(mclient_call(m, DFS_OP_GETATTR, &g, &f), DFS_ETIMEDOUT);
    uint64_t el = dfs_mono_ms() - t0;
    ck_assert_ptr_null(f);
    ck_assert_uint_ge(el, 750);
    ck_assert_uint_lt(el, 800 + 400);
    mclient_free(m);
    rpc_mt_stop(mt);
}
END_TEST

START_TEST(test_opts_and_ops)
{
    struct rpc_mt *mt = rpc_mt_start("cli");
    struct mclient_opts o = {.addrs = "127.0.0.1:notaport"};
    char err[256] = "";
    ck_assert_ptr_null(mclient_new(mt, &o, err, sizeof(err)));
    ck_assert_str_ne(err, "");
    o.addrs = "";
    ck_assert_ptr_null(mclient_new(mt, &o, err, sizeof(err)));
    o.addrs = "a:1,,b:2";
    ck_assert_ptr_null(mclient_new(mt, &o, err, sizeof(err)));
    o.addrs = "127.0.0.1,127.0.0.2:9999";
    struct mclient *m = mclient_new(mt, &o, err, sizeof(err));
    ck_assert_ptr_nonnull(m);
    mclient_free(m);
    ck_assert(mclient_op_mutates(DFS_OP_CREATE));
    ck_assert(mclient_op_mutates(DFS_OP_RENAME));
    ck_assert(mclient_op_mutates(DFS_OP_UNLINK));
    ck_assert(mclient_op_mutates(DFS_OP_LINK));
    ck_assert(mclient_op_mutates(DFS_OP_MKDIR));
    ck_assert(!mclient_op_mutates(DFS_OP_GETATTR));
    ck_assert(!mclient_op_mutates(DFS_OP_LOOKUP));
    ck_assert(!mclient_op_mutates(DFS_OP_READDIR));
    rpc_mt_stop(mt);
}
END_TEST

TEST_SUITE(mclient)
{
    Suite *s = suite_create("mclient");
    TCase *tc = tcase_create("mclient");
    tcase_add_test(tc, test_follows_leader);
    tcase_add_test(tc, test_retry_same_seq);
    tcase_add_test(tc, test_dead_address_skipped);
    tcase_add_test(tc, test_total_deadline);
    tcase_add_test(tc, test_opts_and_ops);
    tcase_set_timeout(tc, 30);
    suite_add_tcase(s, tc);
    return s;
}
