/* rlog.c - metad's raft log storage (see rlog.h for the format and the rules). */
#include "rlog.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "log.h"
#include "util.h"

#define META_MAGIC 0x314154454d534644ull /* "DFSMETA1" */
#define SEG_MAGIC 0x31474f4c52534644ull  /* "DFSRLOG1" */
#define SNAP_MAGIC 0x31504e5352534644ull /* "DFSRSNP1" */
#define REC_MAGIC 0x52454331u            /* "1CER" */
#define SEG_HDR 16u
#define REC_HDR 32u
#define SNAP_HDR 64u
#define DEFAULT_SEG_BYTES (8u << 20)
#define MAX_REC_LEN (1u << 30)

static size_t pad8(size_t n) { return (n + 7) & ~(size_t)7; }

struct seg {
    uint64_t first; /* index of the first record */
    uint64_t n;     /* records */
    uint64_t *off;  /* file offset of each record */
    size_t cap;
    uint64_t size; /* end of the last record */
    int fd;
    bool dirty; /* written since the last flush started */
};

/* A callback waiting for the log to be flushed up to write sequence `seq`,
 * or (BATCH mode appends) for the next loop iteration. */
struct waiter {
    uint64_t seq;
    struct raft_io_append *append; /* raft append, or ... */
    void (*cb)(void *arg, int status); /* ... an rlog_sync caller */
    void *arg;
    struct waiter *next;
};

struct wlist {
    struct waiter *head, *tail;
};

enum { SNAP_PUT, SNAP_GET };

struct snapop {
    int kind;
    struct rlog *l;
    uv_work_t work;
    /* put */
    struct raft_io_snapshot_put *put;
    const struct raft_snapshot *snap;
    unsigned trailing;
    /* get */
    struct raft_io_snapshot_get *get;
    struct raft_snapshot *loaded;
    uint64_t index; /* the snapshot to read / written */
    int status;
    char err[160];
    struct snapop *next;
};

struct rlog {
    struct raft_io *io, *net;
    uv_loop_t *loop;
    char *dir;
    int dirfd, lockfd;
    int mode;
    unsigned sync_ms;
    size_t seg_bytes;
    raft_term term;
    raft_id vote;
    struct seg *segs; /* ascending; the last one takes appends */
    unsigned nseg, segcap;
    uint64_t next_index;
    uint8_t *wbuf;
    size_t wcap;
    uint64_t wseq, synced_seq;
    bool dir_dirty, broken;
    /* flush worker */
    uv_work_t sync_work;
    bool sync_running;
    uint64_t sync_target;
    int *sync_fds;
    unsigned nsync_fds;
    int sync_err;
    uv_timer_t sync_timer;
    bool timer_armed;
    uv_idle_t ack_idle;
    struct wlist acks;    /* deliver on the next loop iteration */
    struct wlist waiters; /* deliver after a flush */
    /* snapshots: one worker at a time, in order */
    struct snapop *sq_head, *sq_tail;
    bool snap_running;
    uint64_t snap_index;
    /* close */
    bool closing, net_closing;
    unsigned handles_open;
    raft_io_close_cb close_cb;
    /* stats */
    uint64_t bytes, syncs;
};

#define L(io) ((struct rlog *)(io)->impl)

static void seterr(struct rlog *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void seterr(struct rlog *l, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->io->errmsg, sizeof(l->io->errmsg), fmt, ap);
    va_end(ap);
}

static int write_all(int fd, const void *p, size_t n, uint64_t off)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = pwrite(fd, b, n, (off_t)off);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        b += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

static int read_file(int dirfd, const char *name, uint8_t **out, size_t *len)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    size_t n = (size_t)sb.st_size;
    uint8_t *p = raft_malloc(n ? n : 1);
    if (!p) {
        close(fd);
        return -ENOMEM;
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, p + got, n - got, (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? -errno : -EIO;
            raft_free(p);
            close(fd);
            return e;
        }
        got += (size_t)r;
    }
    close(fd);
    *out = p;
    *len = n;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* term and vote */

static int meta_store(struct rlog *l, raft_term term, raft_id vote)
{
    uint64_t m[4] = {META_MAGIC, term, vote, 0};
    m[3] = XXH3_64bits(m, 24);
    int fd = openat(l->dirfd, "meta.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) goto fail;
    if (write_all(fd, m, sizeof(m), 0) != 0 || fdatasync(fd) != 0) {
        close(fd);
        goto fail;
    }
    close(fd);
    if (renameat(l->dirfd, "meta.tmp", l->dirfd, "meta") != 0 || fsync(l->dirfd) != 0) goto fail;
    l->term = term;
    l->vote = vote;
    return 0;
fail:
    seterr(l, "store term/vote in %s: %s", l->dir, strerror(errno));
    return RAFT_IOERR;
}

static int meta_load(struct rlog *l)
{
    uint8_t *p;
    size_t n;
    int rv = read_file(l->dirfd, "meta", &p, &n);
    if (rv == -ENOENT) return 0;
    if (rv) {
        seterr(l, "%s/meta: %s", l->dir, strerror(-rv));
        return RAFT_IOERR;
    }
    uint64_t m[4];
    if (n != sizeof(m)) goto bad;
    memcpy(m, p, sizeof(m));
    if (m[0] != META_MAGIC || m[3] != XXH3_64bits(m, 24)) goto bad;
    raft_free(p);
    l->term = m[1];
    l->vote = m[2];
    return 0;
bad:
    raft_free(p);
    seterr(l, "%s/meta is corrupt (bad size, magic or checksum)", l->dir);
    return RAFT_CORRUPT;
}

/* ------------------------------------------------------------------------ */
/* segments */

static void seg_name(char *buf, size_t len, uint64_t first)
{
    snprintf(buf, len, "log-%020llu", (unsigned long long)first);
}

static int seg_push_off(struct seg *s, uint64_t off)
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 1024;
        uint64_t *o = realloc(s->off, nc * sizeof(*o));
        if (!o) return -1;
        s->off = o;
        s->cap = nc;
    }
    s->off[s->n++] = off;
    return 0;
}

static struct seg *seg_add(struct rlog *l, uint64_t first)
{
    if (l->nseg == l->segcap) {
        unsigned nc = l->segcap ? l->segcap * 2 : 8;
        struct seg *s = realloc(l->segs, nc * sizeof(*s));
        if (!s) return NULL;
        l->segs = s;
        l->segcap = nc;
    }
    struct seg *s = &l->segs[l->nseg++];
    memset(s, 0, sizeof(*s));
    s->first = first;
    s->fd = -1;
    return s;
}

/* Remove segment i (file and memory).  The flush worker works on dup()ed
 * descriptors, so closing here never pulls an fd from under it. */
static void seg_remove(struct rlog *l, unsigned i)
{
    char name[40];
    struct seg *s = &l->segs[i];
    seg_name(name, sizeof(name), s->first);
    if (unlinkat(l->dirfd, name, 0) != 0 && errno != ENOENT)
        log_errno(LOG_LVL_WARNING, errno, "rlog: remove %s/%s", l->dir, name);
    if (s->fd >= 0) close(s->fd);
    free(s->off);
    memmove(&l->segs[i], &l->segs[i + 1], (l->nseg - i - 1) * sizeof(*s));
    l->nseg--;
    l->dir_dirty = true;
}

static int seg_create(struct rlog *l, uint64_t first)
{
    char name[40];
    seg_name(name, sizeof(name), first);
    int fd = openat(l->dirfd, name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        seterr(l, "create %s/%s: %s", l->dir, name, strerror(errno));
        return RAFT_IOERR;
    }
    uint64_t h[2] = {SEG_MAGIC, first};
    int rv = write_all(fd, h, sizeof(h), 0);
    if (rv) {
        close(fd);
        unlinkat(l->dirfd, name, 0);
        seterr(l, "write %s/%s: %s", l->dir, name, strerror(-rv));
        return RAFT_IOERR;
    }
    struct seg *s = seg_add(l, first);
    if (!s) {
        close(fd);
        unlinkat(l->dirfd, name, 0);
        return RAFT_NOMEM;
    }
    s->fd = fd;
    s->size = SEG_HDR;
    s->dirty = true;
    l->dir_dirty = true;
    return 0;
}

/* Encode one record at p; returns its size. */
static size_t rec_encode(uint8_t *p, const struct raft_entry *e, uint64_t index)
{
    uint32_t magic = REC_MAGIC, len = (uint32_t)e->buf.len;
    uint64_t term = e->term;
    uint16_t type = e->type, zero16 = 0;
    memcpy(p, &magic, 4);
    memcpy(p + 4, &len, 4);
    memcpy(p + 8, &term, 8);
    memcpy(p + 16, &index, 8);
    memcpy(p + 24, &type, 2);
    memcpy(p + 26, &zero16, 2);
    if (len) memcpy(p + REC_HDR, e->buf.base, len); /* base may be NULL when len is 0 */
    size_t total = REC_HDR + pad8(len);
    memset(p + REC_HDR + len, 0, total - REC_HDR - len);
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, p, 28);
    XXH3_64bits_update(&st, p + REC_HDR, len);
    uint32_t sum = (uint32_t)XXH3_64bits_digest(&st);
    memcpy(p + 28, &sum, 4);
    return total;
}

/* Parse the record at p (avail bytes): 0 with e, index and size filled, or -1. */
static int rec_decode(const uint8_t *p, size_t avail, struct raft_entry *e, uint64_t *index,
                      size_t *size)
{
    if (avail < REC_HDR) return -1;
    uint32_t magic, len, sum;
    uint16_t type;
    memcpy(&magic, p, 4);
    memcpy(&len, p + 4, 4);
    if (magic != REC_MAGIC || len > MAX_REC_LEN || REC_HDR + pad8(len) > avail) return -1;
    memcpy(&sum, p + 28, 4);
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, p, 28);
    XXH3_64bits_update(&st, p + REC_HDR, len);
    if ((uint32_t)XXH3_64bits_digest(&st) != sum) return -1;
    memcpy(&e->term, p + 8, 8);
    memcpy(index, p + 16, 8);
    memcpy(&type, p + 24, 2);
    e->type = type;
    e->buf.base = (void *)(p + REC_HDR);
    e->buf.len = len;
    *size = REC_HDR + pad8(len);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* flushing */

static void wl_push(struct wlist *w, struct waiter *x)
{
    x->next = NULL;
    if (w->tail) w->tail->next = x;
    else w->head = x;
    w->tail = x;
}

static void deliver(struct waiter *x, int status)
{
    if (x->append) {
        struct raft_io_append *req = x->append;
        free(x);
        req->cb(req, status);
    } else {
        void (*cb)(void *, int) = x->cb;
        void *arg = x->arg;
        free(x);
        cb(arg, status);
    }
}

static void maybe_finish_close(struct rlog *l);
static void start_sync(struct rlog *l);
static void sync_timer_cb(uv_timer_t *t);

static void sync_work_cb(uv_work_t *w)
{
    struct rlog *l = w->data;
    int err = 0;
    for (unsigned i = 0; i < l->nsync_fds; i++) {
        if (fdatasync(l->sync_fds[i]) != 0 && !err) err = errno;
        close(l->sync_fds[i]);
    }
    l->sync_err = err;
}

static void sync_after_cb(uv_work_t *w, int status)
{
    struct rlog *l = w->data;
    (void)status;
    l->sync_running = false;
    l->nsync_fds = 0;
    l->syncs++;
    int st = 0;
    if (l->sync_err) {
        /* After a failed flush the page cache may have dropped the data
         * (fsyncgate): nothing written since can be trusted either. */
        log_errno(LOG_LVL_ERR, l->sync_err, "rlog: flushing the raft log in %s failed; the log "
                                        "refuses further appends", l->dir);
        l->broken = true;
        st = RAFT_IOERR;
    } else {
        l->synced_seq = l->sync_target;
    }
    /* waiters are in seq order */
    while (l->waiters.head && (st || l->waiters.head->seq <= l->synced_seq)) {
        struct waiter *x = l->waiters.head;
        l->waiters.head = x->next;
        if (!l->waiters.head) l->waiters.tail = NULL;
        deliver(x, l->closing && x->append ? RAFT_CANCELED : st);
    }
    if (l->waiters.head) start_sync(l);
    else if (l->wseq > l->synced_seq && l->mode == RLOG_SYNC_BATCH && !l->closing &&
             !l->timer_armed && !l->broken) {
        uv_timer_start(&l->sync_timer, sync_timer_cb, l->sync_ms, 0);
        l->timer_armed = true;
    }
    maybe_finish_close(l);
}

static void start_sync(struct rlog *l)
{
    if (l->timer_armed) {
        uv_timer_stop(&l->sync_timer);
        l->timer_armed = false;
    }
    if (l->sync_running || l->broken) return;
    unsigned need = 1;
    for (unsigned i = 0; i < l->nseg; i++) need += l->segs[i].dirty;
    int *fds = realloc(l->sync_fds, need * sizeof(int));
    if (!fds) {
        /* out of memory: try again shortly rather than leave waiters */
        uv_timer_start(&l->sync_timer, sync_timer_cb, 10, 0);
        l->timer_armed = true;
        return;
    }
    l->sync_fds = fds;
    l->nsync_fds = 0;
    for (unsigned i = 0; i < l->nseg; i++) {
        if (!l->segs[i].dirty) continue;
        int fd = dup(l->segs[i].fd);
        if (fd < 0) continue;
        l->segs[i].dirty = false;
        l->sync_fds[l->nsync_fds++] = fd;
    }
    if (l->dir_dirty) {
        int fd = dup(l->dirfd);
        if (fd >= 0) {
            l->sync_fds[l->nsync_fds++] = fd;
            l->dir_dirty = false;
        }
    }
    l->sync_target = l->wseq;
    l->sync_err = 0;
    l->sync_running = true;
    l->sync_work.data = l;
    if (uv_queue_work(l->loop, &l->sync_work, sync_work_cb, sync_after_cb) != 0) {
        sync_work_cb(&l->sync_work);
        sync_after_cb(&l->sync_work, 0);
    }
}

static void sync_timer_cb(uv_timer_t *t)
{
    struct rlog *l = t->data;
    l->timer_armed = false;
    start_sync(l);
}

static void ack_idle_cb(uv_idle_t *h)
{
    struct rlog *l = h->data;
    uv_idle_stop(h);
    struct waiter *x = l->acks.head;
    l->acks.head = l->acks.tail = NULL;
    while (x) {
        struct waiter *nx = x->next;
        deliver(x, l->closing && x->append ? RAFT_CANCELED : 0);
        x = nx;
    }
}

int rlog_sync(struct raft_io *io, void (*cb)(void *arg, int status), void *arg)
{
    struct rlog *l = L(io);
    if (l->closing) return RAFT_CANCELED;
    if (l->broken) return RAFT_IOERR;
    struct waiter *x = calloc(1, sizeof(*x));
    if (!x) return RAFT_NOMEM;
    x->seq = l->wseq;
    x->cb = cb;
    x->arg = arg;
    if (x->seq <= l->synced_seq) {
        /* already on disk: answer on the next iteration like any ack */
        wl_push(&l->acks, x);
        uv_idle_start(&l->ack_idle, ack_idle_cb);
        return 0;
    }
    wl_push(&l->waiters, x);
    start_sync(l);
    return 0;
}

void rlog_stats(struct raft_io *io, uint64_t *bytes, uint64_t *syncs, uint64_t *last_index)
{
    struct rlog *l = L(io);
    *bytes = l->bytes;
    *syncs = l->syncs;
    *last_index = l->next_index - 1;
}

/* ------------------------------------------------------------------------ */
/* append / truncate */

static int rlog_append(struct raft_io *io, struct raft_io_append *req,
                       const struct raft_entry entries[], unsigned n, raft_io_append_cb cb)
{
    struct rlog *l = L(io);
    if (l->closing) return RAFT_CANCELED;
    if (l->broken) {
        seterr(l, "raft log in %s failed to flush earlier", l->dir);
        return RAFT_IOERR;
    }
    size_t need = 0;
    for (unsigned i = 0; i < n; i++) {
        if (entries[i].buf.len > MAX_REC_LEN) return RAFT_TOOBIG;
        need += REC_HDR + pad8(entries[i].buf.len);
    }
    struct waiter *x = calloc(1, sizeof(*x));
    if (!x) return RAFT_NOMEM;
    if (need > l->wcap) {
        size_t nc = l->wcap ? l->wcap : 65536;
        while (nc < need) nc *= 2;
        uint8_t *nb = realloc(l->wbuf, nc);
        if (!nb) {
            free(x);
            return RAFT_NOMEM;
        }
        l->wbuf = nb;
        l->wcap = nc;
    }
    struct seg *s = l->nseg ? &l->segs[l->nseg - 1] : NULL;
    if (!s || (s->n > 0 && s->size + need > l->seg_bytes)) {
        /* The full segment is flushed before the next one gets a byte, so
         * after a power loss only the last segment can end torn (load cuts
         * that tail; a bad record anywhere else is corruption).  Cheap: the
         * batch timer has flushed all but the last raft_sync_ms of it. */
        if (s && s->dirty) {
            if (fdatasync(s->fd) != 0) {
                seterr(l, "flush raft log in %s: %s", l->dir, strerror(errno));
                log_msg(LOG_LVL_ERR, "rlog: %s", io->errmsg);
                l->broken = true;
                free(x);
                return RAFT_IOERR;
            }
            s->dirty = false;
        }
        int rv = seg_create(l, l->next_index);
        if (rv) {
            free(x);
            return rv;
        }
        s = &l->segs[l->nseg - 1];
    }
    uint64_t start = s->size, old_n = s->n;
    size_t off = 0;
    for (unsigned i = 0; i < n; i++) {
        if (seg_push_off(s, start + off) != 0) {
            s->n = old_n;
            free(x);
            return RAFT_NOMEM;
        }
        off += rec_encode(l->wbuf + off, &entries[i], l->next_index + i);
    }
    int rv = write_all(s->fd, l->wbuf, need, start);
    if (rv) {
        s->n = old_n;
        if (ftruncate(s->fd, (off_t)start) != 0) l->broken = true;
        free(x);
        seterr(l, "write raft log in %s: %s", l->dir, strerror(-rv));
        log_msg(LOG_LVL_ERR, "rlog: %s", io->errmsg);
        return RAFT_IOERR;
    }
    s->size = start + need;
    s->dirty = true;
    l->next_index += n;
    l->wseq++;
    l->bytes += need;
    req->cb = cb;
    x->append = req;
    x->seq = l->wseq;
    if (l->mode == RLOG_SYNC_BATCH) {
        wl_push(&l->acks, x);
        uv_idle_start(&l->ack_idle, ack_idle_cb);
        if (!l->timer_armed && !l->sync_running) {
            uv_timer_start(&l->sync_timer, sync_timer_cb, l->sync_ms, 0);
            l->timer_armed = true;
        }
    } else {
        wl_push(&l->waiters, x);
        start_sync(l);
    }
    return 0;
}

/* Delete every entry from `index` on. */
static int rlog_truncate(struct raft_io *io, raft_index index)
{
    struct rlog *l = L(io);
    if (l->closing) return RAFT_CANCELED;
    if (index >= l->next_index) return 0;
    while (l->nseg && l->segs[l->nseg - 1].first >= index) seg_remove(l, l->nseg - 1);
    if (l->nseg) {
        struct seg *s = &l->segs[l->nseg - 1];
        uint64_t keep = index - s->first;
        if (keep < s->n) {
            if (ftruncate(s->fd, (off_t)s->off[keep]) != 0 || fdatasync(s->fd) != 0) {
                seterr(l, "truncate raft log in %s: %s", l->dir, strerror(errno));
                l->broken = true;
                return RAFT_IOERR;
            }
            s->size = s->off[keep];
            s->n = keep;
        }
    }
    if (l->dir_dirty && fsync(l->dirfd) == 0) l->dir_dirty = false;
    l->next_index = index;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* snapshots */

static size_t conf_encoded_size(const struct raft_configuration *c)
{
    size_t n = 8;
    for (unsigned i = 0; i < c->n; i++) n += 16 + pad8(strlen(c->servers[i].address));
    return n;
}

static void conf_encode(const struct raft_configuration *c, uint8_t *p)
{
    uint64_t cnt = c->n;
    memcpy(p, &cnt, 8);
    p += 8;
    for (unsigned i = 0; i < c->n; i++) {
        uint64_t id = c->servers[i].id;
        uint32_t role = (uint32_t)c->servers[i].role;
        uint32_t al = (uint32_t)strlen(c->servers[i].address);
        memcpy(p, &id, 8);
        memcpy(p + 8, &role, 4);
        memcpy(p + 12, &al, 4);
        memset(p + 16, 0, pad8(al));
        memcpy(p + 16, c->servers[i].address, al);
        p += 16 + pad8(al);
    }
}

static int conf_decode(const uint8_t *p, size_t len, struct raft_configuration *c)
{
    uint64_t cnt;
    if (len < 8) return -1;
    memcpy(&cnt, p, 8);
    size_t off = 8;
    raft_configuration_init(c);
    for (uint64_t i = 0; i < cnt; i++) {
        uint64_t id;
        uint32_t role, al;
        if (off + 16 > len) goto bad;
        memcpy(&id, p + off, 8);
        memcpy(&role, p + off + 8, 4);
        memcpy(&al, p + off + 12, 4);
        if (al > 1024 || off + 16 + pad8(al) > len) goto bad;
        char addr[1025];
        memcpy(addr, p + off + 16, al);
        addr[al] = 0;
        if (raft_configuration_add(c, id, addr, (int)role) != 0) goto bad;
        off += 16 + pad8(al);
    }
    return 0;
bad:
    raft_configuration_close(c);
    return -1;
}

static void snap_name(char *buf, size_t len, uint64_t index)
{
    snprintf(buf, len, "snap-%020llu", (unsigned long long)index);
}

/* Read and verify snapshot `index`; fills *out (raft_malloc'ed pieces). */
static int snap_read(int dirfd, uint64_t index, struct raft_snapshot *out, char *err,
                     size_t errlen)
{
    char name[40];
    snap_name(name, sizeof(name), index);
    uint8_t *p;
    size_t n;
    int rv = read_file(dirfd, name, &p, &n);
    if (rv) {
        snprintf(err, errlen, "%s: %s", name, strerror(-rv));
        return RAFT_IOERR;
    }
    uint64_t h[8];
    if (n < SNAP_HDR) goto bad;
    memcpy(h, p, SNAP_HDR);
    if (h[0] != SNAP_MAGIC || h[1] != index || h[4] > n || h[5] > n ||
        SNAP_HDR + h[4] + h[5] != n)
        goto bad;
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, p, 48);
    XXH3_64bits_update(&st, p + SNAP_HDR, n - SNAP_HDR);
    if (XXH3_64bits_digest(&st) != h[6]) goto bad;
    memset(out, 0, sizeof(*out));
    if (conf_decode(p + SNAP_HDR, h[4], &out->configuration) != 0) goto bad;
    out->index = h[1];
    out->term = h[2];
    out->configuration_index = h[3];
    out->bufs = raft_malloc(sizeof(*out->bufs));
    void *data = raft_malloc(h[5] ? h[5] : 1);
    if (!out->bufs || !data) {
        raft_free(out->bufs);
        raft_free(data);
        raft_configuration_close(&out->configuration);
        raft_free(p);
        snprintf(err, errlen, "%s: out of memory", name);
        return RAFT_NOMEM;
    }
    memcpy(data, p + SNAP_HDR + h[4], h[5]);
    out->bufs[0].base = data;
    out->bufs[0].len = h[5];
    out->n_bufs = 1;
    raft_free(p);
    return 0;
bad:
    raft_free(p);
    snprintf(err, errlen, "%s is corrupt (bad header or checksum)", name);
    return RAFT_CORRUPT;
}

/* Free a snapshot built by snap_read (every piece raft_malloc'ed). */
static void snap_destroy(struct raft_snapshot *s)
{
    if (!s) return;
    raft_configuration_close(&s->configuration);
    raft_free(s->bufs[0].base);
    raft_free(s->bufs);
    raft_free(s);
}

static int snap_write(int dirfd, const struct raft_snapshot *s, char *err, size_t errlen)
{
    size_t clen = conf_encoded_size(&s->configuration), dlen = 0;
    for (unsigned i = 0; i < s->n_bufs; i++) dlen += s->bufs[i].len;
    uint8_t *head = calloc(1, SNAP_HDR + clen);
    if (!head) {
        snprintf(err, errlen, "out of memory");
        return RAFT_NOMEM;
    }
    uint64_t h[8] = {SNAP_MAGIC, s->index, s->term, s->configuration_index, clen, dlen, 0, 0};
    memcpy(head, h, SNAP_HDR);
    conf_encode(&s->configuration, head + SNAP_HDR);
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, head, 48);
    XXH3_64bits_update(&st, head + SNAP_HDR, clen);
    for (unsigned i = 0; i < s->n_bufs; i++) XXH3_64bits_update(&st, s->bufs[i].base, s->bufs[i].len);
    h[6] = XXH3_64bits_digest(&st);
    memcpy(head + 48, &h[6], 8);
    char name[40];
    snap_name(name, sizeof(name), s->index);
    int fd = openat(dirfd, "snap.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    int rv = fd < 0 ? -errno : write_all(fd, head, SNAP_HDR + clen, 0);
    uint64_t off = SNAP_HDR + clen;
    for (unsigned i = 0; rv == 0 && i < s->n_bufs; i++) {
        rv = write_all(fd, s->bufs[i].base, s->bufs[i].len, off);
        off += s->bufs[i].len;
    }
    if (rv == 0 && fdatasync(fd) != 0) rv = -errno;
    if (fd >= 0) close(fd);
    if (rv == 0 && renameat(dirfd, "snap.tmp", dirfd, name) != 0) rv = -errno;
    if (rv == 0 && fsync(dirfd) != 0) rv = -errno;
    free(head);
    if (rv) {
        snprintf(err, errlen, "write %s: %s", name, strerror(-rv));
        unlinkat(dirfd, "snap.tmp", 0);
        return RAFT_IOERR;
    }
    /* older snapshots are no longer needed */
    DIR *d = fdopendir(dup(dirfd));
    if (d) {
        rewinddir(d); /* a dup shares the position of earlier listings */
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            unsigned long long idx;
            char tail;
            if (sscanf(de->d_name, "snap-%llu%c", &idx, &tail) == 1 && idx < s->index)
                unlinkat(dirfd, de->d_name, 0);
        }
        closedir(d);
    }
    return 0;
}

static void snap_next(struct rlog *l);

static void snap_work_cb(uv_work_t *w)
{
    struct snapop *op = w->data;
    struct rlog *l = op->l;
    if (op->kind == SNAP_PUT) {
        op->status = snap_write(l->dirfd, op->snap, op->err, sizeof(op->err));
    } else {
        op->loaded = raft_malloc(sizeof(*op->loaded));
        if (!op->loaded) {
            op->status = RAFT_NOMEM;
            return;
        }
        op->status = snap_read(l->dirfd, op->index, op->loaded, op->err, sizeof(op->err));
        if (op->status) {
            raft_free(op->loaded);
            op->loaded = NULL;
        }
    }
}

static void snap_after_cb(uv_work_t *w, int status)
{
    struct snapop *op = w->data;
    struct rlog *l = op->l;
    (void)status;
    l->snap_running = false;
    l->sq_head = op->next;
    if (!l->sq_head) l->sq_tail = NULL;
    if (op->status) log_msg(LOG_LVL_ERR, "rlog: snapshot in %s: %s", l->dir, op->err);
    if (op->kind == SNAP_PUT) {
        if (op->status == 0) {
            l->snap_index = op->snap->index;
            if (op->trailing == 0) {
                /* installed from the leader: the log restarts after it */
                log_msg(LOG_LVL_NOTICE, "rlog: installed a snapshot at index %llu (term %llu) "
                                        "from the leader", (unsigned long long)op->snap->index,
                        (unsigned long long)op->snap->term);
                while (l->nseg) seg_remove(l, l->nseg - 1);
                l->next_index = op->snap->index + 1;
            } else if (op->snap->index > op->trailing) {
                uint64_t drop_to = op->snap->index - op->trailing; /* inclusive */
                while (l->nseg > 1 && l->segs[0].first + l->segs[0].n - 1 <= drop_to)
                    seg_remove(l, 0);
            }
        }
        op->put->cb(op->put, l->closing ? RAFT_CANCELED : op->status);
    } else {
        struct raft_snapshot *s = op->loaded;
        if (l->closing) {
            snap_destroy(s);
            s = NULL;
        }
        op->get->cb(op->get, s, l->closing ? RAFT_CANCELED : op->status);
    }
    free(op);
    snap_next(l);
    maybe_finish_close(l);
}

static void snap_next(struct rlog *l)
{
    if (l->snap_running || !l->sq_head) return;
    struct snapop *op = l->sq_head;
    if (op->kind == SNAP_GET) op->index = l->snap_index;
    l->snap_running = true;
    op->work.data = op;
    if (uv_queue_work(l->loop, &op->work, snap_work_cb, snap_after_cb) != 0) {
        snap_work_cb(&op->work);
        snap_after_cb(&op->work, 0);
    }
}

/* Queue `op` (filled by the caller) behind the snapshot work in progress. */
static void snap_enqueue(struct rlog *l, struct snapop *op)
{
    op->l = l;
    if (l->sq_tail) l->sq_tail->next = op;
    else l->sq_head = op;
    l->sq_tail = op;
    snap_next(l);
}

static int rlog_snapshot_put(struct raft_io *io, unsigned trailing, struct raft_io_snapshot_put *req,
                             const struct raft_snapshot *snapshot, raft_io_snapshot_put_cb cb)
{
    struct rlog *l = L(io);
    struct snapop *op = l->closing ? NULL : calloc(1, sizeof(*op));
    if (!op) return l->closing ? RAFT_CANCELED : RAFT_NOMEM;
    *op = (struct snapop){.kind = SNAP_PUT, .put = req, .snap = snapshot, .trailing = trailing};
    req->cb = cb;
    snap_enqueue(l, op);
    return 0;
}

static int rlog_snapshot_get(struct raft_io *io, struct raft_io_snapshot_get *req,
                             raft_io_snapshot_get_cb cb)
{
    struct rlog *l = L(io);
    struct snapop *op = l->closing ? NULL : calloc(1, sizeof(*op));
    if (!op) return l->closing ? RAFT_CANCELED : RAFT_NOMEM;
    *op = (struct snapop){.kind = SNAP_GET, .get = req};
    req->cb = cb;
    snap_enqueue(l, op);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* load */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int list_dir(struct rlog *l, uint64_t **segs, unsigned *nseg, uint64_t **snaps,
                    unsigned *nsnap, bool *old_format)
{
    DIR *d = fdopendir(dup(l->dirfd));
    if (d) rewinddir(d); /* a dup shares the position of earlier listings */
    if (!d) {
        seterr(l, "list %s: %s", l->dir, strerror(errno));
        return RAFT_IOERR;
    }
    unsigned cs = 0, cn = 0;
    *segs = NULL;
    *snaps = NULL;
    *nseg = *nsnap = 0;
    *old_format = false;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        unsigned long long v;
        char tail;
        uint64_t **arr = NULL;
        unsigned *cnt = NULL, *cap = NULL;
        if (sscanf(de->d_name, "log-%llu%c", &v, &tail) == 1) arr = segs, cnt = nseg, cap = &cs;
        else if (sscanf(de->d_name, "snap-%llu%c", &v, &tail) == 1) arr = snaps, cnt = nsnap, cap = &cn;
        else if (!strcmp(de->d_name, "metadata1") || !strcmp(de->d_name, "metadata2"))
            *old_format = true;
        if (!arr) continue;
        if (*cnt == *cap) {
            *cap = *cap ? *cap * 2 : 16;
            uint64_t *na = realloc(*arr, *cap * sizeof(uint64_t));
            if (!na) {
                closedir(d);
                return RAFT_NOMEM;
            }
            *arr = na;
        }
        (*arr)[(*cnt)++] = v;
    }
    closedir(d);
    if (*nseg) qsort(*segs, *nseg, sizeof(uint64_t), cmp_u64);
    if (*nsnap) qsort(*snaps, *nsnap, sizeof(uint64_t), cmp_u64);
    return 0;
}

/* Read segment `first` into the in-memory index; its records are appended to
 * *entries (the file buffer is their batch).  `last` allows cutting a torn
 * tail. */
static int load_segment(struct rlog *l, uint64_t first, bool last, struct raft_entry **entries,
                        size_t *n, size_t *cap)
{
    char name[40];
    seg_name(name, sizeof(name), first);
    uint8_t *p;
    size_t len;
    int rv = read_file(l->dirfd, name, &p, &len);
    if (rv) {
        seterr(l, "%s/%s: %s", l->dir, name, strerror(-rv));
        return RAFT_IOERR;
    }
    uint64_t h[2] = {0, 0};
    if (len >= SEG_HDR) memcpy(h, p, SEG_HDR);
    if (len < SEG_HDR || h[0] != SEG_MAGIC || h[1] != first) {
        raft_free(p);
        if (last && len < SEG_HDR) {
            /* created but its header never made it: nothing in it */
            unlinkat(l->dirfd, name, 0);
            return 0;
        }
        seterr(l, "%s/%s: bad segment header", l->dir, name);
        return RAFT_CORRUPT;
    }
    struct seg *s = seg_add(l, first);
    if (!s) {
        raft_free(p);
        return RAFT_NOMEM;
    }
    size_t off = SEG_HDR;
    bool used = false;
    while (off < len) {
        struct raft_entry e;
        uint64_t idx;
        size_t sz;
        if (rec_decode(p + off, len - off, &e, &idx, &sz) != 0 || idx != first + s->n) {
            if (!last) {
                if (!used) raft_free(p); /* else the entries' batch */
                seterr(l, "%s/%s: corrupt record at offset %zu", l->dir, name, off);
                return RAFT_CORRUPT;
            }
            log_msg(LOG_LVL_WARNING, "rlog: %s/%s: cutting %zu bytes of a torn write at offset %zu "
                              "(crash while appending)", l->dir, name, len - off, off);
            int fd = openat(l->dirfd, name, O_RDWR | O_CLOEXEC);
            if (fd < 0 || ftruncate(fd, (off_t)off) != 0 || fdatasync(fd) != 0) {
                if (fd >= 0) close(fd);
                if (!used) raft_free(p);
                seterr(l, "%s/%s: cannot cut the torn tail: %s", l->dir, name, strerror(errno));
                return RAFT_IOERR;
            }
            close(fd);
            break;
        }
        if (seg_push_off(s, off) != 0) {
            if (!used) raft_free(p);
            return RAFT_NOMEM;
        }
        if (*n == *cap) {
            *cap = *cap ? *cap * 2 : 1024;
            struct raft_entry *ne = raft_realloc(*entries, *cap * sizeof(*ne));
            if (!ne) {
                if (!used) raft_free(p);
                return RAFT_NOMEM;
            }
            *entries = ne;
        }
        e.batch = p;
        (*entries)[(*n)++] = e;
        used = true;
        off += sz;
    }
    s->size = off;
    if (!used) raft_free(p);
    return 0;
}

static void free_loaded(struct raft_entry *entries, size_t n)
{
    void *last = NULL;
    for (size_t i = 0; i < n; i++)
        if (entries[i].batch != last) {
            last = entries[i].batch;
            raft_free(last);
        }
    raft_free(entries);
}

static int rlog_load(struct raft_io *io, raft_term *term, raft_id *voted_for,
                     struct raft_snapshot **snapshot, raft_index *start_index,
                     struct raft_entry *entries[], size_t *n_entries)
{
    struct rlog *l = L(io);
    uint64_t *segs = NULL, *snaps = NULL;
    unsigned nseg = 0, nsnap = 0;
    bool old;
    struct raft_entry *ents = NULL;
    size_t n = 0, cap = 0;
    struct raft_snapshot *snap = NULL;
    int rv = list_dir(l, &segs, &nseg, &snaps, &nsnap, &old);
    if (rv) goto out;
    /* newest readable snapshot */
    while (nsnap > 0) {
        snap = raft_malloc(sizeof(*snap));
        if (!snap) {
            rv = RAFT_NOMEM;
            goto out;
        }
        char err[200];
        rv = snap_read(l->dirfd, snaps[nsnap - 1], snap, err, sizeof(err));
        if (rv == 0) break;
        raft_free(snap);
        snap = NULL;
        if (rv != RAFT_CORRUPT) {
            seterr(l, "%s/%s", l->dir, err);
            goto out;
        }
        /* a snapshot that failed its checksum was never renamed into place
         * completely; an older one plus the log still holds everything */
        log_msg(LOG_LVL_WARNING, "rlog: %s/%s; using an older one", l->dir, err);
        nsnap--;
        if (nsnap == 0) {
            seterr(l, "%s: the only snapshot is corrupt", l->dir);
            rv = RAFT_CORRUPT;
            goto out;
        }
        rv = 0;
    }
    for (unsigned i = 0; i < nseg; i++) {
        rv = load_segment(l, segs[i], i + 1 == nseg, &ents, &n, &cap);
        if (rv) goto out;
    }
    /* drop empty segments other than the last, check contiguity */
    for (unsigned i = 0; i + 1 < l->nseg;) {
        if (l->segs[i].n == 0) {
            seg_remove(l, i);
            continue;
        }
        if (l->segs[i + 1].first != l->segs[i].first + l->segs[i].n) {
            seterr(l, "%s: raft log has a gap after index %llu", l->dir,
                   (unsigned long long)(l->segs[i].first + l->segs[i].n - 1));
            rv = RAFT_CORRUPT;
            goto out;
        }
        i++;
    }
    if (l->nseg == 1 && l->segs[0].n == 0) seg_remove(l, 0);
    uint64_t first = l->nseg ? l->segs[0].first : 0;
    uint64_t last = first + n - 1;
    if (snap && n && first <= snap->index && snap->index <= last &&
        ents[snap->index - first].term != snap->term) {
        /* A snapshot installed from a leader (which then removes the log)
         * and a crash before the removal: this log disagrees with the
         * snapshot at its index, so none of it is worth keeping. */
        log_msg(LOG_LVL_WARNING, "rlog: log term differs from the snapshot's at index %llu; "
                                 "dropping the log", (unsigned long long)snap->index);
        last = 0;
    }
    if (snap) {
        if (n == 0 || last < snap->index) {
            if (n) log_msg(LOG_LVL_INFO, "rlog: log ends before the snapshot; dropping it");
            while (l->nseg) seg_remove(l, l->nseg - 1);
            free_loaded(ents, n);
            ents = NULL;
            n = 0;
            first = snap->index + 1;
        } else if (first > snap->index + 1) {
            seterr(l, "%s: raft log starts at %llu, after the snapshot at %llu", l->dir,
                   (unsigned long long)first, (unsigned long long)snap->index);
            rv = RAFT_CORRUPT;
            goto out;
        }
        l->snap_index = snap->index;
    } else if (n == 0) {
        first = 1;
        if (old) {
            seterr(l, "%s holds a raft log in libraft's uv format, written by an earlier dfs "
                      "development build; this metad cannot read it: move those files away "
                      "and start with an empty data_dir", l->dir);
            rv = RAFT_CORRUPT;
            goto out;
        }
    } else if (first != 1) {
        seterr(l, "%s: raft log starts at %llu and there is no snapshot", l->dir,
               (unsigned long long)first);
        rv = RAFT_CORRUPT;
        goto out;
    }
    /* appends go to a fresh descriptor of the last segment */
    if (l->nseg) {
        struct seg *s = &l->segs[l->nseg - 1];
        char name[40];
        seg_name(name, sizeof(name), s->first);
        s->fd = openat(l->dirfd, name, O_RDWR | O_CLOEXEC);
        if (s->fd < 0) {
            seterr(l, "open %s/%s: %s", l->dir, name, strerror(errno));
            rv = RAFT_IOERR;
            goto out;
        }
        for (unsigned i = 0; i + 1 < l->nseg; i++) {
            seg_name(name, sizeof(name), l->segs[i].first);
            l->segs[i].fd = openat(l->dirfd, name, O_RDWR | O_CLOEXEC);
            if (l->segs[i].fd < 0) {
                seterr(l, "open %s/%s: %s", l->dir, name, strerror(errno));
                rv = RAFT_IOERR;
                goto out;
            }
        }
    }
    l->next_index = first + n;
    *term = l->term;
    *voted_for = l->vote;
    *snapshot = snap;
    *start_index = first;
    *entries = ents;
    *n_entries = n;
    snap = NULL;
    ents = NULL;
    n = 0;
    log_msg(LOG_LVL_INFO, "rlog: loaded term %llu, snapshot at %llu, entries %llu..%llu from %s",
            (unsigned long long)l->term, (unsigned long long)l->snap_index,
            (unsigned long long)first, (unsigned long long)(l->next_index - 1), l->dir);
out:
    free(segs);
    free(snaps);
    snap_destroy(snap);
    if (ents) free_loaded(ents, n);
    return rv;
}

/* ------------------------------------------------------------------------ */
/* bootstrap, recover, term, vote */

static int append_sync(struct rlog *l, const struct raft_entry *e)
{
    size_t need = REC_HDR + pad8(e->buf.len);
    uint8_t *buf = malloc(need);
    if (!buf) return RAFT_NOMEM;
    if (!l->nseg) {
        int rv = seg_create(l, l->next_index);
        if (rv) {
            free(buf);
            return rv;
        }
    }
    struct seg *s = &l->segs[l->nseg - 1];
    rec_encode(buf, e, l->next_index);
    int rv = write_all(s->fd, buf, need, s->size);
    free(buf);
    if (rv == 0 && fdatasync(s->fd) != 0) rv = -errno;
    if (rv == 0 && fsync(l->dirfd) != 0) rv = -errno;
    if (rv || seg_push_off(s, s->size) != 0) {
        seterr(l, "write raft log in %s: %s", l->dir, strerror(rv ? -rv : ENOMEM));
        return RAFT_IOERR;
    }
    s->size += need;
    l->next_index++;
    l->dir_dirty = false;
    return 0;
}

static int conf_entry(const struct raft_configuration *conf, raft_term term, struct raft_entry *e)
{
    memset(e, 0, sizeof(*e));
    e->term = term;
    e->type = RAFT_CHANGE;
    return raft_configuration_encode(conf, &e->buf);
}

static int rlog_bootstrap(struct raft_io *io, const struct raft_configuration *conf)
{
    struct rlog *l = L(io);
    if (l->term != 0 || l->nseg || l->snap_index) return RAFT_CANTBOOTSTRAP;
    uint64_t *segs, *snaps;
    unsigned nseg, nsnap;
    bool old;
    int rv = list_dir(l, &segs, &nseg, &snaps, &nsnap, &old);
    free(segs);
    free(snaps);
    if (rv) return rv;
    if (nseg || nsnap || old) return RAFT_CANTBOOTSTRAP;
    rv = meta_store(l, 1, 0);
    if (rv) return rv;
    struct raft_entry e;
    rv = conf_entry(conf, 1, &e);
    if (rv) return rv;
    l->next_index = 1;
    rv = append_sync(l, &e);
    raft_free(e.buf.base);
    /* raft_start() loads again; forget what we built here */
    while (l->nseg) {
        struct seg *s = &l->segs[--l->nseg];
        if (s->fd >= 0) close(s->fd);
        free(s->off);
    }
    return rv;
}

static int rlog_recover(struct raft_io *io, const struct raft_configuration *conf)
{
    struct rlog *l = L(io);
    raft_term t;
    raft_id v;
    struct raft_snapshot *snap;
    raft_index start;
    struct raft_entry *ents;
    size_t n;
    int rv = rlog_load(io, &t, &v, &snap, &start, &ents, &n);
    if (rv) return rv;
    snap_destroy(snap);
    if (ents) free_loaded(ents, n);
    struct raft_entry e;
    rv = conf_entry(conf, l->term, &e);
    if (rv) return rv;
    rv = append_sync(l, &e);
    raft_free(e.buf.base);
    while (l->nseg) {
        struct seg *s = &l->segs[--l->nseg];
        if (s->fd >= 0) close(s->fd);
        free(s->off);
    }
    l->snap_index = 0;
    return rv;
}

static int rlog_set_term(struct raft_io *io, raft_term term)
{
    return meta_store(L(io), term, 0);
}

static int rlog_set_vote(struct raft_io *io, raft_id id)
{
    struct rlog *l = L(io);
    return meta_store(l, l->term, id);
}

/* ------------------------------------------------------------------------ */
/* network side: libraft's uv io */

static int rlog_io_init(struct raft_io *io, raft_id id, const char *address)
{
    struct rlog *l = L(io);
    int rv = l->net->init(l->net, id, address);
    if (rv) snprintf(io->errmsg, sizeof(io->errmsg), "%s", l->net->errmsg);
    return rv;
}

static int rlog_start(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick, raft_io_recv_cb recv)
{
    struct rlog *l = L(io);
    /* ticks and messages arrive with the inner io; raft finds itself in
     * io->data */
    l->net->data = io->data;
    int rv = l->net->start(l->net, msecs, tick, recv);
    if (rv) snprintf(io->errmsg, sizeof(io->errmsg), "%s", l->net->errmsg);
    return rv;
}

static int rlog_send(struct raft_io *io, struct raft_io_send *req, const struct raft_message *m,
                     raft_io_send_cb cb)
{
    struct rlog *l = L(io);
    return l->net->send(l->net, req, m, cb);
}

static int rlog_async_work(struct raft_io *io, struct raft_io_async_work *req,
                           raft_io_async_work_cb cb)
{
    struct rlog *l = L(io);
    return l->net->async_work(l->net, req, cb);
}

static raft_time rlog_time(struct raft_io *io) { return uv_now(L(io)->loop); }

static int rlog_random(struct raft_io *io, int min, int max)
{
    (void)io;
    if (max <= min) return min;
    return min + (int)(dfs_random_u64() % (uint64_t)(max - min));
}

/* ------------------------------------------------------------------------ */
/* close */

static void finish(struct rlog *l)
{
    if (l->close_cb) {
        raft_io_close_cb cb = l->close_cb;
        l->close_cb = NULL;
        cb(l->io);
    }
}

static void handle_closed(uv_handle_t *h)
{
    struct rlog *l = h->data;
    if (--l->handles_open == 0) finish(l);
}

static void net_closed_cb(struct raft_io *net)
{
    struct rlog *l = net->data;
    uv_close((uv_handle_t *)&l->sync_timer, handle_closed);
    uv_close((uv_handle_t *)&l->ack_idle, handle_closed);
}

static void maybe_finish_close(struct rlog *l)
{
    if (!l->closing || l->net_closing || l->sync_running || l->snap_running || l->waiters.head)
        return;
    if (l->acks.head) ack_idle_cb(&l->ack_idle);
    /* a clean stop leaves nothing unflushed */
    for (unsigned i = 0; i < l->nseg; i++) {
        if (l->segs[i].dirty && fdatasync(l->segs[i].fd) != 0)
            log_errno(LOG_LVL_ERR, errno, "rlog: final flush of %s", l->dir);
        l->segs[i].dirty = false;
    }
    if (l->dir_dirty) fsync(l->dirfd);
    l->dir_dirty = false;
    l->net_closing = true;
    /* raft no longer needs the inner io's data (no ticks or messages after
     * close; send callbacks use their request's data) */
    l->net->data = l;
    l->net->close(l->net, net_closed_cb);
}

static void rlog_close(struct raft_io *io, raft_io_close_cb cb)
{
    struct rlog *l = L(io);
    l->closing = true;
    l->close_cb = cb;
    if (l->timer_armed) {
        uv_timer_stop(&l->sync_timer);
        l->timer_armed = false;
    }
    /* snapshot work that has not started is cancelled */
    struct snapop *keep = l->snap_running ? l->sq_head : NULL;
    struct snapop *op = keep ? keep->next : l->sq_head;
    if (keep) keep->next = NULL;
    l->sq_head = l->sq_tail = keep;
    while (op) {
        struct snapop *nx = op->next;
        if (op->kind == SNAP_PUT) op->put->cb(op->put, RAFT_CANCELED);
        else op->get->cb(op->get, NULL, RAFT_CANCELED);
        free(op);
        op = nx;
    }
    if (l->waiters.head && !l->sync_running) start_sync(l);
    maybe_finish_close(l);
}

/* ------------------------------------------------------------------------ */
/* init */

int rlog_init(struct raft_io *io, struct raft_io *net, uv_loop_t *loop, const struct rlog_opts *o)
{
    memset(io, 0, sizeof(*io));
    struct rlog *l = calloc(1, sizeof(*l));
    if (!l) return RAFT_NOMEM;
    io->impl = l;
    l->io = io;
    l->net = net;
    l->loop = loop;
    l->dir = strdup(o->dir);
    l->dirfd = l->lockfd = -1;
    l->mode = o->sync_mode;
    l->sync_ms = o->sync_ms ? o->sync_ms : 1;
    l->seg_bytes = o->segment_bytes ? o->segment_bytes : DEFAULT_SEG_BYTES;
    l->next_index = 1;
    int rv = RAFT_IOERR;
    if (!l->dir) {
        rv = RAFT_NOMEM;
        goto err;
    }
    if (mkdir(l->dir, 0750) != 0 && errno != EEXIST) {
        seterr(l, "data_dir %s: %s", l->dir, strerror(errno));
        goto err;
    }
    l->dirfd = open(l->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (l->dirfd < 0) {
        seterr(l, "data_dir %s: %s", l->dir, strerror(errno));
        goto err;
    }
    l->lockfd = openat(l->dirfd, "LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (l->lockfd < 0) {
        seterr(l, "%s/LOCK: %s", l->dir, strerror(errno));
        goto err;
    }
    if (flock(l->lockfd, LOCK_EX | LOCK_NB) != 0) {
        seterr(l, "data_dir %s is in use by another metad (%s/LOCK is locked)", l->dir, l->dir);
        goto err;
    }
    rv = meta_load(l);
    if (rv) goto err;
    uv_timer_init(loop, &l->sync_timer);
    l->sync_timer.data = l;
    uv_idle_init(loop, &l->ack_idle);
    l->ack_idle.data = l;
    l->handles_open = 2;
    io->version = 2;
    io->init = rlog_io_init;
    io->close = rlog_close;
    io->load = rlog_load;
    io->start = rlog_start;
    io->bootstrap = rlog_bootstrap;
    io->recover = rlog_recover;
    io->set_term = rlog_set_term;
    io->set_vote = rlog_set_vote;
    io->send = rlog_send;
    io->append = rlog_append;
    io->truncate = rlog_truncate;
    io->snapshot_put = rlog_snapshot_put;
    io->snapshot_get = rlog_snapshot_get;
    io->time = rlog_time;
    io->random = rlog_random;
    io->async_work = rlog_async_work;
    return 0;
err:
    if (l->lockfd >= 0) close(l->lockfd);
    if (l->dirfd >= 0) close(l->dirfd);
    free(l->dir);
    free(l);
    io->impl = NULL;
    return rv;
}

void rlog_free(struct raft_io *io)
{
    struct rlog *l = L(io);
    if (!l) return;
    for (unsigned i = 0; i < l->nseg; i++) {
        if (l->segs[i].fd >= 0) close(l->segs[i].fd);
        free(l->segs[i].off);
    }
    free(l->segs);
    free(l->wbuf);
    free(l->sync_fds);
    if (l->lockfd >= 0) close(l->lockfd);
    if (l->dirfd >= 0) close(l->dirfd);
    free(l->dir);
    free(l);
    io->impl = NULL;
}
