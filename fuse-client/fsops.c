/* fsops.c - libfuse low-level operations: POSIX calls -> metad RPCs and the data path. */
#include "fsops.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "checksum.h"
#include "log.h"
#include "util.h"

#define MAX_GROUPS 64

/* An open file. */
struct dfh {
    struct dnode *n;
    uint32_t flags;  /* flags sent with OPEN (and RELEASE) */
    bool writer;
};

/* An open directory: the entries fetched so far, addressed by position
 * (0 ".", 1 "..", 2.. entries), so seekdir/telldir work with FUSE offsets. */
struct dent {
    char *name;
    struct dfs_attr attr;
};
struct ddir {
    pthread_mutex_t mu;
    uint64_t ino;
    struct dent *e;
    size_t n, cap;
    uint64_t cookie;
    bool eof;
    bool cached;      /* e came from the listing cache (no attributes) */
    uint64_t t0, gen; /* when and at which ns_gen listing from cookie 0 began */
};

/* Set once a security.capability xattr was written through this mount;
 * until then the kernel's per-write capability probe is answered locally. */
static volatile int caps_seen;

static struct dfsc *CL(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

/* ----- directories this mount just made ----- */

/*
 * A directory made by this mount was empty when metad made it.  For the
 * entry timeout after that (the staleness the kernel's own negative dentries
 * already allow) a lookup in it of a name this mount has not added is
 * answered ENOENT here, without asking metad: mkdir -p, tar and cp -r create
 * inside fresh directories and each create would otherwise cost one
 * negative LOOKUP round trip.  Names this mount adds (any create, link,
 * symlink or rename into it) are remembered by hash, so their lookups still
 * go to metad; a hash collision only costs that round trip.
 */
#define FRESH_DIRS 64
#define FRESH_NAMES 4096 /* hash slots per directory (power of two) */

struct fresh {
    uint64_t ino;      /* 0: free slot */
    uint64_t until_ms; /* monotonic */
    uint32_t n;        /* names added */
    uint64_t *names;   /* open addressing, 0 = empty */
};

static pthread_mutex_t fresh_mu = PTHREAD_MUTEX_INITIALIZER;
static struct fresh fresh_tab[FRESH_DIRS];

static uint64_t name_hash(const char *name)
{
    uint64_t h = csum_buf(name, strlen(name));
    return h ? h : 1;
}

static struct fresh *fresh_find(uint64_t ino, uint64_t now)
{
    for (int i = 0; i < FRESH_DIRS; i++) {
        struct fresh *f = &fresh_tab[i];
        if (f->ino == ino && ino != 0) {
            if (f->until_ms > now)
                return f;
            f->ino = 0; /* expired */
            return NULL;
        }
    }
    return NULL;
}

/* ino was made empty by this mount; t0 = monotonic time before MKDIR. */
static void fresh_add_dir(struct dfsc *c, uint64_t ino, uint64_t t0)
{
    /* Off by default: a name another client adds to such a directory would
     * stay invisible here for up to entry_timeout, which breaks close-to-open
     * consistency between clients. */
    uint64_t ms = c->fresh_dirs ? (uint64_t)(c->entry_timeout * 1000.0) : 0;
    if (ms == 0)
        return;
    pthread_mutex_lock(&fresh_mu);
    uint64_t now = dfs_mono_ms();
    struct fresh *slot = NULL;
    for (int i = 0; i < FRESH_DIRS && slot == NULL; i++)
        if (fresh_tab[i].ino == 0 || fresh_tab[i].until_ms <= now || fresh_tab[i].ino == ino)
            slot = &fresh_tab[i];
    if (slot == NULL) { /* all busy: replace the one that ends first */
        slot = &fresh_tab[0];
        for (int i = 1; i < FRESH_DIRS; i++)
            if (fresh_tab[i].until_ms < slot->until_ms)
                slot = &fresh_tab[i];
    }
    if (slot->names == NULL)
        slot->names = calloc(FRESH_NAMES, sizeof(uint64_t));
    if (slot->names == NULL) {
        slot->ino = 0;
    } else {
        memset(slot->names, 0, FRESH_NAMES * sizeof(uint64_t));
        slot->ino = ino;
        slot->until_ms = t0 + ms;
        slot->n = 0;
    }
    pthread_mutex_unlock(&fresh_mu);
}

/* This mount is about to add name to directory parent. */
static void fresh_note_name(uint64_t parent, const char *name)
{
    pthread_mutex_lock(&fresh_mu);
    struct fresh *f = fresh_find(parent, dfs_mono_ms());
    if (f) {
        if (f->n >= FRESH_NAMES / 2) {
            f->ino = 0; /* too many to remember: stop answering for it */
        } else {
            uint64_t h = name_hash(name);
            uint32_t i = (uint32_t)h & (FRESH_NAMES - 1);
            while (f->names[i] != 0 && f->names[i] != h)
                i = (i + 1) & (FRESH_NAMES - 1);
            if (f->names[i] == 0) {
                f->names[i] = h;
                f->n++;
            }
        }
    }
    pthread_mutex_unlock(&fresh_mu);
}

/* ----- recent directory listings ----- */

/*
 * rm -rf (fts) and find open every directory twice and list it each time.
 * A complete listing fetched less than entry_timeout ago is served again from
 * here, with names and inode numbers only (no attributes, so nothing stale
 * reaches the kernel's attribute cache).  Any namespace change this mount
 * makes drops the listings of the directories involved and bumps ns_gen, so
 * a listing fetched while such a change was in flight is never kept.
 */
#define LCACHE_DIRS 32
#define LCACHE_MAX_ENTRIES 4096

struct lent {
    char *name;
    uint64_t ino;
    uint32_t mode;
};
struct lcache {
    uint64_t ino; /* 0: free */
    uint64_t until_ms;
    struct lent *e;
    size_t n;
};

static pthread_mutex_t lc_mu = PTHREAD_MUTEX_INITIALIZER;
static struct lcache lc_tab[LCACHE_DIRS];
static uint64_t ns_gen; /* under lc_mu */

static void lcache_free(struct lcache *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->e[i].name);
    free(l->e);
    l->e = NULL;
    l->n = 0;
    l->ino = 0;
}

/* This mount changes (or changed) the entries of directory dir. */
static void ns_change(uint64_t dir)
{
    pthread_mutex_lock(&lc_mu);
    ns_gen++;
    for (int i = 0; i < LCACHE_DIRS; i++)
        if (lc_tab[i].ino == dir)
            lcache_free(&lc_tab[i]);
    pthread_mutex_unlock(&lc_mu);
}

/* Keep a complete listing of dir fetched from time t0 with generation gen. */
static void lcache_put(struct dfsc *c, uint64_t dir, uint64_t t0, uint64_t gen,
                       const struct lent *src, size_t n)
{
    uint64_t ms = (uint64_t)(c->entry_timeout * 1000.0);
    if (ms == 0 || n > LCACHE_MAX_ENTRIES)
        return;
    struct lent *e = calloc(n ? n : 1, sizeof(*e));
    if (e == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        e[i] = src[i];
        e[i].name = strdup(src[i].name);
        if (e[i].name == NULL) {
            for (size_t j = 0; j < i; j++)
                free(e[j].name);
            free(e);
            return;
        }
    }
    pthread_mutex_lock(&lc_mu);
    uint64_t now = dfs_mono_ms();
    struct lcache *slot = NULL;
    if (gen == ns_gen && t0 + ms > now) {
        for (int i = 0; i < LCACHE_DIRS && slot == NULL; i++)
            if (lc_tab[i].ino == dir || lc_tab[i].ino == 0 || lc_tab[i].until_ms <= now)
                slot = &lc_tab[i];
        if (slot == NULL) {
            slot = &lc_tab[0];
            for (int i = 1; i < LCACHE_DIRS; i++)
                if (lc_tab[i].until_ms < slot->until_ms)
                    slot = &lc_tab[i];
        }
        lcache_free(slot);
        slot->ino = dir;
        slot->until_ms = t0 + ms;
        slot->e = e;
        slot->n = n;
        e = NULL;
    }
    pthread_mutex_unlock(&lc_mu);
    if (e) {
        for (size_t i = 0; i < n; i++)
            free(e[i].name);
        free(e);
    }
}

/* Seconds for which "parent has no entry name" is known here, or 0. */
static double fresh_absent(uint64_t parent, const char *name)
{
    double left = 0;
    pthread_mutex_lock(&fresh_mu);
    uint64_t now = dfs_mono_ms();
    struct fresh *f = fresh_find(parent, now);
    if (f) {
        uint64_t h = name_hash(name);
        uint32_t i = (uint32_t)h & (FRESH_NAMES - 1);
        while (f->names[i] != 0 && f->names[i] != h)
            i = (i + 1) & (FRESH_NAMES - 1);
        if (f->names[i] == 0)
            left = (double)(f->until_ms - now) / 1000.0;
    }
    pthread_mutex_unlock(&fresh_mu);
    return left;
}

int fsops_errno(int st)
{
    switch (st) {
    case DFS_OK:
        return 0;
    case DFS_ETIMEDOUT: case DFS_ECONN: case DFS_ECANCELED: case DFS_ENOTLEADER:
    case DFS_EPROTO: case DFS_ECORRUPT: case DFS_ESTALE: case DFS_ENOCHUNK:
    case DFS_ENOSERVERS: case DFS_EVERSION: case DFS_EAUTH: case DFS_EDISK:
    case DFS_EAGAIN:
        return EIO;
    default:
        return dfs_status_to_errno(st);
    }
}

/* ----- requests to metad ----- */

struct rcred {
    uint64_t groups[MAX_GROUPS];
};

static void req_cred(fuse_req_t req, struct dfs_cred *cr, struct rcred *rc)
{
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    uint32_t ng = 0;
    if (ctx->uid != 0) {
        gid_t g[MAX_GROUPS];
        int r = fuse_req_getgroups(req, MAX_GROUPS, g);
        if (r > 0) {
            ng = (uint32_t)DFS_MIN(r, MAX_GROUPS);
            for (uint32_t i = 0; i < ng; i++)
                rc->groups[i] = g[i];
        }
    }
    data_cred(cr, ctx->uid, ctx->gid, rc->groups, ng);
}

/* Call metad; returns the status; *rep is set on DFS_OK only (caller releases). */
static int meta(fuse_req_t req, unsigned op, void *body, struct dfs_frame **rep)
{
    struct dfs_frame *f = NULL;
    int st = mclient_call(CL(req)->mc, op, body, &f);
    if (st != DFS_OK)
        return st;
    st = (int)f->status;
    if (st == DFS_OK && rep)
        *rep = f;
    else
        rpc_frame_release(f);
    return st;
}

static void attr_to_stat(const struct dfs_attr *a, struct stat *st)
{
    memset(st, 0, sizeof(*st));
    st->st_ino = a->ino;
    st->st_mode = a->mode;
    st->st_nlink = a->nlink;
    st->st_uid = a->uid;
    st->st_gid = a->gid;
    st->st_rdev = a->rdev;
    st->st_size = (off_t)a->size;
    st->st_blksize = 1 << 20;
    st->st_blocks = (blkcnt_t)((a->size + 511) / 512);
    st->st_atim.tv_sec = a->atime / 1000000000LL;
    st->st_atim.tv_nsec = a->atime % 1000000000LL;
    st->st_mtim.tv_sec = a->mtime / 1000000000LL;
    st->st_mtim.tv_nsec = a->mtime % 1000000000LL;
    st->st_ctim.tv_sec = a->ctime / 1000000000LL;
    st->st_ctim.tv_nsec = a->ctime % 1000000000LL;
}

/* Record attributes from metad in the node and return them with local
 * uncommitted changes applied. */
static void node_attr(struct dnode *n, const struct dfs_attr *in, struct dfs_attr *out)
{
    pthread_mutex_lock(&n->mu);
    dnode_set_attr(n, in);
    *out = *in;
    dnode_patch_attr(n, out);
    pthread_mutex_unlock(&n->mu);
}

static void fill_entry(struct dfsc *c, struct fuse_entry_param *e, const struct dfs_attr *a)
{
    memset(e, 0, sizeof(*e));
    e->ino = a->ino;
    e->generation = a->generation;
    attr_to_stat(a, &e->attr);
    e->attr_timeout = c->attr_timeout;
    e->entry_timeout = c->entry_timeout;
}

/* Reply with an entry; counts one lookup for the kernel. */
static void reply_entry(fuse_req_t req, const struct dfs_attr *a)
{
    struct dfsc *c = CL(req);
    struct dnode *n = dnode_get(c, a->ino);
    if (n == NULL) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    struct dfs_attr pa;
    node_attr(n, a, &pa);
    struct fuse_entry_param e;
    fill_entry(c, &e, &pa);
    dnode_lookup_add(c, n, 1);
    dnode_put(c, n);
    if (fuse_reply_entry(req, &e) != 0)
        dnode_forget(c, a->ino, 1);
}

static void reply_status(fuse_req_t req, int st)
{
    fuse_reply_err(req, fsops_errno(st));
}

/* One metad call for a FUSE op: returns the reply (the caller releases it),
 * or NULL after answering the request with the error. */
static struct dfs_frame *meta_or_reply(fuse_req_t req, unsigned op, void *body)
{
    struct dfs_frame *rep = NULL;
    int st = meta(req, op, body, &rep);
    if (st != DFS_OK) {
        reply_status(req, st);
        return NULL;
    }
    return rep;
}

/* ----- namespace ----- */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    conn->want |= FUSE_CAP_ASYNC_READ;
    if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
        conn->want |= FUSE_CAP_PARALLEL_DIROPS;
    if (conn->capable & FUSE_CAP_READDIRPLUS) {
        conn->want |= FUSE_CAP_READDIRPLUS;
        conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
    }
    /* O_TRUNC arrives as a setattr(size 0) so the write buffer is flushed
     * and the chunk cache dropped in one place. */
    conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
    /* Let the kernel clear suid/sgid with a setattr. */
    conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV;
    /* Write-through page cache: no writeback cache (see docs). */
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
    conn->max_write = 1u << 20;
    /* max_readahead stays at what the kernel offers: larger values are
     * clamped by the kernel anyway, and data.c reads ahead by itself. */
    conn->max_background = 64;
    conn->congestion_threshold = 48;
    conn->time_gran = 1;
}

static void op_destroy(void *userdata)
{
    struct dfsc *c = userdata;
    (void)c; /* dfsc_shutdown in main flushes and frees everything */
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct dfs_msg_name_req rq;
    struct rcred rc;
    memset(&rq, 0, sizeof(rq));
    req_cred(req, &rq.cred, &rc);
    rq.parent = parent;
    rq.name.ptr = name;
    rq.name.len = (uint32_t)strlen(name);
    if (rq.name.len > DFS_MAX_NAME) {
        fuse_reply_err(req, ENAMETOOLONG);
        return;
    }
    double fresh_left = fresh_absent(parent, name);
    if (fresh_left > 0) {
        struct fuse_entry_param e;
        memset(&e, 0, sizeof(e));
        e.entry_timeout = DFS_MIN(fresh_left, CL(req)->entry_timeout);
        fuse_reply_entry(req, &e);
        return;
    }
    struct dfs_frame *rep = NULL;
    int st = meta(req, DFS_OP_LOOKUP, &rq, &rep);
    if (st == DFS_ENOENT) {
        struct fuse_entry_param e;
        memset(&e, 0, sizeof(e));
        e.entry_timeout = CL(req)->entry_timeout;
        fuse_reply_entry(req, &e);
        return;
    }
    if (st != DFS_OK) {
        reply_status(req, st);
        return;
    }
    reply_entry(req, &((struct dfs_msg_attr_resp *)rep->body)->attr);
    rpc_frame_release(rep);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    dnode_forget(CL(req), ino, nlookup);
    fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    for (size_t i = 0; i < count; i++)
        dnode_forget(CL(req), forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct dfsc *c = CL(req);
    struct dnode *n = dnode_find(c, ino);
    struct dfs_attr a;
    struct stat st;
    if (n) {
        /* While we hold uncommitted writes our view is the newest. */
        pthread_mutex_lock(&n->mu);
        bool local = n->dirty_meta && n->have_attr;
        if (local) {
            a = n->attr;
            dnode_patch_attr(n, &a);
        }
        pthread_mutex_unlock(&n->mu);
        if (local) {
            dnode_put(c, n);
            attr_to_stat(&a, &st);
            fuse_reply_attr(req, &st, c->attr_timeout);
            return;
        }
    }
    struct dfs_msg_ino_req rq;
    struct rcred rc;
    memset(&rq, 0, sizeof(rq));
    req_cred(req, &rq.cred, &rc);
    rq.ino = ino;
    struct dfs_frame *rep = NULL;
    int s = meta(req, DFS_OP_GETATTR, &rq, &rep);
    if (s != DFS_OK) {
        dnode_put(c, n);
        reply_status(req, s);
        return;
    }
    a = ((struct dfs_msg_attr_resp *)rep->body)->attr;
    rpc_frame_release(rep);
    if (n)
        node_attr(n, &a, &a);
    dnode_put(c, n);
    attr_to_stat(&a, &st);
    fuse_reply_attr(req, &st, c->attr_timeout);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
    struct dfsc *c = CL(req);
    struct dnode *n = dnode_get(c, ino);
    if (n == NULL) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    struct dfs_msg_setattr rq;
    struct rcred rc;
    memset(&rq, 0, sizeof(rq));
    req_cred(req, &rq.cred, &rc);
    rq.ino = ino;
    if (to_set & FUSE_SET_ATTR_MODE) {
        rq.valid |= DFS_SET_MODE;
        rq.mode = attr->st_mode;
    }
    if (to_set & FUSE_SET_ATTR_UID) {
        rq.valid |= DFS_SET_UID;
        rq.uid = attr->st_uid;
    }
    if (to_set & FUSE_SET_ATTR_GID) {
        rq.valid |= DFS_SET_GID;
        rq.gid = attr->st_gid;
    }
    if (to_set & FUSE_SET_ATTR_SIZE) {
        rq.valid |= DFS_SET_SIZE;
        rq.size = (uint64_t)attr->st_size;
    }
    if (to_set & FUSE_SET_ATTR_ATIME_NOW) {
        rq.valid |= DFS_SET_ATIME_NOW;
    } else if (to_set & FUSE_SET_ATTR_ATIME) {
        rq.valid |= DFS_SET_ATIME;
        rq.atime = (int64_t)attr->st_atim.tv_sec * 1000000000LL + attr->st_atim.tv_nsec;
    }
    if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
        rq.valid |= DFS_SET_MTIME_NOW;
    } else if (to_set & FUSE_SET_ATTR_MTIME) {
        rq.valid |= DFS_SET_MTIME;
        rq.mtime = (int64_t)attr->st_mtim.tv_sec * 1000000000LL + attr->st_mtim.tv_nsec;
    }
    if (to_set & FUSE_SET_ATTR_CTIME)
        rq.valid |= DFS_SET_CTIME;
    pthread_mutex_lock(&n->mu);
    /* utimensat(mtime) right after writing (tar, cp -p, rsync): write the
     * data out and commit size and the given mtime in one COMMIT instead of
     * COMMIT + SETATTR.  Only for root, which may always set times (COMMIT
     * is sent with metad credentials, so nobody else may take this path). */
    if (n->dirty_meta && fuse_req_ctx(req)->uid == 0 &&
        (to_set & FUSE_SET_ATTR_MTIME) &&
        !(to_set & ~(FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_CTIME))) {
        int fst = data_flush(c, n);
        if (fst == DFS_OK) {
            n->mtime = (int64_t)attr->st_mtim.tv_sec * 1000000000LL + attr->st_mtim.tv_nsec;
            fst = data_commit(c, n, 0);
        }
        struct dfs_attr fa;
        bool done = fst == DFS_OK && !n->dirty_meta && n->have_attr;
        if (done) {
            fa = n->attr;
            dnode_patch_attr(n, &fa);
            n->have_open_stamp = false;
        }
        pthread_mutex_unlock(&n->mu);
        if (fst != DFS_OK || done) {
            dnode_put(c, n);
            if (fst != DFS_OK) {
                reply_status(req, fst);
            } else {
                struct stat sb;
                attr_to_stat(&fa, &sb);
                fuse_reply_attr(req, &sb, c->attr_timeout);
            }
            return;
        }
        pthread_mutex_lock(&n->mu); /* not committed: the general path */
    }
    /* Write out and commit buffered data first, so neither a later commit
     * nor late chunk writes undo this change. */
    int st = DFS_OK;
    if (n->dirty_meta || n->next || n->flight)
        st = data_commit(c, n, 0);
    struct dfs_frame *rep = NULL;
    if (st == DFS_OK)
        st = meta(req, DFS_OP_SETATTR, &rq, &rep);
    struct dfs_attr a;
    if (st == DFS_OK) {
        a = ((struct dfs_msg_attr_resp *)rep->body)->attr;
        rpc_frame_release(rep);
        if (to_set & FUSE_SET_ATTR_SIZE) {
            n->dirty_meta = false;
            data_invalidate(c, n);
        }
        dnode_set_attr(n, &a);
        dnode_patch_attr(n, &a);
        n->have_open_stamp = false;
    }
    pthread_mutex_unlock(&n->mu);
    dnode_put(c, n);
    if (st != DFS_OK) {
        reply_status(req, st);
        return;
    }
    struct stat sb;
    attr_to_stat(&a, &sb);
    fuse_reply_attr(req, &sb, c->attr_timeout);
}

static void do_mknod(fuse_req_t req, unsigned op, fuse_ino_t parent, const char *name,
                     mode_t mode, dev_t rdev)
{
    struct dfs_msg_mknod rq;
    struct rcred rc;
    memset(&rq, 0, sizeof(rq));
    req_cred(req, &rq.cred, &rc);
    rq.parent = parent;
    rq.name.ptr = name;
    rq.name.len = (uint32_t)strlen(name);
    rq.mode = mode;
    rq.rdev = (uint32_t)rdev;
    fresh_note_name(parent, name);
    ns_change(parent);
    uint64_t t0 = dfs_mono_ms();
    struct dfs_frame *rep = NULL;
    int st = meta(req, op, &rq, &rep);
    ns_change(parent);
    if (st != DFS_OK) {
        reply_status(req, st);
        return;
    }
    const struct dfs_attr *a = &((struct dfs_msg_attr_resp *)rep->body)->attr;
    if (op == DFS_OP_MKDIR && a->nlink == 2)
        fresh_add_dir(CL(req), a->ino, t0);
    reply_entry(req, a);
    rpc_frame_release(rep);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                     dev_t rdev)
{
    do_mknod(req, DFS_OP_MKNOD, parent, name, mode, rdev);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    do_mknod(req, DFS_OP_MKDIR, parent, name, (mode & 07777) | S_IFDIR, 0);
}

static void do_remove(fuse_req_t req, unsigned op, fuse_ino_t parent, const char *name)
{
    struct dfs_msg_name_req rq;
    struct rcred rc;
    memset(&rq, 0, sizeof(rq));
    req_cred(req, &rq.cred, &rc);
    rq.parent = parent;
    rq.name.ptr = name;
    rq.name.len = (uint32_t)strlen(name);
    ns_change(parent);
    int st = meta(req, op, &rq, NULL);
    ns_change(parent);
    reply_status(req, st);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    do_remove(req, DFS_OP_UNLINK, parent, name);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    do_remove(req, DFS_OP_RMDIR, parent, name);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    struct dfs_msg_symlink rq;
    struct rcred rc;
    memset(&rq, 0, sizeof(rq));
    req_cred(req, &rq.cred, &rc);
    rq.parent = parent;
    rq.name.ptr = name;
    rq.name.len = (uint32_t)strlen(name);
    rq.target.ptr = link;
    rq.target.len = (uint32_t)strlen(link);
    if (rq.target.len >= DFS_MAX_PATH) {
        fuse_reply_err(req, ENAMETOOLONG);
        return;
    }
    fresh_note_name(parent, name);
    ns_change(parent);
    struct dfs_frame *rep = NULL;
    int st = meta(req, DFS_OP_SYMLINK, &rq, &rep);
    ns_change(parent);
    if (st != DFS_OK) {
        reply_status(req, st);
        return;
    }
    reply_entry(req, &((struct dfs_msg_attr_resp *)rep->body)->attr);
    rpc_frame_release(rep);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
    struct dfs_msg_ino_req rq;
    struct rcred rc;
    memset(&rq, 0, sizeof(rq));
    req_cred(req, &rq.cred, &rc);
    rq.ino = ino;
    struct dfs_frame *rep = meta_or_reply(req, DFS_OP_READLINK, &rq);
    if (rep == NULL)
        return;
    const struct dfs_msg_readlink_resp *r = rep->body;
    fuse_reply_readlink(req, r->target.ptr ? r->target.ptr : "");
    rpc_frame_release(rep);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
    if (flags & ~(DFS_RENAME_NOREPLACE | DFS_RENAME_EXCHANGE)) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    struct dfs_msg_rename rq;
    struct rcred rc;
    memset(&rq, 0, sizeof(rq));
    req_cred(req, &rq.cred, &rc);
    rq.parent = parent;
    rq.name.ptr = name;
    rq.name.len = (uint32_t)strlen(name);
    rq.newparent = newparent;
    rq.newname.ptr = newname;
    rq.newname.len = (uint32_t)strlen(newname);
    rq.flags = flags;
    fresh_note_name(newparent, newname);
    if (flags & DFS_RENAME_EXCHANGE)
        fresh_note_name(parent, name);
    ns_change(parent);
    ns_change(newparent);
    int st = meta(req, DFS_OP_RENAME, &rq, NULL);
    ns_change(parent);
    ns_change(newparent);
    reply_status(req, st);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    struct dfs_msg_link rq;
    struct rcred rc;
    memset(&rq, 0, sizeof(rq));
    req_cred(req, &rq.cred, &rc);
    rq.ino = ino;
    rq.newparent = newparent;
    rq.newname.ptr = newname;
    rq.newname.len = (uint32_t)strlen(newname);
    fresh_note_name(newparent, newname);
    ns_change(newparent);
    struct dfs_frame *rep = NULL;
    int st = meta(req, DFS_OP_LINK, &rq, &rep);
    ns_change(newparent);
    if (st != DFS_OK) {
        reply_status(req, st);
        return;
    }
    reply_entry(req, &((struct dfs_msg_attr_resp *)rep->body)->attr);
    rpc_frame_release(rep);
}

/* ----- files ----- */

static uint32_t open_flags(int flags)
{
    uint32_t f = (uint32_t)flags & ~(uint32_t)(O_CREAT | O_NOCTTY);
    if ((flags & O_ACCMODE) != O_RDONLY)
        f |= DFS_OF_WRITE;
    return f;
}

static void meta_release(struct dfsc *c, uint64_t ino, uint32_t flags)
{
    struct dfs_msg_open rq;
    memset(&rq, 0, sizeof(rq));
    data_cred(&rq.cred, 0, 0, NULL, 0);
    rq.ino = ino;
    rq.flags = flags;
    int st = mclient_do(c->mc, DFS_OP_RELEASE, &rq, NULL);
    if (st != DFS_OK && st != DFS_ENOENT)
        log_warn("release of inode %llu: %s", (unsigned long long)ino, dfs_strerror(st));
}

/* Close handle fh of node n: our last handle's RELEASE ends our write
 * leases at metad (also grants taken by an fsync on a read-only handle) and
 * may let it drop chunks of an empty file, so forget them before it can act
 * on it, not after: a handle opened meanwhile must GRANT afresh. */
static void release_handle(struct dfsc *c, struct dnode *n, uint64_t ino, struct dfh *fh)
{
    pthread_mutex_lock(&c->itab_mu);
    bool last = n->nopen <= 1;
    pthread_mutex_unlock(&c->itab_mu);
    if (last) {
        pthread_mutex_lock(&n->mu);
        for (size_t i = 0; i < n->nchunks; i++)
            n->chunks[i].grant_until_ms = 0;
        pthread_mutex_unlock(&n->mu);
    }
    meta_release(c, ino, fh->flags);
    dnode_open_drop(c, n, fh->writer);
}

/* Set up the open file after OPEN/CREATE answered with attributes a.
 * Returns the handle; decides keep_cache (close-to-open coherence). */
static struct dfh *open_setup(struct dfsc *c, struct dnode *n, const struct dfs_attr *a,
                              uint32_t flags, bool created, struct fuse_file_info *fi,
                              const struct dfs_msg_attr_resp *r)
{
    struct dfh *fh = calloc(1, sizeof(*fh));
    if (fh == NULL)
        return NULL;
    fh->n = n;
    fh->flags = flags;
    fh->writer = (flags & DFS_OF_WRITE) != 0;
    pthread_mutex_lock(&n->mu);
    bool keep = false;
    if (n->dirty_meta || n->next || n->flight) {
        keep = true; /* our own writes are in the page cache already */
    } else if (n->have_open_stamp && n->open_mtime == a->mtime && n->open_size == a->size) {
        keep = true;
    } else if (!created) {
        data_invalidate(c, n);
    }
    dnode_set_attr(n, a);
    if (r)
        data_seed_chunks(c, n, &r->layout, r->chunks, r->chunks_count, r->chunks_known);
    n->have_open_stamp = true;
    n->open_mtime = a->mtime;
    n->open_size = a->size;
    pthread_mutex_unlock(&n->mu);
    fi->keep_cache = keep;
    fi->fh = (uint64_t)(uintptr_t)fh;
    dnode_open_add(c, n, fh->writer);
    return fh;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct dfsc *c = CL(req);
    struct dfs_msg_open rq;
    struct rcred rc;
    memset(&rq, 0, sizeof(rq));
    req_cred(req, &rq.cred, &rc);
    rq.ino = ino;
    rq.flags = open_flags(fi->flags);
    if (c->ro && (rq.flags & DFS_OF_WRITE)) {
        fuse_reply_err(req, EROFS);
        return;
    }
    struct dfs_frame *rep = meta_or_reply(req, DFS_OP_OPEN, &rq);
    if (rep == NULL)
        return;
    struct dfs_attr a = ((struct dfs_msg_attr_resp *)rep->body)->attr;
    struct dnode *n = dnode_get(c, ino);
    struct dfh *fh = n ? open_setup(c, n, &a, rq.flags, false, fi, rep->body) : NULL;
    rpc_frame_release(rep);
    if (fh == NULL) {
        meta_release(c, ino, rq.flags);
        dnode_put(c, n);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    if (!fi->keep_cache && (fi->flags & O_ACCMODE) == O_RDONLY && S_ISREG(a.mode)) {
        /* cat, cp, a compiler reading a header: the READ follows at once */
        pthread_mutex_lock(&n->mu);
        data_open_prefetch(c, n);
        pthread_mutex_unlock(&n->mu);
    }
    dnode_put(c, n);
    if (fuse_reply_open(req, fi) != 0) {
        release_handle(c, n, ino, fh);
        free(fh);
    }
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
    struct dfsc *c = CL(req);
    struct dfs_msg_mknod rq;
    struct rcred rc;
    memset(&rq, 0, sizeof(rq));
    req_cred(req, &rq.cred, &rc);
    rq.parent = parent;
    rq.name.ptr = name;
    rq.name.len = (uint32_t)strlen(name);
    rq.mode = (mode & 07777) | S_IFREG;
    rq.flags = open_flags(fi->flags) | (uint32_t)(fi->flags & (O_CREAT | O_EXCL));
    /* With -o prealloc, a file created for writing gets chunk 0 with the
     * CREATE reply (no GRANT before the first write of a small file).  Off by
     * default: it measured no faster here, and a creator that dies before
     * writing leaves an allocated chunk with no copy behind. */
    if (CL(req)->create_alloc && (fi->flags & O_ACCMODE) != O_RDONLY)
        rq.flags |= DFS_CREATE_ALLOC;
    fresh_note_name(parent, name);
    ns_change(parent);
    struct dfs_frame *rep = NULL;
    int st = meta(req, DFS_OP_CREATE, &rq, &rep);
    ns_change(parent);
    if (st != DFS_OK) {
        reply_status(req, st);
        return;
    }
    const struct dfs_msg_attr_resp *ar = rep->body;
    struct dfs_attr a = ar->attr;
    uint32_t oflags = open_flags(fi->flags);
    struct dnode *n = dnode_get(c, a.ino);
    if (n) {
        /* metad sent the layout with the reply: no CHUNKS before writing;
         * and maybe chunk 0 with a write lease: no GRANT either. */
        pthread_mutex_lock(&n->mu);
        data_seed_created(c, n, &ar->layout, ar->chunks, ar->chunks_count, ar->chunks_known);
        pthread_mutex_unlock(&n->mu);
    }
    rpc_frame_release(rep);
    struct dfh *fh = n ? open_setup(c, n, &a, oflags, true, fi, NULL) : NULL;
    if (fh == NULL) {
        meta_release(c, a.ino, oflags);
        dnode_put(c, n);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    struct fuse_entry_param e;
    fill_entry(c, &e, &a);
    dnode_lookup_add(c, n, 1);
    dnode_put(c, n);
    if (fuse_reply_create(req, &e, fi) != 0) {
        release_handle(c, n, a.ino, fh);
        dnode_forget(c, a.ino, 1);
        free(fh);
    }
}

static struct dfh *FH(struct fuse_file_info *fi)
{
    return (struct dfh *)(uintptr_t)fi->fh;
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    struct dfsc *c = CL(req);
    struct dnode *n = FH(fi)->n;
    char *buf = malloc(size ? size : 1);
    if (buf == NULL) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    size_t got = 0;
    pthread_mutex_lock(&n->mu);
    int st = data_read(c, n, (uint64_t)off, size, buf, &got);
    pthread_mutex_unlock(&n->mu);
    if (st != DFS_OK)
        reply_status(req, st);
    else
        fuse_reply_buf(req, buf, got);
    free(buf);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    struct dfsc *c = CL(req);
    struct dnode *n = FH(fi)->n;
    if (off < 0 || (uint64_t)off + size < (uint64_t)off) {
        fuse_reply_err(req, EFBIG);
        return;
    }
    pthread_mutex_lock(&n->mu);
    int st = data_write(c, n, (uint64_t)off, buf, size);
    pthread_mutex_unlock(&n->mu);
    if (st != DFS_OK)
        reply_status(req, st);
    else
        fuse_reply_write(req, size);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct dfsc *c = CL(req);
    struct dnode *n = FH(fi)->n;
    pthread_mutex_lock(&n->mu);
    int st = data_commit(c, n, 0);
    pthread_mutex_unlock(&n->mu);
    reply_status(req, st);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct dfsc *c = CL(req);
    struct dfh *fh = FH(fi);
    struct dnode *n = fh->n;
    int st = DFS_OK;
    if (fh->writer) {
        pthread_mutex_lock(&n->mu);
        st = data_commit(c, n, n->nwriters <= 1 ? DFS_CF_RELEASE : 0);
        pthread_mutex_unlock(&n->mu);
        if (st != DFS_OK)
            log_warn("inode %llu: data lost at close: %s", (unsigned long long)ino,
                     dfs_strerror(st));
    }
    release_handle(c, n, ino, fh);
    /* The node may now be freed if the kernel already forgot it. */
    struct dnode *tmp = dnode_find(c, ino);
    dnode_put(c, tmp);
    free(fh);
    reply_status(req, st);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    struct dfsc *c = CL(req);
    struct dnode *n = FH(fi)->n;
    pthread_mutex_lock(&n->mu);
    int st = data_fsync(c, n);
    pthread_mutex_unlock(&n->mu);
    reply_status(req, st);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                         struct fuse_file_info *fi)
{
    if (mode != 0) {
        fuse_reply_err(req, EOPNOTSUPP);
        return;
    }
    if (offset < 0 || length <= 0) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    struct dfsc *c = CL(req);
    struct dnode *n = FH(fi)->n;
    pthread_mutex_lock(&n->mu);
    int st = data_extend(c, n, (uint64_t)offset + (uint64_t)length);
    pthread_mutex_unlock(&n->mu);
    reply_status(req, st);
}

/* ----- directories ----- */

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct ddir *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    pthread_mutex_init(&d->mu, NULL);
    d->ino = ino;
    fi->fh = (uint64_t)(uintptr_t)d;

    if (fuse_reply_open(req, fi) != 0) {
        pthread_mutex_destroy(&d->mu);
        free(d);
    }
}

static void ddir_clear(struct ddir *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->e[i].name);
    d->n = 0;
    d->cookie = 0;
    d->eof = false;
    d->cached = false;
}

/* Start listing d from the beginning: from the listing cache if it has d. */
static void ddir_begin(struct ddir *d)
{
    pthread_mutex_lock(&lc_mu);
    uint64_t now = dfs_mono_ms();
    struct lcache *l = NULL;
    for (int i = 0; i < LCACHE_DIRS && l == NULL; i++)
        if (lc_tab[i].ino == d->ino && lc_tab[i].until_ms > now)
            l = &lc_tab[i];
    if (l && l->n <= d->cap) {
        size_t k = 0;
        for (; k < l->n; k++) {
            char *nm = strdup(l->e[k].name);
            if (nm == NULL)
                break;
            memset(&d->e[k], 0, sizeof(d->e[k]));
            d->e[k].name = nm;
            d->e[k].attr.ino = l->e[k].ino;
            d->e[k].attr.mode = l->e[k].mode;
        }
        d->n = k;
        if (k == l->n) {
            d->eof = true;
            d->cached = true;
        } else {
            ddir_clear(d);
        }
    } else if (l) {
        /* make room, then try again */
        size_t want = l->n;
        pthread_mutex_unlock(&lc_mu);
        struct dent *ne = realloc(d->e, want * sizeof(*ne));
        if (ne) {
            d->e = ne;
            d->cap = want;
            ddir_begin(d);
            return;
        }
        pthread_mutex_lock(&lc_mu);
    }
    if (!d->cached) {
        d->t0 = now;
        d->gen = ns_gen;
    }
    pthread_mutex_unlock(&lc_mu);
}

/* d was listed completely from metad: keep the listing for the next open. */
static void ddir_keep(struct dfsc *c, struct ddir *d)
{
    if (d->cached || d->n > LCACHE_MAX_ENTRIES)
        return;
    struct lent *e = malloc((d->n ? d->n : 1) * sizeof(*e));
    if (e == NULL)
        return;
    for (size_t i = 0; i < d->n; i++) {
        e[i].name = d->e[i].name;
        e[i].ino = d->e[i].attr.ino;
        e[i].mode = d->e[i].attr.mode;
    }
    lcache_put(c, d->ino, d->t0, d->gen, e, d->n);
    free(e);
}

static int ddir_fetch(fuse_req_t req, struct ddir *d)
{
    struct dfs_msg_readdir rq;
    struct rcred rc;
    memset(&rq, 0, sizeof(rq));
    req_cred(req, &rq.cred, &rc);
    rq.ino = d->ino;
    rq.cookie = d->cookie;
    rq.max = DFS_READDIR_MAX;
    struct dfs_frame *rep = NULL;
    int st = meta(req, DFS_OP_READDIR, &rq, &rep);
    if (st != DFS_OK)
        return st;
    const struct dfs_msg_readdir_resp *r = rep->body;
    if (d->n + r->entries_count > d->cap) {
        size_t nc = DFS_MAX(d->cap * 2, d->n + r->entries_count + 16);
        struct dent *ne = realloc(d->e, nc * sizeof(*ne));
        if (ne == NULL) {
            rpc_frame_release(rep);
            return DFS_ENOMEM;
        }
        d->e = ne;
        d->cap = nc;
    }
    for (uint32_t i = 0; i < r->entries_count; i++) {
        const struct dfs_dirent *de = &r->entries[i];
        d->cookie = de->cookie;
        if (de->name.ptr == NULL || strcmp(de->name.ptr, ".") == 0 ||
            strcmp(de->name.ptr, "..") == 0)
            continue;
        char *nm = strdup(de->name.ptr);
        if (nm == NULL)
            break;
        d->e[d->n].name = nm;
        d->e[d->n].attr = de->attr;
        d->n++;
    }
    if (r->eof || r->entries_count == 0) {
        d->eof = true;
        ddir_keep(CL(req), d);
    }
    rpc_frame_release(rep);
    return DFS_OK;
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi, bool plus)
{
    struct dfsc *c = CL(req);
    struct ddir *d = (struct ddir *)(uintptr_t)fi->fh;
    char *buf = malloc(size);
    if (buf == NULL) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    size_t used = 0;
    int err = 0;
    pthread_mutex_lock(&d->mu);
    if (off == 0 && (d->n > 0 || d->eof))
        ddir_clear(d); /* rewinddir: list afresh */
    if (d->n == 0 && !d->eof && d->cookie == 0)
        ddir_begin(d);
    uint64_t pos = (uint64_t)off;
    for (;;) {
        const char *name;
        struct stat st;
        struct fuse_entry_param e;
        struct dnode *n = NULL;
        memset(&st, 0, sizeof(st));
        memset(&e, 0, sizeof(e));
        if (pos < 2) {
            name = pos == 0 ? "." : "..";
            st.st_ino = pos == 0 ? d->ino : FUSE_ROOT_ID;
            st.st_mode = S_IFDIR;
            e.attr = st;
        } else {
            size_t idx = (size_t)(pos - 2);
            if (idx >= d->n) {
                if (d->eof)
                    break;
                int fst = ddir_fetch(req, d);
                if (fst != DFS_OK) {
                    if (used == 0)
                        err = fsops_errno(fst);
                    break;
                }
                continue;
            }
            struct dent *de = &d->e[idx];
            name = de->name;
            if (plus && d->cached) {
                /* names only: the kernel keeps what it has for attributes */
                e.attr.st_ino = (ino_t)de->attr.ino;
                e.attr.st_mode = de->attr.mode;
            } else if (plus) {
                n = dnode_get(c, de->attr.ino);
                if (n == NULL) {
                    if (used == 0)
                        err = ENOMEM;
                    break;
                }
                struct dfs_attr pa;
                node_attr(n, &de->attr, &pa);
                fill_entry(c, &e, &pa);
            } else {
                attr_to_stat(&de->attr, &st);
            }
        }
        size_t rem = size - used, sz;
        if (plus)
            sz = fuse_add_direntry_plus(req, buf + used, rem, name, &e, (off_t)(pos + 1));
        else
            sz = fuse_add_direntry(req, buf + used, rem, name, &st, (off_t)(pos + 1));
        if (sz > rem) {
            dnode_put(c, n);
            break;
        }
        if (n) {
            dnode_lookup_add(c, n, 1);
            dnode_put(c, n);
        }
        used += sz;
        pos++;
    }
    pthread_mutex_unlock(&d->mu);
    if (err)
        fuse_reply_err(req, err);
    else
        fuse_reply_buf(req, buf, used);
    free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    do_readdir(req, ino, size, off, fi, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi)
{
    do_readdir(req, ino, size, off, fi, true);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct ddir *d = (struct ddir *)(uintptr_t)fi->fh;
    ddir_clear(d);
    free(d->e);
    pthread_mutex_destroy(&d->mu);
    free(d);
    fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    /* Namespace changes are applied before metad answers, but reach its disk
     * in batches: wait for the flush. */
    reply_status(req, data_meta_barrier(CL(req), ino));
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    struct dfs_msg_ino_req rq;
    struct rcred rc;
    memset(&rq, 0, sizeof(rq));
    req_cred(req, &rq.cred, &rc);
    rq.ino = ino;
    struct dfs_frame *rep = meta_or_reply(req, DFS_OP_STATFS, &rq);
    if (rep == NULL)
        return;
    const struct dfs_msg_statfs_resp *r = rep->body;
    struct statvfs sv;
    memset(&sv, 0, sizeof(sv));
    sv.f_bsize = 1u << 20;
    sv.f_frsize = 4096;
    sv.f_blocks = r->total / sv.f_frsize;
    sv.f_bfree = r->avail / sv.f_frsize;
    sv.f_bavail = r->avail / sv.f_frsize;
    sv.f_files = r->files;
    sv.f_ffree = r->ffree;
    sv.f_favail = r->ffree;
    sv.f_namemax = DFS_MAX_NAME;
    rpc_frame_release(rep);
    fuse_reply_statfs(req, &sv);
}

/* ----- extended attributes ----- */

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                        size_t size, int flags)
{
    if (strlen(name) > DFS_MAX_XATTR_NAME) {
        fuse_reply_err(req, ERANGE);
        return;
    }
    if (size > DFS_MAX_XATTR_VALUE) {
        fuse_reply_err(req, E2BIG);
        return;
    }
    struct dfs_msg_setxattr rq;
    struct rcred rc;
    memset(&rq, 0, sizeof(rq));
    req_cred(req, &rq.cred, &rc);
    rq.ino = ino;
    rq.name.ptr = name;
    rq.name.len = (uint32_t)strlen(name);
    rq.value.ptr = value;
    rq.value.len = (uint32_t)size;
    rq.flags = (uint32_t)flags & (DFS_XATTR_CREATE | DFS_XATTR_REPLACE);
    int st = meta(req, DFS_OP_SETXATTR, &rq, NULL);
    if (st == DFS_OK && strcmp(name, "security.capability") == 0)
        caps_seen = 1;
    reply_status(req, st);
}

static void reply_xattr_value(fuse_req_t req, const struct dfs_bin *v, size_t size)
{
    if (size == 0)
        fuse_reply_xattr(req, v->len);
    else if (v->len > size)
        fuse_reply_err(req, ERANGE);
    else
        fuse_reply_buf(req, v->ptr, v->len);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    /* The kernel asks for security.capability before every write; answer
     * locally unless this mount has ever set one. */
    if (!caps_seen && strcmp(name, "security.capability") == 0) {
        fuse_reply_err(req, ENODATA);
        return;
    }
    struct dfs_msg_xattr_req rq;
    struct rcred rc;
    memset(&rq, 0, sizeof(rq));
    req_cred(req, &rq.cred, &rc);
    rq.ino = ino;
    rq.name.ptr = name;
    rq.name.len = (uint32_t)strlen(name);
    struct dfs_frame *rep = meta_or_reply(req, DFS_OP_GETXATTR, &rq);
    if (rep == NULL)
        return;
    reply_xattr_value(req, &((struct dfs_msg_bin_resp *)rep->body)->value, size);
    rpc_frame_release(rep);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    struct dfs_msg_ino_req rq;
    struct rcred rc;
    memset(&rq, 0, sizeof(rq));
    req_cred(req, &rq.cred, &rc);
    rq.ino = ino;
    struct dfs_frame *rep = meta_or_reply(req, DFS_OP_LISTXATTR, &rq);
    if (rep == NULL)
        return;
    reply_xattr_value(req, &((struct dfs_msg_bin_resp *)rep->body)->value, size);
    rpc_frame_release(rep);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    struct dfs_msg_xattr_req rq;
    struct rcred rc;
    memset(&rq, 0, sizeof(rq));
    req_cred(req, &rq.cred, &rc);
    rq.ino = ino;
    rq.name.ptr = name;
    rq.name.len = (uint32_t)strlen(name);
    reply_status(req, meta(req, DFS_OP_REMOVEXATTR, &rq, NULL));
}

/* POSIX and flock locks are deliberately not implemented: without
 * getlk/setlk/flock handlers the kernel does the locking locally, which is
 * correct among the processes of one mount. */
const struct fuse_lowlevel_ops fsops_ops = {
    .init = op_init,
    .destroy = op_destroy,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .readlink = op_readlink,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .symlink = op_symlink,
    .rename = op_rename,
    .link = op_link,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .release = op_release,
    .fsync = op_fsync,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .readdirplus = op_readdirplus,
    .releasedir = op_releasedir,
    .fsyncdir = op_fsyncdir,
    .statfs = op_statfs,
    .setxattr = op_setxattr,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .removexattr = op_removexattr,
    .create = op_create,
    .fallocate = op_fallocate,
};
