/* repair.c - self-healing decisions: repair queue by danger, limits, deletes, GC, rebalance. */
#include "repair.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

#define NBUCKET (DFS_MAX_GOAL + 2u) /* 0..MAX_GOAL: copies left; last: deletions */
#define BUCKET_DEL (NBUCKET - 1u)
#define GC_LOCAL_MAX 65536u

enum { ROP_REPL = 1, ROP_MOVE = 2, ROP_DEL = 3 };

struct rop {
    struct rop *prev, *next;
    uint64_t chunk, length;
    uint32_t version, server, source;
    uint32_t from; /* ROP_MOVE: the server whose copy goes once this one is confirmed */
    uint8_t kind;
};

struct idvec {
    uint64_t *v;
    size_t head, n, cap; /* live entries v[head..n) */
};

struct srvstat {
    uint32_t id;
    uint32_t tgt, src;        /* replications running as target / first source */
    double tokens;            /* GC delete budget */
    uint64_t bytes;           /* bytes of good copies (last full scan + adjustments) */
    uint64_t scan_bytes;      /* accumulating during the current scan */
    uint32_t key;             /* last seen state, to notice changes */
};

struct repair {
    struct chunks *cm;
    struct repair_opts o;
    struct repair_io io;
    bool leader;
    uint64_t leader_since, last_tick;
    struct idvec q[NBUCKET];
    struct idvec deferred;
    struct cm_gc *gc;
    size_t ngc;
    struct rop ops; /* list head */
    struct srvstat *ss;
    uint32_t nss;
    uint64_t cursor, rcursor;
    bool scanned_once, all_pending;
    uint32_t running, moves_running, deleting;
    struct repair_stats st;
};

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q && n) abort();
    return q;
}

/* ----- small containers ----- */

static void iv_push(struct idvec *q, uint64_t id)
{
    if (q->n == q->cap) {
        if (q->head > q->n / 2) {
            memmove(q->v, q->v + q->head, (q->n - q->head) * sizeof(*q->v));
            q->n -= q->head;
            q->head = 0;
        } else {
            q->cap = q->cap ? q->cap * 2 : 256;
            q->v = xrealloc(q->v, q->cap * sizeof(*q->v));
        }
    }
    q->v[q->n++] = id;
}

static bool iv_pop(struct idvec *q, uint64_t *id)
{
    if (q->head == q->n) return false;
    *id = q->v[q->head++];
    if (q->head == q->n) q->head = q->n = 0;
    return true;
}

static size_t iv_len(const struct idvec *q) { return q->n - q->head; }

static struct srvstat *sstat(struct repair *rp, uint32_t id)
{
    for (uint32_t i = 0; i < rp->nss; i++)
        if (rp->ss[i].id == id) return &rp->ss[i];
    rp->ss = xrealloc(rp->ss, (rp->nss + 1) * sizeof(*rp->ss));
    struct srvstat *s = &rp->ss[rp->nss++];
    memset(s, 0, sizeof(*s));
    s->id = id;
    s->key = ~0u;
    s->tokens = rp->o.gc_rate;
    return s;
}

/* ----- setup ----- */

struct repair *repair_new(struct chunks *cm, const struct repair_opts *o,
                          const struct repair_io *io)
{
    struct repair *rp = calloc(1, sizeof(*rp));
    if (!rp) abort();
    rp->cm = cm;
    rp->o = *o;
    if (!rp->o.tick_ms) rp->o.tick_ms = 250;
    if (!rp->o.max_running) rp->o.max_running = 16;
    if (!rp->o.max_per_target) rp->o.max_per_target = 2;
    if (!rp->o.max_per_source) rp->o.max_per_source = 4;
    if (!rp->o.gc_rate) rp->o.gc_rate = 200;
    if (!rp->o.rebalance_max) rp->o.rebalance_max = 4;
    if (!rp->o.rebalance_min_bytes) rp->o.rebalance_min_bytes = 8ull << 20;
    if (!rp->o.server_timeout_ms) rp->o.server_timeout_ms = 5000;
    if (!rp->o.retry_ms) rp->o.retry_ms = 2000;
    if (!rp->o.scan_per_tick) rp->o.scan_per_tick = 20000;
    rp->io = *io;
    rp->ops.next = rp->ops.prev = &rp->ops;
    return rp;
}

void repair_free(struct repair *rp)
{
    if (!rp) return;
    for (unsigned i = 0; i < NBUCKET; i++) free(rp->q[i].v);
    free(rp->deferred.v);
    while (rp->ops.next != &rp->ops) {
        struct rop *x = rp->ops.next;
        x->prev->next = x->next;
        x->next->prev = x->prev;
        free(x);
    }
    free(rp->gc);
    free(rp->ss);
    free(rp);
}

static void clear_queues(struct repair *rp)
{
    for (unsigned i = 0; i < NBUCKET; i++) {
        uint64_t id;
        while (iv_pop(&rp->q[i], &id)) {
            struct cm_chunk *c = chunks_get(rp->cm, id);
            if (c) c->rq = 0;
        }
    }
    uint64_t id;
    while (iv_pop(&rp->deferred, &id)) {
        struct cm_chunk *c = chunks_get(rp->cm, id);
        if (c) c->rq = 0;
    }
}

void repair_set_leader(struct repair *rp, bool leader)
{
    if (leader == rp->leader) return;
    rp->leader = leader;
    rp->leader_since = chunks_now_ms(rp->cm);
    clear_queues(rp);
    rp->ngc = 0;
    rp->all_pending = leader;
}

/* ----- classification ----- */

struct cls {
    unsigned goal;
    unsigned good;    /* OK at the current version on an up server */
    unsigned good_nd; /* ... and not draining */
    unsigned drain;   /* good copies on draining servers */
    unsigned pending; /* replications in flight */
    unsigned maybe;   /* good on a server down for less than server_timeout_ms */
    unsigned bad;     /* stale/corrupt/old copies on up servers */
};

static bool srv_up(const struct cm_server *s) { return s && s->state != DFS_SS_DOWN; }

static bool srv_gone(struct repair *rp, const struct cm_server *s, uint64_t now)
{
    if (!s) return true;
    if (s->state != DFS_SS_DOWN) return false;
    return now >= s->last_seen_ms + rp->o.server_timeout_ms;
}

static void classify(struct repair *rp, struct cm_chunk *c, struct cls *k)
{
    uint64_t now = chunks_now_ms(rp->cm);
    memset(k, 0, sizeof(*k));
    uint32_t g = rp->io.goal_of ? rp->io.goal_of(rp->io.arg, c->ino) : DFS_DEFAULT_GOAL;
    if (g < 1) g = 1;
    if (g > DFS_MAX_GOAL) g = DFS_MAX_GOAL;
    k->goal = g;
    for (unsigned i = 0; i < c->nrep; i++) {
        struct cm_replica *r = &c->reps[i];
        struct cm_server *s = chunks_server(rp->cm, r->server_id);
        bool cur = r->version == c->version;
        if (!srv_up(s)) {
            if (cur && r->state == DFS_RS_OK && !srv_gone(rp, s, now)) k->maybe++;
            continue;
        }
        if (r->state == DFS_RS_PENDING) {
            k->pending++;
        } else if (r->state == DFS_RS_OK && cur) {
            k->good++;
            if (s->draining) k->drain++;
            else k->good_nd++;
        } else if (r->state != DFS_RS_LOST) {
            k->bad++; /* stale, corrupt, or OK at an older version */
        }
    }
}

static bool leased(struct repair *rp, struct cm_chunk *c)
{
    return c->busy || chunks_lease_left(rp->cm, c) > 0;
}

/* Which bucket a chunk belongs in, or -1 if it needs nothing (or cannot be helped). */
static int bucket_of(const struct cls *k)
{
    if (k->good == 0) return -1; /* nothing to copy from: wait */
    unsigned have = k->good_nd + k->pending + k->maybe;
    if (have < k->goal) {
        unsigned b = k->good_nd;
        return (int)(b < BUCKET_DEL ? b : BUCKET_DEL - 1);
    }
    if (k->bad) return BUCKET_DEL;
    if (k->pending == 0 && k->good_nd > k->goal) return BUCKET_DEL;
    if (k->pending == 0 && k->drain && k->good_nd >= k->goal) return BUCKET_DEL;
    return -1;
}

static void enqueue(struct repair *rp, struct cm_chunk *c)
{
    if (c->rq || c->rops) return;
    struct cls k;
    classify(rp, c, &k);
    int b = bucket_of(&k);
    if (b < 0) return;
    c->rq = 1;
    if (c->retry_after_ms > chunks_now_ms(rp->cm)) iv_push(&rp->deferred, c->id);
    else iv_push(&rp->q[b], c->id);
}

void repair_note_chunk(struct repair *rp, uint64_t chunk_id)
{
    if (!rp->leader) return;
    struct cm_chunk *c = chunks_get(rp->cm, chunk_id);
    if (c) enqueue(rp, c);
}

void repair_note_all(struct repair *rp)
{
    if (rp->leader) rp->all_pending = true;
}

static void clear_queues(struct repair *rp);

/* Re-examine every chunk; queued ones are re-bucketed by their danger now. */
static void scan_all(struct repair *rp)
{
    uint64_t pos = 0;
    clear_queues(rp);
    struct cm_chunk *c;
    while ((c = chunks_iter(rp->cm, &pos))) enqueue(rp, c);
}

static void defer(struct repair *rp, struct cm_chunk *c)
{
    c->rq = 1;
    iv_push(&rp->deferred, c->id);
}

/* ----- operations ----- */

static struct rop *rop_new(struct repair *rp, uint8_t kind, struct cm_chunk *c, uint32_t server)
{
    struct rop *x = calloc(1, sizeof(*x));
    if (!x) abort();
    x->kind = kind;
    x->chunk = c->id;
    x->version = c->version;
    x->server = server;
    x->length = c->length;
    x->next = &rp->ops;
    x->prev = rp->ops.prev;
    rp->ops.prev->next = x;
    rp->ops.prev = x;
    return x;
}

static void rop_unlink(struct rop *x)
{
    x->prev->next = x->next;
    x->next->prev = x->prev;
}

static double ratio(struct repair *rp, uint32_t sid)
{
    struct cm_server *s = chunks_server(rp->cm, sid);
    struct srvstat *ss = sstat(rp, sid);
    uint64_t total = s && s->total ? s->total : 1;
    return (double)ss->bytes / (double)total;
}

/* Delete one copy (marked STALE first so it is no longer read or counted). */
static bool delete_copy(struct repair *rp, struct cm_chunk *c, struct cm_replica *r)
{
    struct srvstat *ss = sstat(rp, r->server_id);
    if (ss->tokens < 1) return false;
    bool was_good = r->state == DFS_RS_OK && r->version == c->version;
    uint32_t v = r->version;
    r->state = DFS_RS_STALE;
    struct rop *x = rop_new(rp, ROP_DEL, c, r->server_id);
    x->version = v;
    x->source = was_good;
    if (rp->io.del(rp->io.arg, r->server_id, c->id, v, x) != DFS_OK) {
        if (was_good) r->state = DFS_RS_OK;
        rop_unlink(x);
        free(x);
        return false;
    }
    ss->tokens -= 1;
    c->rops++;
    rp->deleting++;
    struct cm_server *srv = chunks_server(rp->cm, r->server_id);
    log_info("repair: deleting %s copy of chunk %llu v%u on server %u",
             !was_good ? "stale" : srv && srv->draining ? "drained" : "surplus",
             (unsigned long long)c->id, v, r->server_id);
    return true;
}

/* A copy that can never be good again: marked stale/corrupt, or at a version
 * older than the chunk's.  (A copy at a newer version is a bump whose commit
 * is still on its way: it is the good one.) */
static bool known_bad(const struct cm_chunk *c, const struct cm_replica *r)
{
    if (r->state == DFS_RS_STALE || r->state == DFS_RS_CORRUPT) return true;
    return r->state == DFS_RS_OK && r->version < c->version;
}

/* Delete only known bad copies on up servers (safe under a write lease). */
static void delete_bad(struct repair *rp, struct cm_chunk *c)
{
    for (unsigned i = 0; i < c->nrep; i++) {
        struct cm_replica *r = &c->reps[i];
        if (!srv_up(chunks_server(rp->cm, r->server_id)) || !known_bad(c, r)) continue;
        delete_copy(rp, c, r);
    }
}

/* Stale/corrupt copies, then drained and surplus good copies.  Returns true
 * if everything needed was issued. */
static bool do_deletes(struct repair *rp, struct cm_chunk *c, const struct cls *k)
{
    bool all = true;
    if (k->good == 0) return true;
    for (unsigned i = 0; i < c->nrep; i++) {
        struct cm_replica *r = &c->reps[i];
        struct cm_server *s = chunks_server(rp->cm, r->server_id);
        if (!srv_up(s) || r->state == DFS_RS_PENDING || r->state == DFS_RS_LOST) continue;
        if (r->state == DFS_RS_OK && r->version == c->version) continue;
        if (!delete_copy(rp, c, r)) all = false;
    }
    if (k->pending) return all;
    unsigned nd = k->good_nd;
    /* drained copies go once the non-draining ones reach the goal */
    if (nd >= k->goal) {
        for (unsigned i = 0; i < c->nrep; i++) {
            struct cm_replica *r = &c->reps[i];
            struct cm_server *s = chunks_server(rp->cm, r->server_id);
            if (!srv_up(s) || !s->draining || r->state != DFS_RS_OK || r->version != c->version)
                continue;
            if (!delete_copy(rp, c, r)) all = false;
        }
    }
    /* surplus: from the fullest servers */
    while (nd > k->goal) {
        struct cm_replica *best = NULL;
        double br = -1;
        for (unsigned i = 0; i < c->nrep; i++) {
            struct cm_replica *r = &c->reps[i];
            struct cm_server *s = chunks_server(rp->cm, r->server_id);
            if (!srv_up(s) || s->draining || r->state != DFS_RS_OK || r->version != c->version)
                continue;
            double q = ratio(rp, r->server_id);
            if (q > br) br = q, best = r;
        }
        if (!best || !delete_copy(rp, c, best)) {
            all = false;
            break;
        }
        nd--;
    }
    return all;
}

/* Sources: good copies, least busy first.  Returns how many. */
static unsigned pick_sources(struct repair *rp, struct cm_chunk *c, uint32_t *src, unsigned max)
{
    unsigned n = 0;
    for (unsigned i = 0; i < c->nrep && n < max; i++) {
        struct cm_replica *r = &c->reps[i];
        if (r->state != DFS_RS_OK || r->version != c->version) continue;
        if (!srv_up(chunks_server(rp->cm, r->server_id))) continue;
        src[n++] = r->server_id;
    }
    /* insertion sort by running source count */
    for (unsigned i = 1; i < n; i++)
        for (unsigned j = i; j > 0 && sstat(rp, src[j])->src < sstat(rp, src[j - 1])->src; j--) {
            uint32_t t = src[j];
            src[j] = src[j - 1];
            src[j - 1] = t;
        }
    return n;
}

static struct rop *start_replicate(struct repair *rp, struct cm_chunk *c, uint32_t target,
                                   const uint32_t *src, unsigned nsrc, uint8_t kind)
{
    struct rop *x = rop_new(rp, kind, c, target);
    x->source = src[0];
    chunks_replica_set(rp->cm, c, target, c->version, DFS_RS_PENDING);
    if (rp->io.replicate(rp->io.arg, target, c->id, c->version, src, nsrc, x) != DFS_OK) {
        chunks_replica_drop(rp->cm, c, target);
        rop_unlink(x);
        free(x);
        return NULL;
    }
    c->rops++;
    rp->running++;
    sstat(rp, target)->tgt++;
    sstat(rp, src[0])->src++;
    if (kind == ROP_MOVE) {
        rp->moves_running++;
        rp->st.moves++;
        sstat(rp, target)->bytes += c->length; /* reserve, so moves do not overshoot */
    }
    return x;
}

/* Result of handling one queued chunk. */
enum { H_DONE, H_LATER, H_BLOCKED };

static bool replication_allowed(struct repair *rp)
{
    return chunks_now_ms(rp->cm) >= rp->leader_since + rp->o.start_delay_ms;
}

static int handle(struct repair *rp, struct cm_chunk *c)
{
    struct cls k;
    classify(rp, c, &k);
    int b = bucket_of(&k);
    if (b < 0 || c->rops) return H_DONE;
    if (c->retry_after_ms > chunks_now_ms(rp->cm)) {
        defer(rp, c);
        return H_LATER;
    }
    if (leased(rp, c)) {
        /* A writer may still change the good copies (same version), so no
         * copy is made and no good copy is removed now; but copies that are
         * known bad never come back: delete them at once. */
        if (!c->busy && k.bad && k.good) delete_bad(rp, c);
        if (!c->rops) defer(rp, c);
        return H_LATER;
    }
    unsigned have = k.good_nd + k.pending + k.maybe;
    if (have >= k.goal) return do_deletes(rp, c, &k) ? H_DONE : H_BLOCKED;

    /* useless copies first: they may sit on the only possible targets */
    if (k.bad) return do_deletes(rp, c, &k) ? H_DONE : H_BLOCKED;
    /* replicate */
    if (!replication_allowed(rp)) return H_BLOCKED;
    if (rp->running >= rp->o.max_running) return H_BLOCKED;
    uint32_t src[DFS_MAX_GOAL * 2 + 2];
    unsigned nsrc = pick_sources(rp, c, src, sizeof(src) / sizeof(src[0]));
    if (!nsrc) return H_DONE;
    if (sstat(rp, src[0])->src >= rp->o.max_per_source) return H_BLOCKED;
    /* exclude every server with any copy, and targets at their limit */
    uint32_t ex[256 + 64];
    unsigned nex = 0;
    for (unsigned i = 0; i < c->nrep && nex < 256; i++) ex[nex++] = c->reps[i].server_id;
    for (uint32_t i = 0; i < rp->nss && nex < sizeof(ex) / sizeof(ex[0]); i++)
        if (rp->ss[i].tgt >= rp->o.max_per_target) ex[nex++] = rp->ss[i].id;
    unsigned need = k.goal - have;
    if (need > rp->o.max_running - rp->running) need = rp->o.max_running - rp->running;
    uint32_t tg[DFS_MAX_GOAL];
    unsigned nt = chunks_place(rp->cm, need, ex, nex, tg);
    if (nt == 0) {
        /* No server can take it now (all busy or too few servers). */
        bool busy = false;
        for (uint32_t i = 0; i < rp->nss; i++)
            if (rp->ss[i].tgt >= rp->o.max_per_target) busy = true;
        if (busy) return H_BLOCKED;
        c->retry_after_ms = chunks_now_ms(rp->cm) + rp->o.retry_ms;
        defer(rp, c);
        return H_LATER;
    }
    bool any = false;
    for (unsigned i = 0; i < nt; i++) any |= start_replicate(rp, c, tg[i], src, nsrc, ROP_REPL) != NULL;
    if (!any) {
        c->retry_after_ms = chunks_now_ms(rp->cm) + rp->o.retry_ms;
        defer(rp, c);
        return H_LATER;
    }
    return nt < need ? H_BLOCKED : H_DONE;
}

/* Serve the buckets, most endangered first. */
static void serve_queue(struct repair *rp)
{
    bool moved_up = false;
    int restarts = 0;
    for (unsigned b = 0; b < NBUCKET; b++) {
        if (moved_up && restarts < 2) {
            moved_up = false;
            restarts++;
            b = 0;
        }
        struct idvec *q = &rp->q[b];
        size_t n = iv_len(q); /* every entry at most once per tick */
        for (size_t i = 0; i < n; i++) {
            uint64_t id;
            if (!iv_pop(q, &id)) break;
            struct cm_chunk *c = chunks_get(rp->cm, id);
            if (!c) continue;
            c->rq = 0;
            struct cls k;
            classify(rp, c, &k);
            int nb = bucket_of(&k);
            if (nb >= 0 && (unsigned)nb != b && !c->rops) {
                /* its danger changed since it was queued */
                c->rq = 1;
                iv_push(&rp->q[nb], id);
                if ((unsigned)nb < b) moved_up = true;
                continue;
            }
            int h = handle(rp, c);
            if (h == H_BLOCKED) {
                /* keep its place; stop this bucket when the cluster limit is hit */
                c->rq = 1;
                iv_push(q, id);
                if (b < BUCKET_DEL && (rp->running >= rp->o.max_running || !replication_allowed(rp))) {
                    /* put the rest back in order (rotate) */
                    for (size_t j = i + 1; j < n; j++) {
                        uint64_t x;
                        if (!iv_pop(q, &x)) break;
                        iv_push(q, x);
                    }
                    break;
                }
            }
        }
    }
}

static void serve_deferred(struct repair *rp)
{
    uint64_t now = chunks_now_ms(rp->cm);
    size_t n = iv_len(&rp->deferred);
    for (size_t i = 0; i < n; i++) {
        uint64_t id;
        if (!iv_pop(&rp->deferred, &id)) break;
        struct cm_chunk *c = chunks_get(rp->cm, id);
        if (!c) continue;
        if (c->retry_after_ms > now) {
            iv_push(&rp->deferred, id);
            continue;
        }
        c->rq = 0;
        if (leased(rp, c)) {
            /* still being written: look again after retry_ms */
            c->retry_after_ms = now + rp->o.retry_ms;
            defer(rp, c);
            continue;
        }
        enqueue(rp, c);
    }
}

/* ----- completions ----- */

static struct rop *find_op(struct repair *rp, void *token)
{
    for (struct rop *x = rp->ops.next; x != &rp->ops; x = x->next)
        if (x == token) return x;
    return NULL;
}

static struct cm_replica *rep_of(struct cm_chunk *c, uint32_t sid)
{
    for (unsigned i = 0; i < c->nrep; i++)
        if (c->reps[i].server_id == sid) return &c->reps[i];
    return NULL;
}

/* A rebalance copy is confirmed: remove the copy on the server it was moved
 * off (not "the fullest", which after the accounting above may be the new
 * one: that would undo the move and start it again). */
static void finish_move(struct repair *rp, struct cm_chunk *c, const struct rop *x)
{
    if (c->rops || leased(rp, c)) return;
    struct cm_replica *r = rep_of(c, x->from);
    struct cm_server *s = chunks_server(rp->cm, x->from);
    if (!r || !srv_up(s) || s->draining || r->state != DFS_RS_OK || r->version != c->version)
        return;
    struct cls k;
    classify(rp, c, &k);
    if (k.pending || k.bad || k.good_nd <= k.goal) return;
    delete_copy(rp, c, r);
}

void repair_replicate_done(struct repair *rp, void *token, int status, uint64_t length)
{
    struct rop *x = find_op(rp, token);
    if (!x) return;
    rop_unlink(x);
    rp->running--;
    struct srvstat *t = sstat(rp, x->server);
    if (t->tgt) t->tgt--;
    struct srvstat *s = sstat(rp, x->source);
    if (s->src) s->src--;
    if (x->kind == ROP_MOVE) {
        rp->moves_running--;
        if (t->bytes >= x->length) t->bytes -= x->length; /* reservation */
    }
    struct cm_chunk *c = chunks_get(rp->cm, x->chunk);
    if (c) {
        if (c->rops) c->rops--;
        struct cm_replica *r = rep_of(c, x->server);
        bool counts = status == DFS_OK && c->version == x->version;
        if (counts) {
            chunks_replica_set(rp->cm, c, x->server, x->version, DFS_RS_OK);
            if (length > c->length) c->length = length;
            rp->st.done++;
            rp->st.bytes += length ? length : x->length;
            t->bytes += length ? length : x->length;
            if (x->kind == ROP_MOVE && rp->leader) finish_move(rp, c, x);
        } else {
            rp->st.failed++;
            if (r && r->state == DFS_RS_PENDING) {
                if (status == DFS_OK) /* copied, but the chunk moved on: a stale copy */
                    chunks_replica_set(rp->cm, c, x->server, x->version, DFS_RS_STALE);
                else
                    chunks_replica_drop(rp->cm, c, x->server);
            }
            if (status != DFS_OK) c->retry_after_ms = chunks_now_ms(rp->cm) + rp->o.retry_ms;
            log_info("repair: chunk %llu to server %u: %s", (unsigned long long)x->chunk,
                     x->server, status == DFS_OK ? "version changed meanwhile" : dfs_strerror(status));
        }
        if (rp->leader) enqueue(rp, c);
    }
    free(x);
}

void repair_delete_done(struct repair *rp, void *token, int status)
{
    struct rop *x = find_op(rp, token);
    if (!x) return;
    rop_unlink(x);
    if (rp->deleting) rp->deleting--;
    struct cm_chunk *c = chunks_get(rp->cm, x->chunk);
    if (c) {
        if (c->rops) c->rops--;
        struct cm_replica *r = rep_of(c, x->server);
        if ((status == DFS_OK || status == DFS_ENOCHUNK) && r && r->version == x->version &&
            r->state == DFS_RS_STALE) {
            chunks_replica_drop(rp->cm, c, x->server);
            rp->st.deleted++;
            if (x->source) { /* was a good copy */
                struct srvstat *ss = sstat(rp, x->server);
                ss->bytes = ss->bytes >= c->length ? ss->bytes - c->length : 0;
            }
        } else if (status != DFS_OK && status != DFS_ENOCHUNK) {
            c->retry_after_ms = chunks_now_ms(rp->cm) + rp->o.retry_ms;
        }
        if (rp->leader) enqueue(rp, c);
    }
    free(x);
}

/* ----- GC ----- */

static void gc_step(struct repair *rp)
{
    size_t room = GC_LOCAL_MAX - rp->ngc;
    if (room) {
        rp->gc = xrealloc(rp->gc, GC_LOCAL_MAX * sizeof(*rp->gc));
        rp->ngc += chunks_gc_take(rp->cm, rp->gc + rp->ngc, (unsigned)room);
    }
    size_t keep = 0;
    for (size_t i = 0; i < rp->ngc; i++) {
        struct cm_gc *g = &rp->gc[i];
        struct cm_server *s = chunks_server(rp->cm, g->server_id);
        if (!srv_up(s)) continue; /* its REPORT flags the orphan when it returns */
        struct srvstat *ss = sstat(rp, g->server_id);
        if (ss->tokens < 1) {
            rp->gc[keep++] = *g;
            continue;
        }
        if (rp->io.del(rp->io.arg, g->server_id, g->chunk_id, g->version, NULL) == DFS_OK) {
            ss->tokens -= 1;
            rp->st.gc_sent++;
        }
    }
    rp->ngc = keep;
}

/* ----- background scan, server changes, rebalance ----- */

static void scan_step(struct repair *rp)
{
    uint64_t now = chunks_now_ms(rp->cm);
    for (uint32_t n = 0; n < rp->o.scan_per_tick; n++) {
        struct cm_chunk *c = chunks_iter(rp->cm, &rp->cursor);
        if (!c) {
            /* wrapped: publish stored bytes per server */
            for (uint32_t i = 0; i < rp->nss; i++) {
                rp->ss[i].bytes = rp->ss[i].scan_bytes;
                rp->ss[i].scan_bytes = 0;
            }
            /* reservations of running moves */
            for (struct rop *x = rp->ops.next; x != &rp->ops; x = x->next)
                if (x->kind == ROP_MOVE) sstat(rp, x->server)->bytes += x->length;
            rp->scanned_once = true;
            break;
        }
        for (unsigned i = 0; i < c->nrep; i++) {
            struct cm_replica *r = &c->reps[i];
            if (r->state == DFS_RS_OK && r->version == c->version)
                sstat(rp, r->server_id)->scan_bytes += c->length;
        }
        if (!c->rq && !c->rops && c->retry_after_ms <= now) enqueue(rp, c);
    }
}

static bool servers_changed(struct repair *rp)
{
    uint64_t now = chunks_now_ms(rp->cm);
    bool changed = false;
    for (uint32_t i = 0;; i++) {
        struct cm_server *s = chunks_server_at(rp->cm, i);
        if (!s) break;
        uint32_t key = s->state | (s->draining ? 0x10u : 0) | (srv_gone(rp, s, now) ? 0x20u : 0);
        struct srvstat *ss = sstat(rp, s->id);
        if (ss->key != key) {
            if (ss->key != ~0u)
                log_info("repair: server %u is now %s%s", s->id,
                         s->state == DFS_SS_DOWN ? (key & 0x20u ? "gone" : "down") : "up",
                         s->draining ? " (draining)" : "");
            ss->key = key;
            changed = true;
        }
    }
    return changed;
}

static bool queue_empty(struct repair *rp)
{
    for (unsigned b = 0; b < BUCKET_DEL; b++)
        if (iv_len(&rp->q[b])) return false;
    return true;
}

/* Repair work exists: chunks queued (any bucket, deletions too), repair
 * replications running, or a deferred chunk below its goal. */
static bool repair_busy(struct repair *rp)
{
    if (!queue_empty(rp) || iv_len(&rp->q[BUCKET_DEL])) return true;
    if (rp->running > rp->moves_running) return true;
    struct idvec *d = &rp->deferred;
    for (size_t i = d->head; i < d->n; i++) {
        struct cm_chunk *c = chunks_get(rp->cm, d->v[i]);
        if (!c) continue;
        struct cls k;
        classify(rp, c, &k);
        if (k.good && k.good_nd + k.pending + k.maybe < k.goal) return true;
    }
    return false;
}

static void rebalance_step(struct repair *rp)
{
    if (!rp->o.rebalance_pct || !rp->scanned_once || !replication_allowed(rp)) return;
    if (rp->moves_running >= rp->o.rebalance_max || repair_busy(rp)) return;
    if (rp->running >= rp->o.max_running) return;
    /* servers that may take part: up, not draining, with a capacity */
    double sum_b = 0, sum_t = 0, lo = 2, hi = -1;
    uint32_t e = 0, f = 0;
    for (uint32_t i = 0;; i++) {
        struct cm_server *s = chunks_server_at(rp->cm, i);
        if (!s) break;
        if (s->state != DFS_SS_UP || s->draining || !s->total) continue;
        double r = ratio(rp, s->id);
        sum_b += (double)sstat(rp, s->id)->bytes;
        sum_t += (double)s->total;
        if (r < lo && s->avail > (64ull << 20)) lo = r, e = s->id;
        if (r > hi) hi = r, f = s->id;
    }
    if (!e || !f || e == f || sum_t <= 0) return;
    /* tolerance relative to the mean usage */
    double mean = sum_b / sum_t, tol = mean * rp->o.rebalance_pct / 100.0;
    if (mean <= 0 || !(lo < mean - tol || hi > mean + tol) || hi - lo <= tol) return;
    /* A relative spread of a few MB is noise (a fresh small file), not worth
     * copying data around for. */
    uint64_t fb = sstat(rp, f)->bytes, eb = sstat(rp, e)->bytes;
    if (fb <= eb || fb - eb < rp->o.rebalance_min_bytes) return;
    struct cm_server *es_srv = chunks_server(rp->cm, e), *fs_srv = chunks_server(rp->cm, f);
    struct srvstat *es = sstat(rp, e);
    uint64_t now = chunks_now_ms(rp->cm);
    for (uint32_t n = 0; n < 4096; n++) {
        if (rp->moves_running >= rp->o.rebalance_max || es->tgt >= rp->o.max_per_target ||
            rp->running >= rp->o.max_running)
            break;
        struct cm_chunk *c = chunks_iter(rp->cm, &rp->rcursor);
        if (!c) break;
        if (c->rq || c->rops || !c->length || leased(rp, c) || c->retry_after_ms > now) continue;
        /* a move must not turn the pair around (no ping-pong) */
        if (ratio(rp, e) + (double)c->length / (double)es_srv->total >
            ratio(rp, f) - (double)c->length / (double)fs_srv->total)
            continue;
        if (rep_of(c, e)) continue;
        struct cm_replica *onf = rep_of(c, f);
        if (!onf || onf->state != DFS_RS_OK || onf->version != c->version) continue;
        struct cls k;
        classify(rp, c, &k);
        if (k.bad || k.pending || k.drain || k.good_nd != k.goal || k.maybe) continue;
        uint32_t src[DFS_MAX_GOAL * 2 + 2];
        unsigned nsrc = pick_sources(rp, c, src, sizeof(src) / sizeof(src[0]));
        if (!nsrc || sstat(rp, src[0])->src >= rp->o.max_per_source) continue;
        struct rop *mv = start_replicate(rp, c, e, src, nsrc, ROP_MOVE);
        if (mv) mv->from = f;
        /* the copy on f goes once the new one is confirmed (surplus, fullest first) */
        if (ratio(rp, e) >= mean - tol / 2 && ratio(rp, f) <= mean + tol) break;
    }
}

void repair_tick(struct repair *rp)
{
    if (!rp->leader) return;
    uint64_t now = chunks_now_ms(rp->cm);
    uint64_t dt = rp->last_tick && now > rp->last_tick ? now - rp->last_tick : rp->o.tick_ms;
    rp->last_tick = now;
    for (uint32_t i = 0; i < rp->nss; i++) {
        rp->ss[i].tokens += (double)rp->o.gc_rate * (double)dt / 1000.0;
        if (rp->ss[i].tokens > rp->o.gc_rate) rp->ss[i].tokens = rp->o.gc_rate;
    }
    if (servers_changed(rp)) rp->all_pending = true;
    if (rp->all_pending) {
        rp->all_pending = false;
        scan_all(rp);
    }
    serve_deferred(rp);
    scan_step(rp);
    serve_queue(rp);
    gc_step(rp);
    rebalance_step(rp);
}

void repair_stats(struct repair *rp, struct repair_stats *st)
{
    *st = rp->st;
    uint64_t q = iv_len(&rp->deferred);
    for (unsigned b = 0; b < NBUCKET; b++) q += iv_len(&rp->q[b]);
    st->queued = q;
    st->running = rp->running;
    st->deleting = rp->deleting;
    st->gc_queued = rp->ngc + chunks_gc_pending(rp->cm);
}
