/* journal.c - raft glue: fs ops as log entries, group commit, snapshots, leadership. */
#include "journal.h"

#include <errno.h>
#include <malloc.h>
#include <raft/uv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "rlog.h"
#include "util.h"

#define ENTRY_MAGIC 0x3142544e45534644ull /* "DFSENTB1" */
#define HDR_SIZE 32u

struct ctx {
    journal_done_fn cb;
    void *arg;
};

struct batch {
    struct raft_apply req;
    struct journal *j;
    uint64_t id;
    unsigned n, delivered;
    struct ctx *ctx;
    struct batch *next, *prev;
};

struct fsm_state {
    struct fs *fs;
    struct journal *j; /* NULL in tests */
    struct raft_buffer snap;
};

struct journal {
    uv_loop_t *loop;
    struct fs *fs;
    struct journal_opts o;
    char *dir, *addr;
    struct raft raft;
    struct raft_io io;  /* rlog: our log storage ... */
    struct raft_io net; /* ... over libraft's uv io for the network side */
    struct raft_uv_transport transport;
    struct raft_fsm fsm;
    struct fsm_state fst;
    uv_check_t check;
    uv_timer_t timer;
    uint64_t nonce, next_batch;
    /* ops queued in this loop iteration: encoded bytes + their callbacks */
    uint8_t *qbuf;
    size_t qlen, qcap;
    struct ctx *qctx;
    unsigned qn, qcap_ctx;
    struct batch *batches; /* in flight, oldest first (list head) */
    struct batch *btail;
    bool ready, barrier_pending, closing;
    bool starting; /* leader: barrier done, FS_OP_EPOCH not yet on disk */
    struct raft_barrier barrier;
    uint64_t ops, entries;
    /* Snapshot pacing: libraft keeps every entry since the last snapshot in
     * memory, and group commit makes entries large, so a fixed entry count
     * is no bound on memory.  Once the log bytes since the last snapshot pass
     * half the last snapshot's size (at least 32 MiB), the threshold is
     * lowered so raft snapshots at its next check. */
    uint64_t log_bytes, log_entries, snap_bytes;
    unsigned threshold;
    unsigned trim_ticks; /* >0: a snapshot freed log memory; return it to the OS soon */
    void (*close_done)(void *arg);
    void *close_arg;
    char leader_buf[128];
};

/* ------------------------------------------------------------------------ */
/* entries */

static size_t pad4(size_t n) { return (n + 3) & ~(size_t)3; }
static size_t pad8(size_t n) { return (n + 7) & ~(size_t)7; }

int journal_encode_batch(const struct fs_op *ops, unsigned n, uint64_t nonce, uint64_t id,
                         struct raft_buffer *buf)
{
    size_t len = HDR_SIZE;
    for (unsigned i = 0; i < n; i++) len += 4 + pad4(fs_op_encoded_size(&ops[i]));
    len = pad8(len);
    uint8_t *p = raft_malloc(len);
    if (!p) return DFS_ENOMEM;
    memset(p, 0, len);
    uint64_t h[3] = {ENTRY_MAGIC, nonce, id};
    memcpy(p, h, 24);
    uint32_t cnt = n;
    memcpy(p + 24, &cnt, 4);
    size_t off = HDR_SIZE;
    for (unsigned i = 0; i < n; i++) {
        uint32_t l = (uint32_t)fs_op_encode(&ops[i], p + off + 4);
        memcpy(p + off, &l, 4);
        off += 4 + pad4(l);
    }
    buf->base = p;
    buf->len = len;
    return DFS_OK;
}

static struct batch *batch_find(struct journal *j, uint64_t id)
{
    for (struct batch *b = j->batches; b; b = b->next)
        if (b->id == id) return b;
    return NULL;
}

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    struct fsm_state *st = fsm->data;
    *result = NULL;
    const uint8_t *p = buf->base;
    if (buf->len < HDR_SIZE) return RAFT_MALFORMED;
    uint64_t h[3];
    uint32_t cnt;
    memcpy(h, p, 24);
    memcpy(&cnt, p + 24, 4);
    if (h[0] != ENTRY_MAGIC) {
        log_err("journal: entry with a bad magic; ignored");
        return RAFT_MALFORMED;
    }
    struct batch *b = NULL;
    if (st->j && h[1] == st->j->nonce) b = batch_find(st->j, h[2]);
    size_t off = HDR_SIZE;
    for (uint32_t i = 0; i < cnt; i++) {
        uint32_t l;
        if (off + 4 > buf->len) return RAFT_MALFORMED;
        memcpy(&l, p + off, 4);
        if (l > buf->len - off - 4) return RAFT_MALFORMED;
        struct fs_op op;
        struct fs_result res;
        memset(&res, 0, sizeof(res));
        if (fs_op_decode(&op, p + off + 4, l) == 0) {
            log_err("journal: undecodable op %u in an entry; skipped", i);
            res.status = DFS_EIO;
        } else {
            fs_apply(st->fs, &op, &res);
        }
        if (b && i < b->n) {
            b->delivered = i + 1;
            b->ctx[i].cb(b->ctx[i].arg, DFS_OK, &res);
        }
        fs_result_free(&res);
        off += 4 + pad4(l);
    }
    if (st->j) {
        struct journal *j = st->j;
        j->ops += cnt;
        j->log_bytes += buf->len;
        j->log_entries++;
        uint64_t budget = DFS_MAX(32ull << 20, j->snap_bytes / 2);
        if (j->log_bytes > budget && j->log_entries < j->threshold)
            raft_set_snapshot_threshold(&j->raft, (unsigned)DFS_MAX(j->log_entries, 2));
    }
    return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n)
{
    struct fsm_state *st = fsm->data;
    size_t len;
    void *p = fs_snapshot(st->fs, &len);
    if (!p) return RAFT_NOMEM;
    void *rp = raft_malloc(len);
    struct raft_buffer *arr = raft_malloc(sizeof(*arr));
    if (!rp || !arr) {
        free(p);
        raft_free(rp);
        raft_free(arr);
        return RAFT_NOMEM;
    }
    memcpy(rp, p, len);
    free(p);
    arr[0].base = rp;
    arr[0].len = len;
    *bufs = arr;
    *n = 1;
    if (st->j) {
        log_info("journal: snapshot of %zu bytes after %llu entries (%llu bytes) of log", len,
                 (unsigned long long)st->j->log_entries, (unsigned long long)st->j->log_bytes);
        st->j->snap_bytes = len;
        st->j->log_bytes = 0;
        st->j->log_entries = 0;
        raft_set_snapshot_threshold(&st->j->raft, st->j->threshold);
    }
    return 0;
}

static int fsm_snapshot_finalize(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n)
{
    struct fsm_state *st = fsm->data;
    if (st->j) st->j->trim_ticks = 5; /* raft truncates its log right after this */
    if (*bufs) {
        for (unsigned i = 0; i < *n; i++) raft_free((*bufs)[i].base);
        raft_free(*bufs);
    }
    *bufs = NULL;
    *n = 0;
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct fsm_state *st = fsm->data;
    int rv = fs_restore(st->fs, buf->base, buf->len);
    if (rv != DFS_OK) {
        log_err("journal: snapshot is corrupt");
        return RAFT_MALFORMED;
    }
    raft_free(buf->base);
    return 0;
}

void journal_fsm_init(struct raft_fsm *fsm, struct fs *fs)
{
    struct fsm_state *st = calloc(1, sizeof(*st));
    if (!st) abort();
    st->fs = fs;
    memset(fsm, 0, sizeof(*fsm));
    fsm->version = 2;
    fsm->data = st;
    fsm->apply = fsm_apply;
    fsm->snapshot = fsm_snapshot;
    fsm->snapshot_finalize = fsm_snapshot_finalize;
    fsm->restore = fsm_restore;
}

void journal_fsm_close(struct raft_fsm *fsm)
{
    free(fsm->data);
    fsm->data = NULL;
}

/* ------------------------------------------------------------------------ */
/* group commit */

static void fail_queue(struct journal *j, int status)
{
    unsigned n = j->qn;
    struct ctx *c = j->qctx;
    j->qn = 0;
    j->qlen = 0;
    for (unsigned i = 0; i < n; i++) c[i].cb(c[i].arg, status, NULL);
}

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    (void)result;
    struct batch *b = req->data;
    struct journal *j = b->j;
    if (b->prev) b->prev->next = b->next;
    else j->batches = b->next;
    if (b->next) b->next->prev = b->prev;
    else j->btail = b->prev;
    if (status != 0) {
        log_warn("journal: entry not committed: %s", raft_strerror(status));
        for (unsigned i = b->delivered; i < b->n; i++)
            b->ctx[i].cb(b->ctx[i].arg, DFS_ENOTLEADER, NULL);
    } else {
        /* Applied but not delivered can only mean a malformed op. */
        for (unsigned i = b->delivered; i < b->n; i++) b->ctx[i].cb(b->ctx[i].arg, DFS_EIO, NULL);
    }
    free(b->ctx);
    free(b);
}

static void flush(struct journal *j)
{
    if (!j->qn) return;
    if ((!j->ready && !j->starting) || j->closing) {
        fail_queue(j, DFS_ENOTLEADER);
        return;
    }
    size_t len = pad8(HDR_SIZE + j->qlen);
    uint8_t *p = raft_malloc(len);
    struct batch *b = calloc(1, sizeof(*b));
    struct ctx *ctx = malloc(j->qn * sizeof(*ctx));
    if (!p || !b || !ctx) {
        raft_free(p);
        free(b);
        free(ctx);
        fail_queue(j, DFS_ENOMEM);
        return;
    }
    uint64_t h[3] = {ENTRY_MAGIC, j->nonce, ++j->next_batch};
    memcpy(p, h, 24);
    uint32_t cnt = j->qn, zero = 0;
    memcpy(p + 24, &cnt, 4);
    memcpy(p + 28, &zero, 4);
    memcpy(p + HDR_SIZE, j->qbuf, j->qlen);
    memset(p + HDR_SIZE + j->qlen, 0, len - HDR_SIZE - j->qlen);
    memcpy(ctx, j->qctx, j->qn * sizeof(*ctx));
    b->j = j;
    b->id = h[2];
    b->n = j->qn;
    b->ctx = ctx;
    b->req.data = b;
    struct raft_buffer rb = {p, len};
    /* Link before raft_apply: apply may run before raft_apply returns? It
     * does not in 0.15 (appends are asynchronous), but be safe. */
    b->prev = j->btail;
    if (j->btail) j->btail->next = b;
    else j->batches = b;
    j->btail = b;
    j->qn = 0;
    j->qlen = 0;
    int rv = raft_apply(&j->raft, &b->req, &rb, 1, apply_cb);
    if (rv != 0) {
        raft_free(p);
        log_warn("journal: raft_apply: %s", raft_strerror(rv));
        apply_cb(&b->req, rv, NULL);
        return;
    }
    j->entries++;
}

static void check_cb(uv_check_t *h)
{
    flush(h->data);
}

static int enqueue(struct journal *j, const struct fs_op *op, journal_done_fn cb, void *arg)
{
    size_t l = fs_op_encoded_size(op);
    size_t need = j->qlen + 4 + pad4(l);
    if (need > j->qcap) {
        size_t nc = j->qcap ? j->qcap * 2 : 65536;
        while (nc < need) nc *= 2;
        uint8_t *nb = realloc(j->qbuf, nc);
        if (!nb) return DFS_ENOMEM;
        j->qbuf = nb;
        j->qcap = nc;
    }
    if (j->qn == j->qcap_ctx) {
        unsigned nc = j->qcap_ctx ? j->qcap_ctx * 2 : 256;
        struct ctx *n = realloc(j->qctx, nc * sizeof(*n));
        if (!n) return DFS_ENOMEM;
        j->qctx = n;
        j->qcap_ctx = nc;
    }
    uint32_t l32 = (uint32_t)l;
    memcpy(j->qbuf + j->qlen, &l32, 4);
    fs_op_encode(op, j->qbuf + j->qlen + 4);
    memset(j->qbuf + j->qlen + 4 + l, 0, pad4(l) - l);
    j->qlen = need;
    j->qctx[j->qn].cb = cb;
    j->qctx[j->qn].arg = arg;
    j->qn++;
    /* A very large batch goes out now rather than growing without bound. */
    if (j->qlen > (4u << 20)) flush(j);
    return DFS_OK;
}

int journal_submit(struct journal *j, const struct fs_op *op, journal_done_fn cb, void *arg)
{
    if (!j->ready || j->closing) return DFS_ENOTLEADER;
    return enqueue(j, op, cb, arg);
}

/* ------------------------------------------------------------------------ */
/* leadership */

static void epoch_synced(void *arg, int status)
{
    struct journal *j = arg;
    if (!j->starting || j->closing || raft_state(&j->raft) != RAFT_LEADER) return;
    j->starting = false;
    if (status != 0) {
        log_err("journal: cannot flush the raft log; not serving");
        return; /* the timer tries again with a new barrier */
    }
    j->ready = true;
    log_notice("journal: leader (applied index %llu)",
               (unsigned long long)raft_last_applied(&j->raft));
    if (j->o.on_leader) j->o.on_leader(j->o.arg, true);
}

static void epoch_done(void *arg, int status, struct fs_result *res)
{
    struct journal *j = arg;
    if (!j->starting) return;
    if (status != DFS_OK || res->status != DFS_OK ||
        journal_sync(j, epoch_synced, j) != DFS_OK)
        j->starting = false;
}

static void barrier_cb(struct raft_barrier *req, int status)
{
    struct journal *j = req->data;
    j->barrier_pending = false;
    if (status != 0 || raft_state(&j->raft) != RAFT_LEADER || j->closing) return;
    /* Before serving: skip a range of ids and flush that (FS_EPOCH_GAP). */
    struct fs_op op;
    memset(&op, 0, sizeof(op));
    op.type = FS_OP_EPOCH;
    j->starting = true;
    if (enqueue(j, &op, epoch_done, j) != DFS_OK) j->starting = false;
}

static void timer_cb(uv_timer_t *t)
{
    struct journal *j = t->data;
    if (j->closing) return;
    if (j->trim_ticks && --j->trim_ticks == 0)
        malloc_trim(0); /* the log entries freed by the snapshot are mostly large blocks */
    bool leader = raft_state(&j->raft) == RAFT_LEADER;
    if (!leader) j->starting = false;
    if (leader && !j->ready && !j->barrier_pending && !j->starting) {
        /* A new leader may only serve once every entry of earlier terms is
         * applied: a barrier commits an entry of its own term first. */
        j->barrier.data = j;
        if (raft_barrier(&j->raft, &j->barrier, barrier_cb) == 0) j->barrier_pending = true;
    } else if (!leader && j->ready) {
        j->ready = false;
        log_notice("journal: no longer the leader");
        if (j->o.on_leader) j->o.on_leader(j->o.arg, false);
    }
}

bool journal_ready(struct journal *j) { return j->ready && !j->closing; }

const char *journal_leader(struct journal *j, uint64_t *id)
{
    raft_id lid = 0;
    const char *addr = NULL;
    raft_leader(&j->raft, &lid, &addr);
    if (id) *id = lid;
    if (!addr) return NULL;
    snprintf(j->leader_buf, sizeof(j->leader_buf), "%s", addr);
    return j->leader_buf;
}

uint64_t journal_applied(struct journal *j) { return raft_last_applied(&j->raft); }

int journal_sync(struct journal *j, void (*cb)(void *arg, int status), void *arg)
{
    if (j->closing) return DFS_ENOTLEADER;
    return rlog_sync(&j->io, cb, arg) == 0 ? DFS_OK : DFS_EIO;
}

void journal_log_stats(struct journal *j, uint64_t *bytes, uint64_t *flushes)
{
    uint64_t last;
    rlog_stats(&j->io, bytes, flushes, &last);
}

void journal_stats(struct journal *j, uint64_t *ops, uint64_t *entries)
{
    *ops = j->ops;
    *entries = j->entries;
}

/* ------------------------------------------------------------------------ */
/* open / close */

static int add_peers(struct raft_configuration *conf, const char *peers, uint64_t self,
                     const char *self_addr, char *err, size_t errlen)
{
    bool have_self = false;
    if (peers && *peers) {
        char *copy = strdup(peers), *save = NULL;
        for (char *tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
            char *at = strchr(tok, '@');
            char *end;
            unsigned long long id = at ? strtoull(tok, &end, 10) : 0;
            if (!at || end != at || id == 0) {
                snprintf(err, errlen, "peers: bad entry \"%s\" (want ID@HOST:PORT)", tok);
                free(copy);
                return -1;
            }
            if (id == self) have_self = true;
            int rv = raft_configuration_add(conf, id, at + 1, RAFT_VOTER);
            if (rv) {
                snprintf(err, errlen, "peers: %s: %s", tok, raft_strerror(rv));
                free(copy);
                return -1;
            }
        }
        free(copy);
    }
    if (!have_self) {
        int rv = raft_configuration_add(conf, self, self_addr, RAFT_VOTER);
        if (rv) {
            snprintf(err, errlen, "raft configuration: %s", raft_strerror(rv));
            return -1;
        }
    }
    return 0;
}

struct journal *journal_open(uv_loop_t *loop, struct fs *fs, const struct journal_opts *opts,
                             char *err, size_t errlen)
{
    struct journal *j = calloc(1, sizeof(*j));
    if (!j) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    j->loop = loop;
    j->fs = fs;
    j->o = *opts;
    j->dir = strdup(opts->dir);
    j->addr = strdup(opts->raft_addr);
    j->nonce = dfs_random_u64();

    struct stat sb;
    if (mkdir(j->dir, 0750) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "data_dir %s: %s", j->dir, strerror(errno));
        goto err_free;
    }
    if (stat(j->dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        snprintf(err, errlen, "data_dir %s: not a directory", j->dir);
        goto err_free;
    }
    if (access(j->dir, W_OK | X_OK) != 0) {
        snprintf(err, errlen, "data_dir %s: %s", j->dir, strerror(errno));
        goto err_free;
    }

    int rv = raft_uv_tcp_init(&j->transport, loop);
    if (rv) {
        snprintf(err, errlen, "raft transport: %s", raft_strerror(rv));
        goto err_free;
    }
    /* libraft's uv io only carries messages; its own files (metadata,
     * probes) stay in a subdirectory and hold nothing we need. */
    char netdir[4200];
    snprintf(netdir, sizeof(netdir), "%s/net", j->dir);
    if (mkdir(netdir, 0750) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", netdir, strerror(errno));
        goto err_transport;
    }
    rv = raft_uv_init(&j->net, loop, netdir, &j->transport);
    if (rv) {
        snprintf(err, errlen, "raft network in %s: %s", netdir, j->net.errmsg);
        goto err_transport;
    }
    struct rlog_opts ro = {
        .dir = j->dir,
        .sync_mode = opts->sync_mode,
        .sync_ms = opts->sync_ms,
        .segment_bytes = opts->segment_bytes,
    };
    rv = rlog_init(&j->io, &j->net, loop, &ro);
    if (rv) {
        snprintf(err, errlen, "raft log: %s", j->io.errmsg);
        raft_uv_close(&j->net);
        goto err_transport;
    }
    journal_fsm_init(&j->fsm, fs);
    j->fst.fs = fs;
    ((struct fsm_state *)j->fsm.data)->j = j;
    rv = raft_init(&j->raft, &j->io, &j->fsm, opts->node_id, j->addr);
    if (rv) {
        snprintf(err, errlen, "raft init: %s", raft_errmsg(&j->raft));
        goto err_io;
    }
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    if (add_peers(&conf, opts->peers, opts->node_id, j->addr, err, errlen)) {
        raft_configuration_close(&conf);
        goto err_raft;
    }
    rv = raft_bootstrap(&j->raft, &conf);
    raft_configuration_close(&conf);
    if (rv && rv != RAFT_CANTBOOTSTRAP) {
        snprintf(err, errlen, "raft bootstrap in %s: %s", j->dir, raft_errmsg(&j->raft));
        goto err_raft;
    }
    j->threshold = opts->snapshot_threshold ? opts->snapshot_threshold : 100000;
    raft_set_snapshot_threshold(&j->raft, j->threshold);
    raft_set_snapshot_trailing(&j->raft, 1024);
    raft_set_election_timeout(&j->raft, 1000);
    raft_set_heartbeat_timeout(&j->raft, 100);
    rv = raft_start(&j->raft);
    if (rv) {
        snprintf(err, errlen, "raft start (log in %s, address %s): %s", j->dir, j->addr,
                 raft_errmsg(&j->raft));
        goto err_raft;
    }
    uv_check_init(loop, &j->check);
    j->check.data = j;
    uv_check_start(&j->check, check_cb);
    uv_timer_init(loop, &j->timer);
    j->timer.data = j;
    uv_timer_start(&j->timer, timer_cb, 10, 20);
    return j;

err_raft:
    /* raft_init succeeded: the only safe teardown is raft_close; the caller
     * exits after an open error anyway. */
    free(j->dir);
    free(j->addr);
    return NULL;
err_io:
    rlog_free(&j->io);
    raft_uv_close(&j->net);
err_transport:
    raft_uv_tcp_close(&j->transport);
err_free:
    free(j->dir);
    free(j->addr);
    free(j);
    return NULL;
}

static void on_raft_closed(struct raft *r)
{
    struct journal *j = r->data;
    rlog_free(&j->io);
    raft_uv_close(&j->net);
    raft_uv_tcp_close(&j->transport);
    /* libraft 0.15 can crash if the process goes on after close: the owner
     * exits from here. */
    if (j->close_done) j->close_done(j->close_arg);
}

void journal_close(struct journal *j, void (*done)(void *arg), void *arg)
{
    if (j->closing) return;
    j->closing = true;
    j->ready = false;
    fail_queue(j, DFS_ENOTLEADER);
    uv_check_stop(&j->check);
    uv_timer_stop(&j->timer);
    j->close_done = done;
    j->close_arg = arg;
    j->raft.data = j;
    raft_close(&j->raft, on_raft_closed);
}
