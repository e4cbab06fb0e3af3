/* chunks.c - chunk map, server registry, placement and write leases (pure; injected clock). */
#include "chunks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct chunks {
    struct chunks_opts o;
    struct chunks_clock clk;
    /* chunk table: open addressing by id */
    struct cm_chunk **tab;
    uint64_t cap, count;
    /* servers: array sorted by id (a cluster has few of them) */
    struct cm_server **srv;
    uint32_t nsrv;
    struct cm_gc *gc;
    uint32_t ngc, capgc;
};

#define GC_MAX (1u << 20)

static void *xcalloc(size_t a, size_t b)
{
    void *p = calloc(a, b);
    if (!p && a && b) abort();
    return p;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ull;
    x ^= x >> 27;
    x *= 0x81dadef4bc2dd44dull;
    x ^= x >> 33;
    return x;
}

struct chunks *chunks_new(const struct chunks_opts *opts, const struct chunks_clock *clk)
{
    struct chunks *cm = xcalloc(1, sizeof(*cm));
    cm->o = *opts;
    if (!cm->o.server_timeout_ms) cm->o.server_timeout_ms = 5000;
    if (!cm->o.lease_ms) cm->o.lease_ms = 30000;
    cm->clk = *clk;
    return cm;
}

static void server_free(struct cm_server *s)
{
    for (uint32_t i = 0; i < s->ndirs; i++) free((void *)s->dirs[i].path.ptr);
    free(s->dirs);
    free(s);
}

void chunks_free(struct chunks *cm)
{
    if (!cm) return;
    for (uint64_t i = 0; i < cm->cap; i++)
        if (cm->tab[i]) {
            free(cm->tab[i]->reps);
            free(cm->tab[i]);
        }
    free(cm->tab);
    for (uint32_t i = 0; i < cm->nsrv; i++) server_free(cm->srv[i]);
    free(cm->srv);
    free(cm->gc);
    free(cm);
}

unsigned chunks_gc_take(struct chunks *cm, struct cm_gc *out, unsigned max)
{
    unsigned n = cm->ngc < max ? cm->ngc : max;
    if (n == 0) return 0;
    memcpy(out, cm->gc + cm->ngc - n, n * sizeof(*out));
    cm->ngc -= n;
    return n;
}

uint64_t chunks_gc_pending(struct chunks *cm) { return cm->ngc; }

uint64_t chunks_now_ms(struct chunks *cm) { return cm->clk.now_ms(cm->clk.arg); }

/* ----- chunk table ----- */

struct cm_chunk *chunks_get(struct chunks *cm, uint64_t id)
{
    if (!cm->cap) return NULL;
    uint64_t mask = cm->cap - 1;
    for (uint64_t i = mix64(id) & mask;; i = (i + 1) & mask) {
        struct cm_chunk *c = cm->tab[i];
        if (!c) return NULL;
        if (c->id == id) return c;
    }
}

static void tab_put(struct cm_chunk **tab, uint64_t cap, struct cm_chunk *c)
{
    uint64_t mask = cap - 1, i = mix64(c->id) & mask;
    while (tab[i]) i = (i + 1) & mask;
    tab[i] = c;
}

void chunks_chunk_add(struct chunks *cm, uint64_t id, uint32_t version, uint64_t ino,
                      uint64_t index)
{
    struct cm_chunk *c = chunks_get(cm, id);
    if (!c) {
        if ((cm->count + 1) * 4 > cm->cap * 3) {
            uint64_t ncap = cm->cap ? cm->cap * 2 : 1024;
            struct cm_chunk **nt = xcalloc(ncap, sizeof(*nt));
            for (uint64_t i = 0; i < cm->cap; i++)
                if (cm->tab[i]) tab_put(nt, ncap, cm->tab[i]);
            free(cm->tab);
            cm->tab = nt;
            cm->cap = ncap;
        }
        c = xcalloc(1, sizeof(*c));
        c->id = id;
        tab_put(cm->tab, cm->cap, c);
        cm->count++;
    }
    c->version = version;
    c->ino = ino;
    c->index = index;
}

void chunks_chunk_del(struct chunks *cm, uint64_t id)
{
    if (!cm->cap) return;
    uint64_t mask = cm->cap - 1, i = mix64(id) & mask;
    while (cm->tab[i] && cm->tab[i]->id != id) i = (i + 1) & mask;
    struct cm_chunk *c = cm->tab[i];
    if (!c) return;
    for (unsigned r = 0; r < c->nrep && cm->ngc < GC_MAX; r++) {
        if (cm->ngc == cm->capgc) {
            uint32_t nc = cm->capgc ? cm->capgc * 2 : 256;
            struct cm_gc *n = realloc(cm->gc, nc * sizeof(*n));
            if (!n) break;
            cm->gc = n;
            cm->capgc = nc;
        }
        cm->gc[cm->ngc++] = (struct cm_gc){id, c->reps[r].server_id, c->reps[r].version};
    }
    free(c->reps);
    free(c);
    cm->tab[i] = NULL;
    cm->count--;
    uint64_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        struct cm_chunk *x = cm->tab[j];
        if (!x) break;
        uint64_t k = mix64(x->id) & mask;
        if ((j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j))) {
            cm->tab[i] = x;
            cm->tab[j] = NULL;
            i = j;
        }
    }
}

void chunks_chunk_set_version(struct chunks *cm, uint64_t id, uint32_t version)
{
    struct cm_chunk *c = chunks_get(cm, id);
    if (!c) return;
    c->version = version;
    /* Replicas that did not follow the bump are stale now; the ones the
     * leader bumped were already set to `version` (chunks_replica_set). */
    for (unsigned i = 0; i < c->nrep; i++)
        if (c->reps[i].version < version && c->reps[i].state == DFS_RS_OK)
            c->reps[i].state = DFS_RS_STALE;
}

void chunks_reset_replicated(struct chunks *cm)
{
    for (uint64_t i = 0; i < cm->cap; i++)
        if (cm->tab[i]) {
            free(cm->tab[i]->reps);
            free(cm->tab[i]);
            cm->tab[i] = NULL;
        }
    cm->count = 0;
}

uint64_t chunks_count(struct chunks *cm) { return cm->count; }

struct cm_chunk *chunks_iter(struct chunks *cm, uint64_t *pos)
{
    for (uint64_t i = *pos; i < cm->cap; i++)
        if (cm->tab[i]) {
            *pos = i + 1;
            return cm->tab[i];
        }
    *pos = 0;
    return NULL;
}

/* ----- servers ----- */

struct cm_server *chunks_server(struct chunks *cm, uint32_t id)
{
    for (uint32_t i = 0; i < cm->nsrv; i++)
        if (cm->srv[i]->id == id) return cm->srv[i];
    return NULL;
}

struct cm_server *chunks_server_at(struct chunks *cm, uint32_t i)
{
    return i < cm->nsrv ? cm->srv[i] : NULL;
}

void chunks_server_known(struct chunks *cm, uint32_t id)
{
    if (chunks_server(cm, id)) return;
    struct cm_server *s = xcalloc(1, sizeof(*s));
    s->id = id;
    s->state = DFS_SS_DOWN;
    struct cm_server **n = realloc(cm->srv, (cm->nsrv + 1) * sizeof(*n));
    if (!n) abort();
    cm->srv = n;
    uint32_t pos = cm->nsrv;
    while (pos > 0 && cm->srv[pos - 1]->id > id) {
        cm->srv[pos] = cm->srv[pos - 1];
        pos--;
    }
    cm->srv[pos] = s;
    cm->nsrv++;
}

static void server_update_state(struct cm_server *s)
{
    if (s->state == DFS_SS_DOWN) return;
    s->state = s->draining ? DFS_SS_DRAINING : DFS_SS_UP;
}

void chunks_server_set_draining(struct chunks *cm, uint32_t id, bool on)
{
    struct cm_server *s = chunks_server(cm, id);
    if (!s) return;
    s->draining = on;
    server_update_state(s);
}

static void copy_dirs(struct cm_server *s, const struct dfs_dirinfo *dirs, uint32_t n)
{
    for (uint32_t i = 0; i < s->ndirs; i++) free((void *)s->dirs[i].path.ptr);
    free(s->dirs);
    s->dirs = n ? xcalloc(n, sizeof(*s->dirs)) : NULL;
    s->ndirs = n;
    s->total = s->used = s->avail = s->dir_avail_max = 0;
    for (uint32_t i = 0; i < n; i++) {
        s->dirs[i] = dirs[i];
        s->dirs[i].path.ptr = strdup(dirs[i].path.ptr ? dirs[i].path.ptr : "");
        if (dirs[i].state == DFS_DS_FAILED) continue;
        s->total += dirs[i].total;
        s->used += dirs[i].used;
        uint64_t a = dirs[i].state == DFS_DS_FULL ? 0 : dirs[i].avail;
        s->avail += a;
        if (a > s->dir_avail_max) s->dir_avail_max = a;
    }
}

struct cm_server *chunks_server_register(struct chunks *cm, uint32_t id, const char *host,
                                         int port, const char *label,
                                         const struct dfs_dirinfo *dirs, uint32_t ndirs)
{
    chunks_server_known(cm, id);
    struct cm_server *s = chunks_server(cm, id);
    snprintf(s->host, sizeof(s->host), "%s", host ? host : "");
    s->port = port;
    snprintf(s->label, sizeof(s->label), "%s", label ? label : "");
    copy_dirs(s, dirs, ndirs);
    s->registered = true;
    s->state = DFS_SS_UP;
    server_update_state(s);
    s->last_seen_ms = chunks_now_ms(cm);
    return s;
}

int chunks_server_heartbeat(struct chunks *cm, const struct dfs_msg_heartbeat *hb, int64_t now_ns)
{
    struct cm_server *s = chunks_server(cm, hb->server_id);
    if (!s || !s->registered) return DFS_ENOENT;
    if (hb->dirs_count) copy_dirs(s, hb->dirs, hb->dirs_count);
    s->load = hb->load;
    s->bytes_read = hb->bytes_read;
    s->bytes_written = hb->bytes_written;
    s->bytes_replicated = hb->bytes_replicated;
    s->last_seen_ms = chunks_now_ms(cm);
    s->last_seen_ns = now_ns;
    if (s->state == DFS_SS_DOWN) {
        s->state = DFS_SS_UP;
        server_update_state(s);
    }
    for (uint32_t i = 0; i < hb->changes_count; i++) chunks_report(cm, s->id, &hb->changes[i]);
    return DFS_OK;
}

void chunks_server_lost(struct chunks *cm, uint32_t id)
{
    struct cm_server *s = chunks_server(cm, id);
    if (s) {
        s->state = DFS_SS_DOWN;
        s->conn = NULL;
    }
}

unsigned chunks_tick(struct chunks *cm)
{
    uint64_t now = chunks_now_ms(cm);
    unsigned n = 0;
    for (uint32_t i = 0; i < cm->nsrv; i++) {
        struct cm_server *s = cm->srv[i];
        if (s->state != DFS_SS_DOWN && now > s->last_seen_ms + cm->o.server_timeout_ms) {
            s->state = DFS_SS_DOWN;
            n++;
        }
    }
    return n;
}

static bool server_up(const struct cm_server *s)
{
    return s && s->state != DFS_SS_DOWN;
}

bool chunks_all_servers_up(struct chunks *cm)
{
    if (!cm->nsrv) return false;
    for (uint32_t i = 0; i < cm->nsrv; i++)
        if (!cm->srv[i]->registered || !server_up(cm->srv[i])) return false;
    return true;
}

bool chunks_replica_live(struct chunks *cm, const struct cm_replica *r)
{
    return r->state == DFS_RS_OK && server_up(chunks_server(cm, r->server_id));
}

uint32_t chunks_replica_state(struct chunks *cm, const struct cm_replica *r)
{
    if (!server_up(chunks_server(cm, r->server_id))) return DFS_RS_DOWN;
    return r->state;
}

void chunks_fill_replica(struct chunks *cm, uint32_t server_id, uint32_t state,
                         struct dfs_replica *out)
{
    struct cm_server *s = chunks_server(cm, server_id);
    out->server_id = server_id;
    out->host.ptr = s ? s->host : "";
    out->host.len = (uint32_t)strlen(out->host.ptr);
    out->port = s ? (uint32_t)s->port : 0;
    out->state = state;
}

void chunks_capacity(struct chunks *cm, uint64_t *total, uint64_t *avail)
{
    *total = *avail = 0;
    for (uint32_t i = 0; i < cm->nsrv; i++) {
        struct cm_server *s = cm->srv[i];
        if (!server_up(s)) continue;
        *total += s->total;
        *avail += s->avail;
    }
}

void chunks_health(struct chunks *cm, uint32_t (*goal_of)(void *arg, uint64_t ino), void *arg,
                   struct chunks_health *h)
{
    memset(h, 0, sizeof(*h));
    for (uint64_t i = 0; i < cm->cap; i++) {
        struct cm_chunk *c = cm->tab[i];
        if (!c) continue;
        h->chunks++;
        unsigned live = 0;
        for (unsigned j = 0; j < c->nrep; j++)
            if (chunks_replica_live(cm, &c->reps[j]) && c->reps[j].version == c->version) live++;
        uint32_t goal = goal_of ? goal_of(arg, c->ino) : DFS_DEFAULT_GOAL;
        if (live == 0) h->missing++;
        else if (live < goal) h->under_goal++;
        else if (live > goal) h->over_goal++;
        else h->healthy++;
    }
}

/* ----- replicas ----- */

static struct cm_replica *rep_find(struct cm_chunk *c, uint32_t sid)
{
    for (unsigned i = 0; i < c->nrep; i++)
        if (c->reps[i].server_id == sid) return &c->reps[i];
    return NULL;
}

void chunks_replica_set(struct chunks *cm, struct cm_chunk *c, uint32_t server_id,
                        uint32_t version, uint32_t state)
{
    (void)cm;
    struct cm_replica *r = rep_find(c, server_id);
    if (!r) {
        if (c->nrep == c->caprep) {
            unsigned ncap = c->caprep ? c->caprep * 2u : 2u;
            if (ncap > 255) return;
            struct cm_replica *n = realloc(c->reps, ncap * sizeof(*n));
            if (!n) abort();
            c->reps = n;
            c->caprep = (uint8_t)ncap;
        }
        r = &c->reps[c->nrep++];
        r->server_id = server_id;
    }
    r->version = version;
    r->state = (uint8_t)state;
}

void chunks_replica_drop(struct chunks *cm, struct cm_chunk *c, uint32_t server_id)
{
    (void)cm;
    for (unsigned i = 0; i < c->nrep; i++)
        if (c->reps[i].server_id == server_id) {
            c->reps[i] = c->reps[--c->nrep];
            return;
        }
}

int chunks_report(struct chunks *cm, uint32_t server_id, const struct dfs_chunkrep *rep)
{
    struct cm_chunk *c = chunks_get(cm, rep->chunk_id);
    if (!c) return 1; /* orphan: no file owns it */
    uint32_t st = rep->state;
    if (st == DFS_RS_LOST) {
        chunks_replica_drop(cm, c, server_id);
        return 0;
    }
    if (st == DFS_RS_OK && rep->version < c->version) st = DFS_RS_STALE;
    if (st == DFS_RS_OK && rep->version > c->version) {
        /* The server took a version bump whose commit did not survive (the
         * leader died between SETVERSION and the log commit).  Its data is
         * at least as new as ours: adopt the copy as current. */
        st = DFS_RS_OK;
    }
    struct cm_replica *old = rep_find(c, server_id);
    if (old && c->rops && st == DFS_RS_OK && rep->version == old->version &&
        (old->state == DFS_RS_STALE || old->state == DFS_RS_PENDING))
        return 0; /* repair is deleting or copying it: its answer decides */
    chunks_replica_set(cm, c, server_id, rep->version, st);
    if (rep->length > c->length) c->length = rep->length;
    return st == DFS_RS_STALE;
}

/* ----- placement ----- */

static bool has_room(const struct chunks *cm, const struct cm_server *s)
{
    return s->avail > cm->o.min_free + CHUNKS_WRITE_NEED && s->dir_avail_max >= CHUNKS_WRITE_NEED;
}

bool chunks_server_full(struct chunks *cm, uint32_t id)
{
    struct cm_server *s = chunks_server(cm, id);
    return s && !has_room(cm, s);
}

int chunks_place_fail_status(struct chunks *cm)
{
    unsigned up = 0, full = 0;
    for (uint32_t i = 0; i < cm->nsrv; i++) {
        struct cm_server *s = cm->srv[i];
        if (s->state != DFS_SS_UP || s->draining) continue;
        up++;
        if (!has_room(cm, s)) full++;
    }
    return up && full == up ? DFS_ENOSPC : DFS_ENOSERVERS;
}

int chunks_chain_fail(struct chunks *cm, struct cm_chunk *c, uint32_t bad)
{
    struct cm_replica *b = rep_find(c, bad);
    if (!b) return DFS_OK;
    unsigned others = 0;
    for (unsigned i = 0; i < c->nrep; i++) {
        struct cm_replica *r = &c->reps[i];
        if (r != b && r->version == c->version && chunks_replica_live(cm, r)) others++;
    }
    if (others) {
        b->state = DFS_RS_STALE;
        return DFS_OK;
    }
    if (b->state != DFS_RS_OK || b->version != c->version) return DFS_EIO;
    return chunks_server_full(cm, bad) ? DFS_ENOSPC : DFS_EIO;
}

/* ----- version adoption ----- */

uint32_t chunks_adopt_version(struct chunks *cm, struct cm_chunk *c)
{
    if (c->busy || c->adopting) return 0;
    uint32_t best = 0;
    for (unsigned i = 0; i < c->nrep; i++) {
        const struct cm_replica *r = &c->reps[i];
        if (r->version > c->version && r->version > best && chunks_replica_live(cm, r))
            best = r->version;
    }
    return best;
}

void chunks_adopt_start(struct chunks *cm, struct cm_chunk *c, uint32_t version)
{
    (void)cm;
    c->adopting = version;
}

void chunks_adopt_done(struct chunks *cm, struct cm_chunk *c)
{
    (void)cm;
    c->adopting = 0;
}

static bool in_list(const uint32_t *v, unsigned n, uint32_t x)
{
    for (unsigned i = 0; i < n; i++)
        if (v[i] == x) return true;
    return false;
}

unsigned chunks_place(struct chunks *cm, unsigned want, const uint32_t *exclude,
                      unsigned nexclude, uint32_t *out)
{
    unsigned got = 0;
    /* labels already used (by excluded = existing copies, and by choices) */
    const char *used[64];
    unsigned nused = 0;
    for (unsigned i = 0; i < nexclude && nused < 64; i++) {
        struct cm_server *s = chunks_server(cm, exclude[i]);
        if (s && s->label[0]) used[nused++] = s->label;
    }
    while (got < want) {
        /* Two passes: first only servers on a label not used yet, then any. */
        struct cm_server *pick = NULL;
        for (int pass = 0; pass < 2 && !pick; pass++) {
            uint64_t sum = 0;
            for (uint32_t i = 0; i < cm->nsrv; i++) {
                struct cm_server *s = cm->srv[i];
                if (s->state != DFS_SS_UP || s->draining || !has_room(cm, s) ||
                    in_list(exclude, nexclude, s->id) || in_list(out, got, s->id))
                    continue;
                if (pass == 0 && s->label[0]) {
                    bool dup = false;
                    for (unsigned k = 0; k < nused; k++)
                        if (!strcmp(used[k], s->label)) dup = true;
                    if (dup) continue;
                }
                /* Weight by free space (in MiB, at least 1 so tiny test
                 * servers still get picked). */
                sum += (s->avail >> 20) + 1;
            }
            if (!sum) continue;
            uint64_t r = cm->clk.random(cm->clk.arg) % sum;
            for (uint32_t i = 0; i < cm->nsrv; i++) {
                struct cm_server *s = cm->srv[i];
                if (s->state != DFS_SS_UP || s->draining || !has_room(cm, s) ||
                    in_list(exclude, nexclude, s->id) || in_list(out, got, s->id))
                    continue;
                if (pass == 0 && s->label[0]) {
                    bool dup = false;
                    for (unsigned k = 0; k < nused; k++)
                        if (!strcmp(used[k], s->label)) dup = true;
                    if (dup) continue;
                }
                uint64_t w = (s->avail >> 20) + 1;
                if (r < w) {
                    pick = s;
                    break;
                }
                r -= w;
            }
        }
        if (!pick) break;
        out[got++] = pick->id;
        if (pick->label[0] && nused < 64) used[nused++] = pick->label;
    }
    return got;
}

/* ----- leases ----- */

int chunks_lease(struct chunks *cm, struct cm_chunk *c, uint64_t session, int *renewed)
{
    uint64_t now = chunks_now_ms(cm);
    *renewed = 0;
    bool live = c->lease_session && now < c->lease_expire_ms;
    if (c->busy && c->lease_session != session) return DFS_EBUSY;
    if (live && c->lease_session != session) return DFS_EBUSY;
    if (c->busy) return DFS_EBUSY; /* our own bump still in flight: retry */
    *renewed = live && c->lease_session == session;
    c->lease_session = session;
    c->lease_expire_ms = now + cm->o.lease_ms;
    return DFS_OK;
}

uint32_t chunks_lease_left(struct chunks *cm, const struct cm_chunk *c)
{
    uint64_t now = chunks_now_ms(cm);
    if (!c->lease_session || now >= c->lease_expire_ms) return 0;
    return (uint32_t)(c->lease_expire_ms - now);
}

void chunks_lease_release(struct chunks *cm, struct cm_chunk *c, uint64_t session)
{
    (void)cm;
    if (c->lease_session == session) {
        c->lease_session = 0;
        c->lease_expire_ms = 0;
    }
}
