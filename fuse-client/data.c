/* data.c - dfsmount client core: inode table, chunk cache, write buffers, read-ahead. */
#include "data.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "checksum.h"
#include "log.h"
#include "util.h"

#define WREQ_MAX (2u << 20)      /* bytes per chunk WRITE */
#define RREQ_MAX (1u << 20)      /* bytes per chunk READ */
#define RA_MIN (1u << 20)        /* first read-ahead window */
#define MAX_EXTENTS 1024         /* buffered extents before writing out */
#define CHUNKS_PAGE 128u         /* chunk entries asked per CHUNKS */
#define CHUNK_CACHE_MS 30000     /* cached chunk locations are trusted this long */
#define GRANT_MARGIN_MS 2000     /* renew a write lease this long before it ends */
#define SRV_BAD_MS 3000          /* a failed server is tried last for this long */
#define FLUSH_AGE_MS 1000        /* buffered data older than this is written out */
#define COMMIT_AGE_MS 3000       /* uncommitted size/mtime older than this is committed */

/* A chunk server connection.  The list only grows (entries live as long as
 * the client), so struct dchunk may point to entries without a reference. */
struct dsrv {
    struct dsrv *next;
    uint32_t id;
    char host[256];
    int port;
    struct rpc_conn *conn; /* srv_mu */
    uint64_t bad_until_ms; /* srv_mu */
    uint64_t down_since_ms; /* srv_mu: first seen unconnected (0: seen connected) */
};

/* ----- small helpers ----- */

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static bool retryable(int st)
{
    switch (st) {
    case DFS_ECONN: case DFS_ETIMEDOUT: case DFS_ECANCELED: case DFS_ESTALE:
    case DFS_ENOCHUNK: case DFS_EIO: case DFS_EDISK: case DFS_ECORRUPT: case DFS_EBUSY:
    case DFS_EAGAIN: case DFS_ENOSERVERS: case DFS_ENOTLEADER: case DFS_EPROTO:
    case DFS_ENOSPC:
        return true;
    default:
        return false;
    }
}

void data_cred(struct dfs_cred *cr, uint32_t uid, uint32_t gid, uint64_t *groups,
               uint32_t ngroups)
{
    memset(cr, 0, sizeof(*cr));
    cr->uid = uid;
    cr->gid = gid;
    cr->groups = groups;
    cr->groups_count = ngroups;
}

/* ----- chunk servers ----- */

static const struct rpc_conn_opts *chunk_opts(struct dfsc *c)
{
    static struct rpc_conn_opts o;
    o.role = DFS_ROLE_CLIENT;
    o.node_id = c->session;
    o.max_frame_in = DFS_MAX_FRAME_CHUNKD;
    o.connect_timeout_ms = 3000;
    return &o;
}

static struct dsrv *srv_get(struct dfsc *c, uint32_t id, const char *host, int port)
{
    pthread_mutex_lock(&c->srv_mu);
    struct dsrv *s;
    for (s = c->servers; s; s = s->next)
        if (s->port == port && strcmp(s->host, host) == 0)
            break;
    if (s == NULL) {
        s = calloc(1, sizeof(*s));
        if (s) {
            snprintf(s->host, sizeof(s->host), "%s", host);
            s->port = port;
            s->next = c->servers;
            c->servers = s;
        }
    }
    if (s)
        s->id = id;
    pthread_mutex_unlock(&c->srv_mu);
    return s;
}

static struct rpc_conn *srv_conn(struct dfsc *c, struct dsrv *s)
{
    pthread_mutex_lock(&c->srv_mu);
    uint64_t now = dfs_mono_ms();
    if (s->conn == NULL) {
        s->conn = rpc_mt_connect(c->mt, s->host, s->port, chunk_opts(c));
        s->down_since_ms = now; /* a new link gets a second to connect */
    }
    struct rpc_conn *conn = s->conn;
    /* A call on a link that is down waits in the queue until its deadline:
     * once the server is known unreachable (its link was up and is lost, or
     * a new one did not come up within a second) fail at once (DFS_ECONN),
     * so the caller fails over or asks for a new chain, as chunkd's
     * peer_get does for chain forwards. */
    if (conn && rpc_conn_ready(conn)) {
        s->down_since_ms = 0;
    } else if (conn) {
        if (s->down_since_ms == 0)
            s->down_since_ms = now > 1001 ? now - 1001 : 1; /* was up: lost */
        if (now - s->down_since_ms > 1000)
            conn = NULL;
    }
    pthread_mutex_unlock(&c->srv_mu);
    return conn;
}

/* Deadline of one call on conn: a link still connecting gets a few seconds. */
static uint32_t srv_call_ms(struct dfsc *c, struct rpc_conn *conn)
{
    if (conn && !rpc_conn_ready(conn))
        return DFS_MIN(c->chunk_timeout_ms, 3000u);
    return c->chunk_timeout_ms;
}

static void srv_mark_bad(struct dfsc *c, struct dsrv *s)
{
    pthread_mutex_lock(&c->srv_mu);
    s->bad_until_ms = dfs_mono_ms() + SRV_BAD_MS;
    pthread_mutex_unlock(&c->srv_mu);
}

static bool srv_is_bad(struct dfsc *c, struct dsrv *s)
{
    pthread_mutex_lock(&c->srv_mu);
    bool bad = s->bad_until_ms > dfs_mono_ms();
    pthread_mutex_unlock(&c->srv_mu);
    return bad;
}

/* ----- the inode table ----- */

int dfsc_init(struct dfsc *c)
{
    pthread_mutex_init(&c->itab_mu, NULL);
    pthread_mutex_init(&c->srv_mu, NULL);
    pthread_mutex_init(&c->fl_mu, NULL);
    pthread_cond_init(&c->fl_cv, NULL);
    c->nbuckets = 4096;
    c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
    if (c->ra_max == 0)
        c->ra_max = 8u << 20;
    if (c->wbuf_max == 0)
        c->wbuf_max = 2u << 20;
    if (c->chunk_timeout_ms == 0)
        c->chunk_timeout_ms = DFS_MIN(c->timeout_ms, 30000u);
    return c->buckets ? 0 : -1;
}

static size_t bucket_of(const struct dfsc *c, uint64_t ino)
{
    return (size_t)((ino * 0x9E3779B97F4A7C15ull) >> 20) & (c->nbuckets - 1);
}

static void itab_grow(struct dfsc *c)
{
    size_t nb = c->nbuckets * 2;
    struct dnode **b = calloc(nb, sizeof(*b));
    if (b == NULL)
        return;
    struct dnode **old = c->buckets;
    size_t oldn = c->nbuckets;
    c->buckets = b;
    c->nbuckets = nb;
    for (size_t i = 0; i < oldn; i++) {
        struct dnode *n = old[i], *nx;
        for (; n; n = nx) {
            nx = n->hnext;
            size_t k = bucket_of(c, n->ino);
            n->hnext = b[k];
            b[k] = n;
        }
    }
    free(old);
}

static struct dnode *itab_find(struct dfsc *c, uint64_t ino)
{
    for (struct dnode *n = c->buckets[bucket_of(c, ino)]; n; n = n->hnext)
        if (n->ino == ino)
            return n;
    return NULL;
}

struct dnode *dnode_find(struct dfsc *c, uint64_t ino)
{
    pthread_mutex_lock(&c->itab_mu);
    struct dnode *n = itab_find(c, ino);
    if (n)
        n->refs++;
    pthread_mutex_unlock(&c->itab_mu);
    return n;
}

struct dnode *dnode_get(struct dfsc *c, uint64_t ino)
{
    pthread_mutex_lock(&c->itab_mu);
    struct dnode *n = itab_find(c, ino);
    if (n == NULL) {
        n = calloc(1, sizeof(*n));
        if (n == NULL) {
            pthread_mutex_unlock(&c->itab_mu);
            return NULL;
        }
        n->ino = ino;
        pthread_mutex_init(&n->mu, NULL);
        if (c->count >= c->nbuckets)
            itab_grow(c);
        size_t k = bucket_of(c, ino);
        n->hnext = c->buckets[k];
        c->buckets[k] = n;
        c->count++;
    }
    n->refs++;
    pthread_mutex_unlock(&c->itab_mu);
    return n;
}

static void node_release_io(struct dfsc *c, struct dnode *n);

static void node_free(struct dfsc *c, struct dnode *n)
{
    node_release_io(c, n);
    free(n->chunks);
    pthread_mutex_destroy(&n->mu);
    free(n);
}

/* itab_mu held: unlink and return n if nothing uses it any more. */
static struct dnode *maybe_unlink(struct dfsc *c, struct dnode *n)
{
    if (n->nlookup || n->nopen || n->refs)
        return NULL;
    struct dnode **pp = &c->buckets[bucket_of(c, n->ino)];
    while (*pp && *pp != n)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = n->hnext;
    c->count--;
    return n;
}

void dnode_put(struct dfsc *c, struct dnode *n)
{
    if (n == NULL)
        return;
    pthread_mutex_lock(&c->itab_mu);
    DFS_ASSERT(n->refs > 0);
    n->refs--;
    struct dnode *f = maybe_unlink(c, n);
    pthread_mutex_unlock(&c->itab_mu);
    if (f)
        node_free(c, f);
}

void dnode_lookup_add(struct dfsc *c, struct dnode *n, uint64_t cnt)
{
    pthread_mutex_lock(&c->itab_mu);
    n->nlookup += cnt;
    pthread_mutex_unlock(&c->itab_mu);
}

void dnode_forget(struct dfsc *c, uint64_t ino, uint64_t cnt)
{
    pthread_mutex_lock(&c->itab_mu);
    struct dnode *n = itab_find(c, ino), *f = NULL;
    if (n) {
        n->nlookup = n->nlookup > cnt ? n->nlookup - cnt : 0;
        f = maybe_unlink(c, n);
    }
    pthread_mutex_unlock(&c->itab_mu);
    if (f)
        node_free(c, f);
}

void dnode_open_add(struct dfsc *c, struct dnode *n, bool writer)
{
    pthread_mutex_lock(&c->itab_mu);
    n->nopen++;
    if (writer)
        n->nwriters++;
    pthread_mutex_unlock(&c->itab_mu);
}

void dnode_open_drop(struct dfsc *c, struct dnode *n, bool writer)
{
    pthread_mutex_lock(&c->itab_mu);
    if (n->nopen)
        n->nopen--;
    if (writer && n->nwriters)
        n->nwriters--;
    pthread_mutex_unlock(&c->itab_mu);
}

void dnode_set_attr(struct dnode *n, const struct dfs_attr *a)
{
    n->attr = *a;
    n->have_attr = true;
}

void dnode_patch_attr(const struct dnode *n, struct dfs_attr *a)
{
    if (n->dirty_meta) {
        a->size = n->size;
        if (n->mtime > a->mtime)
            a->mtime = n->mtime;
        if (n->mtime > a->ctime)
            a->ctime = n->mtime;
    }
}

static uint64_t node_size(const struct dnode *n)
{
    return n->dirty_meta ? n->size : n->attr.size;
}

/* ----- chunk cache ----- */

static struct dchunk *chunk_slot(struct dnode *n, uint64_t idx)
{
    if (idx >= n->nchunks) {
        size_t nn = n->nchunks ? n->nchunks : 8;
        while (nn <= idx)
            nn *= 2;
        if (nn > (1u << 26))
            return NULL;
        struct dchunk *p = realloc(n->chunks, nn * sizeof(*p));
        if (p == NULL)
            return NULL;
        memset(p + n->nchunks, 0, (nn - n->nchunks) * sizeof(*p));
        n->chunks = p;
        n->nchunks = nn;
    }
    return &n->chunks[idx];
}

static void chunk_fill(struct dfsc *c, struct dchunk *dc, const struct dfs_chunk *ch)
{
    dc->known = true;
    dc->exists = true;
    if (dc->chunk_id != ch->chunk_id) {
        dc->unsynced = false;
        dc->fresh = false;
    }
    dc->chunk_id = ch->chunk_id;
    dc->version = ch->version;
    dc->nrep = 0;
    for (uint32_t i = 0; i < ch->replicas_count && dc->nrep < DFS_MAX_GOAL; i++) {
        const struct dfs_replica *r = &ch->replicas[i];
        if (r->host.ptr == NULL || r->port == 0)
            continue;
        struct dsrv *s = srv_get(c, r->server_id, r->host.ptr, (int)r->port);
        if (s == NULL)
            continue;
        dc->rep[dc->nrep] = s;
        dc->rep_id[dc->nrep] = r->server_id;
        dc->nrep++;
    }
}

static void data_metad_cred(struct dfs_cred *cr)
{
    data_cred(cr, 0, 0, NULL, 0);
}

/* metad listed chunks [first, first+count): chs (the existing ones). */
static void chunks_listed(struct dfsc *c, struct dnode *n, uint64_t first, uint32_t count,
                          const struct dfs_chunk *chs, uint32_t nch)
{
    uint64_t now = dfs_mono_ms();
    if (count > 0 && chunk_slot(n, first + count - 1) != NULL) {
        for (uint64_t i = first; i < first + count; i++) {
            struct dchunk *dc = &n->chunks[i];
            if (dc->grant_until_ms > now)
                continue; /* our own write lease is newer than any listing */
            dc->known = true;
            dc->exists = false;
        }
    }
    for (uint32_t i = 0; i < nch; i++) {
        struct dchunk *dc = chunk_slot(n, chs[i].index);
        if (dc == NULL || dc->grant_until_ms > now)
            continue;
        chunk_fill(c, dc, &chs[i]);
    }
    n->chunks_ms = now;
}

/* Ask metad for chunks [first, first+count) (and the layout). */
static int fetch_chunks(struct dfsc *c, struct dnode *n, uint64_t first, uint32_t count)
{
    struct dfs_msg_chunks_req rq;
    memset(&rq, 0, sizeof(rq));
    data_metad_cred(&rq.cred);
    rq.ino = n->ino;
    rq.first = first;
    rq.count = count;
    struct dfs_frame *rep = NULL;
    int st = mclient_call(c->mc, DFS_OP_CHUNKS, &rq, &rep);
    if (st != DFS_OK)
        return st;
    st = (int)rep->status;
    if (st == DFS_OK) {
        const struct dfs_msg_chunks_resp *r = rep->body;
        if (layout_valid(&r->layout)) {
            n->layout = r->layout;
            n->have_layout = true;
        } else if (!n->have_layout) {
            log_warn("inode %llu: metad sent an invalid layout (%u/%u/%llu)",
                     (unsigned long long)n->ino, r->layout.stripe_unit, r->layout.stripe_count,
                     (unsigned long long)r->layout.chunk_size);
            st = DFS_EPROTO;
        }
        if (n->have_attr)
            n->attr.size = r->size;
        chunks_listed(c, n, first, count, r->chunks, r->chunks_count);
    }
    rpc_frame_release(rep);
    return st;
}

void data_seed_chunks(struct dfsc *c, struct dnode *n, const struct dfs_layout *l,
                      const struct dfs_chunk *chs, uint32_t nch, uint32_t known)
{
    if (!layout_valid(l))
        return;
    if (!n->have_layout) {
        n->layout = *l;
        n->have_layout = true;
    }
    if (known > 0 && n->layout.stripe_unit == l->stripe_unit &&
        n->layout.stripe_count == l->stripe_count && n->layout.chunk_size == l->chunk_size)
        chunks_listed(c, n, 0, known, chs, nch);
}

void data_seed_created(struct dfsc *c, struct dnode *n, const struct dfs_layout *l,
                       const struct dfs_chunk *chs, uint32_t nch, uint32_t known)
{
    data_seed_chunks(c, n, l, chs, nch, known);
    if (!n->have_layout || known == 0)
        return;
    uint64_t now = dfs_mono_ms();
    for (uint32_t i = 0; i < nch; i++) {
        if (chs[i].lease_ms == 0 || chs[i].index >= known || chs[i].index >= n->nchunks)
            continue;
        struct dchunk *dc = &n->chunks[chs[i].index];
        if (!dc->known || dc->chunk_id != chs[i].chunk_id || dc->nrep == 0)
            continue;
        /* Our write lease, exactly as a GRANT answer would give it. */
        dc->grant_until_ms = now + chs[i].lease_ms;
        dc->fresh = chs[i].length == 0;
    }
}

int data_ensure_layout(struct dfsc *c, struct dnode *n)
{
    if (n->have_layout)
        return DFS_OK;
    return fetch_chunks(c, n, 0, 16);
}

/* Make sure chunk locations for [first, last] are cached. */
static int ensure_chunks(struct dfsc *c, struct dnode *n, uint64_t first, uint64_t last)
{
    uint64_t now = dfs_mono_ms();
    if (n->chunks_ms + CHUNK_CACHE_MS < now) {
        for (size_t i = 0; i < n->nchunks; i++)
            if (n->chunks[i].grant_until_ms <= now)
                n->chunks[i].known = false;
    }
    for (uint64_t i = first; i <= last; i++) {
        if (i < n->nchunks && n->chunks[i].known)
            continue;
        uint64_t cnt = DFS_MAX(last - i + 1, (uint64_t)CHUNKS_PAGE);
        if (cnt > 4096)
            cnt = 4096;
        int st = fetch_chunks(c, n, i, (uint32_t)cnt);
        if (st != DFS_OK)
            return st;
        if (i >= n->nchunks || !n->chunks[i].known)
            return DFS_EIO;
    }
    return DFS_OK;
}

/* Get (or reuse) a write lease for chunk idx.  bad_server: a server that
 * failed in the current chain, so metad repairs the chain. */
static int get_grant(struct dfsc *c, struct dnode *n, uint64_t idx, uint32_t bad_server,
                     struct dchunk **out)
{
    struct dchunk *dc = chunk_slot(n, idx);
    if (dc == NULL)
        return DFS_ENOMEM;
    uint64_t now = dfs_mono_ms();
    if (bad_server == 0 && dc->grant_until_ms > now + GRANT_MARGIN_MS && dc->nrep > 0) {
        *out = dc;
        return DFS_OK;
    }
    struct dfs_msg_grant rq;
    memset(&rq, 0, sizeof(rq));
    data_metad_cred(&rq.cred);
    rq.ino = n->ino;
    rq.index = idx;
    rq.bad_server = bad_server;
    struct dfs_frame *rep = NULL;
    int st = mclient_call(c->mc, DFS_OP_GRANT, &rq, &rep);
    if (st != DFS_OK)
        return st;
    st = (int)rep->status;
    if (st == DFS_OK) {
        const struct dfs_msg_grant_resp *r = rep->body;
        dc = chunk_slot(n, idx);
        chunk_fill(c, dc, &r->chunk);
        uint32_t lease = r->chunk.lease_ms ? r->chunk.lease_ms : 10000;
        dc->grant_until_ms = dfs_mono_ms() + lease;
        if (dc->nrep == 0)
            st = DFS_ENOSERVERS;
        *out = dc;
    }
    rpc_frame_release(rep);
    return st;
}

/* ----- writes ----- */

struct wreq {
    uint64_t index, chunk_off;
    uint32_t len;
    char *buf;
    bool own;           /* buf was allocated for this request */
    uint32_t version;   /* grant it was sent under */
    uint32_t first_srv; /* server id of chain[0] */
    struct dsrv *srv;
    struct dfs_replica chain[DFS_MAX_GOAL];
    struct dfs_msg_write msg;
    struct rpc_result res;
};

struct dflight {
    struct rpc_batch b;
    struct wreq *r;
    size_t nr;
    struct dext *ext; /* the extents the requests borrow from */
    size_t next;
};

struct wpiece {
    uint64_t index, chunk_off;
    uint32_t len;
    char *src;
};

static int wpiece_cmp(const void *a, const void *b)
{
    const struct wpiece *x = a, *y = b;
    if (x->index != y->index)
        return x->index < y->index ? -1 : 1;
    return x->chunk_off < y->chunk_off ? -1 : x->chunk_off > y->chunk_off;
}

/* Fill msg/chain of r from the chunk's current grant and send it. */
static void wreq_submit(struct dfsc *c, struct dflight *f, struct wreq *r, struct dchunk *dc)
{
    memset(&r->msg, 0, sizeof(r->msg));
    r->msg.chunk_id = dc->chunk_id;
    r->msg.version = dc->version;
    r->msg.offset = r->chunk_off;
    r->msg.flags = DFS_WF_CREATE;
    for (uint32_t i = 1; i < dc->nrep; i++) {
        r->chain[i - 1].server_id = dc->rep_id[i];
        r->chain[i - 1].host.ptr = dc->rep[i]->host;
        r->chain[i - 1].host.len = (uint32_t)strlen(dc->rep[i]->host);
        r->chain[i - 1].port = (uint32_t)dc->rep[i]->port;
        r->chain[i - 1].state = DFS_RS_OK;
    }
    r->msg.chain = r->chain;
    r->msg.chain_count = dc->nrep - 1;
    r->msg.csum = csum_buf(r->buf, r->len);
    r->msg.data.ptr = r->buf;
    r->msg.data.len = r->len;
    r->version = dc->version;
    r->first_srv = dc->rep_id[0];
    r->srv = dc->rep[0];
    dc->fresh = false; /* (a failed write is reported; reads then ask the chain) */
    struct rpc_conn *conn = srv_conn(c, dc->rep[0]);
    r->res.status = DFS_ECONN;
    r->res.reply = NULL;
    if (conn == NULL)
        return;
    rpc_mt_submit(c->mt, conn, DFS_OP_WRITE, &r->msg, srv_call_ms(c, conn), &f->b, &r->res);
}

/* Outcome of a finished write/sync: DFS_OK or an error plus the server to blame. */
static int wres_status(const struct rpc_result *res, uint32_t first_srv, uint32_t *bad)
{
    *bad = 0;
    if (res->status != DFS_OK) {
        *bad = first_srv;
        return res->status;
    }
    const struct dfs_msg_write_resp *wr = res->reply->body;
    if (res->reply->status == DFS_OK)
        return DFS_OK;
    *bad = wr->failed_server;
    return (int)res->reply->status;
}

/* Retry one failed write synchronously until it succeeds or time runs out. */
static int wreq_retry(struct dfsc *c, struct dnode *n, struct wreq *r, int st, uint32_t bad)
{
    uint64_t deadline = dfs_mono_ms() + c->timeout_ms;
    unsigned backoff = 50;
    unsigned nospc = 0; /* chains that answered ENOSPC */
    for (;;) {
        if (st == DFS_ENOSPC && ++nospc >= 2) {
            /* A repaired chain is out of space too: the cluster is full. */
            log_warn("inode %llu chunk %llu: write failed: no space left on the chain",
                     (unsigned long long)n->ino, (unsigned long long)r->index);
            return DFS_ENOSPC;
        }
        if (!retryable(st) || dfs_mono_ms() >= deadline) {
            log_warn("inode %llu chunk %llu: write failed: %s", (unsigned long long)n->ino,
                     (unsigned long long)r->index, dfs_strerror(st));
            return st;
        }
        struct dchunk *dc = chunk_slot(n, r->index);
        if (dc == NULL)
            return DFS_ENOMEM;
        /* Another failed request may already have repaired this chain. */
        if (dc->version != r->version && dc->grant_until_ms > dfs_mono_ms())
            bad = 0;
        else if (bad == 0 || st == DFS_ESTALE || st == DFS_ENOCHUNK)
            dc->grant_until_ms = 0; /* just renew the lease */
        if (bad) {
            for (uint32_t i = 0; i < dc->nrep; i++)
                if (dc->rep_id[i] == bad)
                    srv_mark_bad(c, dc->rep[i]);
            log_info("inode %llu chunk %llu: server %u failed (%s), asking for a new chain",
                     (unsigned long long)n->ino, (unsigned long long)r->index, bad,
                     dfs_strerror(st));
        }
        int gst = get_grant(c, n, r->index, bad, &dc);
        if (gst == DFS_ENOSPC || gst == DFS_ENOSERVERS) {
            /* metad has no server that can take this chain. */
            log_warn("inode %llu chunk %llu: write failed: %s", (unsigned long long)n->ino,
                     (unsigned long long)r->index, dfs_strerror(gst));
            return gst;
        }
        if (gst != DFS_OK) {
            st = gst;
            if (!retryable(gst))
                continue;
            sleep_ms(backoff);
            backoff = DFS_MIN(backoff * 2, 1000u);
            continue;
        }
        struct dflight one;
        memset(&one, 0, sizeof(one));
        rpc_batch_init(&one.b);
        wreq_submit(c, &one, r, dc);
        rpc_batch_wait(&one.b);
        rpc_batch_destroy(&one.b);
        st = wres_status(&r->res, r->first_srv, &bad);
        rpc_frame_release(r->res.reply);
        r->res.reply = NULL;
        if (st == DFS_OK) {
            dc->unsynced = true;
            return DFS_OK;
        }
        sleep_ms(backoff);
        backoff = DFS_MIN(backoff * 2, 1000u);
    }
}

static void free_extents(struct dext *e, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(e[i].buf);
    free(e);
}

/* Wait for the writes in flight and retry the failed ones. */
static int finish_flight(struct dfsc *c, struct dnode *n)
{
    struct dflight *f = n->flight;
    if (f == NULL)
        return DFS_OK;
    n->flight = NULL;
    rpc_batch_wait(&f->b);
    int ret = DFS_OK;
    for (size_t i = 0; i < f->nr; i++) {
        struct wreq *r = &f->r[i];
        uint32_t bad;
        int st = wres_status(&r->res, r->first_srv, &bad);
        rpc_frame_release(r->res.reply);
        r->res.reply = NULL;
        if (st == DFS_OK) {
            struct dchunk *dc = chunk_slot(n, r->index);
            if (dc)
                dc->unsynced = true;
        } else {
            st = wreq_retry(c, n, r, st, bad);
            if (st != DFS_OK && ret == DFS_OK)
                ret = st;
        }
        if (r->own)
            free(r->buf);
    }
    rpc_batch_destroy(&f->b);
    free(f->r);
    free_extents(f->ext, f->next);
    free(f);
    if (ret != DFS_OK && n->werr == 0)
        n->werr = ret;
    return ret;
}

static void drop_windows(struct dnode *n);

/* Send every buffered extent (without waiting for the answers). */
static int start_flight(struct dfsc *c, struct dnode *n)
{
    int st = finish_flight(c, n);
    if (n->next == 0)
        return st;
    drop_windows(n);
    st = data_ensure_layout(c, n);
    if (st != DFS_OK)
        return st;
    size_t np = 0;
    for (size_t i = 0; i < n->next; i++)
        np += layout_npieces(&n->layout, n->ext[i].off, n->ext[i].len);
    struct wpiece *p = malloc(np * sizeof(*p));
    struct layout_piece *lp = malloc(np * sizeof(*lp));
    struct dflight *f = calloc(1, sizeof(*f));
    struct wreq *rq = malloc(np * sizeof(*rq));
    if (p == NULL || lp == NULL || f == NULL || rq == NULL) {
        free(p);
        free(lp);
        free(f);
        free(rq);
        return DFS_ENOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < n->next; i++) {
        size_t m = layout_split(&n->layout, n->ext[i].off, n->ext[i].len, lp + k, np - k);
        for (size_t j = 0; j < m; j++) {
            p[k + j].index = lp[k + j].index;
            p[k + j].chunk_off = lp[k + j].chunk_off;
            p[k + j].len = lp[k + j].len;
            p[k + j].src = n->ext[i].buf + (lp[k + j].file_off - n->ext[i].off);
        }
        k += m;
    }
    free(lp);
    qsort(p, np, sizeof(*p), wpiece_cmp);
    /* Merge pieces that are contiguous inside one chunk into one WRITE. */
    size_t nr = 0;
    for (size_t i = 0; i < np;) {
        size_t j = i + 1;
        uint64_t len = p[i].len;
        while (j < np && p[j].index == p[i].index &&
               p[j].chunk_off == p[i].chunk_off + len && len + p[j].len <= WREQ_MAX) {
            len += p[j].len;
            j++;
        }
        struct wreq *r = &rq[nr++];
        memset(r, 0, sizeof(*r));
        r->index = p[i].index;
        r->chunk_off = p[i].chunk_off;
        r->len = (uint32_t)len;
        if (j == i + 1) {
            r->buf = p[i].src;
        } else {
            r->buf = malloc(len);
            r->own = true;
            if (r->buf == NULL) {
                /* Out of memory: send the pieces one by one instead. */
                r->own = false;
                r->buf = p[i].src;
                r->len = p[i].len;
                j = i + 1;
            } else {
                size_t o = 0;
                for (size_t q = i; q < j; q++) {
                    memcpy(r->buf + o, p[q].src, p[q].len);
                    o += p[q].len;
                }
            }
        }
        i = j;
    }
    free(p);
    f->r = rq;
    f->nr = nr;
    f->ext = n->ext;
    f->next = n->next;
    n->ext = NULL;
    n->next = n->capext = 0;
    n->dirty_bytes = 0;
    rpc_batch_init(&f->b);
    for (size_t i = 0; i < nr; i++) {
        struct dchunk *dc = NULL;
        int gst = get_grant(c, n, rq[i].index, 0, &dc);
        if (gst != DFS_OK) {
            rq[i].res.status = gst == DFS_ETIMEDOUT ? DFS_ETIMEDOUT : gst;
            rq[i].res.reply = NULL;
            rq[i].first_srv = 0;
            continue;
        }
        wreq_submit(c, f, &rq[i], dc);
    }
    n->flight = f;
    return DFS_OK;
}

/* Insert [off, off+len) into the sorted extent list. */
static int ext_insert(struct dnode *n, uint64_t off, const char *buf, size_t len)
{
    uint64_t end = off + len;
    /* Find the first extent whose end reaches off. */
    size_t lo = 0, hi = n->next;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (n->ext[mid].off + n->ext[mid].len < off)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t i = lo;
    /* Fast path: extend or overwrite inside extent i without touching i+1. */
    if (i < n->next && n->ext[i].off <= off &&
        (i + 1 >= n->next || n->ext[i + 1].off > end)) {
        struct dext *e = &n->ext[i];
        uint64_t nend = DFS_MAX(end, e->off + e->len);
        size_t need = (size_t)(nend - e->off);
        if (need > e->cap) {
            size_t nc = DFS_MAX(e->cap * 2, need);
            char *nb = realloc(e->buf, nc);
            if (nb == NULL)
                return DFS_ENOMEM;
            e->buf = nb;
            e->cap = nc;
        }
        memcpy(e->buf + (off - e->off), buf, len);
        n->dirty_bytes += need - e->len;
        e->len = need;
        return DFS_OK;
    }
    /* General case: merge every extent overlapping or touching [off, end). */
    size_t j = i;
    uint64_t mstart = off, mend = end;
    while (j < n->next && n->ext[j].off <= end) {
        mstart = DFS_MIN(mstart, n->ext[j].off);
        mend = DFS_MAX(mend, n->ext[j].off + n->ext[j].len);
        j++;
    }
    size_t mlen = (size_t)(mend - mstart);
    size_t cap = mlen < 65536 ? DFS_MAX(mlen, (size_t)4096) : mlen;
    char *nb = malloc(cap);
    if (nb == NULL)
        return DFS_ENOMEM;
    size_t old = 0;
    for (size_t q = i; q < j; q++) {
        memcpy(nb + (n->ext[q].off - mstart), n->ext[q].buf, n->ext[q].len);
        old += n->ext[q].len;
        free(n->ext[q].buf);
    }
    memcpy(nb + (off - mstart), buf, len);
    if (j == i) {
        /* Pure insertion at i. */
        if (n->next == n->capext) {
            size_t nc = n->capext ? n->capext * 2 : 16;
            struct dext *ne = realloc(n->ext, nc * sizeof(*ne));
            if (ne == NULL) {
                free(nb);
                return DFS_ENOMEM;
            }
            n->ext = ne;
            n->capext = nc;
        }
        memmove(&n->ext[i + 1], &n->ext[i], (n->next - i) * sizeof(*n->ext));
        n->next++;
    } else if (j > i + 1) {
        memmove(&n->ext[i + 1], &n->ext[j], (n->next - j) * sizeof(*n->ext));
        n->next -= j - i - 1;
    }
    n->ext[i].off = mstart;
    n->ext[i].len = mlen;
    n->ext[i].cap = cap;
    n->ext[i].buf = nb;
    n->dirty_bytes += mlen - old;
    return DFS_OK;
}

int data_write(struct dfsc *c, struct dnode *n, uint64_t off, const void *buf, size_t len)
{
    if (n->werr) {
        int e = n->werr;
        n->werr = 0;
        return e;
    }
    drop_windows(n);
    bool was_empty = n->next == 0;
    int st = ext_insert(n, off, buf, len);
    if (st != DFS_OK)
        return st;
    uint64_t now = dfs_mono_ms();
    if (!n->dirty_meta) {
        n->size = n->attr.size;
        n->mtime = n->attr.mtime;
        n->dirty_meta = true;
        n->commit_due_ms = now + COMMIT_AGE_MS;
    }
    if (was_empty)
        n->dirty_since_ms = now;
    if (off + len > n->size)
        n->size = off + len;
    n->mtime = dfs_now_ns();
    if (n->dirty_bytes >= c->wbuf_max || n->next >= MAX_EXTENTS)
        return start_flight(c, n);
    return DFS_OK;
}

int data_flush(struct dfsc *c, struct dnode *n)
{
    int st = start_flight(c, n);
    int st2 = finish_flight(c, n);
    if (st == DFS_OK)
        st = st2;
    if (n->werr) {
        if (st == DFS_OK)
            st = n->werr;
        n->werr = 0;
    }
    return st;
}

/* A chunk handed out with CREATE exists only in metad until written.
 * Before a size that covers it is committed (other clients may then read
 * it), create it empty on its chain with a zero-length write, so a reader
 * finds it (a short read is zeros) instead of ENOCHUNK on every replica. */
static int materialize_fresh(struct dfsc *c, struct dnode *n)
{
    static char empty[1];
    for (size_t i = 0; i < n->nchunks; i++) {
        if (!n->chunks[i].fresh)
            continue;
        struct dchunk *dc = NULL;
        struct wreq r;
        memset(&r, 0, sizeof(r));
        r.index = i;
        r.buf = empty;
        int st = get_grant(c, n, i, 0, &dc);
        uint32_t bad = 0;
        if (st == DFS_OK) {
            struct dflight one;
            memset(&one, 0, sizeof(one));
            rpc_batch_init(&one.b);
            wreq_submit(c, &one, &r, dc);
            rpc_batch_wait(&one.b);
            rpc_batch_destroy(&one.b);
            st = wres_status(&r.res, r.first_srv, &bad);
            rpc_frame_release(r.res.reply);
            r.res.reply = NULL;
        }
        if (st != DFS_OK)
            st = wreq_retry(c, n, &r, st, bad);
        if (st != DFS_OK)
            return st;
        n->chunks[i].fresh = false;
        n->chunks[i].unsynced = true;
    }
    return DFS_OK;
}

static int do_commit(struct dfsc *c, struct dnode *n, uint32_t flags)
{
    if (n->size > 0) {
        int mst = materialize_fresh(c, n);
        if (mst != DFS_OK)
            return mst;
    }
    struct dfs_msg_commit rq;
    memset(&rq, 0, sizeof(rq));
    data_metad_cred(&rq.cred);
    rq.ino = n->ino;
    rq.size = n->size;
    rq.mtime = n->mtime;
    rq.flags = flags;
    struct dfs_frame *rep = NULL;
    int st = mclient_call(c->mc, DFS_OP_COMMIT, &rq, &rep);
    if (st != DFS_OK)
        return st;
    st = (int)rep->status;
    if (st == DFS_OK) {
        const struct dfs_msg_attr_resp *r = rep->body;
        if (n->next == 0 && n->flight == NULL) {
            n->dirty_meta = false;
            dnode_set_attr(n, &r->attr);
        } else {
            n->commit_due_ms = dfs_mono_ms() + COMMIT_AGE_MS;
        }
    }
    rpc_frame_release(rep);
    return st;
}

int data_commit(struct dfsc *c, struct dnode *n, uint32_t flags)
{
    int st = data_flush(c, n);
    if (st != DFS_OK)
        return st;
    if (!n->dirty_meta)
        return DFS_OK;
    return do_commit(c, n, flags);
}

int data_extend(struct dfsc *c, struct dnode *n, uint64_t size)
{
    if (size <= node_size(n))
        return DFS_OK;
    if (!n->dirty_meta) {
        n->size = n->attr.size;
        n->dirty_meta = true;
    }
    n->size = size;
    n->mtime = dfs_now_ns();
    return data_commit(c, n, 0);
}

int data_fsync(struct dfsc *c, struct dnode *n)
{
    int st = data_flush(c, n);
    if (st != DFS_OK)
        return st;
    uint64_t deadline = dfs_mono_ms() + c->timeout_ms;
    /* SYNC every chunk written since the last fsync, on its whole chain. */
    for (;;) {
        size_t cnt = 0;
        for (size_t i = 0; i < n->nchunks; i++)
            if (n->chunks[i].unsynced)
                cnt++;
        if (cnt == 0)
            break;
        struct {
            uint64_t idx;
            uint32_t first;
            struct dfs_msg_chunk_req msg;
            struct dfs_replica chain[DFS_MAX_GOAL];
            struct rpc_result res;
        } *s = calloc(cnt, sizeof(*s));
        if (s == NULL)
            return DFS_ENOMEM;
        struct rpc_batch b;
        rpc_batch_init(&b);
        size_t k = 0;
        for (size_t i = 0; i < n->nchunks && k < cnt; i++) {
            struct dchunk *dc = &n->chunks[i];
            if (!dc->unsynced)
                continue;
            s[k].idx = i;
            s[k].msg.chunk_id = dc->chunk_id;
            s[k].msg.version = dc->version;
            for (uint32_t r = 1; r < dc->nrep; r++) {
                s[k].chain[r - 1].server_id = dc->rep_id[r];
                s[k].chain[r - 1].host.ptr = dc->rep[r]->host;
                s[k].chain[r - 1].host.len = (uint32_t)strlen(dc->rep[r]->host);
                s[k].chain[r - 1].port = (uint32_t)dc->rep[r]->port;
            }
            s[k].msg.chain = s[k].chain;
            s[k].msg.chain_count = dc->nrep ? dc->nrep - 1 : 0;
            s[k].first = dc->nrep ? dc->rep_id[0] : 0;
            s[k].res.status = DFS_ECONN;
            struct rpc_conn *conn = dc->nrep ? srv_conn(c, dc->rep[0]) : NULL;
            if (conn)
                rpc_mt_submit(c->mt, conn, DFS_OP_SYNC, &s[k].msg, srv_call_ms(c, conn), &b,
                              &s[k].res);
            k++;
        }
        rpc_batch_wait(&b);
        rpc_batch_destroy(&b);
        int fail = DFS_OK;
        for (size_t i = 0; i < k; i++) {
            uint32_t bad;
            int rst = wres_status(&s[i].res, s[i].first, &bad);
            rpc_frame_release(s[i].res.reply);
            struct dchunk *dc = &n->chunks[s[i].idx];
            if (rst == DFS_OK) {
                dc->unsynced = false;
                continue;
            }
            fail = rst;
            if (!retryable(rst)) {
                free(s);
                return rst;
            }
            /* A replica failed: get a repaired chain; the survivors hold the
             * data (metad bumps their version), so SYNC them again. */
            struct dchunk *ndc;
            if (bad)
                for (uint32_t r = 0; r < dc->nrep; r++)
                    if (dc->rep_id[r] == bad)
                        srv_mark_bad(c, dc->rep[r]);
            dc->grant_until_ms = 0;
            int gst = get_grant(c, n, s[i].idx, bad, &ndc);
            if (gst != DFS_OK)
                fail = gst;
            else
                ndc->unsynced = true;
        }
        free(s);
        if (fail != DFS_OK) {
            if (dfs_mono_ms() >= deadline) {
                log_warn("inode %llu: fsync failed: %s", (unsigned long long)n->ino,
                         dfs_strerror(fail));
                return fail;
            }
            sleep_ms(100);
        }
    }
    /* Even with nothing to commit, earlier changes (this file's size from
     * another handle, its creation) may still be in metad's unflushed log. */
    return n->dirty_meta ? do_commit(c, n, DFS_CF_SYNC) : data_meta_barrier(c, n->ino);
}

int data_meta_barrier(struct dfsc *c, uint64_t ino)
{
    struct dfs_msg_commit rq;
    memset(&rq, 0, sizeof(rq));
    data_metad_cred(&rq.cred);
    rq.ino = ino;
    rq.flags = DFS_CF_SYNC | DFS_CF_NOCHANGE;
    struct dfs_frame *rep = NULL;
    int st = mclient_call(c->mc, DFS_OP_COMMIT, &rq, &rep);
    if (st != DFS_OK)
        return st;
    st = (int)rep->status;
    rpc_frame_release(rep);
    return st;
}

/* ----- reads ----- */

struct rseg {
    uint64_t chunk_off;
    uint32_t len;
    char *dst;
};

struct rreq {
    uint64_t index, chunk_off;
    uint32_t len;
    size_t seg0, nseg;
    uint32_t tried;     /* bitmask of replica slots tried */
    struct dsrv *srv;
    uint32_t srv_id;
    struct dfs_msg_read msg;
    struct rpc_result res;
};

struct dwindow {
    uint64_t off;
    size_t len;
    char *buf;
    bool own;           /* buf is ours (read-ahead) rather than the caller's */
    bool pending;       /* requests in flight: call win_finish */
    int status;
    struct rpc_batch b;
    struct rreq *r;
    size_t nr;
    struct rseg *seg;
    size_t nseg;
};

/* Choose the next replica for r (not yet tried, healthy first).  Returns the
 * slot or -1. */
static int pick_replica(struct dfsc *c, const struct dchunk *dc, uint32_t tried)
{
    int fallback = -1;
    for (uint32_t i = 0; i < dc->nrep; i++) {
        if (tried & (1u << i))
            continue;
        if (!srv_is_bad(c, dc->rep[i]))
            return (int)i;
        if (fallback < 0)
            fallback = (int)i;
    }
    return fallback;
}

static void rreq_send(struct dfsc *c, struct dwindow *w, struct rreq *r, const struct dchunk *dc,
                      int slot)
{
    r->tried |= 1u << slot;
    r->srv = dc->rep[slot];
    r->srv_id = dc->rep_id[slot];
    memset(&r->msg, 0, sizeof(r->msg));
    r->msg.chunk_id = dc->chunk_id;
    r->msg.version = dc->version;
    r->msg.offset = r->chunk_off;
    r->msg.length = r->len;
    r->res.status = DFS_ECONN;
    r->res.reply = NULL;
    struct rpc_conn *conn = srv_conn(c, r->srv);
    if (conn)
        rpc_mt_submit(c->mt, conn, DFS_OP_READ, &r->msg, srv_call_ms(c, conn), &w->b, &r->res);
}

/* Copy a READ answer into the segments of r, zero-filling what is short. */
static void rreq_scatter(struct dwindow *w, struct rreq *r, const char *data, size_t dlen)
{
    for (size_t i = 0; i < r->nseg; i++) {
        struct rseg *s = &w->seg[r->seg0 + i];
        uint64_t rel = s->chunk_off - r->chunk_off;
        size_t have = rel < dlen ? DFS_MIN((size_t)(dlen - rel), (size_t)s->len) : 0;
        if (have)
            memcpy(s->dst, data + rel, have);
        if (have < s->len)
            memset(s->dst + have, 0, s->len - have);
    }
}

/* Status of a finished READ; on success data and dlen point into the reply. */
static int rres_status(const struct rpc_result *res, const char **data, size_t *dlen)
{
    if (res->status != DFS_OK)
        return res->status;
    if (res->reply->status != DFS_OK)
        return (int)res->reply->status;
    const struct dfs_msg_read_resp *rr = res->reply->body;
    if (rr->data.len && csum_buf(rr->data.ptr, rr->data.len) != rr->csum)
        return DFS_ECORRUPT;
    *data = rr->data.ptr;
    *dlen = rr->data.len;
    return DFS_OK;
}

static void report_bad(struct dfsc *c, uint64_t chunk_id, uint32_t server_id, int reason)
{
    struct dfs_msg_badrep rq;
    memset(&rq, 0, sizeof(rq));
    data_metad_cred(&rq.cred);
    rq.chunk_id = chunk_id;
    rq.server_id = server_id;
    rq.reason = (uint32_t)reason;
    int st = mclient_do(c->mc, DFS_OP_BADREPLICA, &rq, NULL);
    log_warn("chunk %llu on server %u is corrupt; reported to metad (%s)",
             (unsigned long long)chunk_id, server_id, dfs_strerror(st));
}

/* Start reading [off, off+len) of the file into buf (len already clipped to
 * the file size). */
static int win_start(struct dfsc *c, struct dnode *n, struct dwindow *w)
{
    if (w->len == 0)
        return DFS_OK;
    int st = data_ensure_layout(c, n);
    if (st != DFS_OK)
        return st;
    const struct dfs_layout *l = &n->layout;
    uint64_t first, last, co;
    layout_map(l, w->off, &first, &co);
    layout_map(l, w->off + w->len - 1, &last, &co);
    /* Chunk sets are laid out in order; cover whole sets. */
    first = first / l->stripe_count * l->stripe_count;
    last = last / l->stripe_count * l->stripe_count + l->stripe_count - 1;
    st = ensure_chunks(c, n, first, last);
    if (st != DFS_OK)
        return st;
    size_t np = layout_npieces(l, w->off, w->len);
    struct layout_piece *lp = malloc(np * sizeof(*lp));
    struct wpiece *p = malloc(np * sizeof(*p));
    w->seg = malloc(np * sizeof(*w->seg));
    w->r = malloc(np * sizeof(*w->r));
    if (lp == NULL || p == NULL || w->seg == NULL || w->r == NULL) {
        free(lp);
        free(p);
        return DFS_ENOMEM;
    }
    layout_split(l, w->off, w->len, lp, np);
    for (size_t i = 0; i < np; i++) {
        p[i].index = lp[i].index;
        p[i].chunk_off = lp[i].chunk_off;
        p[i].len = lp[i].len;
        p[i].src = w->buf + (lp[i].file_off - w->off);
    }
    free(lp);
    qsort(p, np, sizeof(*p), wpiece_cmp);
    rpc_batch_init(&w->b);
    w->pending = true;
    w->nr = 0;
    w->nseg = np;
    for (size_t i = 0; i < np;) {
        size_t j = i + 1;
        uint64_t len = p[i].len;
        while (j < np && p[j].index == p[i].index &&
               p[j].chunk_off == p[i].chunk_off + len && len + p[j].len <= RREQ_MAX) {
            len += p[j].len;
            j++;
        }
        for (size_t q = i; q < j; q++) {
            w->seg[q].chunk_off = p[q].chunk_off;
            w->seg[q].len = p[q].len;
            w->seg[q].dst = p[q].src;
        }
        struct dchunk *dc = &n->chunks[p[i].index];
        if (!dc->exists || dc->fresh) {
            /* A hole, or a chunk we were handed with CREATE and have not
             * written. */
            for (size_t q = i; q < j; q++)
                memset(p[q].src, 0, p[q].len);
            i = j;
            continue;
        }
        struct rreq *r = &w->r[w->nr++];
        memset(r, 0, sizeof(*r));
        r->index = p[i].index;
        r->chunk_off = p[i].chunk_off;
        r->len = (uint32_t)len;
        r->seg0 = i;
        r->nseg = j - i;
        if (dc->nrep == 0) {
            /* No copy known: right after a metad failover the chunk servers
             * are still reporting what they hold.  win_finish asks metad
             * again, with a back-off, until the call's deadline. */
            r->res.status = DFS_ENOSERVERS;
            i = j;
            continue;
        }
        rreq_send(c, w, r, dc, pick_replica(c, dc, 0));
        i = j;
    }
    free(p);
    return DFS_OK;
}

/* Wait for a window's reads; fail over to other replicas where needed. */
static int win_finish(struct dfsc *c, struct dnode *n, struct dwindow *w)
{
    if (!w->pending)
        return w->status;
    w->pending = false;
    rpc_batch_wait(&w->b);
    uint64_t deadline = dfs_mono_ms() + c->timeout_ms;
    for (size_t i = 0; i < w->nr; i++) {
        struct rreq *r = &w->r[i];
        bool refetched = false;
        unsigned backoff = 50;
        for (;;) {
            const char *data = NULL;
            size_t dlen = 0;
            int st = rres_status(&r->res, &data, &dlen);
            if (st == DFS_OK) {
                rreq_scatter(w, r, data, dlen);
                rpc_frame_release(r->res.reply);
                r->res.reply = NULL;
                break;
            }
            rpc_frame_release(r->res.reply);
            r->res.reply = NULL;
            struct dchunk *dc = &n->chunks[r->index];
            if (st == DFS_ECORRUPT)
                report_bad(c, dc->chunk_id, r->srv_id, st);
            if (st == DFS_ECONN || st == DFS_ETIMEDOUT || st == DFS_ECANCELED)
                srv_mark_bad(c, r->srv);
            log_debug("inode %llu chunk %llu: read from server %u failed: %s",
                      (unsigned long long)n->ino, (unsigned long long)r->index, r->srv_id,
                      dfs_strerror(st));
            if (!retryable(st) || dfs_mono_ms() >= deadline) {
                /* no copy reachable is an I/O error for a reader */
                w->status = st == DFS_ENOSERVERS ? DFS_EIO : st;
                break;
            }
            int slot = pick_replica(c, dc, r->tried);
            if (slot < 0 || st == DFS_ESTALE || st == DFS_ENOCHUNK) {
                /* Every replica failed, or our location is stale: ask metad
                 * again (once quickly, then with a pause). */
                if (refetched)
                    sleep_ms(backoff), backoff = DFS_MIN(backoff * 2, 1000u);
                refetched = true;
                dc->known = false;
                dc->grant_until_ms = 0;
                int fst = ensure_chunks(c, n, r->index, r->index);
                if (fst != DFS_OK) {
                    if (!retryable(fst)) {
                        w->status = fst;
                        break;
                    }
                    continue;
                }
                dc = &n->chunks[r->index];
                if (!dc->exists) {
                    rreq_scatter(w, r, NULL, 0);
                    break;
                }
                r->tried = 0;
                slot = pick_replica(c, dc, 0);
                if (slot < 0) {
                    r->res.status = DFS_ENOSERVERS;
                    continue;
                }
            }
            struct dwindow one;
            memset(&one, 0, sizeof(one));
            rpc_batch_init(&one.b);
            rreq_send(c, &one, r, dc, slot);
            rpc_batch_wait(&one.b);
            rpc_batch_destroy(&one.b);
        }
    }
    rpc_batch_destroy(&w->b);
    free(w->r);
    free(w->seg);
    w->r = NULL;
    w->seg = NULL;
    return w->status;
}

static void win_free(struct dfsc *c, struct dnode *n, struct dwindow *w)
{
    if (w == NULL)
        return;
    if (w->pending)
        win_finish(c, n, w);
    if (w->own)
        free(w->buf);
    free(w->r);
    free(w->seg);
    free(w);
}

/* Drop the read-ahead windows (n->mu held).  Needs no client pointer: a
 * pending window is waited for without failover. */
static void drop_windows(struct dnode *n)
{
    for (int i = 0; i < 2; i++) {
        struct dwindow *w = n->win[i];
        if (w == NULL)
            continue;
        n->win[i] = NULL;
        if (w->pending) {
            rpc_batch_wait(&w->b);
            for (size_t k = 0; k < w->nr; k++)
                rpc_frame_release(w->r[k].res.reply);
            rpc_batch_destroy(&w->b);
        }
        if (w->own)
            free(w->buf);
        free(w->r);
        free(w->seg);
        free(w);
    }
}

static struct dwindow *win_new(uint64_t off, size_t len, char *buf)
{
    struct dwindow *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->off = off;
    w->len = len;
    if (buf) {
        w->buf = buf;
    } else {
        w->buf = malloc(len);
        w->own = true;
        if (w->buf == NULL) {
            free(w);
            return NULL;
        }
    }
    return w;
}

/* Read [off, off+len) into buf now (no caching). */
static int read_direct(struct dfsc *c, struct dnode *n, uint64_t off, size_t len, char *buf)
{
    struct dwindow w;
    memset(&w, 0, sizeof(w));
    w.off = off;
    w.len = len;
    w.buf = buf;
    int st = win_start(c, n, &w);
    if (st == DFS_OK)
        st = win_finish(c, n, &w);
    else if (w.pending)
        win_finish(c, n, &w);
    free(w.r);
    free(w.seg);
    return st;
}

/* Start fetching the window after win[0] in the background. */
static void prefetch_next(struct dfsc *c, struct dnode *n, uint64_t size)
{
    struct dwindow *cur = n->win[0];
    if (cur == NULL || n->win[1] != NULL || n->ra_size == 0)
        return;
    uint64_t off = cur->off + cur->len;
    if (off >= size)
        return;
    size_t len = (size_t)DFS_MIN((uint64_t)n->ra_size, size - off);
    struct dwindow *w = win_new(off, len, NULL);
    if (w == NULL)
        return;
    if (win_start(c, n, w) != DFS_OK) {
        win_free(c, n, w);
        return;
    }
    n->win[1] = w;
}

static bool win_has(const struct dwindow *w, uint64_t off)
{
    return w && off >= w->off && off < w->off + w->len;
}

void data_open_prefetch(struct dfsc *c, struct dnode *n)
{
    if (c->ra_max == 0 || n->win[0] || n->win[1] || n->next || n->flight)
        return;
    uint64_t size = node_size(n);
    if (size == 0)
        return;
    size_t len = (size_t)DFS_MIN(size, (uint64_t)RA_MIN);
    struct dwindow *w = win_new(0, len, NULL);
    if (w == NULL)
        return;
    if (win_start(c, n, w) != DFS_OK) {
        win_free(c, n, w);
        return;
    }
    n->win[1] = w; /* promoted by the first read at 0 */
    n->seq_next = 0;
    n->ra_size = (uint32_t)len;
}

int data_read(struct dfsc *c, struct dnode *n, uint64_t off, size_t len, char *buf,
              size_t *got)
{
    *got = 0;
    /* Data being written must be on the servers before we read it back. */
    int st = finish_flight(c, n);
    if (st != DFS_OK)
        return st; /* the writer still sees the error (werr) at flush/fsync */
    uint64_t size = node_size(n);
    if (off >= size || len == 0)
        return DFS_OK;
    if (len > size - off)
        len = (size_t)(size - off);
    bool seq = off == n->seq_next || win_has(n->win[0], off) || win_has(n->win[1], off);
    size_t done = 0;
    while (done < len) {
        uint64_t pos = off + done;
        size_t want = len - done;
        if (win_has(n->win[1], pos) && !win_has(n->win[0], pos)) {
            /* Promote the prefetched window. */
            struct dwindow *w = n->win[1];
            n->win[1] = NULL;
            st = win_finish(c, n, w);
            win_free(c, n, n->win[0]);
            n->win[0] = w;
            if (st != DFS_OK) {
                win_free(c, n, w);
                n->win[0] = NULL;
                return st;
            }
        }
        struct dwindow *w = n->win[0];
        if (win_has(w, pos)) {
            size_t take = DFS_MIN(want, (size_t)(w->off + w->len - pos));
            memcpy(buf + done, w->buf + (pos - w->off), take);
            done += take;
            continue;
        }
        if (!seq || c->ra_max == 0) {
            st = read_direct(c, n, pos, want, buf + done);
            if (st != DFS_OK)
                return st;
            done += want;
            n->ra_size = 0;
            break;
        }
        /* Sequential: fetch a new, larger window from here. */
        n->ra_size = n->ra_size ? DFS_MIN(n->ra_size * 2, c->ra_max) : RA_MIN;
        drop_windows(n);
        size_t wl = (size_t)DFS_MIN((uint64_t)DFS_MAX((size_t)n->ra_size, want), size - pos);
        w = win_new(pos, wl, NULL);
        if (w == NULL)
            return DFS_ENOMEM;
        st = win_start(c, n, w);
        if (st == DFS_OK)
            st = win_finish(c, n, w);
        if (st != DFS_OK) {
            win_free(c, n, w);
            return st;
        }
        n->win[0] = w;
    }
    if (seq && n->win[0]) {
        struct dwindow *w = n->win[0];
        if (off + len >= w->off + w->len / 2)
            prefetch_next(c, n, size);
    }
    n->seq_next = off + len;
    /* Overlay data still in the write buffer. */
    for (size_t i = 0; i < n->next; i++) {
        struct dext *e = &n->ext[i];
        uint64_t s = DFS_MAX(e->off, off), t = DFS_MIN(e->off + e->len, off + len);
        if (s < t)
            memcpy(buf + (s - off), e->buf + (s - e->off), (size_t)(t - s));
    }
    *got = len;
    return DFS_OK;
}

void data_invalidate(struct dfsc *c, struct dnode *n)
{
    drop_windows(n);
    /* Keep ids and chains: an fsync still has to SYNC what we wrote (a stale
     * version there is answered with a fresh grant). */
    for (size_t i = 0; i < n->nchunks; i++) {
        n->chunks[i].known = false;
        n->chunks[i].grant_until_ms = 0;
    }
    n->chunks_ms = 0;
    n->seq_next = 0;
    n->ra_size = 0;
}

/* Release every buffer of a node about to be freed (nothing else uses it). */
static void node_release_io(struct dfsc *c, struct dnode *n)
{
    if (n->next || n->flight)
        log_warn("inode %llu: dropping %zu unwritten bytes", (unsigned long long)n->ino,
                 n->dirty_bytes);
    if (n->flight)
        finish_flight(c, n);
    free_extents(n->ext, n->next);
    n->ext = NULL;
    n->next = 0;
    drop_windows(n);
}

/* ----- background flusher ----- */

static void flush_pass(struct dfsc *c, bool all)
{
    /* Collect candidate nodes (open ones; idle nodes have nothing buffered). */
    size_t cap = 64, cnt = 0;
    struct dnode **v = malloc(cap * sizeof(*v));
    if (v == NULL)
        return;
    pthread_mutex_lock(&c->itab_mu);
    for (size_t b = 0; b < c->nbuckets; b++)
        for (struct dnode *n = c->buckets[b]; n; n = n->hnext) {
            if (n->nwriters == 0 && !all)
                continue;
            if (cnt == cap) {
                struct dnode **nv = realloc(v, cap * 2 * sizeof(*v));
                if (nv == NULL)
                    continue;
                v = nv;
                cap *= 2;
            }
            n->refs++;
            v[cnt++] = n;
        }
    pthread_mutex_unlock(&c->itab_mu);
    uint64_t now = dfs_mono_ms();
    for (size_t i = 0; i < cnt; i++) {
        struct dnode *n = v[i];
        if (all) {
            pthread_mutex_lock(&n->mu);
        } else if (pthread_mutex_trylock(&n->mu) != 0) {
            dnode_put(c, n);
            continue;
        }
        if (all || (n->next && n->dirty_since_ms + FLUSH_AGE_MS <= now) || n->flight) {
            int st = data_flush(c, n);
            if (st != DFS_OK && !all)
                n->werr = st; /* reported by the next write, flush or fsync */
        }
        if (n->dirty_meta && (all || n->commit_due_ms <= now) && n->next == 0)
            do_commit(c, n, 0);
        pthread_mutex_unlock(&n->mu);
        dnode_put(c, n);
    }
    free(v);
}

static void *flusher_main(void *arg)
{
    struct dfsc *c = arg;
    pthread_mutex_lock(&c->fl_mu);
    while (!c->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 500 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&c->fl_cv, &c->fl_mu, &ts);
        if (c->stopping)
            break;
        pthread_mutex_unlock(&c->fl_mu);
        flush_pass(c, false);
        pthread_mutex_lock(&c->fl_mu);
    }
    pthread_mutex_unlock(&c->fl_mu);
    return NULL;
}

void dfsc_start_flusher(struct dfsc *c)
{
    if (pthread_create(&c->flusher, NULL, flusher_main, c) == 0)
        c->flusher_running = true;
}

void dfsc_shutdown(struct dfsc *c)
{
    if (c->flusher_running) {
        pthread_mutex_lock(&c->fl_mu);
        c->stopping = true;
        pthread_cond_broadcast(&c->fl_cv);
        pthread_mutex_unlock(&c->fl_mu);
        pthread_join(c->flusher, NULL);
        c->flusher_running = false;
    }
    if (c->mc)
        flush_pass(c, true);
    pthread_mutex_lock(&c->itab_mu);
    for (size_t b = 0; b < c->nbuckets; b++) {
        struct dnode *n = c->buckets[b], *nx;
        for (; n; n = nx) {
            nx = n->hnext;
            node_free(c, n);
        }
        c->buckets[b] = NULL;
    }
    c->count = 0;
    pthread_mutex_unlock(&c->itab_mu);
    pthread_mutex_lock(&c->srv_mu);
    struct dsrv *s = c->servers, *nx;
    c->servers = NULL;
    pthread_mutex_unlock(&c->srv_mu);
    for (; s; s = nx) {
        nx = s->next;
        if (s->conn && c->mt)
            rpc_mt_close(c->mt, s->conn);
        free(s);
    }
    free(c->buckets);
    c->buckets = NULL;
}
