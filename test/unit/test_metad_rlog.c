/* test_metad_rlog.c - metad's raft log storage (rlog) driven through its raft_io
 * function pointers, without raft: appends, reloads, truncation, snapshots,
 * torn tails, corruption, locking and flushing. */
#include "../../metad/rlog.h"
#include "testlib.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <raft.h>
#include <raft/uv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

/* ------------------------------------------------------------------------ */
/* environment: one rlog over one directory, with its own loop */

struct env {
    char dir[300], netdir[300];
    uv_loop_t loop;
    struct raft_uv_transport t;
    struct raft_io net, io;
    bool inited; /* io.init done (close needs it) */
};

/* g_base: made in the runner before the tests fork and removed after them
 * (even when a test failed); g_root: one fresh directory per test in it. */
static char *g_base, *g_root;

static void base_setup(void)
{
    g_base = testlib_tmpdir("dfs-rlog");
    ck_assert_ptr_nonnull(g_base);
}

static void base_teardown(void)
{
    if (g_base) {
        testlib_rmrf(g_base);
        free(g_base);
        g_base = NULL;
    }
}

static void root_setup(void)
{
    ck_assert_int_ge(asprintf(&g_root, "%s/t-XXXXXX", g_base), 0);
    ck_assert_ptr_nonnull(mkdtemp(g_root));
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Run the loop until *flag is set; at most 10 s and 1e6 iterations. */
static bool run_until(uv_loop_t *loop, const int *flag)
{
    uint64_t deadline = now_ms() + 10000;
    for (unsigned i = 0; i < 1000000 && !*flag && now_ms() < deadline; i++)
        uv_run(loop, UV_RUN_ONCE);
    return *flag != 0;
}

/* Open an rlog on g_root/<name>; returns rlog_init's code (on failure the
 * network side is torn down again and io.errmsg holds the reason). */
static int env_open_rv(struct env *e, const char *name, int mode, unsigned sync_ms,
                       size_t seg_bytes)
{
    memset(e, 0, sizeof(*e));
    snprintf(e->dir, sizeof(e->dir), "%s/%s", g_root, name);
    snprintf(e->netdir, sizeof(e->netdir), "%s/%s.net", g_root, name);
    if (mkdir(e->netdir, 0750) != 0)
        ck_assert_int_eq(errno, EEXIST);
    ck_assert_int_eq(uv_loop_init(&e->loop), 0);
    ck_assert_int_eq(raft_uv_tcp_init(&e->t, &e->loop), 0);
    ck_assert_int_eq(raft_uv_init(&e->net, &e->loop, e->netdir, &e->t), 0);
    struct rlog_opts o = {
        .dir = e->dir, .sync_mode = mode, .sync_ms = sync_ms, .segment_bytes = seg_bytes};
    int rv = rlog_init(&e->io, &e->net, &e->loop, &o);
    if (rv != 0) {
        char msg[RAFT_ERRMSG_BUF_SIZE];
        memcpy(msg, e->io.errmsg, sizeof(msg));
        raft_uv_close(&e->net);
        raft_uv_tcp_close(&e->t);
        uv_run(&e->loop, UV_RUN_DEFAULT);
        ck_assert_int_eq(uv_loop_close(&e->loop), 0);
        memcpy(e->io.errmsg, msg, sizeof(msg));
        return rv;
    }
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", testlib_free_port());
    ck_assert_msg(e->io.init(&e->io, 1, addr) == 0, "io.init: %s", e->io.errmsg);
    e->inited = true;
    return 0;
}

static void env_open(struct env *e, const char *name, int mode, size_t seg_bytes)
{
    int rv = env_open_rv(e, name, mode, 10, seg_bytes);
    ck_assert_msg(rv == 0, "rlog_init: %d %s", rv, e->io.errmsg);
}

static int closed_flag;
static void close_cb(struct raft_io *io)
{
    (void)io;
    closed_flag = 1;
}

static void env_close(struct env *e)
{
    closed_flag = 0;
    e->io.close(&e->io, close_cb);
    ck_assert(run_until(&e->loop, &closed_flag));
    rlog_free(&e->io);
    raft_uv_close(&e->net);
    raft_uv_tcp_close(&e->t);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    /* every handle of rlog and libraft is closed */
    ck_assert_int_eq(uv_loop_close(&e->loop), 0);
}

/* ------------------------------------------------------------------------ */
/* what the log should hold: entry `i` of the model is raft index i */

#define MAXE 4096

struct model {
    raft_index last;
    raft_term term[MAXE];
    unsigned short type[MAXE];
    size_t len[MAXE];
    struct raft_buffer conf1; /* data of the bootstrap entry (index 1) */
};

static uint8_t pat(raft_index idx, raft_term term, size_t k)
{
    return (uint8_t)(idx * 131u + term * 7u + k * 13u + (k >> 8));
}

static void fill(void *p, raft_index idx, raft_term term, size_t len)
{
    uint8_t *b = p;
    for (size_t k = 0; k < len; k++)
        b[k] = pat(idx, term, k);
}

static void conf_make(struct raft_configuration *c, unsigned n)
{
    raft_configuration_init(c);
    for (unsigned i = 1; i <= n; i++) {
        char addr[32];
        snprintf(addr, sizeof(addr), "10.0.0.%u:9521", i);
        ck_assert_int_eq(raft_configuration_add(c, i, addr, i == n ? RAFT_STANDBY : RAFT_VOTER), 0);
    }
}

/* bootstrap with a 3-server configuration; the model gets entry 1 */
static void do_bootstrap(struct env *e, struct model *m)
{
    struct raft_configuration c;
    conf_make(&c, 3);
    int rv = e->io.bootstrap(&e->io, &c);
    ck_assert_msg(rv == 0, "bootstrap: %d %s", rv, e->io.errmsg);
    if (m) {
        ck_assert_int_eq(raft_configuration_encode(&c, &m->conf1), 0);
        m->last = 1;
        m->term[1] = 1;
        m->type[1] = RAFT_CHANGE;
        m->len[1] = m->conf1.len;
    }
    raft_configuration_close(&c);
}

static void model_free(struct model *m)
{
    if (m->conf1.base)
        raft_free(m->conf1.base);
    m->conf1.base = NULL;
}

struct loaded {
    raft_term term;
    raft_id vote;
    struct raft_snapshot *snap;
    raft_index start;
    struct raft_entry *ents;
    size_t n;
};

static void snap_free(struct raft_snapshot *s)
{
    if (!s)
        return;
    raft_configuration_close(&s->configuration);
    for (unsigned i = 0; i < s->n_bufs; i++)
        raft_free(s->bufs[i].base);
    raft_free(s->bufs);
    raft_free(s);
}

static void loaded_free(struct loaded *ld)
{
    void *last = NULL;
    for (size_t i = 0; i < ld->n; i++)
        if (ld->ents[i].batch != last) {
            last = ld->ents[i].batch;
            raft_free(last);
        }
    if (ld->ents)
        raft_free(ld->ents);
    snap_free(ld->snap);
    memset(ld, 0, sizeof(*ld));
}

static int do_load(struct env *e, struct loaded *ld)
{
    memset(ld, 0, sizeof(*ld));
    return e->io.load(&e->io, &ld->term, &ld->vote, &ld->snap, &ld->start, &ld->ents, &ld->n);
}

static void load_ok(struct env *e, struct loaded *ld)
{
    int rv = do_load(e, ld);
    ck_assert_msg(rv == 0, "load: %d %s", rv, e->io.errmsg);
}

/* The loaded entries match the model from ld->start to m->last. */
static void check_entries(const struct loaded *ld, const struct model *m)
{
    ck_assert_uint_ge(ld->start, 1);
    ck_assert_uint_eq(ld->start + ld->n - 1, m->last);
    for (size_t i = 0; i < ld->n; i++) {
        raft_index idx = ld->start + i;
        const struct raft_entry *x = &ld->ents[i];
        ck_assert_msg(x->term == m->term[idx], "index %llu: term %llu, want %llu",
                      (unsigned long long)idx, (unsigned long long)x->term,
                      (unsigned long long)m->term[idx]);
        ck_assert_uint_eq(x->type, m->type[idx]);
        ck_assert_msg(x->buf.len == m->len[idx], "index %llu: len %zu, want %zu",
                      (unsigned long long)idx, x->buf.len, m->len[idx]);
        ck_assert_ptr_nonnull(x->batch);
        if (x->type == RAFT_CHANGE) { /* the bootstrap's; others checked by the test */
            if (idx == 1)
                ck_assert_int_eq(memcmp(x->buf.base, m->conf1.base, m->conf1.len), 0);
            continue;
        }
        const uint8_t *b = x->buf.base;
        for (size_t k = 0; k < x->buf.len; k++)
            if (b[k] != pat(idx, x->term, k))
                ck_abort_msg("index %llu: byte %zu differs", (unsigned long long)idx, k);
    }
}

static raft_index stats_last(struct env *e)
{
    uint64_t bytes, syncs, last;
    rlog_stats(&e->io, &bytes, &syncs, &last);
    return last;
}

static uint64_t stats_syncs(struct env *e)
{
    uint64_t bytes, syncs, last;
    rlog_stats(&e->io, &bytes, &syncs, &last);
    return syncs;
}

struct areq {
    struct raft_io_append req;
    int done, status;
};

static void append_cb(struct raft_io_append *req, int status)
{
    struct areq *a = req->data;
    a->done++;
    a->status = status;
}

/* Append n entries of the given sizes (cycled) in one call, starting at
 * m->last + 1; waits for the callback and asserts status 0. */
static void append_n(struct env *e, struct model *m, unsigned n, const size_t *sizes,
                     unsigned nsizes, raft_term term)
{
    struct raft_entry *ents = calloc(n, sizeof(*ents));
    ck_assert_ptr_nonnull(ents);
    for (unsigned i = 0; i < n; i++) {
        raft_index idx = m->last + 1 + i;
        ck_assert_uint_lt(idx, MAXE);
        size_t len = sizes[(idx + i) % nsizes];
        ents[i].term = term;
        ents[i].type = (idx % 5 == 0) ? RAFT_BARRIER : RAFT_COMMAND;
        ents[i].buf.len = len;
        ents[i].buf.base = len ? malloc(len) : NULL;
        if (len) {
            ck_assert_ptr_nonnull(ents[i].buf.base);
            fill(ents[i].buf.base, idx, term, len);
        }
    }
    struct areq a = {.done = 0};
    a.req.data = &a;
    int rv = e->io.append(&e->io, &a.req, ents, n, append_cb);
    ck_assert_msg(rv == 0, "append: %d %s", rv, e->io.errmsg);
    ck_assert_int_eq(a.done, 0); /* never synchronous */
    ck_assert(run_until(&e->loop, &a.done));
    ck_assert_int_eq(a.done, 1);
    ck_assert_int_eq(a.status, 0);
    for (unsigned i = 0; i < n; i++) {
        raft_index idx = m->last + 1 + i;
        m->term[idx] = term;
        m->type[idx] = ents[i].type;
        m->len[idx] = ents[i].buf.len;
        free(ents[i].buf.base);
    }
    free(ents);
    m->last += n;
    ck_assert_uint_eq(stats_last(e), m->last);
}

static void append_each(struct env *e, struct model *m, unsigned count, size_t size, raft_term term)
{
    for (unsigned i = 0; i < count; i++)
        append_n(e, m, 1, &size, 1, term);
}

/* log-* files in dir: their first indexes, ascending */
static int cmp_idx(const void *a, const void *b)
{
    raft_index x = *(const raft_index *)a, y = *(const raft_index *)b;
    return x < y ? -1 : x > y;
}

static unsigned list_files(const char *dir, const char *prefix, raft_index *out, unsigned max)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    unsigned n = 0;
    struct dirent *de;
    size_t pl = strlen(prefix);
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, prefix, pl) != 0)
            continue;
        ck_assert_uint_lt(n, max);
        out[n++] = strtoull(de->d_name + pl, NULL, 10);
    }
    closedir(d);
    qsort(out, n, sizeof(*out), cmp_idx);
    return n;
}

static void seg_path(char *buf, size_t len, const struct env *e, raft_index first)
{
    snprintf(buf, len, "%s/log-%020llu", e->dir, (unsigned long long)first);
}

static off_t file_size(const char *path)
{
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    return sb.st_size;
}

static bool file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* ------------------------------------------------------------------------ */
/* tests */

START_TEST(test_fresh_and_bootstrap)
{
    struct env e;
    struct loaded ld;
    struct model m = {0};
    env_open(&e, "d", RLOG_SYNC_BATCH, 0);
    /* an empty directory loads as an empty log */
    load_ok(&e, &ld);
    ck_assert_uint_eq(ld.term, 0);
    ck_assert_uint_eq(ld.vote, 0);
    ck_assert_ptr_null(ld.snap);
    ck_assert_uint_eq(ld.start, 1);
    ck_assert_uint_eq(ld.n, 0);
    loaded_free(&ld);
    env_close(&e);

    env_open(&e, "d", RLOG_SYNC_BATCH, 0);
    do_bootstrap(&e, &m);
    /* a second bootstrap is refused */
    struct raft_configuration c;
    conf_make(&c, 1);
    ck_assert_int_eq(e.io.bootstrap(&e.io, &c), RAFT_CANTBOOTSTRAP);
    load_ok(&e, &ld);
    ck_assert_uint_eq(ld.term, 1);
    ck_assert_uint_eq(ld.vote, 0);
    ck_assert_ptr_null(ld.snap);
    ck_assert_uint_eq(ld.start, 1);
    ck_assert_uint_eq(ld.n, 1);
    ck_assert_uint_eq(ld.ents[0].type, RAFT_CHANGE);
    ck_assert_uint_eq(ld.ents[0].term, 1);
    check_entries(&ld, &m);
    loaded_free(&ld);
    ck_assert_uint_eq(stats_last(&e), 1);
    env_close(&e);

    /* and after a reopen too */
    env_open(&e, "d", RLOG_SYNC_ALWAYS, 0);
    ck_assert_int_eq(e.io.bootstrap(&e.io, &c), RAFT_CANTBOOTSTRAP);
    load_ok(&e, &ld);
    ck_assert_uint_eq(ld.term, 1);
    check_entries(&ld, &m);
    loaded_free(&ld);
    env_close(&e);
    raft_configuration_close(&c);
    model_free(&m);
}
END_TEST

/* _i = sync mode */
START_TEST(test_append_reload)
{
    static const size_t sizes[] = {0, 1, 5000, 7, 8, 9, 300, 4096, 12000};
    const unsigned ns = sizeof(sizes) / sizeof(sizes[0]);
    struct env e;
    struct loaded ld;
    struct model m = {0};
    const size_t segsz[2] = {0, 4096};
    for (unsigned round = 0; round < 2; round++) {
        char name[16];
        snprintf(name, sizeof(name), "d%u", round);
        env_open(&e, name, _i, segsz[round]);
        do_bootstrap(&e, &m);
        load_ok(&e, &ld);
        loaded_free(&ld);
        /* one entry per call, then batches of several */
        for (unsigned i = 0; i < ns; i++)
            append_n(&e, &m, 1, &sizes[i], 1, 2);
        append_n(&e, &m, 5, sizes, ns, 2);
        append_n(&e, &m, 9, sizes, ns, 3);
        append_n(&e, &m, 1, &sizes[0], 1, 3);
        if (_i == RLOG_SYNC_ALWAYS)
            ck_assert_uint_ge(stats_syncs(&e), 1);
        env_close(&e);

        env_open(&e, name, _i, segsz[round]);
        load_ok(&e, &ld);
        ck_assert_uint_eq(ld.term, 1);
        ck_assert_uint_eq(ld.start, 1);
        check_entries(&ld, &m);
        loaded_free(&ld);
        /* appends after a reload continue the (last) segment */
        append_n(&e, &m, 4, sizes, ns, 4);
        append_each(&e, &m, 30, 200, 4);
        env_close(&e);

        env_open(&e, name, _i, segsz[round]);
        load_ok(&e, &ld);
        check_entries(&ld, &m);
        loaded_free(&ld);
        raft_index segs[512];
        unsigned nseg = list_files(e.dir, "log-", segs, 512);
        if (segsz[round] == 0)
            ck_assert_uint_eq(nseg, 1);
        else
            ck_assert_uint_gt(nseg, 5);
        ck_assert_uint_eq(segs[0], 1);
        env_close(&e);
        model_free(&m);
        memset(&m, 0, sizeof(m));
    }
}
END_TEST

START_TEST(test_term_vote)
{
    struct env e;
    struct loaded ld;
    env_open(&e, "d", RLOG_SYNC_BATCH, 0);
    do_bootstrap(&e, NULL);
    ck_assert_int_eq(e.io.set_term(&e.io, 5), 0);
    ck_assert_int_eq(e.io.set_vote(&e.io, 3), 0);
    env_close(&e);

    env_open(&e, "d", RLOG_SYNC_BATCH, 0);
    load_ok(&e, &ld);
    ck_assert_uint_eq(ld.term, 5);
    ck_assert_uint_eq(ld.vote, 3);
    ck_assert_uint_eq(ld.n, 1);
    loaded_free(&ld);
    /* a new term clears the vote */
    ck_assert_int_eq(e.io.set_term(&e.io, 7), 0);
    env_close(&e);

    env_open(&e, "d", RLOG_SYNC_ALWAYS, 0);
    load_ok(&e, &ld);
    ck_assert_uint_eq(ld.term, 7);
    ck_assert_uint_eq(ld.vote, 0);
    loaded_free(&ld);
    ck_assert_int_eq(e.io.set_vote(&e.io, 2), 0);
    env_close(&e);

    env_open(&e, "d", RLOG_SYNC_ALWAYS, 0);
    load_ok(&e, &ld);
    ck_assert_uint_eq(ld.term, 7);
    ck_assert_uint_eq(ld.vote, 2);
    loaded_free(&ld);
    env_close(&e);

    /* a damaged meta file refuses to open */
    char path[400];
    snprintf(path, sizeof(path), "%s/meta", e.dir);
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    uint8_t b;
    ck_assert_int_eq(pread(fd, &b, 1, 9), 1);
    b ^= 0x40;
    ck_assert_int_eq(pwrite(fd, &b, 1, 9), 1);
    close(fd);
    ck_assert_int_eq(env_open_rv(&e, "d", RLOG_SYNC_BATCH, 10, 0), RAFT_CORRUPT);
    ck_assert_ptr_nonnull(strstr(e.io.errmsg, "meta"));
}
END_TEST

/* _i = sync mode */
START_TEST(test_truncate)
{
    struct env e;
    struct loaded ld;
    struct model m = {0};
    env_open(&e, "d", _i, 4096);
    do_bootstrap(&e, &m);
    load_ok(&e, &ld);
    loaded_free(&ld);
    append_each(&e, &m, 199, 300, 2); /* ~12 records per segment */
    raft_index segs[512];
    unsigned nseg = list_files(e.dir, "log-", segs, 512);
    ck_assert_uint_gt(nseg, 10);

    /* beyond the end: nothing happens */
    ck_assert_int_eq(e.io.truncate(&e.io, m.last + 1), 0);
    ck_assert_uint_eq(stats_last(&e), 200);

    /* in the middle of a segment, several segments back */
    raft_index cut = segs[nseg - 4] + 3;
    ck_assert_int_eq(e.io.truncate(&e.io, cut), 0);
    m.last = cut - 1;
    ck_assert_uint_eq(stats_last(&e), cut - 1);
    unsigned n2 = list_files(e.dir, "log-", segs, 512);
    ck_assert_uint_eq(n2, nseg - 3);
    append_each(&e, &m, 5, 100, 3);
    env_close(&e);

    env_open(&e, "d", _i, 4096);
    load_ok(&e, &ld);
    check_entries(&ld, &m);
    ck_assert_uint_eq(ld.ents[cut - 1].term, 3);
    ck_assert_uint_eq(ld.ents[cut - 2].term, 2);
    loaded_free(&ld);

    /* exactly at a segment boundary: that segment goes entirely */
    nseg = list_files(e.dir, "log-", segs, 512);
    cut = segs[nseg - 5];
    ck_assert_int_eq(e.io.truncate(&e.io, cut), 0);
    m.last = cut - 1;
    n2 = list_files(e.dir, "log-", segs, 512);
    ck_assert_uint_eq(n2, nseg - 5);
    ck_assert_uint_eq(stats_last(&e), cut - 1);
    /* the last segment left is full: the next append may open a new one,
     * which must then start at `cut` */
    append_each(&e, &m, 3, 2000, 4);
    n2 = list_files(e.dir, "log-", segs, 512);
    ck_assert_uint_le(segs[n2 - 1], cut + 2);
    env_close(&e);

    env_open(&e, "d", _i, 4096);
    load_ok(&e, &ld);
    check_entries(&ld, &m);
    ck_assert_uint_eq(ld.ents[cut - 1].term, 4);
    loaded_free(&ld);

    /* truncate without a following append, then reload */
    cut = m.last - 20;
    ck_assert_int_eq(e.io.truncate(&e.io, cut), 0);
    m.last = cut - 1;
    env_close(&e);
    env_open(&e, "d", _i, 4096);
    load_ok(&e, &ld);
    check_entries(&ld, &m);
    loaded_free(&ld);

    /* everything after the bootstrap entry */
    ck_assert_int_eq(e.io.truncate(&e.io, 2), 0);
    m.last = 1;
    ck_assert_uint_eq(list_files(e.dir, "log-", segs, 512), 1);
    append_each(&e, &m, 2, 10, 5);
    env_close(&e);
    env_open(&e, "d", _i, 4096);
    load_ok(&e, &ld);
    ck_assert_uint_eq(ld.n, 3);
    check_entries(&ld, &m);
    loaded_free(&ld);
    env_close(&e);
    model_free(&m);
}
END_TEST

struct sreq {
    struct raft_io_snapshot_put put;
    struct raft_io_snapshot_get get;
    int done, status;
    struct raft_snapshot *got;
};

static void put_cb(struct raft_io_snapshot_put *req, int status)
{
    struct sreq *s = req->data;
    s->done++;
    s->status = status;
}

static void get_cb(struct raft_io_snapshot_get *req, struct raft_snapshot *snap, int status)
{
    struct sreq *s = req->data;
    s->done++;
    s->status = status;
    s->got = snap;
}

static const char snap_a[] = "snapshot data part one/";
static char snap_b[10000];

static void snap_make(struct raft_snapshot *s, struct raft_buffer bufs[2], raft_index index,
                      raft_term term)
{
    memset(s, 0, sizeof(*s));
    s->index = index;
    s->term = term;
    conf_make(&s->configuration, 4);
    s->configuration_index = 1;
    for (size_t k = 0; k < sizeof(snap_b); k++)
        snap_b[k] = (char)pat(index, term, k);
    bufs[0].base = (void *)snap_a;
    bufs[0].len = strlen(snap_a);
    bufs[1].base = snap_b;
    bufs[1].len = sizeof(snap_b);
    s->bufs = bufs;
    s->n_bufs = 2;
}

static void snap_check(const struct raft_snapshot *got, raft_index index, raft_term term)
{
    ck_assert_ptr_nonnull(got);
    ck_assert_uint_eq(got->index, index);
    ck_assert_uint_eq(got->term, term);
    ck_assert_uint_eq(got->configuration_index, 1);
    ck_assert_uint_eq(got->configuration.n, 4);
    for (unsigned i = 0; i < 4; i++) {
        char addr[32];
        snprintf(addr, sizeof(addr), "10.0.0.%u:9521", i + 1);
        ck_assert_uint_eq(got->configuration.servers[i].id, i + 1);
        ck_assert_str_eq(got->configuration.servers[i].address, addr);
        ck_assert_int_eq(got->configuration.servers[i].role, i == 3 ? RAFT_STANDBY : RAFT_VOTER);
    }
    ck_assert_uint_eq(got->n_bufs, 1);
    size_t la = strlen(snap_a);
    ck_assert_uint_eq(got->bufs[0].len, la + sizeof(snap_b));
    const uint8_t *p = got->bufs[0].base;
    ck_assert_int_eq(memcmp(p, snap_a, la), 0);
    for (size_t k = 0; k < sizeof(snap_b); k++)
        if (p[la + k] != pat(index, term, k))
            ck_abort_msg("snapshot byte %zu differs", k);
}

static void snap_put(struct env *e, raft_index index, raft_term term, unsigned trailing)
{
    struct raft_snapshot s;
    struct raft_buffer bufs[2];
    snap_make(&s, bufs, index, term);
    struct sreq r = {.done = 0};
    r.put.data = &r;
    ck_assert_int_eq(e->io.snapshot_put(&e->io, trailing, &r.put, &s, put_cb), 0);
    ck_assert(run_until(&e->loop, &r.done));
    ck_assert_int_eq(r.done, 1);
    ck_assert_int_eq(r.status, 0);
    raft_configuration_close(&s.configuration);
}

static void snap_get_check(struct env *e, raft_index index, raft_term term)
{
    struct sreq r = {.done = 0};
    r.get.data = &r;
    ck_assert_int_eq(e->io.snapshot_get(&e->io, &r.get, get_cb), 0);
    ck_assert(run_until(&e->loop, &r.done));
    ck_assert_int_eq(r.status, 0);
    snap_check(r.got, index, term);
    snap_free(r.got);
}

START_TEST(test_snapshot_trailing)
{
    struct env e;
    struct loaded ld;
    struct model m = {0};
    char path[400];
    env_open(&e, "d", RLOG_SYNC_BATCH, 4096);
    do_bootstrap(&e, &m);
    load_ok(&e, &ld);
    loaded_free(&ld);
    append_each(&e, &m, 299, 300, 2);
    raft_index segs[512];
    unsigned nseg = list_files(e.dir, "log-", segs, 512);
    ck_assert_uint_gt(nseg, 20);

    /* snapshot at 200 keeping 50 entries: segments ending before 150 go */
    snap_put(&e, 200, 2, 50);
    snprintf(path, sizeof(path), "%s/snap-%020llu", e.dir, 200ull);
    ck_assert(file_exists(path));
    raft_index after[512];
    unsigned n2 = list_files(e.dir, "log-", after, 512);
    ck_assert_uint_lt(n2, nseg);
    /* the 50 entries 151..200 stay: whole segments ending at or before 150 go */
    ck_assert_uint_le(after[0], 151);
    unsigned k = 0;
    while (segs[k] != after[0])
        k++;
    ck_assert_uint_gt(k, 0);
    ck_assert_uint_gt(segs[k + 1] - 1, 150); /* the first kept one ends after 150 */
    ck_assert_uint_eq(n2, nseg - k);         /* only whole older segments went */
    ck_assert_uint_eq(after[n2 - 1], segs[nseg - 1]);
    snap_get_check(&e, 200, 2);
    append_each(&e, &m, 5, 50, 3);
    env_close(&e);

    env_open(&e, "d", RLOG_SYNC_BATCH, 4096);
    load_ok(&e, &ld);
    snap_check(ld.snap, 200, 2);
    ck_assert_uint_le(ld.start, 151);
    ck_assert_uint_eq(ld.start, after[0]);
    check_entries(&ld, &m);
    loaded_free(&ld);
    snap_get_check(&e, 200, 2);

    /* a newer snapshot replaces the older file */
    snap_put(&e, 290, 2, 10);
    ck_assert(!file_exists(path));
    snprintf(path, sizeof(path), "%s/snap-%020llu", e.dir, 290ull);
    ck_assert(file_exists(path));
    raft_index snaps[8];
    ck_assert_uint_eq(list_files(e.dir, "snap-", snaps, 8), 1);
    n2 = list_files(e.dir, "log-", after, 512);
    ck_assert_uint_le(after[0], 281);
    ck_assert_uint_gt(after[0], 151);
    env_close(&e);

    env_open(&e, "d", RLOG_SYNC_BATCH, 4096);
    load_ok(&e, &ld);
    snap_check(ld.snap, 290, 2);
    ck_assert_uint_le(ld.start, 281);
    check_entries(&ld, &m);
    loaded_free(&ld);
    snap_get_check(&e, 290, 2);
    env_close(&e);
    model_free(&m);
}
END_TEST

START_TEST(test_snapshot_install)
{
    struct env e;
    struct loaded ld;
    struct model m = {0};
    env_open(&e, "d", RLOG_SYNC_ALWAYS, 4096);
    do_bootstrap(&e, &m);
    load_ok(&e, &ld);
    loaded_free(&ld);
    append_each(&e, &m, 49, 500, 2);
    /* a snapshot from the leader (trailing 0): the whole log goes */
    snap_put(&e, 500, 7, 0);
    raft_index segs[64];
    ck_assert_uint_eq(list_files(e.dir, "log-", segs, 64), 0);
    ck_assert_uint_eq(stats_last(&e), 500);
    snap_get_check(&e, 500, 7);
    m.last = 500;
    append_each(&e, &m, 3, 40, 7);
    ck_assert_uint_eq(list_files(e.dir, "log-", segs, 64), 1);
    ck_assert_uint_eq(segs[0], 501);
    env_close(&e);

    env_open(&e, "d", RLOG_SYNC_ALWAYS, 4096);
    load_ok(&e, &ld);
    snap_check(ld.snap, 500, 7);
    ck_assert_uint_eq(ld.start, 501);
    ck_assert_uint_eq(ld.n, 3);
    check_entries(&ld, &m);
    loaded_free(&ld);
    env_close(&e);

    /* installed and closed before any append: reload gives the snapshot
     * alone and appends go on after it */
    env_open(&e, "d2", RLOG_SYNC_BATCH, 0);
    do_bootstrap(&e, NULL);
    load_ok(&e, &ld);
    loaded_free(&ld);
    snap_put(&e, 40, 3, 0);
    env_close(&e);
    env_open(&e, "d2", RLOG_SYNC_BATCH, 0);
    load_ok(&e, &ld);
    snap_check(ld.snap, 40, 3);
    ck_assert_uint_eq(ld.start, 41);
    ck_assert_uint_eq(ld.n, 0);
    loaded_free(&ld);
    ck_assert_uint_eq(stats_last(&e), 40);
    struct model m2 = {0};
    m2.last = 40;
    append_each(&e, &m2, 2, 1, 3);
    env_close(&e);
    env_open(&e, "d2", RLOG_SYNC_BATCH, 0);
    load_ok(&e, &ld);
    ck_assert_uint_eq(ld.start, 41);
    check_entries(&ld, &m2);
    loaded_free(&ld);
    env_close(&e);
    model_free(&m);
}
END_TEST

START_TEST(test_torn_tail)
{
    struct env e;
    struct loaded ld;
    struct model m = {0};
    char path[400];
    raft_index segs[512];
    env_open(&e, "d", RLOG_SYNC_BATCH, 4096);
    do_bootstrap(&e, &m);
    load_ok(&e, &ld);
    loaded_free(&ld);
    append_each(&e, &m, 40, 300, 2);
    env_close(&e);

    /* garbage after the last record */
    unsigned nseg = list_files(e.dir, "log-", segs, 512);
    ck_assert_uint_gt(nseg, 2);
    seg_path(path, sizeof(path), &e, segs[nseg - 1]);
    off_t good = file_size(path);
    int fd = open(path, O_WRONLY | O_APPEND);
    ck_assert_int_ge(fd, 0);
    char junk[100];
    memset(junk, 0xa5, sizeof(junk));
    ck_assert_int_eq(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
    close(fd);
    env_open(&e, "d", RLOG_SYNC_BATCH, 4096);
    load_ok(&e, &ld);
    check_entries(&ld, &m);
    loaded_free(&ld);
    ck_assert_int_eq(file_size(path), good); /* cut off on disk */
    append_each(&e, &m, 2, 30, 3);
    env_close(&e);
    env_open(&e, "d", RLOG_SYNC_BATCH, 4096);
    load_ok(&e, &ld);
    check_entries(&ld, &m);
    loaded_free(&ld);
    env_close(&e);

    /* the last record only half written */
    nseg = list_files(e.dir, "log-", segs, 512);
    seg_path(path, sizeof(path), &e, segs[nseg - 1]);
    off_t sz = file_size(path);
    ck_assert_int_eq(truncate(path, sz - 20), 0);
    m.last--;
    env_open(&e, "d", RLOG_SYNC_ALWAYS, 4096);
    load_ok(&e, &ld);
    check_entries(&ld, &m);
    loaded_free(&ld);
    ck_assert_uint_eq(stats_last(&e), m.last);
    append_each(&e, &m, 1, 5, 4); /* at the index that was lost */
    env_close(&e);
    env_open(&e, "d", RLOG_SYNC_ALWAYS, 4096);
    load_ok(&e, &ld);
    check_entries(&ld, &m);
    ck_assert_uint_eq(ld.ents[ld.n - 1].term, 4);
    loaded_free(&ld);
    env_close(&e);

    /* a new segment whose header never made it to disk */
    seg_path(path, sizeof(path), &e, m.last + 1);
    fd = open(path, O_WRONLY | O_CREAT, 0640);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "DFSRL", 5), 5);
    close(fd);
    env_open(&e, "d", RLOG_SYNC_ALWAYS, 4096);
    load_ok(&e, &ld);
    check_entries(&ld, &m);
    loaded_free(&ld);
    ck_assert(!file_exists(path));
    append_each(&e, &m, 1, 5, 4);
    env_close(&e);
    env_open(&e, "d", RLOG_SYNC_ALWAYS, 4096);
    load_ok(&e, &ld);
    check_entries(&ld, &m);
    loaded_free(&ld);
    env_close(&e);
    model_free(&m);
}
END_TEST

static void flip(const char *path, off_t off)
{
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    uint8_t b;
    ck_assert_int_eq(pread(fd, &b, 1, off), 1);
    b ^= 0x10;
    ck_assert_int_eq(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

/* _i: 0 = a byte of the first record's data, 1 = of a later record (the
 * segment's buffer already holds loaded entries), 2 = the segment header */
START_TEST(test_corrupt_segment)
{
    struct env e;
    struct loaded ld;
    struct model m = {0};
    char path[400];
    raft_index segs[512];
    env_open(&e, "d", RLOG_SYNC_ALWAYS, 4096);
    do_bootstrap(&e, &m);
    load_ok(&e, &ld);
    loaded_free(&ld);
    append_each(&e, &m, 60, 300, 2);
    env_close(&e);
    unsigned nseg = list_files(e.dir, "log-", segs, 512);
    ck_assert_uint_gt(nseg, 3);
    seg_path(path, sizeof(path), &e, segs[1]);
    /* records of 300 bytes: 32 header + 304 data */
    off_t off = _i == 0 ? 16 + 32 + 100 : _i == 1 ? 16 + 2 * 336 + 32 + 5 : 3;
    flip(path, off);
    env_open(&e, "d", RLOG_SYNC_ALWAYS, 4096);
    int rv = do_load(&e, &ld);
    ck_assert_int_eq(rv, RAFT_CORRUPT);
    char name[40];
    snprintf(name, sizeof(name), "log-%020llu", (unsigned long long)segs[1]);
    ck_assert_msg(strstr(e.io.errmsg, name) != NULL, "errmsg: %s", e.io.errmsg);
    env_close(&e);
    model_free(&m);
}
END_TEST

START_TEST(test_corrupt_snapshot)
{
    struct env e;
    struct loaded ld;
    char path[400];
    env_open(&e, "d", RLOG_SYNC_BATCH, 0);
    do_bootstrap(&e, NULL);
    load_ok(&e, &ld);
    loaded_free(&ld);
    snap_put(&e, 30, 2, 0);
    env_close(&e);
    snprintf(path, sizeof(path), "%s/snap-%020llu", e.dir, 30ull);
    flip(path, 64 + 100);
    env_open(&e, "d", RLOG_SYNC_BATCH, 0);
    ck_assert_int_eq(do_load(&e, &ld), RAFT_CORRUPT);
    ck_assert_msg(strstr(e.io.errmsg, "snapshot") != NULL, "errmsg: %s", e.io.errmsg);
    env_close(&e);
}
END_TEST

START_TEST(test_lock)
{
    struct env a, b;
    env_open(&a, "d", RLOG_SYNC_BATCH, 0);
    int rv = env_open_rv(&b, "d", RLOG_SYNC_BATCH, 10, 0);
    ck_assert_int_ne(rv, 0);
    ck_assert_msg(strstr(b.io.errmsg, "LOCK") != NULL, "errmsg: %s", b.io.errmsg);
    ck_assert_ptr_null(b.io.impl);
    /* the failed attempt did not take the lock from the first */
    rv = env_open_rv(&b, "d", RLOG_SYNC_BATCH, 10, 0);
    ck_assert_int_ne(rv, 0);
    env_close(&a);
    /* free again once the first one is gone */
    env_open(&b, "d", RLOG_SYNC_BATCH, 0);
    env_close(&b);
}
END_TEST

START_TEST(test_old_format)
{
    struct env e;
    struct loaded ld;
    char path[400];
    snprintf(path, sizeof(path), "%s/d", g_root);
    ck_assert_int_eq(mkdir(path, 0750), 0);
    snprintf(path, sizeof(path), "%s/d/metadata1", g_root);
    int fd = open(path, O_WRONLY | O_CREAT, 0640);
    ck_assert_int_ge(fd, 0);
    close(fd);
    env_open(&e, "d", RLOG_SYNC_BATCH, 0);
    ck_assert_int_eq(do_load(&e, &ld), RAFT_CORRUPT);
    ck_assert_msg(strstr(e.io.errmsg, "libraft") != NULL, "errmsg: %s", e.io.errmsg);
    struct raft_configuration c;
    conf_make(&c, 1);
    ck_assert_int_eq(e.io.bootstrap(&e.io, &c), RAFT_CANTBOOTSTRAP);
    raft_configuration_close(&c);
    env_close(&e);
}
END_TEST

struct syncw {
    int done, status;
};

static void sync_cb(void *arg, int status)
{
    struct syncw *w = arg;
    w->done++;
    w->status = status;
}

START_TEST(test_sync_batch)
{
    struct env e;
    struct loaded ld;
    struct model m = {0};
    /* a flush interval far beyond the test: only rlog_sync flushes */
    ck_assert_int_eq(env_open_rv(&e, "d", RLOG_SYNC_BATCH, 600000, 0), 0);
    do_bootstrap(&e, &m);
    load_ok(&e, &ld);
    loaded_free(&ld);
    uint64_t s0 = stats_syncs(&e);
    append_each(&e, &m, 3, 100, 2);
    ck_assert_uint_eq(stats_syncs(&e), s0); /* acknowledged before any flush */
    struct syncw w = {0};
    ck_assert_int_eq(rlog_sync(&e.io, sync_cb, &w), 0);
    ck_assert_int_eq(w.done, 0);
    ck_assert(run_until(&e.loop, &w.done));
    ck_assert_int_eq(w.done, 1);
    ck_assert_int_eq(w.status, 0);
    ck_assert_uint_eq(stats_syncs(&e), s0 + 1);
    /* nothing new: answered without another flush, still asynchronously */
    struct syncw w2 = {0};
    ck_assert_int_eq(rlog_sync(&e.io, sync_cb, &w2), 0);
    ck_assert_int_eq(w2.done, 0);
    ck_assert(run_until(&e.loop, &w2.done));
    ck_assert_int_eq(w2.status, 0);
    ck_assert_uint_eq(stats_syncs(&e), s0 + 1);
    /* two waiters on one write */
    append_each(&e, &m, 1, 10, 2);
    struct syncw w3 = {0}, w4 = {0};
    ck_assert_int_eq(rlog_sync(&e.io, sync_cb, &w3), 0);
    ck_assert_int_eq(rlog_sync(&e.io, sync_cb, &w4), 0);
    ck_assert(run_until(&e.loop, &w3.done));
    ck_assert(run_until(&e.loop, &w4.done));
    ck_assert_int_eq(w3.status, 0);
    ck_assert_int_eq(w4.status, 0);
    /* unflushed appends are flushed by a clean close */
    append_each(&e, &m, 2, 10, 2);
    env_close(&e);

    /* a short interval: the timer flushes without anyone asking */
    ck_assert_int_eq(env_open_rv(&e, "d", RLOG_SYNC_BATCH, 5, 0), 0);
    load_ok(&e, &ld);
    check_entries(&ld, &m);
    loaded_free(&ld);
    s0 = stats_syncs(&e);
    append_each(&e, &m, 1, 10, 2);
    uint64_t deadline = now_ms() + 10000;
    while (stats_syncs(&e) == s0 && now_ms() < deadline)
        uv_run(&e.loop, UV_RUN_ONCE);
    ck_assert_uint_eq(stats_syncs(&e), s0 + 1);
    env_close(&e);
    model_free(&m);
}
END_TEST

/* Close with an append still waiting for its flush (ALWAYS) or for its ack
 * (BATCH): the append's callback comes before close's, and the entry,
 * written before append() returned, is there after a reload. */
START_TEST(test_close_pending)
{
    struct env e;
    struct loaded ld;
    struct model m = {0};
    env_open(&e, "d", _i, 0);
    do_bootstrap(&e, &m);
    load_ok(&e, &ld);
    loaded_free(&ld);
    struct raft_entry ent = {.term = 2, .type = RAFT_COMMAND};
    uint8_t data[64];
    fill(data, 2, 2, sizeof(data));
    ent.buf.base = data;
    ent.buf.len = sizeof(data);
    struct areq a = {.done = 0};
    a.req.data = &a;
    ck_assert_int_eq(e.io.append(&e.io, &a.req, &ent, 1, append_cb), 0);
    closed_flag = 0;
    e.io.close(&e.io, close_cb);
    ck_assert(run_until(&e.loop, &closed_flag));
    ck_assert_int_eq(a.done, 1);
    ck_assert(a.status == 0 || a.status == RAFT_CANCELED);
    rlog_free(&e.io);
    raft_uv_close(&e.net);
    raft_uv_tcp_close(&e.t);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&e.loop), 0);
    m.last = 2;
    m.term[2] = 2;
    m.type[2] = RAFT_COMMAND;
    m.len[2] = sizeof(data);

    env_open(&e, "d", _i, 0);
    load_ok(&e, &ld);
    check_entries(&ld, &m);
    loaded_free(&ld);
    env_close(&e);
    model_free(&m);
}
END_TEST

START_TEST(test_recover)
{
    struct env e;
    struct loaded ld;
    struct model m = {0};
    env_open(&e, "d", RLOG_SYNC_BATCH, 0);
    do_bootstrap(&e, &m);
    load_ok(&e, &ld);
    loaded_free(&ld);
    append_each(&e, &m, 3, 10, 1);
    env_close(&e);
    /* recover (before load, as raft_recover does) appends a configuration */
    env_open(&e, "d", RLOG_SYNC_BATCH, 0);
    struct raft_configuration c;
    conf_make(&c, 1);
    ck_assert_int_eq(e.io.recover(&e.io, &c), 0);
    struct raft_buffer enc;
    ck_assert_int_eq(raft_configuration_encode(&c, &enc), 0);
    raft_configuration_close(&c);
    m.last = 5;
    m.term[5] = 1;
    m.type[5] = RAFT_CHANGE;
    m.len[5] = enc.len;
    load_ok(&e, &ld);
    ck_assert_uint_eq(ld.n, 5);
    ck_assert_uint_eq(ld.start, 1);
    check_entries(&ld, &m);
    ck_assert_uint_eq(ld.ents[4].type, RAFT_CHANGE);
    ck_assert_uint_eq(ld.ents[4].term, 1);
    ck_assert_uint_eq(ld.ents[4].buf.len, enc.len);
    ck_assert_int_eq(memcmp(ld.ents[4].buf.base, enc.base, enc.len), 0);
    loaded_free(&ld);
    raft_free(enc.base);
    ck_assert_uint_eq(stats_last(&e), 5);
    env_close(&e);
    model_free(&m);
}
END_TEST

static void copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY);
    ck_assert_int_ge(in, 0);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0640);
    ck_assert_int_ge(out, 0);
    char buf[65536];
    ssize_t r;
    while ((r = read(in, buf, sizeof(buf))) > 0)
        ck_assert_int_eq(write(out, buf, (size_t)r), r);
    ck_assert_int_eq(r, 0);
    close(in);
    close(out);
}

/* What a crash between the steps of a snapshot leaves behind: snapshot files
 * are made in a scratch dir and copied next to a log. */
START_TEST(test_snapshot_recovery)
{
    struct env e;
    struct loaded ld;
    struct model m = {0};
    char from[400], to[400];
    /* scratch: snapshots at 30 (good) and 40, 100 */
    env_open(&e, "s", RLOG_SYNC_BATCH, 0);
    load_ok(&e, &ld);
    loaded_free(&ld);
    snap_put(&e, 30, 2, 0);
    snprintf(from, sizeof(from), "%s/s/snap-%020llu", g_root, 30ull);
    snprintf(to, sizeof(to), "%s/snap30", g_root);
    copy_file(from, to);
    snap_put(&e, 40, 2, 0);
    snprintf(from, sizeof(from), "%s/s/snap-%020llu", g_root, 40ull);
    snprintf(to, sizeof(to), "%s/snap40", g_root);
    copy_file(from, to);
    snap_put(&e, 100, 3, 0);
    env_close(&e);

    /* a log 1..50 */
    env_open(&e, "d", RLOG_SYNC_BATCH, 4096);
    do_bootstrap(&e, &m);
    load_ok(&e, &ld);
    loaded_free(&ld);
    append_each(&e, &m, 49, 100, 2);
    env_close(&e);

    /* snapshot 30 written, the log not trimmed yet: both load */
    snprintf(from, sizeof(from), "%s/snap30", g_root);
    snprintf(to, sizeof(to), "%s/d/snap-%020llu", g_root, 30ull);
    copy_file(from, to);
    env_open(&e, "d", RLOG_SYNC_BATCH, 4096);
    load_ok(&e, &ld);
    snap_check(ld.snap, 30, 2);
    ck_assert_uint_eq(ld.start, 1);
    check_entries(&ld, &m);
    loaded_free(&ld);
    env_close(&e);

    /* a newer snapshot that fails its checksum: the older one is used */
    snprintf(from, sizeof(from), "%s/snap40", g_root);
    snprintf(to, sizeof(to), "%s/d/snap-%020llu", g_root, 40ull);
    copy_file(from, to);
    flip(to, 64 + 200);
    env_open(&e, "d", RLOG_SYNC_BATCH, 4096);
    load_ok(&e, &ld);
    snap_check(ld.snap, 30, 2);
    check_entries(&ld, &m);
    loaded_free(&ld);
    snap_get_check(&e, 30, 2);
    env_close(&e);
    unlink(to);

    /* an installed snapshot past the log's end, log not removed yet: the
     * log goes at load and appends continue after the snapshot */
    snprintf(from, sizeof(from), "%s/s/snap-%020llu", g_root, 100ull);
    snprintf(to, sizeof(to), "%s/d/snap-%020llu", g_root, 100ull);
    copy_file(from, to);
    env_open(&e, "d", RLOG_SYNC_BATCH, 4096);
    load_ok(&e, &ld);
    snap_check(ld.snap, 100, 3);
    ck_assert_uint_eq(ld.start, 101);
    ck_assert_uint_eq(ld.n, 0);
    loaded_free(&ld);
    raft_index segs[64];
    ck_assert_uint_eq(list_files(e.dir, "log-", segs, 64), 0);
    struct model m2 = {0};
    m2.last = 100;
    append_each(&e, &m2, 2, 8, 3);
    env_close(&e);
    env_open(&e, "d", RLOG_SYNC_BATCH, 4096);
    load_ok(&e, &ld);
    snap_check(ld.snap, 100, 3);
    ck_assert_uint_eq(ld.start, 101);
    check_entries(&ld, &m2);
    loaded_free(&ld);
    env_close(&e);
    model_free(&m);
}
END_TEST

/* libraft 0.15's uv io tolerates close without init (its timer and
 * transport are only set up by init), so rlog can be closed right after
 * rlog_init, e.g. when a later startup step fails. */
START_TEST(test_close_without_init)
{
    struct env e;
    memset(&e, 0, sizeof(e));
    snprintf(e.dir, sizeof(e.dir), "%s/d", g_root);
    snprintf(e.netdir, sizeof(e.netdir), "%s/d.net", g_root);
    ck_assert_int_eq(mkdir(e.netdir, 0750), 0);
    ck_assert_int_eq(uv_loop_init(&e.loop), 0);
    ck_assert_int_eq(raft_uv_tcp_init(&e.t, &e.loop), 0);
    ck_assert_int_eq(raft_uv_init(&e.net, &e.loop, e.netdir, &e.t), 0);
    struct rlog_opts o = {.dir = e.dir, .sync_mode = RLOG_SYNC_BATCH};
    ck_assert_int_eq(rlog_init(&e.io, &e.net, &e.loop, &o), 0);
    env_close(&e);
    /* and the lock went with it */
    env_open(&e, "d", RLOG_SYNC_BATCH, 0);
    env_close(&e);
}
END_TEST

TEST_SUITE(metad_rlog)
{
    Suite *s = suite_create("metad_rlog");
    TCase *tc = tcase_create("rlog");
    tcase_set_timeout(tc, 60);
    tcase_add_unchecked_fixture(tc, base_setup, base_teardown);
    tcase_add_checked_fixture(tc, root_setup, NULL);
    tcase_add_test(tc, test_fresh_and_bootstrap);
    tcase_add_loop_test(tc, test_append_reload, RLOG_SYNC_ALWAYS, RLOG_SYNC_BATCH + 1);
    tcase_add_test(tc, test_term_vote);
    tcase_add_loop_test(tc, test_truncate, RLOG_SYNC_ALWAYS, RLOG_SYNC_BATCH + 1);
    tcase_add_test(tc, test_snapshot_trailing);
    tcase_add_test(tc, test_snapshot_install);
    tcase_add_test(tc, test_torn_tail);
    tcase_add_loop_test(tc, test_corrupt_segment, 0, 3);
    tcase_add_test(tc, test_corrupt_snapshot);
    tcase_add_test(tc, test_lock);
    tcase_add_test(tc, test_old_format);
    tcase_add_test(tc, test_sync_batch);
    tcase_add_loop_test(tc, test_close_pending, RLOG_SYNC_ALWAYS, RLOG_SYNC_BATCH + 1);
    tcase_add_test(tc, test_recover);
    tcase_add_test(tc, test_snapshot_recovery);
    tcase_add_test(tc, test_close_without_init);
    suite_add_tcase(s, tc);
    return s;
}
