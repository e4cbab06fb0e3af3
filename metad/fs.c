/* fs.c - metad's replicated state (namespace, chunk lists, reply cache) and its apply(). */
#include "fs.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "chunks.h"

/* ------------------------------------------------------------------------ */
/* Data structures.  Memory per file matters (target <= 300 bytes): an inode
 * is 80 bytes with every optional part (directory table, chunk list, symlink
 * target, xattrs) out of line and only present when needed; the name lives
 * once, in the directory entry. */

#define IF_ORPHAN 1u

struct xattr {
    struct xattr *next;
    uint32_t vlen;
    uint8_t nlen;
    char data[]; /* name NUL value */
};

struct inode {
    uint64_t ino;
    uint64_t size;
    int64_t atime, mtime, ctime;
    uint32_t mode, uid, gid, nlink;
    uint32_t rdev;
    uint16_t layout; /* index into fs->layouts */
    uint8_t goal;
    uint8_t flags;
    void *ext;            /* dir: struct dir *; file: struct fchunks *; symlink: char * */
    struct xattr *xattrs; /* NULL when none */
};

struct dent {
    uint64_t ino;
    uint64_t cookie; /* per-directory, increasing, never reused: stable readdir */
    uint32_t hash;
    uint32_t pos; /* index in the directory's order[] */
    uint8_t nlen;
    char name[]; /* NUL-terminated */
};

/* A directory: an open-addressing name table for O(1) lookup plus an array in
 * cookie order for paged listing (deleted entries leave NULL holes, compacted
 * when they are the majority; cookies themselves never change). */
struct dir {
    uint64_t parent;
    uint64_t next_cookie;
    uint32_t count;
    uint32_t cap; /* power of two or 0 */
    struct dent **tab;
    struct dent **order;
    uint32_t olen, ocap, holes;
};

struct fchunks {
    uint64_t n; /* indexes 0..n-1 */
    uint64_t *ids;
};

struct session {
    uint64_t id;
    int64_t last_ns;
    uint32_t next; /* ring position */
    struct {
        uint64_t seq;
        int32_t status;
        uint32_t version;
        uint64_t val;
        struct dfs_attr attr;
    } ring[FS_REPLY_CACHE];
};

struct fs {
    struct chunks *cm;
    /* inode table: open addressing, linear probing, key = ino */
    struct inode **itab;
    uint64_t icap, icount;
    uint64_t next_ino, next_chunk;
    uint32_t next_server;
    uint64_t nfiles, ndirs, nchunks;
    struct dfs_layout *layouts;
    uint32_t nlayouts;
    uint64_t *orphans;
    uint32_t norphans, caporphans;
    struct session **sess;
    uint32_t nsess, capsess;
    uint32_t *servers; /* known server ids, with bit 31 = draining */
    uint32_t nservers;
};

/* ------------------------------------------------------------------------ */
/* helpers */

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p && n) {
        fprintf(stderr, "metad: out of memory (%zu bytes)\n", n);
        abort();
    }
    return p;
}

static void *xcalloc(size_t a, size_t b)
{
    void *p = calloc(a, b);
    if (!p && a && b) {
        fprintf(stderr, "metad: out of memory\n");
        abort();
    }
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q && n) {
        fprintf(stderr, "metad: out of memory (%zu bytes)\n", n);
        abort();
    }
    return q;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static uint32_t name_hash(const char *s, size_t n)
{
    /* FNV-1a: cheap and good enough for names. */
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 16777619u;
    }
    return h;
}

/* ------------------------------------------------------------------------ */
/* inode table */

static struct inode *iget(struct fs *fs, uint64_t ino)
{
    if (!fs->icap) return NULL;
    uint64_t mask = fs->icap - 1;
    for (uint64_t i = mix64(ino) & mask;; i = (i + 1) & mask) {
        struct inode *n = fs->itab[i];
        if (!n) return NULL;
        if (n->ino == ino) return n;
    }
}

static void itab_put_raw(struct inode **tab, uint64_t cap, struct inode *n)
{
    uint64_t mask = cap - 1;
    uint64_t i = mix64(n->ino) & mask;
    while (tab[i]) i = (i + 1) & mask;
    tab[i] = n;
}

static void iput(struct fs *fs, struct inode *n)
{
    if ((fs->icount + 1) * 4 > fs->icap * 3) {
        uint64_t ncap = fs->icap ? fs->icap * 2 : 1024;
        struct inode **nt = xcalloc(ncap, sizeof(*nt));
        for (uint64_t i = 0; i < fs->icap; i++)
            if (fs->itab[i]) itab_put_raw(nt, ncap, fs->itab[i]);
        free(fs->itab);
        fs->itab = nt;
        fs->icap = ncap;
    }
    itab_put_raw(fs->itab, fs->icap, n);
    fs->icount++;
}

static void idel(struct fs *fs, uint64_t ino)
{
    uint64_t mask = fs->icap - 1;
    uint64_t i = mix64(ino) & mask;
    while (fs->itab[i] && fs->itab[i]->ino != ino) i = (i + 1) & mask;
    if (!fs->itab[i]) return;
    fs->itab[i] = NULL;
    fs->icount--;
    /* Backward-shift deletion keeps probe chains intact without tombstones. */
    uint64_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        struct inode *n = fs->itab[j];
        if (!n) break;
        uint64_t k = mix64(n->ino) & mask;
        if ((j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j))) {
            fs->itab[i] = n;
            fs->itab[j] = NULL;
            i = j;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* directories */

static struct dir *dir_new(uint64_t parent)
{
    struct dir *d = xcalloc(1, sizeof(*d));
    d->parent = parent;
    d->next_cookie = 1;
    return d;
}

static struct dent **dir_slot(struct dir *d, const char *name, size_t nlen, uint32_t h)
{
    if (!d->cap) return NULL;
    uint32_t mask = d->cap - 1;
    for (uint32_t i = h & mask;; i = (i + 1) & mask) {
        struct dent *e = d->tab[i];
        if (!e) return &d->tab[i];
        if (e->hash == h && e->nlen == nlen && memcmp(e->name, name, nlen) == 0)
            return &d->tab[i];
    }
}

static struct dent *dir_find(struct dir *d, const char *name, size_t nlen)
{
    struct dent **s = dir_slot(d, name, nlen, name_hash(name, nlen));
    return s ? *s : NULL;
}

static void dir_tab_put(struct dent **tab, uint32_t cap, struct dent *e)
{
    uint32_t mask = cap - 1;
    uint32_t i = e->hash & mask;
    while (tab[i]) i = (i + 1) & mask;
    tab[i] = e;
}

static void dir_compact(struct dir *d)
{
    uint32_t j = 0;
    for (uint32_t i = 0; i < d->olen; i++)
        if (d->order[i]) {
            d->order[i]->pos = j;
            d->order[j++] = d->order[i];
        }
    d->olen = j;
    d->holes = 0;
    if (d->ocap > 16 && d->olen * 4 < d->ocap) {
        d->ocap = d->olen * 2 > 16 ? d->olen * 2 : 16;
        d->order = xrealloc(d->order, d->ocap * sizeof(*d->order));
    }
}

/* Insert with a given cookie (restore) or the next one (cookie 0). */
static struct dent *dir_insert(struct dir *d, const char *name, size_t nlen, uint64_t ino,
                               uint64_t cookie)
{
    if ((d->count + 1) * 4 > d->cap * 3) {
        uint32_t ncap = d->cap ? d->cap * 2 : 8;
        struct dent **nt = xcalloc(ncap, sizeof(*nt));
        for (uint32_t i = 0; i < d->cap; i++)
            if (d->tab[i]) dir_tab_put(nt, ncap, d->tab[i]);
        free(d->tab);
        d->tab = nt;
        d->cap = ncap;
    }
    struct dent *e = xmalloc(sizeof(*e) + nlen + 1);
    e->ino = ino;
    e->hash = name_hash(name, nlen);
    e->nlen = (uint8_t)nlen;
    memcpy(e->name, name, nlen);
    e->name[nlen] = 0;
    if (cookie == 0) cookie = d->next_cookie++;
    else if (cookie >= d->next_cookie) d->next_cookie = cookie + 1;
    e->cookie = cookie;
    dir_tab_put(d->tab, d->cap, e);
    if (d->olen == d->ocap) {
        if (d->holes * 2 > d->olen) {
            dir_compact(d);
        }
        if (d->olen == d->ocap) {
            d->ocap = d->ocap ? d->ocap * 2 : 4;
            d->order = xrealloc(d->order, d->ocap * sizeof(*d->order));
        }
    }
    e->pos = d->olen;
    d->order[d->olen++] = e;
    d->count++;
    return e;
}

/* Index in order[] of the first entry with cookie > c (holes skipped by callers). */
static uint32_t dir_order_after(struct dir *d, uint64_t c)
{
    /* order[] is sorted by cookie, but holes (NULL) have no cookie: binary
     * search over live entries, stepping to the nearest live one. */
    uint32_t lo = 0, hi = d->olen;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        uint32_t m = mid;
        while (m < hi && !d->order[m]) m++;
        if (m == hi) {
            hi = mid;
            continue;
        }
        if (d->order[m]->cookie <= c) lo = m + 1;
        else hi = mid;
    }
    return lo;
}

static void dir_remove(struct dir *d, struct dent *e)
{
    /* name table: backward-shift delete */
    uint32_t mask = d->cap - 1;
    uint32_t i = e->hash & mask;
    while (d->tab[i] != e) i = (i + 1) & mask;
    d->tab[i] = NULL;
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        struct dent *x = d->tab[j];
        if (!x) break;
        uint32_t k = x->hash & mask;
        if ((j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j))) {
            d->tab[i] = x;
            d->tab[j] = NULL;
            i = j;
        }
    }
    /* order array: leave a hole */
    /* (rm -rf removes in listing order: a search over the run of holes
     * at the front would cost O(holes) per removal) */
    uint32_t p = e->pos;
    assert(p < d->olen && d->order[p] == e);
    d->order[p] = NULL;
    d->holes++;
    d->count--;
    if (d->holes > 32 && d->holes * 2 > d->olen) dir_compact(d);
    /* shrink the name table when it is mostly empty */
    if (d->cap > 64 && d->count * 8 < d->cap) {
        uint32_t ncap = d->cap / 4;
        struct dent **nt = xcalloc(ncap, sizeof(*nt));
        for (uint32_t q = 0; q < d->cap; q++)
            if (d->tab[q]) dir_tab_put(nt, ncap, d->tab[q]);
        free(d->tab);
        d->tab = nt;
        d->cap = ncap;
    }
    free(e);
}

static void dir_free(struct dir *d)
{
    for (uint32_t i = 0; i < d->olen; i++) free(d->order[i]);
    free(d->order);
    free(d->tab);
    free(d);
}

/* ------------------------------------------------------------------------ */
/* inodes */

static int is_dir(const struct inode *n) { return S_ISDIR(n->mode); }
static int is_reg(const struct inode *n) { return S_ISREG(n->mode); }
static struct dir *DIR_OF(const struct inode *n) { return (struct dir *)n->ext; }

static uint16_t layout_intern(struct fs *fs, const struct dfs_layout *l)
{
    for (uint32_t i = 0; i < fs->nlayouts; i++)
        if (fs->layouts[i].stripe_unit == l->stripe_unit &&
            fs->layouts[i].stripe_count == l->stripe_count &&
            fs->layouts[i].chunk_size == l->chunk_size)
            return (uint16_t)i;
    if (fs->nlayouts >= 65535) return 0;
    fs->layouts = xrealloc(fs->layouts, (fs->nlayouts + 1) * sizeof(*fs->layouts));
    fs->layouts[fs->nlayouts] = *l;
    return (uint16_t)fs->nlayouts++;
}

static void fill_attr(struct fs *fs, const struct inode *n, struct dfs_attr *a)
{
    (void)fs;
    a->ino = n->ino;
    a->mode = n->mode;
    a->nlink = n->nlink;
    a->uid = n->uid;
    a->gid = n->gid;
    a->rdev = n->rdev;
    a->size = is_dir(n) ? (uint64_t)DIR_OF(n)->count * 32u + 64u
              : S_ISLNK(n->mode) ? strlen((const char *)n->ext)
                                 : n->size;
    a->atime = n->atime;
    a->mtime = n->mtime;
    a->ctime = n->ctime;
    a->goal = n->goal;
    a->generation = 1; /* inode numbers are never reused */
}

static struct inode *inode_new(struct fs *fs, uint32_t mode, uint32_t uid, uint32_t gid,
                               int64_t now)
{
    struct inode *n = xcalloc(1, sizeof(*n));
    n->ino = fs->next_ino++;
    n->mode = mode;
    n->uid = uid;
    n->gid = gid;
    n->atime = n->mtime = n->ctime = now;
    n->goal = DFS_DEFAULT_GOAL;
    iput(fs, n);
    if (S_ISDIR(mode)) fs->ndirs++;
    else fs->nfiles++;
    return n;
}

static void xattrs_free(struct inode *n)
{
    struct xattr *x = n->xattrs;
    while (x) {
        struct xattr *nx = x->next;
        free(x);
        x = nx;
    }
    n->xattrs = NULL;
}

static void orphan_add(struct fs *fs, uint64_t ino)
{
    if (fs->norphans == fs->caporphans) {
        fs->caporphans = fs->caporphans ? fs->caporphans * 2 : 16;
        fs->orphans = xrealloc(fs->orphans, fs->caporphans * sizeof(*fs->orphans));
    }
    fs->orphans[fs->norphans++] = ino;
}

static void orphan_del(struct fs *fs, uint64_t ino)
{
    for (uint32_t i = 0; i < fs->norphans; i++)
        if (fs->orphans[i] == ino) {
            fs->orphans[i] = fs->orphans[--fs->norphans];
            return;
        }
}

static void res_cop(struct fs_result *res, uint32_t kind, uint64_t id, uint32_t oldv,
                    uint32_t v, uint64_t len)
{
    if (!res) return;
    if (res->ncops == res->capcops) {
        res->capcops = res->capcops ? res->capcops * 2 : 4;
        res->cops = xrealloc(res->cops, res->capcops * sizeof(*res->cops));
    }
    struct fs_chunkop *c = &res->cops[res->ncops++];
    c->kind = kind;
    c->chunk_id = id;
    c->old_version = oldv;
    c->version = v;
    c->length = len;
}

static void chunk_drop(struct fs *fs, uint64_t id, struct fs_result *res)
{
    if (!id) return;
    if (fs->cm) {
        struct cm_chunk *c = chunks_get(fs->cm, id);
        res_cop(res, FS_COP_DELETE, id, c ? c->version : 0, c ? c->version : 0, 0);
        chunks_chunk_del(fs->cm, id);
    } else {
        res_cop(res, FS_COP_DELETE, id, 0, 0, 0);
    }
    fs->nchunks--;
}

/* Free an inode and everything it owns (chunks become DELETE work). */
static void inode_free(struct fs *fs, struct inode *n, struct fs_result *res)
{
    if (is_dir(n)) {
        dir_free(DIR_OF(n));
        fs->ndirs--;
    } else {
        if (is_reg(n) && n->ext) {
            struct fchunks *fc = n->ext;
            for (uint64_t i = 0; i < fc->n; i++) chunk_drop(fs, fc->ids[i], res);
            free(fc->ids);
            free(fc);
        } else if (n->ext) {
            free(n->ext);
        }
        fs->nfiles--;
    }
    xattrs_free(n);
    if (n->flags & IF_ORPHAN) orphan_del(fs, n->ino);
    idel(fs, n->ino);
    free(n);
}

/* A link to n went away: free it or keep it as an orphan for open handles.
 * Regular files become orphans (the leader purges them when no client has
 * them open), unless the op says `purge` = n (the leader saw no open handle
 * when it submitted the op); everything else is freed at once. */
static void inode_unlinked(struct fs *fs, struct inode *n, struct fs_result *res,
                           uint64_t purge)
{
    if (n->nlink > 0) return;
    if (is_reg(n) && n->ino != purge) {
        n->flags |= IF_ORPHAN;
        orphan_add(fs, n->ino);
        if (res) res->orphan = n->ino;
    } else {
        inode_free(fs, n, res);
    }
}

/* ------------------------------------------------------------------------ */
/* permissions */

static int in_group(const struct fs_cred *c, uint32_t gid)
{
    if (c->gid == gid) return 1;
    for (uint32_t i = 0; i < c->ngroups && i < FS_MAX_GROUPS; i++)
        if (c->groups[i] == gid) return 1;
    return 0;
}

static int may(const struct fs_cred *c, const struct inode *n, int mask)
{
    if (c->uid == 0) {
        /* root: everything, except exec needs some x bit on non-directories */
        if ((mask & 1) && !is_dir(n) && !(n->mode & 0111)) return DFS_EACCES;
        return DFS_OK;
    }
    uint32_t bits;
    if (c->uid == n->uid) bits = (n->mode >> 6) & 7;
    else if (in_group(c, n->gid)) bits = (n->mode >> 3) & 7;
    else bits = n->mode & 7;
    return ((bits & (uint32_t)mask) == (uint32_t)mask) ? DFS_OK : DFS_EACCES;
}

/* Sticky directory: only the owner of the entry, of the directory, or root
 * may remove or rename it. */
static int sticky_ok(const struct fs_cred *c, const struct inode *dir, const struct inode *victim)
{
    if (!(dir->mode & S_ISVTX) || c->uid == 0) return 1;
    return c->uid == dir->uid || c->uid == victim->uid;
}

static int check_name(const char *name, uint32_t len)
{
    if (!name || len == 0) return DFS_EINVAL;
    if (len > DFS_MAX_NAME) return DFS_ENAMETOOLONG;
    if (memchr(name, '/', len) || memchr(name, 0, len)) return DFS_EINVAL;
    return DFS_OK;
}

static int is_dot(const char *name, uint32_t len)
{
    return (len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.');
}

/* Parent directory inode with the caller allowed to modify it. */
static int get_dir(struct fs *fs, uint64_t ino, const struct fs_cred *c, int mask,
                   struct inode **out)
{
    struct inode *d = iget(fs, ino);
    if (!d) return DFS_ENOENT;
    if (!is_dir(d)) return DFS_ENOTDIR;
    int st = may(c, d, mask);
    if (st) return st;
    *out = d;
    return DFS_OK;
}

/* ------------------------------------------------------------------------ */
/* namespace ops */

static void touch_dir(struct inode *d, int64_t now)
{
    d->mtime = d->ctime = now;
}

static int op_mknod(struct fs *fs, const struct fs_op *op, struct fs_result *res)
{
    struct inode *p;
    int st = get_dir(fs, op->parent, &op->cred, 3, &p);
    if (st) return st;
    if ((st = check_name(op->name, op->namelen))) return st;
    if (is_dot(op->name, op->namelen)) return DFS_EEXIST;
    if (p->nlink == 0) return DFS_ENOENT; /* removed directory */

    uint32_t mode = op->mode;
    if (op->type == FS_OP_MKDIR) mode = S_IFDIR | (mode & 07777);
    else if (op->type == FS_OP_CREATE) mode = S_IFREG | (mode & 07777);
    else if ((mode & S_IFMT) == 0) mode |= S_IFREG;
    uint32_t fmt = mode & S_IFMT;
    if (fmt != S_IFREG && fmt != S_IFDIR && fmt != S_IFCHR && fmt != S_IFBLK &&
        fmt != S_IFIFO && fmt != S_IFSOCK)
        return DFS_EINVAL;
    if (op->type == FS_OP_MKNOD && fmt == S_IFDIR) return DFS_EINVAL;
    if ((fmt == S_IFCHR || fmt == S_IFBLK) && op->cred.uid != 0) return DFS_EPERM;

    struct dent *e = dir_find(DIR_OF(p), op->name, op->namelen);
    if (e) {
        /* CREATE without O_EXCL opens an existing file (FUSE may race). */
        if (op->type == FS_OP_CREATE && !(op->flags & 0200 /* O_EXCL */)) {
            struct inode *n = iget(fs, e->ino);
            if (!n) return DFS_EIO;
            if (is_dir(n)) return DFS_EISDIR;
            fill_attr(fs, n, &res->attr);
            return DFS_OK;
        }
        return DFS_EEXIST;
    }
    if (fmt == S_IFDIR && p->nlink >= FS_MAX_LINK) return DFS_EMLINK;

    uint32_t gid = op->cred.gid;
    if (p->mode & S_ISGID) {
        gid = p->gid;
        if (fmt == S_IFDIR) mode |= S_ISGID;
    }
    struct inode *n = inode_new(fs, mode, op->cred.uid, gid, op->now);
    n->goal = p->goal;
    n->layout = p->layout;
    if (fmt == S_IFDIR) {
        n->ext = dir_new(p->ino);
        n->nlink = 2;
        p->nlink++;
    } else {
        n->nlink = 1;
        if (fmt == S_IFCHR || fmt == S_IFBLK) n->rdev = op->rdev;
    }
    dir_insert(DIR_OF(p), op->name, op->namelen, n->ino, 0);
    touch_dir(p, op->now);
    if (op->type == FS_OP_CREATE && (op->xflags & FS_XF_ALLOC)) {
        /* The first chunk comes with the file (saves the GRANT of a small
         * file); the leader chose its chain before submitting. */
        struct fchunks *fc = xcalloc(1, sizeof(*fc));
        fc->ids = xmalloc(sizeof(*fc->ids));
        fc->n = 1;
        fc->ids[0] = fs->next_chunk++;
        n->ext = fc;
        fs->nchunks++;
        if (fs->cm) chunks_chunk_add(fs->cm, fc->ids[0], 1, n->ino, 0);
        res->val = fc->ids[0];
        res->version = 1;
    }
    fill_attr(fs, n, &res->attr);
    return DFS_OK;
}

static int op_symlink(struct fs *fs, const struct fs_op *op, struct fs_result *res)
{
    struct inode *p;
    int st = get_dir(fs, op->parent, &op->cred, 3, &p);
    if (st) return st;
    if ((st = check_name(op->name, op->namelen))) return st;
    if (!op->name2 || op->name2len == 0) return DFS_EINVAL;
    if (op->name2len >= DFS_MAX_PATH) return DFS_ENAMETOOLONG;
    if (p->nlink == 0) return DFS_ENOENT;
    if (is_dot(op->name, op->namelen) || dir_find(DIR_OF(p), op->name, op->namelen))
        return DFS_EEXIST;
    uint32_t gid = (p->mode & S_ISGID) ? p->gid : op->cred.gid;
    struct inode *n = inode_new(fs, S_IFLNK | 0777, op->cred.uid, gid, op->now);
    char *t = xmalloc(op->name2len + 1);
    memcpy(t, op->name2, op->name2len);
    t[op->name2len] = 0;
    n->ext = t;
    n->nlink = 1;
    n->goal = p->goal;
    dir_insert(DIR_OF(p), op->name, op->namelen, n->ino, 0);
    touch_dir(p, op->now);
    fill_attr(fs, n, &res->attr);
    return DFS_OK;
}

static int op_link(struct fs *fs, const struct fs_op *op, struct fs_result *res)
{
    struct inode *n = iget(fs, op->ino);
    if (!n) return DFS_ENOENT;
    if (is_dir(n)) return DFS_EPERM;
    struct inode *p;
    int st = get_dir(fs, op->newparent, &op->cred, 3, &p);
    if (st) return st;
    if ((st = check_name(op->name, op->namelen))) return st;
    if (p->nlink == 0) return DFS_ENOENT;
    if (is_dot(op->name, op->namelen) || dir_find(DIR_OF(p), op->name, op->namelen))
        return DFS_EEXIST;
    if (n->nlink == 0) return DFS_ENOENT; /* linking an unlinked-but-open file */
    if (n->nlink >= FS_MAX_LINK) return DFS_EMLINK;
    n->nlink++;
    n->ctime = op->now;
    dir_insert(DIR_OF(p), op->name, op->namelen, n->ino, 0);
    touch_dir(p, op->now);
    fill_attr(fs, n, &res->attr);
    return DFS_OK;
}

static int op_unlink(struct fs *fs, const struct fs_op *op, struct fs_result *res)
{
    struct inode *p;
    int st = get_dir(fs, op->parent, &op->cred, 3, &p);
    if (st) return st;
    if ((st = check_name(op->name, op->namelen))) return st;
    int rmdir = op->type == FS_OP_RMDIR;
    if (is_dot(op->name, op->namelen)) return rmdir ? (op->namelen == 1 ? DFS_EINVAL
                                                                        : DFS_ENOTEMPTY)
                                                    : DFS_EISDIR;
    struct dir *pd = DIR_OF(p);
    struct dent *e = dir_find(pd, op->name, op->namelen);
    if (!e) return DFS_ENOENT;
    struct inode *n = iget(fs, e->ino);
    if (!n) return DFS_EIO;
    if (rmdir) {
        if (!is_dir(n)) return DFS_ENOTDIR;
        if (DIR_OF(n)->count) return DFS_ENOTEMPTY;
    } else if (is_dir(n)) {
        return DFS_EISDIR;
    }
    if (!sticky_ok(&op->cred, p, n)) return DFS_EPERM;
    dir_remove(pd, e);
    touch_dir(p, op->now);
    if (rmdir) {
        p->nlink--;
        n->nlink = 0;
    } else {
        n->nlink--;
        n->ctime = op->now;
    }
    inode_unlinked(fs, n, res, (op->xflags & FS_XF_PURGE) ? op->ino : 0);
    return DFS_OK;
}

/* Is `anc` an ancestor of (or equal to) directory `ino`? */
static int is_ancestor(struct fs *fs, uint64_t anc, uint64_t ino)
{
    for (unsigned depth = 0; depth < 100000; depth++) {
        if (ino == anc) return 1;
        if (ino == DFS_ROOT_INO) return 0;
        struct inode *n = iget(fs, ino);
        if (!n || !is_dir(n)) return 0;
        ino = DIR_OF(n)->parent;
    }
    return 1; /* deeper than any sane tree: refuse */
}

static int op_rename(struct fs *fs, const struct fs_op *op, struct fs_result *res)
{
    const struct fs_cred *c = &op->cred;
    struct inode *sp, *dp;
    int st = get_dir(fs, op->parent, c, 3, &sp);
    if (st) return st;
    if ((st = get_dir(fs, op->newparent, c, 3, &dp))) return st;
    if ((st = check_name(op->name, op->namelen))) return st;
    if ((st = check_name(op->name2, op->name2len))) return st;
    if ((op->flags & DFS_RENAME_NOREPLACE) && (op->flags & DFS_RENAME_EXCHANGE))
        return DFS_EINVAL;
    if (op->flags & ~(DFS_RENAME_NOREPLACE | DFS_RENAME_EXCHANGE)) return DFS_EINVAL;
    if (is_dot(op->name, op->namelen) || is_dot(op->name2, op->name2len)) return DFS_EBUSY;
    if (dp->nlink == 0) return DFS_ENOENT;

    struct dent *se = dir_find(DIR_OF(sp), op->name, op->namelen);
    if (!se) return DFS_ENOENT;
    struct inode *sn = iget(fs, se->ino);
    if (!sn) return DFS_EIO;
    struct dent *de = dir_find(DIR_OF(dp), op->name2, op->name2len);
    struct inode *dn = de ? iget(fs, de->ino) : NULL;
    if (de && !dn) return DFS_EIO;

    if (!sticky_ok(c, sp, sn)) return DFS_EPERM;
    if (dn && !sticky_ok(c, dp, dn)) return DFS_EPERM;

    if (op->flags & DFS_RENAME_EXCHANGE) {
        if (!dn) return DFS_ENOENT;
        if (sn == dn) return DFS_OK;
        /* Neither may end up inside itself. */
        if (is_dir(sn) && sp != dp && is_ancestor(fs, sn->ino, dp->ino)) return DFS_EINVAL;
        if (is_dir(dn) && sp != dp && is_ancestor(fs, dn->ino, sp->ino)) return DFS_EINVAL;
        if (sp != dp && c->uid != 0) {
            if (is_dir(sn) && (st = may(c, sn, 2))) return st;
            if (is_dir(dn) && (st = may(c, dn, 2))) return st;
        }
        se->ino = dn->ino;
        de->ino = sn->ino;
        if (sp != dp) {
            if (is_dir(sn)) {
                DIR_OF(sn)->parent = dp->ino;
                sp->nlink--;
                dp->nlink++;
            }
            if (is_dir(dn)) {
                DIR_OF(dn)->parent = sp->ino;
                dp->nlink--;
                sp->nlink++;
            }
        }
        sn->ctime = dn->ctime = op->now;
        touch_dir(sp, op->now);
        touch_dir(dp, op->now);
        return DFS_OK;
    }

    if (dn) {
        if (op->flags & DFS_RENAME_NOREPLACE) return DFS_EEXIST;
        if (sn == dn) return DFS_OK; /* two links to one inode: POSIX says do nothing */
        if (is_dir(sn)) {
            if (!is_dir(dn)) return DFS_ENOTDIR;
            if (DIR_OF(dn)->count) return DFS_ENOTEMPTY;
        } else if (is_dir(dn)) {
            return DFS_EISDIR;
        }
    }
    if (is_dir(sn)) {
        /* A directory may not move into its own subtree. */
        if (is_ancestor(fs, sn->ino, dp->ino)) return DFS_EINVAL;
        /* Moving a directory rewrites its "..": needs write permission on it. */
        if (sp != dp && c->uid != 0 && (st = may(c, sn, 2))) return st;
        if (sp != dp && !dn && dp->nlink >= FS_MAX_LINK) return DFS_EMLINK;
    }

    if (dn) {
        /* Atomic replace: the target name now points at the source inode. */
        de->ino = sn->ino;
        if (is_dir(dn)) {
            dn->nlink = 0;
            dp->nlink--;
        } else {
            dn->nlink--;
            dn->ctime = op->now;
        }
        inode_unlinked(fs, dn, res, (op->xflags & FS_XF_PURGE) ? op->ino : 0);
    } else {
        dir_insert(DIR_OF(dp), op->name2, op->name2len, sn->ino, 0);
    }
    /* se may have moved if dp == sp and the insert grew the table: find again. */
    se = dir_find(DIR_OF(sp), op->name, op->namelen);
    dir_remove(DIR_OF(sp), se);
    if (is_dir(sn) && sp != dp) {
        DIR_OF(sn)->parent = dp->ino;
        sp->nlink--;
        dp->nlink++;
    }
    sn->ctime = op->now;
    touch_dir(sp, op->now);
    touch_dir(dp, op->now);
    return DFS_OK;
}

/* ------------------------------------------------------------------------ */
/* chunks of a file, striping */

uint64_t fs_chunk_length(const struct dfs_layout *l, uint64_t index, uint64_t size)
{
    uint64_t C = l->stripe_count ? l->stripe_count : 1;
    uint64_t S = l->chunk_size;
    uint64_t U = l->stripe_unit ? l->stripe_unit : S;
    uint64_t set = index / C, pos = index % C;
    uint64_t set_start = set * C * S;
    if (size <= set_start) return 0;
    uint64_t r = size - set_start;
    if (r >= C * S) return S;
    uint64_t full = r / U, rem = r % U;
    uint64_t len = (full / C) * U + ((full % C) > pos ? U : 0);
    if (full % C == pos) len += rem;
    return len;
}

static const struct dfs_layout *layout_of(struct fs *fs, const struct inode *n)
{
    return &fs->layouts[n->layout < fs->nlayouts ? n->layout : 0];
}

static struct fchunks *fchunks_of(struct inode *n)
{
    if (!n->ext) n->ext = xcalloc(1, sizeof(struct fchunks));
    return n->ext;
}

/* Shrink or grow a file.  Shrinking drops chunks that hold no byte below the
 * new end and truncates (with a version bump) the chunks that keep a part. */
static void file_resize(struct fs *fs, struct inode *n, uint64_t size, struct fs_result *res)
{
    uint64_t old = n->size;
    n->size = size;
    if (size >= old || !n->ext) return;
    struct fchunks *fc = n->ext;
    const struct dfs_layout *l = layout_of(fs, n);
    for (uint64_t i = 0; i < fc->n; i++) {
        uint64_t id = fc->ids[i];
        if (!id) continue;
        uint64_t nl = fs_chunk_length(l, i, size);
        uint64_t ol = fs_chunk_length(l, i, old);
        if (nl == 0) {
            chunk_drop(fs, id, res);
            fc->ids[i] = 0;
        } else if (nl < ol) {
            struct cm_chunk *c = fs->cm ? chunks_get(fs->cm, id) : NULL;
            uint32_t v = c ? c->version : 0;
            if (fs->cm) chunks_chunk_set_version(fs->cm, id, v + 1);
            res_cop(res, FS_COP_TRUNCATE, id, v, v + 1, nl);
        }
    }
    while (fc->n && fc->ids[fc->n - 1] == 0) fc->n--;
}

static int op_setattr(struct fs *fs, const struct fs_op *op, struct fs_result *res)
{
    const struct fs_cred *c = &op->cred;
    struct inode *n = iget(fs, op->ino);
    if (!n) return DFS_ENOENT;
    uint32_t v = op->valid;
    int owner = c->uid == 0 || c->uid == n->uid;
    int st;
    if ((v & DFS_SET_MODE) && !owner) return DFS_EPERM;
    if ((v & DFS_SET_UID) && c->uid != 0 && op->uid != n->uid) return DFS_EPERM;
    if ((v & DFS_SET_GID) && c->uid != 0 && op->gid != n->gid &&
        (!owner || !in_group(c, op->gid)))
        return DFS_EPERM;
    if ((v & (DFS_SET_ATIME | DFS_SET_MTIME)) && !owner) return DFS_EPERM;
    if ((v & (DFS_SET_ATIME_NOW | DFS_SET_MTIME_NOW)) && !owner && (st = may(c, n, 2)))
        return st;
    if (v & DFS_SET_SIZE) {
        if (is_dir(n)) return DFS_EISDIR;
        if (!is_reg(n)) return DFS_EINVAL;
        if ((st = may(c, n, 2))) return st;
    }

    if (v & DFS_SET_MODE) {
        uint32_t mode = op->mode & 07777;
        if (c->uid != 0 && !in_group(c, n->gid)) mode &= ~(uint32_t)S_ISGID;
        n->mode = (n->mode & S_IFMT) | mode;
    }
    if (v & (DFS_SET_UID | DFS_SET_GID)) {
        if (v & DFS_SET_UID) n->uid = op->uid;
        if (v & DFS_SET_GID) n->gid = op->gid;
        /* chown clears set-id bits of non-directories (Linux also for root). */
        if (!is_dir(n)) n->mode &= ~(uint32_t)(S_ISUID | ((n->mode & 010) ? S_ISGID : 0));
    }
    if (v & DFS_SET_SIZE) {
        file_resize(fs, n, op->size, res);
        n->mtime = op->now;
    }
    if (v & DFS_SET_ATIME_NOW) n->atime = op->now;
    else if (v & DFS_SET_ATIME) n->atime = op->atime;
    if (v & DFS_SET_MTIME_NOW) n->mtime = op->now;
    else if (v & DFS_SET_MTIME) n->mtime = op->mtime;
    n->ctime = op->now;
    fill_attr(fs, n, &res->attr);
    return DFS_OK;
}

/* ------------------------------------------------------------------------ */
/* goal, layout, xattrs */

static unsigned setgoal_rec(struct fs *fs, struct inode *n, uint8_t goal, int rec,
                            const struct fs_cred *c, int64_t now)
{
    unsigned cnt = 0;
    if (c->uid == 0 || c->uid == n->uid) {
        if (n->goal != goal) {
            n->goal = goal;
            n->ctime = now;
        }
        cnt++;
    }
    if (rec && is_dir(n)) {
        struct dir *d = DIR_OF(n);
        for (uint32_t i = 0; i < d->olen; i++) {
            if (!d->order[i]) continue;
            struct inode *ch = iget(fs, d->order[i]->ino);
            if (ch) cnt += setgoal_rec(fs, ch, goal, rec, c, now);
        }
    }
    return cnt;
}

static int op_setgoal(struct fs *fs, const struct fs_op *op, struct fs_result *res)
{
    struct inode *n = iget(fs, op->ino);
    if (!n) return DFS_ENOENT;
    if (op->goal < 1 || op->goal > DFS_MAX_GOAL) return DFS_EINVAL;
    if (op->cred.uid != 0 && op->cred.uid != n->uid) return DFS_EPERM;
    res->val = setgoal_rec(fs, n, (uint8_t)op->goal, op->flags != 0, &op->cred, op->now);
    fill_attr(fs, n, &res->attr);
    return DFS_OK;
}

static int parse_layout(const char *s, size_t len, struct dfs_layout *l)
{
    char buf[256];
    if (len >= sizeof(buf)) return DFS_EINVAL;
    memcpy(buf, s, len);
    buf[len] = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ", \n", &save); tok; tok = strtok_r(NULL, ", \n", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) return DFS_EINVAL;
        *eq = 0;
        char *end;
        unsigned long long v = strtoull(eq + 1, &end, 10);
        if (*end == 'K' || *end == 'k') v <<= 10, end++;
        else if (*end == 'M' || *end == 'm') v <<= 20, end++;
        else if (*end == 'G' || *end == 'g') v <<= 30, end++;
        if (*end || end == eq + 1) return DFS_EINVAL;
        if (!strcmp(tok, "stripe_unit")) l->stripe_unit = (uint32_t)v;
        else if (!strcmp(tok, "stripe_count")) l->stripe_count = (uint32_t)v;
        else if (!strcmp(tok, "chunk_size")) l->chunk_size = v;
        else return DFS_EINVAL;
    }
    /* Sanity: units are block multiples and divide the chunk size. */
    if (l->stripe_unit < DFS_BLOCK_SIZE || l->stripe_unit % DFS_BLOCK_SIZE ||
        l->stripe_count < 1 || l->stripe_count > 64 || l->chunk_size < l->stripe_unit ||
        l->chunk_size % l->stripe_unit || l->chunk_size > (1ull << 40))
        return DFS_EINVAL;
    return DFS_OK;
}

static struct xattr **xattr_find(struct inode *n, const char *name, size_t nlen)
{
    for (struct xattr **p = &n->xattrs; *p; p = &(*p)->next)
        if ((*p)->nlen == nlen && memcmp((*p)->data, name, nlen) == 0) return p;
    return NULL;
}

static int xattr_perm(const struct fs_cred *c, const struct inode *n, const char *name,
                      int write)
{
    if (!strncmp(name, "trusted.", 8) || !strncmp(name, "security.", 9))
        return (c->uid == 0 || !write) ? DFS_OK : DFS_EPERM;
    if (!strncmp(name, "user.", 5)) {
        if (!is_reg(n) && !is_dir(n)) return DFS_EPERM;
        return may(c, n, write ? 2 : 4);
    }
    if (!strncmp(name, "system.", 7)) return (!write || c->uid == 0 || c->uid == n->uid)
                                                 ? DFS_OK
                                                 : DFS_EPERM;
    return DFS_ENOTSUP;
}

static int op_setxattr(struct fs *fs, const struct fs_op *op, struct fs_result *res)
{
    const struct fs_cred *c = &op->cred;
    struct inode *n = iget(fs, op->ino);
    if (!n) return DFS_ENOENT;
    if (!op->name || op->namelen == 0) return DFS_EINVAL;
    if (op->namelen > DFS_MAX_XATTR_NAME) return DFS_ERANGE;
    if (op->datalen > DFS_MAX_XATTR_VALUE) return DFS_E2BIG;
    int remove = op->type == FS_OP_REMOVEXATTR;

    if (!strcmp(op->name, "dfs.goal") || !strcmp(op->name, "dfs.layout")) {
        if (remove) return DFS_ENOTSUP;
        if (c->uid != 0 && c->uid != n->uid) return DFS_EPERM;
        char buf[256];
        if (op->datalen >= sizeof(buf)) return DFS_EINVAL;
        memcpy(buf, op->data, op->datalen);
        buf[op->datalen] = 0;
        if (!strcmp(op->name, "dfs.goal")) {
            char *end;
            unsigned long g = strtoul(buf, &end, 10);
            while (*end == '\n' || *end == ' ') end++;
            if (*end || end == buf || g < 1 || g > DFS_MAX_GOAL) return DFS_EINVAL;
            n->goal = (uint8_t)g;
        } else {
            if (!is_reg(n) && !is_dir(n)) return DFS_EINVAL;
            struct dfs_layout l = *layout_of(fs, n);
            int st = parse_layout(buf, op->datalen, &l);
            if (st) return st;
            /* A file's layout is fixed once it has data. */
            if (is_reg(n) && n->ext && ((struct fchunks *)n->ext)->n) return DFS_EBUSY;
            n->layout = layout_intern(fs, &l);
        }
        n->ctime = op->now;
        fill_attr(fs, n, &res->attr);
        return DFS_OK;
    }

    int st = xattr_perm(c, n, op->name, 1);
    if (st) return st;
    struct xattr **p = xattr_find(n, op->name, op->namelen);
    if (remove) {
        if (!p) return DFS_ENODATA;
        struct xattr *x = *p;
        *p = x->next;
        free(x);
    } else {
        if (p && (op->flags & DFS_XATTR_CREATE)) return DFS_EEXIST;
        if (!p && (op->flags & DFS_XATTR_REPLACE)) return DFS_ENODATA;
        struct xattr *x = xmalloc(sizeof(*x) + op->namelen + 1 + op->datalen);
        x->nlen = (uint8_t)op->namelen;
        x->vlen = op->datalen;
        memcpy(x->data, op->name, op->namelen);
        x->data[op->namelen] = 0;
        if (op->datalen) memcpy(x->data + op->namelen + 1, op->data, op->datalen);
        if (p) {
            x->next = (*p)->next;
            free(*p);
            *p = x;
        } else {
            /* append: listing order is creation order */
            struct xattr **t = &n->xattrs;
            while (*t) t = &(*t)->next;
            x->next = NULL;
            *t = x;
        }
    }
    n->ctime = op->now;
    fill_attr(fs, n, &res->attr);
    return DFS_OK;
}

static int op_commit(struct fs *fs, const struct fs_op *op, struct fs_result *res)
{
    struct inode *n = iget(fs, op->ino);
    if (!n) return DFS_ENOENT;
    if (!is_reg(n)) return DFS_EINVAL;
    int st;
    if (op->cred.uid != 0 && (st = may(&op->cred, n, 2))) return st;
    if (op->size > n->size) n->size = op->size;
    if (op->mtime) {
        n->mtime = op->mtime;
        n->ctime = op->now;
    }
    fill_attr(fs, n, &res->attr);
    return DFS_OK;
}

static int op_chunk_new(struct fs *fs, const struct fs_op *op, struct fs_result *res)
{
    struct inode *n = iget(fs, op->ino);
    if (!n) return DFS_ENOENT;
    if (!is_reg(n)) return DFS_EINVAL;
    if (op->index > (1ull << 32)) return DFS_EFBIG;
    struct fchunks *fc = fchunks_of(n);
    if (op->index < fc->n && fc->ids[op->index]) {
        /* Someone else created it first: the caller treats it as existing. */
        res->val = fc->ids[op->index];
        return DFS_EEXIST;
    }
    if (op->index >= fc->n) {
        uint64_t nn = op->index + 1;
        fc->ids = xrealloc(fc->ids, nn * sizeof(*fc->ids));
        memset(fc->ids + fc->n, 0, (nn - fc->n) * sizeof(*fc->ids));
        fc->n = nn;
    }
    uint64_t id = fs->next_chunk++;
    fc->ids[op->index] = id;
    fs->nchunks++;
    if (fs->cm) chunks_chunk_add(fs->cm, id, 1, n->ino, op->index);
    res->val = id;
    res->version = 1;
    return DFS_OK;
}

/* Drop the chunks of a file that lie wholly beyond its end (the leader
 * sends this for chunks handed out with a CREATE that were never written). */
static int op_trim(struct fs *fs, const struct fs_op *op, struct fs_result *res)
{
    struct inode *n = iget(fs, op->ino);
    if (!n) return DFS_ENOENT;
    if (!is_reg(n)) return DFS_EINVAL;
    struct fchunks *fc = n->ext;
    if (!fc) return DFS_OK;
    const struct dfs_layout *l = layout_of(fs, n);
    for (uint64_t i = 0; i < fc->n; i++)
        if (fc->ids[i] && fs_chunk_length(l, i, n->size) == 0) {
            chunk_drop(fs, fc->ids[i], res);
            fc->ids[i] = 0;
        }
    while (fc->n && fc->ids[fc->n - 1] == 0) fc->n--;
    return DFS_OK;
}

static int op_chunk_version(struct fs *fs, const struct fs_op *op, struct fs_result *res)
{
    if (fs->cm) {
        struct cm_chunk *c = chunks_get(fs->cm, op->id);
        if (!c) return DFS_ENOCHUNK;
        if (op->version > c->version) chunks_chunk_set_version(fs->cm, op->id, op->version);
        res->version = c->version;
    }
    res->val = op->id;
    return DFS_OK;
}

static int server_idx(struct fs *fs, uint32_t id)
{
    for (uint32_t i = 0; i < fs->nservers; i++)
        if ((fs->servers[i] & 0x7fffffffu) == id) return (int)i;
    return -1;
}

static void server_add(struct fs *fs, uint32_t id, int draining)
{
    fs->servers = xrealloc(fs->servers, (fs->nservers + 1) * sizeof(*fs->servers));
    fs->servers[fs->nservers++] = id | (draining ? 0x80000000u : 0);
    if (fs->cm) {
        chunks_server_known(fs->cm, id);
        if (draining) chunks_server_set_draining(fs->cm, id, true);
    }
}

/* ------------------------------------------------------------------------ */
/* reply cache */

static struct session *sess_find(struct fs *fs, uint64_t id, uint32_t *pos)
{
    /* sorted array: binary search */
    uint32_t lo = 0, hi = fs->nsess;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (fs->sess[mid]->id < id) lo = mid + 1;
        else hi = mid;
    }
    if (pos) *pos = lo;
    return (lo < fs->nsess && fs->sess[lo]->id == id) ? fs->sess[lo] : NULL;
}

static struct session *sess_get(struct fs *fs, uint64_t id)
{
    uint32_t pos;
    struct session *s = sess_find(fs, id, &pos);
    if (s) return s;
    if (fs->nsess == fs->capsess) {
        fs->capsess = fs->capsess ? fs->capsess * 2 : 16;
        fs->sess = xrealloc(fs->sess, fs->capsess * sizeof(*fs->sess));
    }
    s = xcalloc(1, sizeof(*s));
    s->id = id;
    memmove(fs->sess + pos + 1, fs->sess + pos, (fs->nsess - pos) * sizeof(*fs->sess));
    fs->sess[pos] = s;
    fs->nsess++;
    return s;
}

static void sess_del(struct fs *fs, uint64_t id)
{
    uint32_t pos;
    struct session *s = sess_find(fs, id, &pos);
    if (!s) return;
    free(s);
    memmove(fs->sess + pos, fs->sess + pos + 1, (fs->nsess - pos - 1) * sizeof(*fs->sess));
    fs->nsess--;
}

int fs_cached_reply(struct fs *fs, uint64_t session, uint64_t seq, struct fs_result *res)
{
    if (!seq) return 0;
    struct session *s = sess_find(fs, session, NULL);
    if (!s) return 0;
    for (unsigned i = 0; i < FS_REPLY_CACHE; i++) {
        if (s->ring[i].seq == seq) {
            res->status = s->ring[i].status;
            res->attr = s->ring[i].attr;
            res->val = s->ring[i].val;
            res->version = s->ring[i].version;
            res->cached = 1;
            return 1;
        }
    }
    return 0;
}

uint32_t fs_idle_sessions(struct fs *fs, int64_t before_ns, uint64_t *out, uint32_t max)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < fs->nsess && n < max; i++)
        if (fs->sess[i]->last_ns < before_ns) out[n++] = fs->sess[i]->id;
    return n;
}

uint32_t fs_orphans(struct fs *fs, uint64_t *out, uint32_t max)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < fs->norphans && n < max; i++) out[n++] = fs->orphans[i];
    return n;
}

/* ------------------------------------------------------------------------ */
/* apply */

int fs_op_is_client(uint32_t type)
{
    return type >= FS_OP_MKNOD && type <= FS_OP_DRAIN;
}

void fs_result_free(struct fs_result *res)
{
    free(res->cops);
    res->cops = NULL;
    res->ncops = res->capcops = 0;
}

void fs_apply(struct fs *fs, const struct fs_op *op, struct fs_result *res)
{
    struct session *sess = NULL;
    if (fs_op_is_client(op->type) && op->cred.session) {
        sess = sess_get(fs, op->cred.session);
        if (op->now > sess->last_ns) sess->last_ns = op->now;
        if (op->cred.seq && fs_cached_reply(fs, op->cred.session, op->cred.seq, res)) return;
    }
    int st;
    switch (op->type) {
    case FS_OP_MKNOD:
    case FS_OP_MKDIR:
    case FS_OP_CREATE: st = op_mknod(fs, op, res); break;
    case FS_OP_SYMLINK: st = op_symlink(fs, op, res); break;
    case FS_OP_LINK: st = op_link(fs, op, res); break;
    case FS_OP_UNLINK:
    case FS_OP_RMDIR: st = op_unlink(fs, op, res); break;
    case FS_OP_RENAME: st = op_rename(fs, op, res); break;
    case FS_OP_SETATTR: st = op_setattr(fs, op, res); break;
    case FS_OP_SETXATTR:
    case FS_OP_REMOVEXATTR: st = op_setxattr(fs, op, res); break;
    case FS_OP_SETGOAL: st = op_setgoal(fs, op, res); break;
    case FS_OP_COMMIT: st = op_commit(fs, op, res); break;
    case FS_OP_DRAIN: {
        if (op->cred.uid != 0) {
            st = DFS_EPERM;
            break;
        }
        int i = server_idx(fs, (uint32_t)op->id);
        if (i < 0) {
            st = DFS_ENOENT;
            break;
        }
        fs->servers[i] = (uint32_t)op->id | (op->flags ? 0x80000000u : 0);
        if (fs->cm) chunks_server_set_draining(fs->cm, (uint32_t)op->id, op->flags != 0);
        st = DFS_OK;
        break;
    }
    case FS_OP_PURGE: {
        struct inode *n = iget(fs, op->ino);
        if (!n || !(n->flags & IF_ORPHAN) || n->nlink) {
            st = DFS_ENOENT;
            break;
        }
        inode_free(fs, n, res);
        st = DFS_OK;
        break;
    }
    case FS_OP_CHUNK_NEW: st = op_chunk_new(fs, op, res); break;
    case FS_OP_CHUNK_VERSION: st = op_chunk_version(fs, op, res); break;
    case FS_OP_SERVER_NEW:
        res->val = fs->next_server++;
        server_add(fs, (uint32_t)res->val, 0);
        st = DFS_OK;
        break;
    case FS_OP_SESSION_EXPIRE: sess_del(fs, op->id); st = DFS_OK; break;
    case FS_OP_NOOP: st = DFS_OK; break;
    case FS_OP_EPOCH:
        fs->next_ino += FS_EPOCH_GAP;
        fs->next_chunk += FS_EPOCH_GAP;
        st = DFS_OK;
        break;
    case FS_OP_TRIM: st = op_trim(fs, op, res); break;
    default: st = DFS_EINVAL; break;
    }
    res->status = st;
    if (sess && op->cred.seq) {
        unsigned i = sess->next++ % FS_REPLY_CACHE;
        sess->ring[i].seq = op->cred.seq;
        sess->ring[i].status = st;
        sess->ring[i].attr = res->attr;
        sess->ring[i].val = res->val;
        sess->ring[i].version = res->version;
    }
}

/* ------------------------------------------------------------------------ */
/* queries */

int fs_getattr(struct fs *fs, uint64_t ino, struct dfs_attr *attr)
{
    struct inode *n = iget(fs, ino);
    if (!n) return DFS_ENOENT;
    fill_attr(fs, n, attr);
    return DFS_OK;
}

int fs_lookup(struct fs *fs, const struct fs_cred *cred, uint64_t parent, const char *name,
              struct dfs_attr *attr)
{
    struct inode *p;
    int st = get_dir(fs, parent, cred, 1, &p);
    if (st) return st;
    size_t nlen = strlen(name);
    if (nlen > DFS_MAX_NAME) return DFS_ENAMETOOLONG;
    uint64_t ino;
    if (nlen == 1 && name[0] == '.') ino = p->ino;
    else if (nlen == 2 && name[0] == '.' && name[1] == '.') ino = DIR_OF(p)->parent;
    else {
        struct dent *e = dir_find(DIR_OF(p), name, nlen);
        if (!e) return DFS_ENOENT;
        ino = e->ino;
    }
    return fs_getattr(fs, ino, attr);
}

int fs_readlink(struct fs *fs, uint64_t ino, const char **target)
{
    struct inode *n = iget(fs, ino);
    if (!n) return DFS_ENOENT;
    if (!S_ISLNK(n->mode)) return DFS_EINVAL;
    *target = n->ext;
    return DFS_OK;
}

int fs_access(struct fs *fs, const struct fs_cred *cred, uint64_t ino, int mask)
{
    struct inode *n = iget(fs, ino);
    if (!n) return DFS_ENOENT;
    return may(cred, n, mask);
}

int fs_readdir(struct fs *fs, const struct fs_cred *cred, uint64_t ino, uint64_t cookie,
               uint32_t max, fs_readdir_cb cb, void *arg, int *eof)
{
    struct inode *p;
    int st = get_dir(fs, ino, cred, 4, &p);
    if (st) return st;
    struct dir *d = DIR_OF(p);
    uint32_t i = dir_order_after(d, cookie), n = 0;
    *eof = 0;
    for (; i < d->olen && n < max; i++) {
        struct dent *e = d->order[i];
        if (!e) continue;
        struct inode *c = iget(fs, e->ino);
        if (!c) continue;
        struct dfs_attr a;
        fill_attr(fs, c, &a);
        if (cb(arg, e->name, e->nlen, e->cookie, &a)) return DFS_OK;
        n++;
    }
    while (i < d->olen && !d->order[i]) i++;
    *eof = i >= d->olen;
    return DFS_OK;
}

int fs_getxattr(struct fs *fs, const struct fs_cred *cred, uint64_t ino, const char *name,
                char *buf, size_t buflen, const void **value, uint32_t *len)
{
    struct inode *n = iget(fs, ino);
    if (!n) return DFS_ENOENT;
    if (!strcmp(name, "dfs.goal")) {
        int k = snprintf(buf, buflen, "%u", n->goal);
        *value = buf;
        *len = (uint32_t)k;
        return DFS_OK;
    }
    if (!strcmp(name, "dfs.layout")) {
        const struct dfs_layout *l = layout_of(fs, n);
        int k = snprintf(buf, buflen, "stripe_unit=%u,stripe_count=%u,chunk_size=%llu",
                         l->stripe_unit, l->stripe_count, (unsigned long long)l->chunk_size);
        *value = buf;
        *len = (uint32_t)k;
        return DFS_OK;
    }
    int st = xattr_perm(cred, n, name, 0);
    if (st) return st == DFS_ENOTSUP ? DFS_ENODATA : st;
    struct xattr **p = xattr_find(n, name, strlen(name));
    if (!p) return DFS_ENODATA;
    *value = (*p)->data + (*p)->nlen + 1;
    *len = (*p)->vlen;
    return DFS_OK;
}

int fs_listxattr(struct fs *fs, const struct fs_cred *cred, uint64_t ino, char *buf,
                 size_t buflen, uint32_t *len)
{
    (void)cred;
    struct inode *n = iget(fs, ino);
    if (!n) return DFS_ENOENT;
    size_t off = 0;
    for (struct xattr *x = n->xattrs; x; x = x->next) {
        if (off + x->nlen + 1 > buflen) return DFS_ERANGE;
        memcpy(buf + off, x->data, x->nlen + 1u);
        off += x->nlen + 1u;
    }
    *len = (uint32_t)off;
    return DFS_OK;
}

int fs_file_info(struct fs *fs, uint64_t ino, struct dfs_layout *layout, uint64_t *size,
                 uint32_t *goal, uint64_t *nchunks)
{
    struct inode *n = iget(fs, ino);
    if (!n) return DFS_ENOENT;
    if (layout) *layout = *layout_of(fs, n);
    if (size) *size = is_reg(n) ? n->size : 0;
    if (goal) *goal = n->goal;
    if (nchunks) *nchunks = (is_reg(n) && n->ext) ? ((struct fchunks *)n->ext)->n : 0;
    return is_reg(n) ? DFS_OK : (is_dir(n) ? DFS_EISDIR : DFS_EINVAL);
}

uint64_t fs_file_chunk(struct fs *fs, uint64_t ino, uint64_t index)
{
    struct inode *n = iget(fs, ino);
    if (!n || !is_reg(n) || !n->ext) return 0;
    struct fchunks *fc = n->ext;
    return index < fc->n ? fc->ids[index] : 0;
}

int fs_may_write_file(struct fs *fs, const struct fs_cred *cred, uint64_t ino)
{
    struct inode *n = iget(fs, ino);
    if (!n) return DFS_ENOENT;
    if (is_dir(n)) return DFS_EISDIR;
    if (!is_reg(n)) return DFS_EINVAL;
    return may(cred, n, 2);
}

void fs_stats(struct fs *fs, struct fs_stats *st)
{
    st->inodes = fs->icount;
    st->files = fs->nfiles;
    st->dirs = fs->ndirs;
    st->chunks = fs->nchunks;
    st->orphans = fs->norphans;
    st->sessions = fs->nsess;
}

/* ------------------------------------------------------------------------ */
/* lifecycle */

struct fs *fs_new(struct chunks *cm)
{
    struct fs *fs = xcalloc(1, sizeof(*fs));
    fs->cm = cm;
    fs->next_ino = DFS_ROOT_INO;
    fs->next_chunk = 1;
    fs->next_server = 1;
    struct dfs_layout def = {DFS_DEFAULT_STRIPE_UNIT, DFS_DEFAULT_STRIPE_COUNT,
                             DFS_DEFAULT_CHUNK_SIZE, {}};
    layout_intern(fs, &def);
    struct inode *root = inode_new(fs, S_IFDIR | 0755, 0, 0, 0);
    root->ext = dir_new(DFS_ROOT_INO);
    root->nlink = 2;
    return fs;
}

static void fs_clear(struct fs *fs)
{
    for (uint64_t i = 0; i < fs->icap; i++) {
        struct inode *n = fs->itab[i];
        if (!n) continue;
        if (is_dir(n)) dir_free(DIR_OF(n));
        else if (is_reg(n) && n->ext) {
            free(((struct fchunks *)n->ext)->ids);
            free(n->ext);
        } else free(n->ext);
        xattrs_free(n);
        free(n);
    }
    free(fs->itab);
    fs->itab = NULL;
    fs->icap = fs->icount = 0;
    free(fs->layouts);
    fs->layouts = NULL;
    fs->nlayouts = 0;
    free(fs->orphans);
    fs->orphans = NULL;
    fs->norphans = fs->caporphans = 0;
    for (uint32_t i = 0; i < fs->nsess; i++) free(fs->sess[i]);
    free(fs->sess);
    fs->sess = NULL;
    fs->nsess = fs->capsess = 0;
    free(fs->servers);
    fs->servers = NULL;
    fs->nservers = 0;
    fs->nfiles = fs->ndirs = fs->nchunks = 0;
}

void fs_free(struct fs *fs)
{
    if (!fs) return;
    fs_clear(fs);
    free(fs);
}

/* ------------------------------------------------------------------------ */
/* binary encoding (little-endian, fixed width; used for log entries and
 * snapshots) */

struct wbuf {
    uint8_t *p;
    size_t len, cap;
};

static void wb_need(struct wbuf *w, size_t n)
{
    if (w->len + n <= w->cap) return;
    size_t nc = w->cap ? w->cap * 2 : 4096;
    while (nc < w->len + n) nc *= 2;
    w->p = xrealloc(w->p, nc);
    w->cap = nc;
}
static void wb_u64(struct wbuf *w, uint64_t v)
{
    wb_need(w, 8);
    memcpy(w->p + w->len, &v, 8);
    w->len += 8;
}
static void wb_u32(struct wbuf *w, uint32_t v)
{
    wb_need(w, 4);
    memcpy(w->p + w->len, &v, 4);
    w->len += 4;
}
static void wb_bytes(struct wbuf *w, const void *p, size_t n)
{
    wb_need(w, n);
    if (n) memcpy(w->p + w->len, p, n);
    w->len += n;
}
static void wb_str(struct wbuf *w, const char *s, uint32_t n)
{
    wb_u32(w, n);
    wb_bytes(w, s, n);
}

struct rbuf {
    const uint8_t *p;
    size_t len, off;
    int bad;
};
static uint64_t rb_u64(struct rbuf *r)
{
    uint64_t v = 0;
    if (r->off + 8 > r->len) {
        r->bad = 1;
        return 0;
    }
    memcpy(&v, r->p + r->off, 8);
    r->off += 8;
    return v;
}
static uint32_t rb_u32(struct rbuf *r)
{
    uint32_t v = 0;
    if (r->off + 4 > r->len) {
        r->bad = 1;
        return 0;
    }
    memcpy(&v, r->p + r->off, 4);
    r->off += 4;
    return v;
}
static const void *rb_bytes(struct rbuf *r, size_t n)
{
    if (n > r->len - r->off || r->off > r->len) {
        r->bad = 1;
        return NULL;
    }
    const void *p = r->p + r->off;
    r->off += n;
    return p;
}

/* ----- ops ----- */

#define OP_FIXED (4 * 4 + 8 * 2 + 4 * 2 + 8 * 7 + 4 * 8 + 8 * 2 + 4 * 3)

size_t fs_op_encoded_size(const struct fs_op *op)
{
    uint32_t ng = op->cred.ngroups > FS_MAX_GROUPS ? FS_MAX_GROUPS : op->cred.ngroups;
    /* strings are stored with their NUL so a decoded op points at C strings */
    return OP_FIXED + 4u * ng + (op->name ? op->namelen + 1u : 0) +
           (op->name2 ? op->name2len + 1u : 0) + op->datalen;
}

static uint8_t *put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
    return p + 4;
}
static uint8_t *put64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
    return p + 8;
}

size_t fs_op_encode(const struct fs_op *op, void *out)
{
    uint8_t *p = out;
    uint32_t ng = op->cred.ngroups > FS_MAX_GROUPS ? FS_MAX_GROUPS : op->cred.ngroups;
    p = put32(p, op->type);
    p = put32(p, ng);
    p = put32(p, op->cred.uid);
    p = put32(p, op->cred.gid);
    p = put64(p, op->cred.session);
    p = put64(p, op->cred.seq);
    p = put32(p, op->xflags); /* was reserved (0): old entries decode as no flags */
    p = put32(p, 0);
    p = put64(p, (uint64_t)op->now);
    p = put64(p, op->ino);
    p = put64(p, op->parent);
    p = put64(p, op->newparent);
    p = put64(p, op->size);
    p = put64(p, op->id);
    p = put64(p, op->index);
    p = put32(p, op->mode);
    p = put32(p, op->rdev);
    p = put32(p, op->flags);
    p = put32(p, op->valid);
    p = put32(p, op->uid);
    p = put32(p, op->gid);
    p = put32(p, op->goal);
    p = put32(p, op->version);
    p = put64(p, (uint64_t)op->atime);
    p = put64(p, (uint64_t)op->mtime);
    p = put32(p, op->name ? op->namelen + 1u : 0);
    p = put32(p, op->name2 ? op->name2len + 1u : 0);
    p = put32(p, op->datalen);
    for (uint32_t i = 0; i < ng; i++) p = put32(p, op->cred.groups[i]);
    if (op->name) {
        memcpy(p, op->name, op->namelen);
        p[op->namelen] = 0;
        p += op->namelen + 1;
    }
    if (op->name2) {
        memcpy(p, op->name2, op->name2len);
        p[op->name2len] = 0;
        p += op->name2len + 1;
    }
    if (op->datalen) {
        memcpy(p, op->data, op->datalen);
        p += op->datalen;
    }
    return (size_t)(p - (uint8_t *)out);
}

size_t fs_op_decode(struct fs_op *op, const void *buf, size_t len)
{
    struct rbuf r = {buf, len, 0, 0};
    memset(op, 0, sizeof(*op));
    op->type = rb_u32(&r);
    uint32_t ng = rb_u32(&r);
    op->cred.uid = rb_u32(&r);
    op->cred.gid = rb_u32(&r);
    op->cred.session = rb_u64(&r);
    op->cred.seq = rb_u64(&r);
    op->xflags = rb_u32(&r);
    rb_u32(&r);
    op->now = (int64_t)rb_u64(&r);
    op->ino = rb_u64(&r);
    op->parent = rb_u64(&r);
    op->newparent = rb_u64(&r);
    op->size = rb_u64(&r);
    op->id = rb_u64(&r);
    op->index = rb_u64(&r);
    op->mode = rb_u32(&r);
    op->rdev = rb_u32(&r);
    op->flags = rb_u32(&r);
    op->valid = rb_u32(&r);
    op->uid = rb_u32(&r);
    op->gid = rb_u32(&r);
    op->goal = rb_u32(&r);
    op->version = rb_u32(&r);
    op->atime = (int64_t)rb_u64(&r);
    op->mtime = (int64_t)rb_u64(&r);
    uint32_t l1 = rb_u32(&r), l2 = rb_u32(&r), l3 = rb_u32(&r);
    if (r.bad || ng > FS_MAX_GROUPS || op->type >= FS_OP_COUNT) return 0;
    op->cred.ngroups = ng;
    for (uint32_t i = 0; i < ng; i++) op->cred.groups[i] = rb_u32(&r);
    if (l1) {
        op->name = rb_bytes(&r, l1);
        op->namelen = l1 - 1;
        if (op->name && op->name[l1 - 1]) return 0;
    }
    if (l2) {
        op->name2 = rb_bytes(&r, l2);
        op->name2len = l2 - 1;
        if (op->name2 && op->name2[l2 - 1]) return 0;
    }
    if (l3) {
        op->data = rb_bytes(&r, l3);
        op->datalen = l3;
    }
    if (r.bad) return 0;
    return r.off;
}

/* ----- snapshots ----- */

#define SNAP_MAGIC 0x31504e5353464423ull /* "#DFSSNP1" */

static int cmp_ino(const void *a, const void *b)
{
    uint64_t x = (*(struct inode *const *)a)->ino, y = (*(struct inode *const *)b)->ino;
    return x < y ? -1 : x > y;
}

void *fs_snapshot(struct fs *fs, size_t *len)
{
    struct wbuf w = {0};
    wb_u64(&w, SNAP_MAGIC);
    wb_u64(&w, fs->next_ino);
    wb_u64(&w, fs->next_chunk);
    wb_u32(&w, fs->next_server);
    wb_u32(&w, fs->nlayouts);
    for (uint32_t i = 0; i < fs->nlayouts; i++) {
        wb_u32(&w, fs->layouts[i].stripe_unit);
        wb_u32(&w, fs->layouts[i].stripe_count);
        wb_u64(&w, fs->layouts[i].chunk_size);
    }
    struct inode **all = xmalloc((fs->icount + 1) * sizeof(*all));
    uint64_t k = 0;
    for (uint64_t i = 0; i < fs->icap; i++)
        if (fs->itab[i]) all[k++] = fs->itab[i];
    qsort(all, k, sizeof(*all), cmp_ino);
    wb_u64(&w, k);
    for (uint64_t i = 0; i < k; i++) {
        struct inode *n = all[i];
        wb_u64(&w, n->ino);
        wb_u64(&w, n->size);
        wb_u64(&w, (uint64_t)n->atime);
        wb_u64(&w, (uint64_t)n->mtime);
        wb_u64(&w, (uint64_t)n->ctime);
        wb_u32(&w, n->mode);
        wb_u32(&w, n->uid);
        wb_u32(&w, n->gid);
        wb_u32(&w, n->nlink);
        wb_u32(&w, n->rdev);
        wb_u32(&w, (uint32_t)n->layout | ((uint32_t)n->goal << 16) | ((uint32_t)n->flags << 24));
        if (is_dir(n)) {
            struct dir *d = DIR_OF(n);
            wb_u64(&w, d->parent);
            wb_u64(&w, d->next_cookie);
            wb_u32(&w, d->count);
            for (uint32_t j = 0; j < d->olen; j++) {
                struct dent *e = d->order[j];
                if (!e) continue;
                wb_u64(&w, e->cookie);
                wb_u64(&w, e->ino);
                wb_str(&w, e->name, e->nlen);
            }
        } else if (is_reg(n)) {
            struct fchunks *fc = n->ext;
            uint64_t nc = fc ? fc->n : 0;
            wb_u64(&w, nc);
            for (uint64_t j = 0; j < nc; j++) {
                uint64_t id = fc->ids[j];
                wb_u64(&w, id);
                struct cm_chunk *c = (id && fs->cm) ? chunks_get(fs->cm, id) : NULL;
                wb_u32(&w, c ? c->version : 0);
            }
        } else if (S_ISLNK(n->mode)) {
            wb_str(&w, n->ext, (uint32_t)strlen(n->ext));
        }
        uint32_t nx = 0;
        for (struct xattr *x = n->xattrs; x; x = x->next) nx++;
        wb_u32(&w, nx);
        for (struct xattr *x = n->xattrs; x; x = x->next) {
            wb_str(&w, x->data, x->nlen);
            wb_str(&w, x->data + x->nlen + 1, x->vlen);
        }
    }
    free(all);
    wb_u32(&w, fs->nservers);
    for (uint32_t i = 0; i < fs->nservers; i++) wb_u32(&w, fs->servers[i]);
    wb_u32(&w, fs->nsess);
    for (uint32_t i = 0; i < fs->nsess; i++) {
        struct session *s = fs->sess[i];
        wb_u64(&w, s->id);
        wb_u64(&w, (uint64_t)s->last_ns);
        wb_u32(&w, s->next);
        for (unsigned j = 0; j < FS_REPLY_CACHE; j++) {
            wb_u64(&w, s->ring[j].seq);
            wb_u32(&w, (uint32_t)s->ring[j].status);
            wb_u32(&w, s->ring[j].version);
            wb_u64(&w, s->ring[j].val);
            const struct dfs_attr *a = &s->ring[j].attr;
            wb_u64(&w, a->ino);
            wb_u32(&w, a->mode);
            wb_u32(&w, a->nlink);
            wb_u32(&w, a->uid);
            wb_u32(&w, a->gid);
            wb_u32(&w, a->rdev);
            wb_u32(&w, a->goal);
            wb_u64(&w, a->size);
            wb_u64(&w, (uint64_t)a->atime);
            wb_u64(&w, (uint64_t)a->mtime);
            wb_u64(&w, (uint64_t)a->ctime);
            wb_u64(&w, a->generation);
        }
    }
    wb_u64(&w, SNAP_MAGIC);
    while (w.len % 8) wb_bytes(&w, "", 1);
    *len = w.len;
    return w.p;
}

/* Restore into a fresh fs; on success swap it in. */
int fs_restore(struct fs *fs, const void *buf, size_t len)
{
    struct rbuf r = {buf, len, 0, 0};
    if (rb_u64(&r) != SNAP_MAGIC) return DFS_ECORRUPT;
    struct fs *t = xcalloc(1, sizeof(*t));
    t->cm = NULL; /* chunk versions are pushed to cm only after success */
    t->next_ino = rb_u64(&r);
    t->next_chunk = rb_u64(&r);
    t->next_server = rb_u32(&r);
    uint32_t nl = rb_u32(&r);
    if (r.bad || nl == 0 || nl > 65535) goto bad;
    t->layouts = xcalloc(nl, sizeof(*t->layouts));
    t->nlayouts = nl;
    for (uint32_t i = 0; i < nl; i++) {
        t->layouts[i].stripe_unit = rb_u32(&r);
        t->layouts[i].stripe_count = rb_u32(&r);
        t->layouts[i].chunk_size = rb_u64(&r);
        if (!t->layouts[i].chunk_size) goto bad;
    }
    uint64_t k = rb_u64(&r);
    if (r.bad || k > len) goto bad;
    /* chunk (id, version, ino, index) tuples, pushed to cm at the end */
    struct wbuf cv = {0};
    for (uint64_t i = 0; i < k && !r.bad; i++) {
        struct inode *n = xcalloc(1, sizeof(*n));
        n->ino = rb_u64(&r);
        n->size = rb_u64(&r);
        n->atime = (int64_t)rb_u64(&r);
        n->mtime = (int64_t)rb_u64(&r);
        n->ctime = (int64_t)rb_u64(&r);
        n->mode = rb_u32(&r);
        n->uid = rb_u32(&r);
        n->gid = rb_u32(&r);
        n->nlink = rb_u32(&r);
        n->rdev = rb_u32(&r);
        uint32_t lg = rb_u32(&r);
        n->layout = (uint16_t)lg;
        n->goal = (uint8_t)(lg >> 16);
        n->flags = (uint8_t)(lg >> 24);
        if (n->layout >= nl || iget(t, n->ino) || n->ino == 0) {
            free(n);
            r.bad = 1;
            break;
        }
        iput(t, n);
        if (is_dir(n)) {
            t->ndirs++;
            struct dir *d = dir_new(rb_u64(&r));
            n->ext = d;
            uint64_t nextc = rb_u64(&r);
            uint32_t cnt = rb_u32(&r);
            for (uint32_t j = 0; j < cnt && !r.bad; j++) {
                uint64_t cookie = rb_u64(&r), ino = rb_u64(&r);
                uint32_t sl = rb_u32(&r);
                const char *s = rb_bytes(&r, sl);
                if (!s || sl == 0 || sl > DFS_MAX_NAME || cookie == 0 ||
                    (d->olen && d->order[d->olen - 1]->cookie >= cookie) ||
                    dir_find(d, s, sl)) {
                    r.bad = 1;
                    break;
                }
                dir_insert(d, s, sl, ino, cookie);
            }
            d->next_cookie = nextc;
        } else {
            t->nfiles++;
            if (is_reg(n)) {
                uint64_t nc = rb_u64(&r);
                if (nc > len / 12) {
                    r.bad = 1;
                    break;
                }
                if (nc) {
                    struct fchunks *fc = xcalloc(1, sizeof(*fc));
                    fc->n = nc;
                    fc->ids = xcalloc(nc, sizeof(*fc->ids));
                    n->ext = fc;
                    for (uint64_t j = 0; j < nc; j++) {
                        fc->ids[j] = rb_u64(&r);
                        uint32_t v = rb_u32(&r);
                        if (fc->ids[j]) {
                            t->nchunks++;
                            wb_u64(&cv, fc->ids[j]);
                            wb_u64(&cv, v);
                            wb_u64(&cv, n->ino);
                            wb_u64(&cv, j);
                        }
                    }
                }
            } else if (S_ISLNK(n->mode)) {
                uint32_t sl = rb_u32(&r);
                const char *s = rb_bytes(&r, sl);
                if (!s) break;
                char *tg = xmalloc(sl + 1);
                memcpy(tg, s, sl);
                tg[sl] = 0;
                n->ext = tg;
            }
        }
        uint32_t nx = rb_u32(&r);
        struct xattr **tail = &n->xattrs;
        for (uint32_t j = 0; j < nx && !r.bad; j++) {
            uint32_t a = rb_u32(&r);
            const char *nm = rb_bytes(&r, a);
            uint32_t b = rb_u32(&r);
            const char *val = rb_bytes(&r, b);
            if (!nm || (!val && b) || a > 255) {
                r.bad = 1;
                break;
            }
            struct xattr *x = xmalloc(sizeof(*x) + a + 1 + b);
            x->next = NULL;
            x->nlen = (uint8_t)a;
            x->vlen = b;
            memcpy(x->data, nm, a);
            x->data[a] = 0;
            if (b) memcpy(x->data + a + 1, val, b);
            *tail = x;
            tail = &x->next;
        }
        if (n->flags & IF_ORPHAN) orphan_add(t, n->ino);
    }
    uint32_t ns = rb_u32(&r);
    if (r.bad || ns > len / 4) goto bad_cv;
    for (uint32_t i = 0; i < ns; i++) {
        uint32_t v = rb_u32(&r);
        t->servers = xrealloc(t->servers, (t->nservers + 1) * sizeof(*t->servers));
        t->servers[t->nservers++] = v;
    }
    uint32_t nse = rb_u32(&r);
    if (r.bad || nse > len / 64) goto bad_cv;
    for (uint32_t i = 0; i < nse && !r.bad; i++) {
        struct session *s = sess_get(t, rb_u64(&r));
        s->last_ns = (int64_t)rb_u64(&r);
        s->next = rb_u32(&r);
        for (unsigned j = 0; j < FS_REPLY_CACHE; j++) {
            s->ring[j].seq = rb_u64(&r);
            s->ring[j].status = (int32_t)rb_u32(&r);
            s->ring[j].version = rb_u32(&r);
            s->ring[j].val = rb_u64(&r);
            struct dfs_attr *a = &s->ring[j].attr;
            a->ino = rb_u64(&r);
            a->mode = rb_u32(&r);
            a->nlink = rb_u32(&r);
            a->uid = rb_u32(&r);
            a->gid = rb_u32(&r);
            a->rdev = rb_u32(&r);
            a->goal = rb_u32(&r);
            a->size = rb_u64(&r);
            a->atime = (int64_t)rb_u64(&r);
            a->mtime = (int64_t)rb_u64(&r);
            a->ctime = (int64_t)rb_u64(&r);
            a->generation = rb_u64(&r);
        }
    }
    if (r.bad || rb_u64(&r) != SNAP_MAGIC || !iget(t, DFS_ROOT_INO)) goto bad_cv;

    /* Success: swap the new state in and tell the chunk map. */
    {
        struct chunks *cm = fs->cm;
        fs_clear(fs);
        struct fs tmp = *t;
        *fs = tmp;
        fs->cm = cm;
        free(t);
        if (cm) {
            chunks_reset_replicated(cm);
            for (uint32_t i = 0; i < fs->nservers; i++) {
                chunks_server_known(cm, fs->servers[i] & 0x7fffffffu);
                chunks_server_set_draining(cm, fs->servers[i] & 0x7fffffffu,
                                           (fs->servers[i] & 0x80000000u) != 0);
            }
            for (size_t off = 0; off + 32 <= cv.len; off += 32) {
                uint64_t q[4];
                memcpy(q, cv.p + off, 32);
                chunks_chunk_add(cm, q[0], (uint32_t)q[1], q[2], q[3]);
            }
        }
        free(cv.p);
        return DFS_OK;
    }
bad_cv:
    free(cv.p);
bad:
    fs_clear(t);
    free(t);
    return DFS_ECORRUPT;
}

uint64_t fs_digest(struct fs *fs)
{
    size_t len;
    void *p = fs_snapshot(fs, &len);
    uint64_t h = XXH3_64bits(p, len);
    free(p);
    return h;
}
