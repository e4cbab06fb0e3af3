/* itest_metad.c - 100,000 mixed namespace ops, kill -9, restart: every acked op is there, nothing else. */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "mclient.h"
#include "rpc.h"
#include "testlib.h"
#include "util.h"

#define NDIRS 8
#define NNAMES 400
#define NOPS 100000

static char *tmp;
static int port, rport;
static pid_t pid;
static char logpath[512];

/* model: mode per (dir, name); 0 = absent */
static uint32_t model[NDIRS][NNAMES];
static uint64_t dirino[NDIRS];

static pid_t start_metad(void)
{
    char bin[512], dd[600], l[64], r[64];
    snprintf(bin, sizeof(bin), "%s/metad", testlib_bindir());
    snprintf(dd, sizeof(dd), "data_dir=%s/data", tmp);
    snprintf(l, sizeof(l), "listen=127.0.0.1:%d", port);
    snprintf(r, sizeof(r), "raft_listen=127.0.0.1:%d", rport);
    char *argv[] = {bin, "-f", "-o", dd, "-o", l, "-o", r, "-o", "log_level=notice", "-o", "http_listen=", NULL};
    pid_t p = testlib_spawn(argv, logpath);
    ck_assert_int_gt(p, 0);
    return p;
}

static int port_up(void *arg)
{
    (void)arg;
    return testlib_port_open(port);
}

static struct mclient *client(struct rpc_mt *mt)
{
    char addr[64], err[256];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    struct mclient_opts o = {.addrs = addr, .role = DFS_ROLE_CLIENT, .call_timeout_ms = 2000,
                             .total_timeout_ms = 20000};
    struct mclient *m = mclient_new(mt, &o, err, sizeof(err));
    ck_assert_msg(m != NULL, "%s", err);
    return m;
}

static int do_name(struct mclient *m, unsigned op, uint64_t parent, const char *name, uint32_t mode)
{
    if (op == DFS_OP_CREATE || op == DFS_OP_MKDIR) {
        struct dfs_msg_mknod b;
        memset(&b, 0, sizeof(b));
        b.parent = parent;
        b.name.ptr = name;
        b.name.len = (uint32_t)strlen(name);
        b.mode = mode;
        b.flags = 0200; /* O_EXCL */
        return mclient_do(m, op == DFS_OP_CREATE ? DFS_OP_MKNOD : op, &b, NULL);
    }
    struct dfs_msg_name_req b;
    memset(&b, 0, sizeof(b));
    b.parent = parent;
    b.name.ptr = name;
    b.name.len = (uint32_t)strlen(name);
    return mclient_do(m, op, &b, NULL);
}

struct wl {
    struct mclient *m;
    volatile long acked;
    volatile int stop;
    /* the op in flight when the server died: its outcome is unknown */
    int u_kind, u_d, u_n, u_d2, u_n2;
    uint32_t u_mode;
};

static unsigned rnd_state = 12345;
static unsigned rnd(void)
{
    rnd_state = rnd_state * 1103515245u + 12345u;
    return rnd_state >> 8;
}

static void *workload(void *arg)
{
    struct wl *w = arg;
    char n1[32], n2[32];
    while (!w->stop) {
        int d = (int)(rnd() % NDIRS), n = (int)(rnd() % NNAMES);
        int d2 = (int)(rnd() % NDIRS), n2i = (int)(rnd() % NNAMES);
        snprintf(n1, sizeof(n1), "f%d", n);
        snprintf(n2, sizeof(n2), "f%d", n2i);
        int kind = (int)(rnd() % 4);
        uint32_t mode = S_IFREG | (0600 + (rnd() % 0100));
        w->u_kind = kind, w->u_d = d, w->u_n = n, w->u_d2 = d2, w->u_n2 = n2i, w->u_mode = mode;
        int st;
        if (kind == 0 || (kind == 3 && !model[d][n])) {
            w->u_kind = 0;
            st = do_name(w->m, DFS_OP_CREATE, dirino[d], n1, mode);
            if (st == DFS_OK) model[d][n] = mode;
            else if (st != DFS_EEXIST) break;
            else ck_assert_uint_ne(model[d][n], 0);
        } else if (kind == 1) {
            st = do_name(w->m, DFS_OP_UNLINK, dirino[d], n1, 0);
            if (st == DFS_OK) model[d][n] = 0;
            else if (st != DFS_ENOENT) break;
            else ck_assert_uint_eq(model[d][n], 0);
        } else {
            w->u_kind = 2;
            struct dfs_msg_rename b;
            memset(&b, 0, sizeof(b));
            b.parent = dirino[d];
            b.name.ptr = n1;
            b.name.len = (uint32_t)strlen(n1);
            b.newparent = dirino[d2];
            b.newname.ptr = n2;
            b.newname.len = (uint32_t)strlen(n2);
            st = mclient_do(w->m, DFS_OP_RENAME, &b, NULL);
            if (st == DFS_OK) {
                if (d != d2 || n != n2i) {
                    model[d2][n2i] = model[d][n];
                    model[d][n] = 0;
                }
            } else if (st != DFS_ENOENT) break;
            else ck_assert_uint_eq(model[d][n], 0);
        }
        w->acked++;
    }
    return NULL;
}

struct seen {
    uint32_t mode[NNAMES];
    unsigned n;
};

static void list_dir(struct mclient *m, uint64_t dir, struct seen *s)
{
    memset(s, 0, sizeof(*s));
    uint64_t cookie = 0;
    for (;;) {
        struct dfs_msg_readdir b;
        memset(&b, 0, sizeof(b));
        b.ino = dir;
        b.cookie = cookie;
        b.max = 300;
        struct dfs_frame *rep;
        int st = mclient_do(m, DFS_OP_READDIR, &b, &rep);
        ck_assert_int_eq(st, DFS_OK);
        const struct dfs_msg_readdir_resp *r = rep->body;
        for (uint32_t i = 0; i < r->entries_count; i++) {
            int k = atoi(r->entries[i].name.ptr + 1);
            ck_assert_int_lt(k, NNAMES);
            ck_assert_uint_eq(s->mode[k], 0); /* no duplicates */
            s->mode[k] = r->entries[i].attr.mode;
            s->n++;
            cookie = r->entries[i].cookie;
        }
        int eof = (int)r->eof;
        rpc_frame_release(rep);
        if (eof) break;
    }
}

START_TEST(test_kill9_replay)
{
    tmp = testlib_tmpdir("itest-metad");
    port = testlib_free_port();
    rport = testlib_free_port();
    snprintf(logpath, sizeof(logpath), "%s/metad.log", tmp);
    pid = start_metad();
    ck_assert(testlib_wait_for(port_up, NULL, 10000));
    struct rpc_mt *mt = rpc_mt_start("itest");
    struct mclient *m = client(mt);
    char name[32];
    for (int d = 0; d < NDIRS; d++) {
        snprintf(name, sizeof(name), "d%d", d);
        struct dfs_msg_mknod b;
        memset(&b, 0, sizeof(b));
        b.parent = DFS_ROOT_INO;
        b.name.ptr = name;
        b.name.len = (uint32_t)strlen(name);
        b.mode = 0755;
        struct dfs_frame *rep;
        ck_assert_int_eq(mclient_do(m, DFS_OP_MKDIR, &b, &rep), DFS_OK);
        dirino[d] = ((struct dfs_msg_attr_resp *)rep->body)->attr.ino;
        rpc_frame_release(rep);
    }

    struct wl w = {.m = m};
    pthread_t th;
    pthread_create(&th, NULL, workload, &w);
    while (w.acked < NOPS) usleep(1000);
    /* kill -9 while the workload is still running */
    kill(pid, SIGKILL);
    w.stop = 1;
    pthread_join(th, NULL);
    waitpid(pid, NULL, 0);
    long acked = w.acked;
    ck_assert_int_ge(acked, NOPS);

    pid = start_metad();
    ck_assert(testlib_wait_for(port_up, NULL, 30000));
    /* verify: every dir's listing equals the model, except the one op in
     * flight at the kill, which may or may not have happened */
    unsigned bad = 0;
    for (int d = 0; d < NDIRS; d++) {
        struct seen s;
        list_dir(m, dirino[d], &s);
        for (int n = 0; n < NNAMES; n++) {
            if (s.mode[n] == model[d][n]) continue;
            int uncertain = (d == w.u_d && n == w.u_n) ||
                            (w.u_kind == 2 && d == w.u_d2 && n == w.u_n2);
            if (!uncertain) {
                bad++;
                fprintf(stderr, "d%d/f%d: have mode %o, expected %o\n", d, n, s.mode[n],
                        model[d][n]);
            }
        }
    }
    ck_assert_uint_eq(bad, 0);
    fprintf(stderr, "itest_metad: %ld acked ops survived kill -9\n", acked);
    mclient_free(m);
    rpc_mt_stop(mt);
    testlib_stop(pid, SIGTERM, 5000);
    testlib_rmrf(tmp);
    free(tmp);
}
END_TEST

int main(void)
{
    log_init("itest_metad");
    log_set_level(LOG_LVL_ERR);
    Suite *s = suite_create("itest_metad");
    TCase *tc = tcase_create("crash");
    tcase_set_timeout(tc, 170);
    tcase_add_test(tc, test_kill9_replay);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
