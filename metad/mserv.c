/* mserv.c - metad's client RPC handlers, open-file bookkeeping, sessions, grants. */
#include "mserv.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"
#include "util.h"

struct metad *metad_g;

/* ------------------------------------------------------------------------ */
/* u64 -> u64 map (open addressing; used for open-handle counts) */

struct oftab {
    uint64_t *k, *v; /* key 0 = empty */
    uint64_t cap, n;
};

static uint64_t hmix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static uint64_t *of_slot(struct oftab *t, uint64_t key)
{
    if (!t->cap) return NULL;
    uint64_t mask = t->cap - 1;
    for (uint64_t i = hmix(key) & mask;; i = (i + 1) & mask)
        if (t->k[i] == key || t->k[i] == 0) return &t->k[i];
}

static uint64_t of_get(struct oftab *t, uint64_t key)
{
    uint64_t *s = of_slot(t, key);
    return (s && *s) ? t->v[s - t->k] : 0;
}

static void of_put_raw(struct oftab *t, uint64_t key, uint64_t val)
{
    uint64_t *s = of_slot(t, key);
    if (!*s) t->n++;
    *s = key;
    t->v[s - t->k] = val;
}

static void of_set(struct oftab *t, uint64_t key, uint64_t val)
{
    if (val == 0) {
        /* delete with backward shift */
        uint64_t *s = of_slot(t, key);
        if (!s || !*s) return;
        uint64_t mask = t->cap - 1, i = (uint64_t)(s - t->k), j = i;
        t->k[i] = 0;
        t->n--;
        for (;;) {
            j = (j + 1) & mask;
            if (!t->k[j]) break;
            uint64_t h = hmix(t->k[j]) & mask;
            if ((j > i && (h <= i || h > j)) || (j < i && (h <= i && h > j))) {
                t->k[i] = t->k[j];
                t->v[i] = t->v[j];
                t->k[j] = 0;
                i = j;
            }
        }
        return;
    }
    if ((t->n + 1) * 4 > t->cap * 3) {
        struct oftab nt = {0};
        nt.cap = t->cap ? t->cap * 2 : 64;
        nt.k = calloc(nt.cap, 8);
        nt.v = calloc(nt.cap, 8);
        if (!nt.k || !nt.v) abort();
        for (uint64_t i = 0; i < t->cap; i++)
            if (t->k[i]) of_put_raw(&nt, t->k[i], t->v[i]);
        free(t->k);
        free(t->v);
        *t = nt;
    }
    of_put_raw(t, key, val);
}

static void of_free(struct oftab *t)
{
    free(t->k);
    free(t->v);
    memset(t, 0, sizeof(*t));
}

/* Leader soft state: inodes with an op submitted but not yet applied that
 * changes what an op by inode number may do (counts, key = ino).
 *  purging:  an UNLINK/RENAME with FS_XF_PURGE will free the inode: an OPEN
 *            or GRANT meanwhile answers ENOENT (the unlink was ordered first;
 *            letting it open would hand out an inode that is about to vanish).
 *  trimming: a TRIM drops the file's never-written chunks: a GRANT waits
 *            until it is applied (it would otherwise lease a doomed chunk). */
static struct oftab purging, trimming;
/* Directories with a CREATE in flight (key = parent ino): a CREATE without
 * O_EXCL opens whatever file the name binds when it is applied, which the
 * leader cannot know at submit time, so no purging unlink there meanwhile. */
static struct oftab creating;

static void pend_add(struct oftab *t, uint64_t ino) { of_set(t, ino, of_get(t, ino) + 1); }
static void pend_del(struct oftab *t, uint64_t ino)
{
    uint64_t v = of_get(t, ino);
    of_set(t, ino, v ? v - 1 : 0);
}

/* A client session as the leader sees it (soft state). */
struct msess {
    uint64_t id;
    uint64_t last_ms;
    struct oftab opens; /* ino -> handles of this session */
    struct msess *next;
};

static struct msess *sess_get(struct metad *m, uint64_t id, bool create)
{
    for (struct msess *s = m->sessions; s; s = s->next)
        if (s->id == id) return s;
    if (!create) return NULL;
    struct msess *s = calloc(1, sizeof(*s));
    if (!s) abort();
    s->id = id;
    s->next = m->sessions;
    m->sessions = s;
    return s;
}

static void touch_session(struct metad *m, uint64_t id)
{
    if (!id) return;
    struct msess *s = sess_get(m, id, true);
    s->last_ms = dfs_mono_ms();
}

static void purge_if_unused(struct metad *m, uint64_t ino);

static void open_add(struct metad *m, uint64_t session, uint64_t ino)
{
    struct msess *s = sess_get(m, session, true);
    of_set(&s->opens, ino, of_get(&s->opens, ino) + 1);
    of_set(m->opens, ino, of_get(m->opens, ino) + 1);
}

static void open_del(struct metad *m, uint64_t session, uint64_t ino, uint64_t count)
{
    struct msess *s = sess_get(m, session, false);
    if (s) {
        uint64_t c = of_get(&s->opens, ino);
        if (count > c) count = c;
        of_set(&s->opens, ino, c - count);
    } else {
        count = 0;
    }
    uint64_t t = of_get(m->opens, ino);
    of_set(m->opens, ino, t > count ? t - count : 0);
    if (t <= count) purge_if_unused(m, ino);
}

/* ------------------------------------------------------------------------ */
/* helpers */

static void to_fs_cred(const struct dfs_cred *in, struct fs_cred *out)
{
    out->session = in->session;
    out->seq = in->seq;
    out->uid = in->uid;
    out->gid = in->gid;
    out->ngroups = in->groups_count > FS_MAX_GROUPS ? FS_MAX_GROUPS : in->groups_count;
    for (uint32_t i = 0; i < out->ngroups; i++) out->groups[i] = (uint32_t)in->groups[i];
}

static void reply_attr(struct rpc_req *req, int status, const struct dfs_attr *a)
{
    struct dfs_msg_attr_resp r;
    memset(&r, 0, sizeof(r));
    r.status = (uint32_t)status;
    if (a && status == DFS_OK) r.attr = *a;
    rpc_reply(req, &r, NULL, NULL);
}

static void reply_count(struct rpc_req *req, int status, uint64_t count)
{
    struct dfs_msg_count_resp r = {.status = (uint32_t)status, .count = count};
    rpc_reply(req, &r, NULL, NULL);
}

static bool not_ready(struct metad *m, struct rpc_req *req)
{
    if (journal_ready(m->j)) return false;
    rpc_reply_status(req, DFS_ENOTLEADER);
    return true;
}

/* Async state of one client write op. */
struct wctx {
    struct rpc_req *req;
    unsigned op;
    uint64_t session, ino, index;
    uint32_t flags, bad_server;
    uint64_t chunk;
    uint64_t purge; /* UNLINK/RENAME: inode in `purging` until applied */
    int waited;     /* GRANT: already waited for a pending TRIM */
    uint64_t cparent; /* CREATE: parent in `creating` until applied */
    uint32_t newv;
    unsigned nsrv, pending;
    uint32_t srv[DFS_MAX_GOAL + 1];
    int ok[DFS_MAX_GOAL + 1];
};

static struct wctx *wctx_new(struct rpc_req *req, unsigned op)
{
    struct wctx *w = calloc(1, sizeof(*w));
    if (!w) abort();
    w->req = req;
    w->op = op;
    return w;
}

static void op_done(void *arg, int status, struct fs_result *res);

/* No server could take a new chain.  Right after an election the chunk
 * servers are still re-registering (they reconnect with a back-off), so for
 * one server timeout that is "try again", not "no servers". */
static int place_fail_status(struct metad *m)
{
    int st = chunks_place_fail_status(m->cm);
    if (st == DFS_ENOSERVERS && m->leader_since_ms &&
        dfs_mono_ms() - m->leader_since_ms < m->ro.server_timeout_ms)
        return DFS_EAGAIN;
    return st;
}

static void submit(struct metad *m, struct wctx *w, struct fs_op *op)
{
    op->now = dfs_now_ns();
    int st = journal_submit(m->j, op, op_done, w);
    if (st != DFS_OK) {
        if (w->purge) pend_del(&purging, w->purge);
        if (w->cparent) pend_del(&creating, w->cparent);
        rpc_reply_status(w->req, (uint32_t)st);
        free(w);
    }
}

/* ------------------------------------------------------------------------ */
/* after apply: chunk work and orphans */

static void purge_done(void *arg, int status, struct fs_result *res)
{
    (void)arg;
    if (status == DFS_OK) mserv_after_apply(metad_g, res);
}

static void purge_if_unused(struct metad *m, uint64_t ino)
{
    struct dfs_attr a;
    if (fs_getattr(m->fs, ino, &a) != DFS_OK || a.nlink != 0) return;
    if (of_get(m->opens, ino)) return;
    if (!journal_ready(m->j)) return;
    struct fs_op op;
    memset(&op, 0, sizeof(op));
    op.type = FS_OP_PURGE;
    op.ino = ino;
    op.now = dfs_now_ns();
    journal_submit(m->j, &op, purge_done, NULL);
}

void mserv_after_apply(struct metad *m, const struct fs_result *res)
{
    for (uint32_t i = 0; i < res->ncops; i++) {
        const struct fs_chunkop *c = &res->cops[i];
        if (c->kind != FS_COP_TRUNCATE) continue; /* deletes go through the GC list */
        struct cm_chunk *ch = chunks_get(m->cm, c->chunk_id);
        if (!ch) continue;
        for (unsigned r = 0; r < ch->nrep; r++) {
            struct cm_replica *rep = &ch->reps[r];
            /* apply() already moved the chunk to the new version, which marked
             * the copies still at old_version stale: those are exactly the
             * ones to truncate (and bring to the new version). */
            if (rep->version != c->old_version ||
                (rep->state != DFS_RS_OK && rep->state != DFS_RS_STALE) ||
                chunks_replica_state(m->cm, rep) == DFS_RS_DOWN)
                continue;
            if (csconn_truncate(m, rep->server_id, c->chunk_id, c->old_version, c->version,
                                c->length) == DFS_OK) {
                rep->version = c->version;
                rep->state = DFS_RS_OK;
            }
        }
        if (ch->length > c->length) ch->length = c->length;
    }
    if (res->orphan) purge_if_unused(m, res->orphan);
}

/* ------------------------------------------------------------------------ */
/* grants */

static void grant_reply(struct wctx *w, struct cm_chunk *c)
{
    struct metad *m = metad_g;
    struct dfs_msg_grant_resp r;
    memset(&r, 0, sizeof(r));
    r.status = DFS_OK;
    r.chunk.index = w->index;
    r.chunk.chunk_id = c->id;
    r.chunk.version = c->version;
    r.chunk.length = c->length;
    r.chunk.lease_ms = chunks_lease_left(m->cm, c);
    struct dfs_replica *reps = codec_frame_alloc(&w->req->f, (c->nrep + 1u) * sizeof(*reps));
    unsigned n = 0;
    for (unsigned i = 0; reps && i < c->nrep; i++) {
        if (c->reps[i].version != c->version || !chunks_replica_live(m->cm, &c->reps[i]))
            continue;
        chunks_fill_replica(m->cm, c->reps[i].server_id, DFS_RS_OK, &reps[n++]);
    }
    r.chunk.replicas = reps;
    r.chunk.replicas_count = n;
    rpc_reply(w->req, &r, NULL, NULL);
    free(w);
}

static void grant_fail(struct wctx *w, int status)
{
    rpc_reply_status(w->req, (uint32_t)status);
    free(w);
}

static void bump_done(struct wctx *w);
static void bump_answer(void *arg, uint32_t server_id, int status);

/* An existing chunk: lease, then (unless a plain renewal) a version bump on
 * the live replicas before anything is committed: GFS's lease rule, so a
 * replica that misses this writer's data is recognisably stale. */
static void grant_existing(struct wctx *w, uint64_t id)
{
    struct metad *m = metad_g;
    struct cm_chunk *c = chunks_get(m->cm, id);
    if (!c) return grant_fail(w, DFS_ENOCHUNK);
    int renewed;
    int st = chunks_lease(m->cm, c, w->session, &renewed);
    if (st) return grant_fail(w, st);
    if (c->nrep == 0 && c->length == 0 && m->leader_since_ms &&
        dfs_mono_ms() - m->leader_since_ms > 5000 && chunks_all_servers_up(m->cm)) {
        /* Allocated in the log but no copy anywhere, every server has
         * reported: the GRANT answer was lost with a metad restart before
         * the first write.  Hand out a fresh chain at the current version
         * (the writer's first WRITE creates it) instead of EIO forever. */
        uint32_t goal = 1;
        fs_file_info(m->fs, w->ino, NULL, NULL, &goal, NULL);
        uint32_t srv[DFS_MAX_GOAL];
        unsigned n = chunks_place(m->cm, goal ? goal : 1, NULL, 0, srv);
        if (!n) {
            chunks_lease_release(m->cm, c, w->session);
            return grant_fail(w, place_fail_status(m));
        }
        for (unsigned i = 0; i < n; i++) chunks_replica_set(m->cm, c, srv[i], c->version, DFS_RS_OK);
        log_notice("chunk %llu: no copy anywhere (never written); new chain of %u",
                   (unsigned long long)id, n);
        return grant_reply(w, c);
    }
    if (w->bad_server) {
        int bst = chunks_chain_fail(m->cm, c, w->bad_server);
        if (bst != DFS_OK) {
            chunks_lease_release(m->cm, c, w->session);
            return grant_fail(w, bst);
        }
    } else if (renewed) {
        return grant_reply(w, c);
    }
    w->chunk = id;
    w->newv = c->version + 1;
    w->nsrv = 0;
    for (unsigned i = 0; i < c->nrep && w->nsrv < DFS_MAX_GOAL + 1; i++)
        if (c->reps[i].version == c->version && chunks_replica_live(m->cm, &c->reps[i]))
            w->srv[w->nsrv++] = c->reps[i].server_id;
    if (!w->nsrv) {
        chunks_lease_release(m->cm, c, w->session);
        return grant_fail(w, DFS_EIO);
    }
    c->busy = 1;
    /* One extra count guards against finishing while still issuing (a call
     * that fails at once answers synchronously). */
    w->pending = w->nsrv + 1;
    unsigned issued = w->nsrv;
    for (unsigned i = 0; i < issued; i++) {
        uint32_t sid = w->srv[i];
        if (csconn_setversion(m, sid, id, c->version, w->newv, bump_answer, w) != DFS_OK)
            bump_answer(w, sid, DFS_ECONN);
    }
    w->pending--;
    bump_done(w);
}

static void version_done(void *arg, int status, struct fs_result *res)
{
    struct wctx *w = arg;
    struct cm_chunk *c = chunks_get(metad_g->cm, w->chunk);
    if (status != DFS_OK || res->status != DFS_OK || !c) {
        if (c) chunks_lease_release(metad_g->cm, c, w->session);
        return grant_fail(w, status != DFS_OK ? status : res->status);
    }
    grant_reply(w, c);
}

/* Every SETVERSION answered: keep the replicas that took the new version,
 * commit it, then answer the client. */
static void bump_done(struct wctx *w)
{
    if (w->pending) return;
    struct metad *m = metad_g;
    struct cm_chunk *c = chunks_get(m->cm, w->chunk);
    if (!c) return grant_fail(w, DFS_ENOCHUNK);
    c->busy = 0;
    unsigned good = 0;
    for (unsigned i = 0; i < w->nsrv; i++) {
        uint32_t sid = w->srv[i] & 0x7fffffffu;
        if (w->ok[i]) {
            chunks_replica_set(m->cm, c, sid, w->newv, DFS_RS_OK);
            good++;
        } else {
            chunks_replica_set(m->cm, c, sid, c->version, DFS_RS_STALE);
        }
    }
    if (!good) {
        chunks_lease_release(m->cm, c, w->session);
        return grant_fail(w, DFS_EIO);
    }
    struct fs_op op;
    memset(&op, 0, sizeof(op));
    op.type = FS_OP_CHUNK_VERSION;
    op.id = w->chunk;
    op.version = w->newv;
    op.now = dfs_now_ns();
    if (journal_submit(m->j, &op, version_done, w) != DFS_OK) {
        chunks_lease_release(m->cm, c, w->session);
        grant_fail(w, DFS_ENOTLEADER);
    }
}

/* One SETVERSION answer (or a failure to send it). */
static void bump_answer(void *arg, uint32_t server_id, int status)
{
    struct wctx *w = arg;
    struct cm_chunk *c = chunks_get(metad_g->cm, w->chunk);
    for (unsigned i = 0; i < w->nsrv; i++) {
        if ((w->srv[i] & 0x7fffffffu) != server_id || (w->srv[i] & 0x80000000u)) continue;
        w->srv[i] |= 0x80000000u;
        /* A chunk granted but never written does not exist on its servers
         * yet: nothing to bump, the writer creates it. */
        w->ok[i] = status == DFS_OK || (status == DFS_ENOCHUNK && c && c->length == 0);
        w->pending--;
        break;
    }
    bump_done(w);
}

static void new_chunk_done(void *arg, int status, struct fs_result *res)
{
    struct wctx *w = arg;
    struct metad *m = metad_g;
    if (status != DFS_OK) return grant_fail(w, status);
    if (res->status == DFS_EEXIST) return grant_existing(w, res->val);
    if (res->status != DFS_OK) return grant_fail(w, res->status);
    struct cm_chunk *c = chunks_get(m->cm, res->val);
    if (!c) return grant_fail(w, DFS_EIO);
    for (unsigned i = 0; i < w->nsrv; i++) chunks_replica_set(m->cm, c, w->srv[i], 1, DFS_RS_OK);
    int renewed;
    chunks_lease(m->cm, c, w->session, &renewed);
    grant_reply(w, c);
}

static void grant_start(struct wctx *w);

/* A NOOP ordered after a pending TRIM was applied: grant now. */
static void grant_waited(void *arg, int status, struct fs_result *res)
{
    (void)res;
    struct wctx *w = arg;
    if (status != DFS_OK) return grant_fail(w, status);
    w->waited = 1;
    grant_start(w);
}

static void grant_start(struct wctx *w)
{
    struct metad *m = metad_g;
    if (!w->waited && of_get(&trimming, w->ino)) {
        struct fs_op op;
        memset(&op, 0, sizeof(op));
        op.type = FS_OP_NOOP;
        op.now = dfs_now_ns();
        if (journal_submit(m->j, &op, grant_waited, w) != DFS_OK) grant_fail(w, DFS_ENOTLEADER);
        return;
    }
    uint32_t goal = 1;
    int st = fs_file_info(m->fs, w->ino, NULL, NULL, &goal, NULL);
    if (st != DFS_OK) return grant_fail(w, st); /* gone while we waited */
    uint64_t id = fs_file_chunk(m->fs, w->ino, w->index);
    if (id) return grant_existing(w, id);
    w->nsrv = chunks_place(m->cm, goal ? goal : 1, NULL, 0, w->srv);
    if (!w->nsrv) return grant_fail(w, place_fail_status(m));
    struct fs_op op;
    memset(&op, 0, sizeof(op));
    op.type = FS_OP_CHUNK_NEW;
    op.ino = w->ino;
    op.index = w->index;
    op.now = dfs_now_ns();
    if (journal_submit(m->j, &op, new_chunk_done, w) != DFS_OK) grant_fail(w, DFS_ENOTLEADER);
}

static void h_grant(struct rpc_req *req)
{
    struct metad *m = metad_g;
    if (not_ready(m, req)) return;
    const struct dfs_msg_grant *g = req->f.body;
    struct fs_cred cred;
    to_fs_cred(&g->cred, &cred);
    touch_session(m, cred.session);
    int st = fs_may_write_file(m->fs, &cred, g->ino);
    if (st == DFS_OK && of_get(&purging, g->ino)) st = DFS_ENOENT;
    if (st) return (void)rpc_reply_status(req, (uint32_t)st);
    struct wctx *w = wctx_new(req, DFS_OP_GRANT);
    w->session = cred.session;
    w->ino = g->ino;
    w->index = g->index;
    w->bad_server = g->bad_server;
    grant_start(w);
}

/* ------------------------------------------------------------------------ */
/* write ops through the journal */

/* CREATE allocated chunk 0 (`id`): its chain is the one placed before
 * submitting, and the creator gets the write lease, exactly as a GRANT of a
 * new chunk would (new_chunk_done); the reply lists it with the lease. */
static void create_chunk(struct metad *m, struct wctx *w, uint64_t id,
                         struct dfs_msg_attr_resp *r)
{
    struct cm_chunk *c = chunks_get(m->cm, id);
    if (!c) return;
    for (unsigned i = 0; i < w->nsrv; i++) chunks_replica_set(m->cm, c, w->srv[i], 1, DFS_RS_OK);
    int renewed;
    if (chunks_lease(m->cm, c, w->session, &renewed) != DFS_OK) return;
    struct dfs_chunk *ch = codec_frame_alloc(&w->req->f, sizeof(*ch));
    struct dfs_replica *reps = codec_frame_alloc(&w->req->f, (c->nrep + 1u) * sizeof(*reps));
    if (!ch || !reps) return;
    memset(ch, 0, sizeof(*ch));
    ch->index = 0;
    ch->chunk_id = c->id;
    ch->version = c->version;
    ch->length = c->length;
    ch->lease_ms = chunks_lease_left(m->cm, c);
    unsigned n = 0;
    for (unsigned i = 0; i < c->nrep; i++) {
        if (c->reps[i].version != c->version || !chunks_replica_live(m->cm, &c->reps[i]))
            continue;
        chunks_fill_replica(m->cm, c->reps[i].server_id, DFS_RS_OK, &reps[n++]);
    }
    if (!n) return; /* the client asks with GRANT (which repairs the chain) */
    ch->replicas = reps;
    ch->replicas_count = n;
    r->chunks = ch;
    r->chunks_count = 1;
    r->chunks_known = 1;
}

static void reply_attr_synced(struct metad *m, struct rpc_req *req, int st,
                              const struct dfs_attr *a);

static void op_done(void *arg, int status, struct fs_result *res)
{
    struct wctx *w = arg;
    struct metad *m = metad_g;
    if (w->purge) pend_del(&purging, w->purge);
    if (w->cparent) pend_del(&creating, w->cparent);
    if (status != DFS_OK) {
        rpc_reply_status(w->req, (uint32_t)status);
        free(w);
        return;
    }
    mserv_after_apply(m, res);
    switch (w->op) {
    case DFS_OP_CREATE:
        if (res->status == DFS_OK && !res->cached) open_add(m, w->session, res->attr.ino);
        if (res->status == DFS_OK) {
            /* The layout too, so the client needs no CHUNKS before writing. */
            struct dfs_msg_attr_resp r;
            memset(&r, 0, sizeof(r));
            r.status = DFS_OK;
            r.attr = res->attr;
            if (fs_file_info(m->fs, res->attr.ino, &r.layout, NULL, NULL, NULL) != DFS_OK)
                memset(&r.layout, 0, sizeof(r.layout));
            if (!res->cached && res->val) create_chunk(m, w, res->val, &r);
            rpc_reply(w->req, &r, NULL, NULL);
        } else {
            reply_attr(w->req, res->status, &res->attr);
        }
        break;
    case DFS_OP_COMMIT:
        if (res->status == DFS_OK && (w->flags & DFS_CF_RELEASE)) {
            uint64_t n = 0;
            fs_file_info(m->fs, w->ino, NULL, NULL, NULL, &n);
            for (uint64_t i = 0; i < n; i++) {
                struct cm_chunk *c = chunks_get(m->cm, fs_file_chunk(m->fs, w->ino, i));
                if (c) chunks_lease_release(m->cm, c, w->session);
            }
        }
        if (res->status == DFS_OK && (w->flags & DFS_CF_SYNC))
            reply_attr_synced(m, w->req, res->status, &res->attr);
        else
            reply_attr(w->req, res->status, &res->attr);
        break;
    case DFS_OP_SETATTR:
    case DFS_OP_MKNOD:
    case DFS_OP_MKDIR:
    case DFS_OP_SYMLINK:
    case DFS_OP_LINK: reply_attr(w->req, res->status, &res->attr); break;
    case DFS_OP_SETGOAL: reply_count(w->req, res->status, res->val); break;
    default: rpc_reply_status(w->req, (uint32_t)res->status); break;
    }
    /* goal changes and drains take effect in the background */
    if (res->status == DFS_OK && m->rp &&
        (w->op == DFS_OP_SETGOAL || w->op == DFS_OP_DRAIN || w->op == DFS_OP_SETXATTR))
        repair_note_all(m->rp);
    free(w);
}

/* Common prologue: leader check, session, reply cache. Returns NULL if done. */
static struct wctx *begin(struct rpc_req *req, struct fs_op *op, uint32_t type)
{
    struct metad *m = metad_g;
    if (not_ready(m, req)) return NULL;
    const struct dfs_cred *c = req->f.body; /* every client request starts with cred */
    memset(op, 0, sizeof(*op));
    op->type = type;
    to_fs_cred(c, &op->cred);
    touch_session(m, c->session);
    struct fs_result cached;
    memset(&cached, 0, sizeof(cached));
    if (fs_cached_reply(m->fs, c->session, c->seq, &cached)) {
        /* A retry of an op that already ran: the first answer again. */
        switch (req->f.op) {
        case DFS_OP_UNLINK:
        case DFS_OP_RMDIR:
        case DFS_OP_RENAME:
        case DFS_OP_SETXATTR:
        case DFS_OP_REMOVEXATTR:
        case DFS_OP_DRAIN: rpc_reply_status(req, (uint32_t)cached.status); break;
        case DFS_OP_SETGOAL: reply_count(req, cached.status, cached.val); break;
        default: reply_attr(req, cached.status, &cached.attr); break;
        }
        return NULL;
    }
    struct wctx *w = wctx_new(req, req->f.op);
    w->session = c->session;
    return w;
}

static void h_mknod(struct rpc_req *req)
{
    const struct dfs_msg_mknod *b = req->f.body;
    struct fs_op op;
    uint32_t t = req->f.op == DFS_OP_MKDIR ? FS_OP_MKDIR
                 : req->f.op == DFS_OP_CREATE ? FS_OP_CREATE
                                              : FS_OP_MKNOD;
    struct wctx *w = begin(req, &op, t);
    if (!w) return;
    op.parent = b->parent;
    op.name = b->name.ptr;
    op.namelen = b->name.len;
    op.mode = b->mode;
    op.rdev = b->rdev;
    op.flags = (b->flags & O_EXCL) ? 0200 : 0;
    if (t == FS_OP_CREATE) {
        w->cparent = b->parent;
        pend_add(&creating, b->parent);
    }
    if (t == FS_OP_CREATE && (b->flags & DFS_CREATE_ALLOC)) {
        /* Chunk 0 with the file: place its chain now, the op carries the
         * decision (apply allocates the id); no servers: no chunk. */
        struct metad *m = metad_g;
        struct dfs_attr pa, ea;
        if (fs_getattr(m->fs, b->parent, &pa) == DFS_OK && S_ISDIR(pa.mode) &&
            fs_lookup(m->fs, &op.cred, b->parent, b->name.ptr ? b->name.ptr : "", &ea) ==
                DFS_ENOENT) {
            w->nsrv = chunks_place(m->cm, pa.goal ? pa.goal : 1, NULL, 0, w->srv);
            if (w->nsrv) op.xflags |= FS_XF_ALLOC;
        }
    }
    submit(metad_g, w, &op);
}

static void h_symlink(struct rpc_req *req)
{
    const struct dfs_msg_symlink *b = req->f.body;
    struct fs_op op;
    struct wctx *w = begin(req, &op, FS_OP_SYMLINK);
    if (!w) return;
    op.parent = b->parent;
    op.name = b->name.ptr;
    op.namelen = b->name.len;
    op.name2 = b->target.ptr;
    op.name2len = b->target.len;
    submit(metad_g, w, &op);
}

static void h_link(struct rpc_req *req)
{
    const struct dfs_msg_link *b = req->f.body;
    struct fs_op op;
    struct wctx *w = begin(req, &op, FS_OP_LINK);
    if (!w) return;
    op.ino = b->ino;
    op.newparent = b->newparent;
    op.name = b->newname.ptr;
    op.namelen = b->newname.len;
    submit(metad_g, w, &op);
}

/* UNLINK or RENAME over `name` in `parent`: if it removes the last link of
 * a regular file that nobody has open, the op itself frees the inode
 * (FS_XF_PURGE, one log entry instead of the op plus a PURGE).  The
 * decision is made now, from the open table as of submitting, and is
 * recorded in the op; until it is applied the inode is in `purging`, so an
 * OPEN or GRANT in between cannot take a handle on it.  The op names the
 * inode: if earlier ops still in flight bind the name to another inode by
 * the time it is applied, that one becomes an orphan as before. */
static void mark_purge(struct metad *m, struct wctx *w, struct fs_op *op, uint64_t parent,
                       const char *name)
{
    struct dfs_attr a;
    if (fs_lookup(m->fs, &op->cred, parent, name ? name : "", &a) != DFS_OK) return;
    if (!S_ISREG(a.mode) || a.nlink != 1 || of_get(m->opens, a.ino) ||
        of_get(&creating, parent))
        return;
    op->ino = a.ino;
    op->xflags |= FS_XF_PURGE;
    w->purge = a.ino;
    pend_add(&purging, a.ino);
}

static void h_unlink(struct rpc_req *req)
{
    const struct dfs_msg_name_req *b = req->f.body;
    struct fs_op op;
    struct wctx *w = begin(req, &op, req->f.op == DFS_OP_RMDIR ? FS_OP_RMDIR : FS_OP_UNLINK);
    if (!w) return;
    op.parent = b->parent;
    op.name = b->name.ptr;
    op.namelen = b->name.len;
    if (op.type == FS_OP_UNLINK) mark_purge(metad_g, w, &op, b->parent, op.name);
    submit(metad_g, w, &op);
}

static void h_rename(struct rpc_req *req)
{
    const struct dfs_msg_rename *b = req->f.body;
    struct fs_op op;
    struct wctx *w = begin(req, &op, FS_OP_RENAME);
    if (!w) return;
    op.parent = b->parent;
    op.name = b->name.ptr;
    op.namelen = b->name.len;
    op.newparent = b->newparent;
    op.name2 = b->newname.ptr;
    op.name2len = b->newname.len;
    op.flags = b->flags;
    if (!(b->flags & (DFS_RENAME_EXCHANGE | DFS_RENAME_NOREPLACE)))
        mark_purge(metad_g, w, &op, b->newparent, op.name2);
    submit(metad_g, w, &op);
}

static void h_setattr(struct rpc_req *req)
{
    const struct dfs_msg_setattr *b = req->f.body;
    struct fs_op op;
    struct wctx *w = begin(req, &op, FS_OP_SETATTR);
    if (!w) return;
    op.ino = b->ino;
    op.valid = b->valid;
    op.mode = b->mode;
    op.uid = b->uid;
    op.gid = b->gid;
    op.size = b->size;
    op.atime = b->atime;
    op.mtime = b->mtime;
    /* A truncate must not race a writer holding a lease on the file's
     * chunks; the client's own leases are fine. */
    submit(metad_g, w, &op);
}

static void h_setxattr(struct rpc_req *req)
{
    const struct dfs_msg_setxattr *b = req->f.body;
    struct fs_op op;
    struct wctx *w = begin(req, &op, FS_OP_SETXATTR);
    if (!w) return;
    op.ino = b->ino;
    op.name = b->name.ptr;
    op.namelen = b->name.len;
    op.data = b->value.ptr;
    op.datalen = b->value.len;
    op.flags = b->flags;
    submit(metad_g, w, &op);
}

static void h_removexattr(struct rpc_req *req)
{
    const struct dfs_msg_xattr_req *b = req->f.body;
    struct fs_op op;
    struct wctx *w = begin(req, &op, FS_OP_REMOVEXATTR);
    if (!w) return;
    op.ino = b->ino;
    op.name = b->name.ptr;
    op.namelen = b->name.len;
    submit(metad_g, w, &op);
}

static void h_setgoal(struct rpc_req *req)
{
    const struct dfs_msg_setgoal *b = req->f.body;
    struct fs_op op;
    struct wctx *w = begin(req, &op, FS_OP_SETGOAL);
    if (!w) return;
    op.ino = b->ino;
    op.goal = b->goal;
    op.flags = b->recursive;
    submit(metad_g, w, &op);
}

/* DFS_CF_SYNC: the reply waits until the log holding the change (and every
 * change before it) is flushed to disk, whatever the log's sync mode. */
struct synced_reply {
    struct rpc_req *req;
    int status;
    struct dfs_attr attr;
};

static void synced_cb(void *arg, int status)
{
    struct synced_reply *s = arg;
    if (status != 0) log_err("fsync barrier: the raft log could not be flushed");
    reply_attr(s->req, status == 0 ? s->status : DFS_EIO, &s->attr);
    free(s);
}

static void reply_attr_synced(struct metad *m, struct rpc_req *req, int st, const struct dfs_attr *a)
{
    struct synced_reply *s = malloc(sizeof(*s));
    if (!s) abort();
    s->req = req;
    s->status = st;
    s->attr = *a;
    if (journal_sync(m->j, synced_cb, s) != DFS_OK) {
        reply_attr(req, DFS_EIO, a);
        free(s);
    }
}

static void h_commit(struct rpc_req *req)
{
    const struct dfs_msg_commit *b = req->f.body;
    if (b->flags & DFS_CF_NOCHANGE) {
        /* fsync of a clean file or of a directory: nothing to change, only
         * wait for the log to be on disk */
        struct metad *m = metad_g;
        if (not_ready(m, req)) return;
        struct dfs_attr a;
        int st = fs_getattr(m->fs, b->ino, &a);
        if (st != DFS_OK || !(b->flags & DFS_CF_SYNC)) reply_attr(req, st, &a);
        else reply_attr_synced(m, req, st, &a);
        return;
    }
    struct fs_op op;
    struct wctx *w = begin(req, &op, FS_OP_COMMIT);
    if (!w) return;
    op.ino = b->ino;
    op.size = b->size;
    op.mtime = b->mtime;
    op.flags = b->flags;
    w->ino = b->ino;
    w->flags = b->flags;
    submit(metad_g, w, &op);
}

static void h_drain(struct rpc_req *req)
{
    const struct dfs_msg_drain *b = req->f.body;
    struct fs_op op;
    struct wctx *w = begin(req, &op, FS_OP_DRAIN);
    if (!w) return;
    op.id = b->server_id;
    op.flags = b->on;
    submit(metad_g, w, &op);
}

/* ------------------------------------------------------------------------ */
/* read-only ops */

static void h_lookup(struct rpc_req *req)
{
    struct metad *m = metad_g;
    if (not_ready(m, req)) return;
    const struct dfs_msg_name_req *b = req->f.body;
    struct fs_cred c;
    to_fs_cred(&b->cred, &c);
    struct dfs_attr a;
    int st = fs_lookup(m->fs, &c, b->parent, b->name.ptr ? b->name.ptr : "", &a);
    reply_attr(req, st, &a);
}

static void h_getattr(struct rpc_req *req)
{
    struct metad *m = metad_g;
    if (not_ready(m, req)) return;
    const struct dfs_msg_ino_req *b = req->f.body;
    struct dfs_attr a;
    int st = fs_getattr(m->fs, b->ino, &a);
    reply_attr(req, st, &a);
}

static void h_readlink(struct rpc_req *req)
{
    struct metad *m = metad_g;
    if (not_ready(m, req)) return;
    const struct dfs_msg_ino_req *b = req->f.body;
    const char *t = NULL;
    struct dfs_msg_readlink_resp r;
    memset(&r, 0, sizeof(r));
    r.status = (uint32_t)fs_readlink(m->fs, b->ino, &t);
    if (t) {
        r.target.ptr = t;
        r.target.len = (uint32_t)strlen(t);
    }
    rpc_reply(req, &r, NULL, NULL);
}

#define OPEN_CHUNKS 4u /* chunks listed with an OPEN reply */

static struct dfs_chunk *list_chunks(struct metad *m, struct rpc_req *req, uint64_t ino,
                                     uint64_t n, uint64_t first, uint32_t count, uint32_t *kout);

static void h_open(struct rpc_req *req)
{
    struct metad *m = metad_g;
    if (not_ready(m, req)) return;
    const struct dfs_msg_open *b = req->f.body;
    struct fs_cred c;
    to_fs_cred(&b->cred, &c);
    touch_session(m, c.session);
    int acc = b->flags & O_ACCMODE;
    int mask = acc == O_RDONLY ? 4 : acc == O_WRONLY ? 2 : 6;
    if (b->flags & O_TRUNC) mask |= 2;
    struct dfs_attr a;
    int st = fs_getattr(m->fs, b->ino, &a);
    if (st == DFS_OK && of_get(&purging, b->ino)) st = DFS_ENOENT; /* unlink ordered first */
    if (st == DFS_OK && S_ISDIR(a.mode) && (mask & 2)) st = DFS_EISDIR;
    if (st == DFS_OK) st = fs_access(m->fs, &c, b->ino, mask);
    if (st == DFS_OK && !S_ISDIR(a.mode)) open_add(m, c.session, b->ino);
    if (st != DFS_OK || !S_ISREG(a.mode)) {
        reply_attr(req, st, &a);
        return;
    }
    /* A file: its layout and first chunks too, so a small file is read
     * without a CHUNKS round trip. */
    struct dfs_msg_attr_resp r;
    memset(&r, 0, sizeof(r));
    r.status = DFS_OK;
    r.attr = a;
    uint64_t n = 0;
    if (fs_file_info(m->fs, b->ino, &r.layout, NULL, NULL, &n) == DFS_OK) {
        uint32_t k = 0;
        struct dfs_chunk *chs = list_chunks(m, req, b->ino, n, 0, OPEN_CHUNKS, &k);
        if (chs) {
            r.chunks = chs;
            r.chunks_count = k;
            r.chunks_known = OPEN_CHUNKS;
        }
    } else {
        memset(&r.layout, 0, sizeof(r.layout));
    }
    rpc_reply(req, &r, NULL, NULL);
}

static void trim_done(void *arg, int status, struct fs_result *res)
{
    uint64_t ino = (uint64_t)(uintptr_t)arg;
    pend_del(&trimming, ino);
    if (status == DFS_OK) mserv_after_apply(metad_g, res);
}

/* The last handle of a file closed: an empty file still holding chunks
 * (chunk 0 handed out with its CREATE and never written) gives them back,
 * so empty files (touch, tar) do not keep chunks that exist nowhere.  Only
 * when no chunk is leased or being bumped; a GRANT meanwhile waits for the
 * TRIM (grant_start). */
static void trim_if_unwritten(struct metad *m, uint64_t ino)
{
    uint64_t size = 0, n = 0;
    struct dfs_attr a;
    if (!journal_ready(m->j) || of_get(&trimming, ino)) return;
    if (fs_getattr(m->fs, ino, &a) != DFS_OK || !S_ISREG(a.mode) || a.nlink == 0) return;
    if (fs_file_info(m->fs, ino, NULL, &size, NULL, &n) != DFS_OK || size != 0 || n == 0) return;
    for (uint64_t i = 0; i < n; i++) {
        struct cm_chunk *c = chunks_get(m->cm, fs_file_chunk(m->fs, ino, i));
        if (c && (c->busy || c->length || chunks_lease_left(m->cm, c))) return;
    }
    struct fs_op op;
    memset(&op, 0, sizeof(op));
    op.type = FS_OP_TRIM;
    op.ino = ino;
    op.now = dfs_now_ns();
    pend_add(&trimming, ino);
    if (journal_submit(m->j, &op, trim_done, (void *)(uintptr_t)ino) != DFS_OK)
        pend_del(&trimming, ino);
}

static void h_release(struct rpc_req *req)
{
    struct metad *m = metad_g;
    const struct dfs_msg_open *b = req->f.body;
    touch_session(m, b->cred.session);
    open_del(m, b->cred.session, b->ino, 1);
    /* The session's last handle of the file is closed: its write leases end
     * (a GRANT taken by fsync on a read-only handle is never released by a
     * COMMIT; without this, repair of those chunks waits for expiry). */
    struct msess *s = sess_get(m, b->cred.session, false);
    if (!s || of_get(&s->opens, b->ino) == 0) {
        uint64_t n = 0;
        if (fs_file_info(m->fs, b->ino, NULL, NULL, NULL, &n) == DFS_OK)
            for (uint64_t i = 0; i < n; i++) {
                struct cm_chunk *c = chunks_get(m->cm, fs_file_chunk(m->fs, b->ino, i));
                if (c && !c->busy) chunks_lease_release(m->cm, c, b->cred.session);
            }
    }
    if (of_get(m->opens, b->ino) == 0) trim_if_unwritten(m, b->ino);
    rpc_reply_status(req, DFS_OK);
}

struct rdctx {
    struct dfs_dirent *ents;
    uint32_t n, max;
    size_t bytes;
};

static int rd_cb(void *arg, const char *name, uint32_t nl, uint64_t cookie,
                 const struct dfs_attr *a)
{
    struct rdctx *r = arg;
    /* keep a page well below the frame limit */
    if (r->n >= r->max || r->bytes + nl + 128 > (1u << 20)) return 1;
    struct dfs_dirent *e = &r->ents[r->n++];
    e->name.ptr = name;
    e->name.len = nl;
    e->cookie = cookie;
    e->attr = *a;
    r->bytes += nl + 128;
    return 0;
}

static void h_readdir(struct rpc_req *req)
{
    struct metad *m = metad_g;
    if (not_ready(m, req)) return;
    const struct dfs_msg_readdir *b = req->f.body;
    struct fs_cred c;
    to_fs_cred(&b->cred, &c);
    struct rdctx r = {0};
    r.max = b->max && b->max < DFS_READDIR_MAX ? b->max : DFS_READDIR_MAX;
    r.ents = codec_frame_alloc(&req->f, r.max * sizeof(*r.ents));
    if (!r.ents) return (void)rpc_reply_status(req, DFS_ENOMEM);
    int eof = 0;
    struct dfs_msg_readdir_resp resp;
    memset(&resp, 0, sizeof(resp));
    resp.status = (uint32_t)fs_readdir(m->fs, &c, b->ino, b->cookie, r.max, rd_cb, &r, &eof);
    resp.entries = r.ents;
    resp.entries_count = r.n;
    resp.eof = (uint32_t)eof;
    rpc_reply(req, &resp, NULL, NULL);
}

static void h_statfs(struct rpc_req *req)
{
    struct metad *m = metad_g;
    if (not_ready(m, req)) return;
    struct dfs_msg_statfs_resp r;
    memset(&r, 0, sizeof(r));
    chunks_capacity(m->cm, &r.total, &r.avail);
    struct fs_stats st;
    fs_stats(m->fs, &st);
    r.files = st.inodes;
    r.ffree = (1ull << 32) - st.inodes;
    rpc_reply(req, &r, NULL, NULL);
}

static void h_getxattr(struct rpc_req *req)
{
    struct metad *m = metad_g;
    if (not_ready(m, req)) return;
    const struct dfs_msg_xattr_req *b = req->f.body;
    struct fs_cred c;
    to_fs_cred(&b->cred, &c);
    char *buf = codec_frame_alloc(&req->f, 256);
    struct dfs_msg_bin_resp r;
    memset(&r, 0, sizeof(r));
    const void *v = NULL;
    uint32_t len = 0;
    r.status = buf ? (uint32_t)fs_getxattr(m->fs, &c, b->ino, b->name.ptr ? b->name.ptr : "",
                                           buf, 256, &v, &len)
                   : DFS_ENOMEM;
    r.value.ptr = v;
    r.value.len = len;
    rpc_reply(req, &r, NULL, NULL);
}

static void h_listxattr(struct rpc_req *req)
{
    struct metad *m = metad_g;
    if (not_ready(m, req)) return;
    const struct dfs_msg_ino_req *b = req->f.body;
    struct fs_cred c;
    to_fs_cred(&b->cred, &c);
    size_t cap = 256u << 10;
    char *buf = codec_frame_alloc(&req->f, cap);
    struct dfs_msg_bin_resp r;
    memset(&r, 0, sizeof(r));
    uint32_t len = 0;
    r.status = buf ? (uint32_t)fs_listxattr(m->fs, &c, b->ino, buf, cap, &len) : DFS_ENOMEM;
    r.value.ptr = buf;
    r.value.len = len;
    rpc_reply(req, &r, NULL, NULL);
}

static void h_chunks(struct rpc_req *req)
{
    struct metad *m = metad_g;
    if (not_ready(m, req)) return;
    const struct dfs_msg_chunks_req *b = req->f.body;
    struct dfs_msg_chunks_resp r;
    memset(&r, 0, sizeof(r));
    uint64_t n = 0;
    int st = fs_file_info(m->fs, b->ino, &r.layout, &r.size, &r.goal, &n);
    if (st) return (void)rpc_reply_status(req, (uint32_t)st);
    uint32_t count = b->count ? b->count : 64;
    if (count > 4096) count = 4096;
    uint32_t k = 0;
    struct dfs_chunk *chs = list_chunks(m, req, b->ino, n, b->first, count, &k);
    if (!chs) return (void)rpc_reply_status(req, DFS_ENOMEM);
    r.status = DFS_OK;
    r.chunks = chs;
    r.chunks_count = k;
    rpc_reply(req, &r, NULL, NULL);
}

/* The chunks of ino with index in [first, first+count) (n = the file's chunk
 * count), allocated in req's frame; *k = how many.  NULL: out of memory. */
static struct dfs_chunk *list_chunks(struct metad *m, struct rpc_req *req, uint64_t ino,
                                     uint64_t n, uint64_t first, uint32_t count, uint32_t *kout)
{
    struct dfs_chunk *chs = codec_frame_alloc(&req->f, (count ? count : 1) * sizeof(*chs));
    if (!chs) return NULL;
    uint32_t k = 0;
    for (uint64_t i = first; i < n && i < first + count; i++) {
        struct cm_chunk *c = chunks_get(m->cm, fs_file_chunk(m->fs, ino, i));
        if (!c) continue;
        struct dfs_chunk *o = &chs[k++];
        memset(o, 0, sizeof(*o));
        o->index = i;
        o->chunk_id = c->id;
        o->version = c->version;
        o->length = c->length;
        struct dfs_replica *reps = codec_frame_alloc(&req->f, (c->nrep + 1u) * sizeof(*reps));
        if (!reps) continue;
        /* readable copies first */
        for (int pass = 0; pass < 2; pass++)
            for (unsigned j = 0; j < c->nrep; j++) {
                bool good = c->reps[j].version == c->version &&
                            chunks_replica_live(m->cm, &c->reps[j]);
                if (good != (pass == 0)) continue;
                uint32_t rs = good ? DFS_RS_OK : chunks_replica_state(m->cm, &c->reps[j]);
                if (rs == DFS_RS_OK && !good) rs = DFS_RS_STALE;
                chunks_fill_replica(m->cm, c->reps[j].server_id, rs, &reps[o->replicas_count++]);
            }
        o->replicas = reps;
    }
    *kout = k;
    return chs;
}

static void h_badreplica(struct rpc_req *req)
{
    struct metad *m = metad_g;
    if (not_ready(m, req)) return;
    const struct dfs_msg_badrep *b = req->f.body;
    struct cm_chunk *c = chunks_get(m->cm, b->chunk_id);
    if (!c) return (void)rpc_reply_status(req, DFS_ENOCHUNK);
    for (unsigned i = 0; i < c->nrep; i++)
        if (c->reps[i].server_id == b->server_id) c->reps[i].state = DFS_RS_CORRUPT;
    if (m->rp) repair_note_chunk(m->rp, b->chunk_id);
    log_notice("chunk %llu: client reports a bad copy on server %u (reason %u)",
               (unsigned long long)b->chunk_id, b->server_id, b->reason);
    rpc_reply_status(req, DFS_OK);
}

static const char *leader_client_addr(struct metad *m);

static uint32_t goal_of(void *arg, uint64_t ino)
{
    uint32_t g = DFS_DEFAULT_GOAL;
    fs_file_info(arg, ino, NULL, NULL, &g, NULL);
    return g;
}

static void h_status(struct rpc_req *req)
{
    struct metad *m = metad_g;
    struct dfs_msg_status_resp r;
    memset(&r, 0, sizeof(r));
    uint32_t ns = 0;
    while (chunks_server_at(m->cm, ns)) ns++;
    struct dfs_server *sv = codec_frame_alloc(&req->f, (ns + 1) * sizeof(*sv));
    if (!sv) return (void)rpc_reply_status(req, DFS_ENOMEM);
    for (uint32_t i = 0; i < ns; i++) {
        struct cm_server *s = chunks_server_at(m->cm, i);
        struct dfs_server *o = &sv[i];
        memset(o, 0, sizeof(*o));
        o->server_id = s->id;
        o->host.ptr = s->host;
        o->host.len = (uint32_t)strlen(s->host);
        o->port = (uint32_t)s->port;
        o->label.ptr = s->label;
        o->label.len = (uint32_t)strlen(s->label);
        o->state = s->state;
        o->total = s->total;
        o->used = s->used;
        o->avail = s->avail;
        o->load = s->load;
        o->last_seen = s->last_seen_ns;
        o->bytes_read = s->bytes_read;
        o->bytes_written = s->bytes_written;
        o->bytes_replicated = s->bytes_replicated;
        o->dirs = s->dirs;
        o->dirs_count = s->ndirs;
        o->chunks = s->nchunks;
        for (uint32_t d = 0; !s->nchunks && d < s->ndirs; d++)
            o->chunks += s->dirs[d].chunks; /* as the server last reported */
    }
    /* per-server chunk counts */
    struct chunks_health h;
    chunks_health(m->cm, goal_of, m->fs, &h);
    struct fs_stats st;
    fs_stats(m->fs, &st);
    r.status = journal_ready(m->j) ? DFS_OK : DFS_ENOTLEADER;
    r.servers = sv;
    r.servers_count = ns;
    r.chunks = h.chunks;
    r.healthy = h.healthy;
    r.under_goal = h.under_goal;
    r.over_goal = h.over_goal;
    r.missing = h.missing;
    r.files = st.files;
    r.dirs = st.dirs;
    struct repair_stats rs;
    memset(&rs, 0, sizeof(rs));
    if (m->rp) repair_stats(m->rp, &rs);
    r.repair_queue = rs.queued;
    r.repairs_running = rs.running + rs.deleting; /* copies and deletions in flight */
    r.repairs_done = rs.done;
    r.bytes_replicated = rs.bytes;
    r.gc_pending = rs.gc_queued ? rs.gc_queued : chunks_gc_pending(m->cm);
    const char *l = leader_client_addr(m);
    r.leader.ptr = l ? l : "";
    r.leader.len = (uint32_t)strlen(r.leader.ptr);
    r.raft_index = journal_applied(m->j);
    rpc_reply(req, &r, NULL, NULL);
}

static void h_ping(struct rpc_req *req) { rpc_reply_status(req, DFS_OK); }

/* ------------------------------------------------------------------------ */
/* timers, sessions */

static void tick_cb(uv_timer_t *t)
{
    struct metad *m = t->data;
    chunks_tick(m->cm);
    if (!journal_ready(m->j)) return;
    uint64_t now = dfs_mono_ms();

    /* Deleted chunks' replicas are deleted by repair.c (throttled GC). */

    /* Sessions that went quiet: their handles are closed. */
    for (struct msess **pp = &m->sessions; *pp;) {
        struct msess *s = *pp;
        if (now - s->last_ms > m->o.session_timeout_ms) {
            *pp = s->next;
            for (uint64_t i = 0; i < s->opens.cap; i++)
                if (s->opens.k[i]) {
                    uint64_t ino = s->opens.k[i], c = s->opens.v[i], tot = of_get(m->opens, ino);
                    of_set(m->opens, ino, tot > c ? tot - c : 0);
                    if (tot <= c) {
                        /* as if the dead client had closed it */
                        purge_if_unused(m, ino);
                        trim_if_unwritten(m, ino);
                    }
                }
            of_free(&s->opens);
            free(s);
            continue;
        }
        pp = &s->next;
    }

    /* Orphans left by an earlier leader: after one session timeout every
     * client that still had them open has re-opened them. */
    if (m->leader_since_ms && now - m->leader_since_ms > m->o.session_timeout_ms) {
        uint64_t o[64];
        uint32_t k = fs_orphans(m->fs, o, 64);
        for (uint32_t i = 0; i < k; i++) purge_if_unused(m, o[i]);
    }

    /* Reply caches of long idle sessions. */
    uint64_t ids[16];
    int64_t before = dfs_now_ns() - (int64_t)m->o.reply_cache_idle_s * 1000000000ll;
    uint32_t k = fs_idle_sessions(m->fs, before, ids, 16);
    for (uint32_t i = 0; i < k; i++) {
        struct fs_op op;
        memset(&op, 0, sizeof(op));
        op.type = FS_OP_SESSION_EXPIRE;
        op.id = ids[i];
        op.now = dfs_now_ns();
        journal_submit(m->j, &op, purge_done, NULL);
    }
}

void mserv_on_leader(void *arg, bool leader)
{
    struct metad *m = arg;
    m->leader_since_ms = leader ? dfs_mono_ms() : 0;
}


/* ------------------------------------------------------------------------ */
/* self-healing glue (repair.c decides, csconn.c talks to chunkd) */

static void rp_repl_cb(void *arg, int status, uint64_t length)
{
    if (metad_g->rp) repair_replicate_done(metad_g->rp, arg, status, length);
}

static void rp_del_cb(void *arg, int status, uint64_t length)
{
    (void)length;
    if (metad_g->rp) repair_delete_done(metad_g->rp, arg, status);
}

static int rp_replicate(void *arg, uint32_t target, uint64_t chunk, uint32_t version,
                        const uint32_t *sources, unsigned nsources, void *token)
{
    struct metad *m = arg;
    return csconn_replicate(m, target, chunk, version, sources, nsources,
                            m->replicate_timeout_ms, rp_repl_cb, token);
}

static int rp_del(void *arg, uint32_t server, uint64_t chunk, uint32_t version, void *token)
{
    struct metad *m = arg;
    if (!token) return csconn_delete(m, server, chunk, version);
    return csconn_delete_cb(m, server, chunk, version, rp_del_cb, token);
}

static uint32_t goal_of(void *arg, uint64_t ino);

static uint32_t rp_goal(void *arg, uint64_t ino)
{
    struct metad *m = arg;
    return goal_of(m->fs, ino);
}

static void rtick_cb(uv_timer_t *t)
{
    struct metad *m = t->data;
    repair_set_leader(m->rp, journal_ready(m->j));
    repair_tick(m->rp);
}

/* Client address ("host:port") of metad node `id` from client_peers, or NULL. */
static const char *client_addr_of(struct metad *m, uint64_t id, char *buf, size_t len)
{
    const char *p = m->client_peers;
    while (p && *p) {
        char *end;
        unsigned long long nid = strtoull(p, &end, 10);
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (end > p && *end == '@' && nid == id) {
            size_t a = n - (size_t)(end + 1 - p);
            if (a + 1 > len) return NULL;
            memcpy(buf, end + 1, a);
            buf[a] = 0;
            return buf;
        }
        p = comma ? comma + 1 : NULL;
    }
    return NULL;
}

/* The leader's client address when known (else its raft address). */
static const char *leader_client_addr(struct metad *m)
{
    uint64_t id = 0;
    const char *raft = journal_leader(m->j, &id);
    if (!raft) return NULL;
    const char *c = id ? client_addr_of(m, id, m->client_leader, sizeof(m->client_leader)) : NULL;
    if (!c && journal_ready(m->j)) {
        /* We lead: our own client address is the answer. */
        snprintf(m->client_leader, sizeof(m->client_leader), "%s:%d", m->o.listen_host,
                 m->o.listen_port);
        c = m->client_leader;
    }
    return c ? c : raft;
}

static void on_hello(struct rpc_conn *c, const struct dfs_msg_hello *hello,
                     struct dfs_msg_hello_resp *resp)
{
    (void)c;
    (void)hello;
    struct metad *m = metad_g;
    resp->status = DFS_OK;
    if (journal_ready(m->j)) return;
    uint64_t id = 0;
    if (!journal_leader(m->j, &id) || !id) return;
    const char *a = client_addr_of(m, id, m->client_leader, sizeof(m->client_leader));
    if (a) {
        resp->leader.ptr = a;
        resp->leader.len = (uint32_t)strlen(a);
    }
}

/* ------------------------------------------------------------------------ */
/* setup */

static void on_disconnected(struct rpc_conn *c, int status)
{
    (void)status;
    if (rpc_conn_peer_role(c) == DFS_ROLE_CHUNKD) csconn_disconnected(c);
}

static rpc_handler_fn handlers[DFS_OP_MAX];

int mserv_start(struct metad *m, char *err, size_t errlen)
{
    metad_g = m;
    m->opens = calloc(1, sizeof(*m->opens));
    if (!m->opens) abort();
    if (!m->o.session_timeout_ms) m->o.session_timeout_ms = 120000;
    if (!m->o.reply_cache_idle_s) m->o.reply_cache_idle_s = 3600;
    if (!m->o.rpc_timeout_ms) m->o.rpc_timeout_ms = 5000;
    handlers[DFS_OP_PING] = h_ping;
    handlers[DFS_OP_LOOKUP] = h_lookup;
    handlers[DFS_OP_GETATTR] = h_getattr;
    handlers[DFS_OP_SETATTR] = h_setattr;
    handlers[DFS_OP_MKNOD] = h_mknod;
    handlers[DFS_OP_MKDIR] = h_mknod;
    handlers[DFS_OP_CREATE] = h_mknod;
    handlers[DFS_OP_UNLINK] = h_unlink;
    handlers[DFS_OP_RMDIR] = h_unlink;
    handlers[DFS_OP_SYMLINK] = h_symlink;
    handlers[DFS_OP_READLINK] = h_readlink;
    handlers[DFS_OP_RENAME] = h_rename;
    handlers[DFS_OP_LINK] = h_link;
    handlers[DFS_OP_OPEN] = h_open;
    handlers[DFS_OP_RELEASE] = h_release;
    handlers[DFS_OP_READDIR] = h_readdir;
    handlers[DFS_OP_STATFS] = h_statfs;
    handlers[DFS_OP_SETXATTR] = h_setxattr;
    handlers[DFS_OP_GETXATTR] = h_getxattr;
    handlers[DFS_OP_LISTXATTR] = h_listxattr;
    handlers[DFS_OP_REMOVEXATTR] = h_removexattr;
    handlers[DFS_OP_CHUNKS] = h_chunks;
    handlers[DFS_OP_GRANT] = h_grant;
    handlers[DFS_OP_COMMIT] = h_commit;
    handlers[DFS_OP_BADREPLICA] = h_badreplica;
    handlers[DFS_OP_SETGOAL] = h_setgoal;
    handlers[DFS_OP_STATUS] = h_status;
    handlers[DFS_OP_DRAIN] = h_drain;
    handlers[DFS_OP_REGISTER] = csconn_register;
    handlers[DFS_OP_REPORT] = csconn_report;
    handlers[DFS_OP_HEARTBEAT] = csconn_heartbeat;

    struct rpc_conn_opts o;
    memset(&o, 0, sizeof(o));
    o.role = DFS_ROLE_METAD;
    o.node_id = m->o.node_id;
    o.max_frame_in = DFS_MAX_FRAME_TO_METAD;
    o.handlers = handlers;
    o.on_disconnected = on_disconnected;
    o.on_hello = on_hello;
    o.data = m;
    m->srv = rpc_listen(m->loop, m->o.listen_host, m->o.listen_port, &o, err, errlen);
    if (!m->srv) return -1;
    uv_timer_init(m->loop, &m->tick);
    m->tick.data = m;
    uv_timer_start(&m->tick, tick_cb, 1000, 1000);
    struct repair_io io = {rp_replicate, rp_del, rp_goal, m};
    if (!m->replicate_timeout_ms) m->replicate_timeout_ms = 600000;
    m->rp = repair_new(m->cm, &m->ro, &io);
    uv_timer_init(m->loop, &m->rtick);
    m->rtick.data = m;
    uint32_t rt = m->ro.tick_ms ? m->ro.tick_ms : 250;
    uv_timer_start(&m->rtick, rtick_cb, rt, rt);
    return 0;
}

void mserv_stop(struct metad *m)
{
    if (m->srv) rpc_server_close(m->srv);
    m->srv = NULL;
    uv_timer_stop(&m->tick);
    if (m->rp) uv_timer_stop(&m->rtick);
}
