/* test_metad_fs.c - metad namespace and apply(): POSIX rules, striping, reply cache, snapshots. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../../metad/chunks.h"
#include "../../metad/fs.h"
#include "testlib.h"

static struct fs *fs;
static int64_t clk = 1000;

static void setup(void) { fs = fs_new(NULL); }
static void teardown(void) { fs_free(fs); }

static struct fs_op mkop(uint32_t type, uint32_t uid)
{
    struct fs_op op;
    memset(&op, 0, sizeof(op));
    op.type = type;
    op.cred.uid = uid;
    op.cred.gid = uid;
    op.now = ++clk;
    return op;
}

static int run(struct fs_op *op, struct dfs_attr *a)
{
    struct fs_result r;
    memset(&r, 0, sizeof(r));
    fs_apply(fs, op, &r);
    if (a) *a = r.attr;
    fs_result_free(&r);
    return r.status;
}

static int mk(uint32_t type, uint32_t uid, uint64_t parent, const char *name, uint32_t mode,
              uint64_t *ino)
{
    struct fs_op op = mkop(type, uid);
    op.parent = parent;
    op.name = name;
    op.namelen = (uint32_t)strlen(name);
    op.mode = mode;
    struct dfs_attr a;
    int st = run(&op, &a);
    if (ino) *ino = st ? 0 : a.ino;
    return st;
}

static int rm(uint32_t type, uint32_t uid, uint64_t parent, const char *name)
{
    struct fs_op op = mkop(type, uid);
    op.parent = parent;
    op.name = name;
    op.namelen = (uint32_t)strlen(name);
    return run(&op, NULL);
}

static int ren(uint32_t uid, uint64_t p, const char *n, uint64_t np, const char *nn,
               uint32_t flags)
{
    struct fs_op op = mkop(FS_OP_RENAME, uid);
    op.parent = p;
    op.name = n;
    op.namelen = (uint32_t)strlen(n);
    op.newparent = np;
    op.name2 = nn;
    op.name2len = (uint32_t)strlen(nn);
    op.flags = flags;
    return run(&op, NULL);
}

static uint64_t look(uint64_t parent, const char *name)
{
    struct fs_cred c = {0};
    struct dfs_attr a;
    return fs_lookup(fs, &c, parent, name, &a) == DFS_OK ? a.ino : 0;
}

static uint32_t nlink_of(uint64_t ino)
{
    struct dfs_attr a;
    ck_assert_int_eq(fs_getattr(fs, ino, &a), DFS_OK);
    return a.nlink;
}

START_TEST(test_create_lookup)
{
    uint64_t f, d;
    ck_assert_int_eq(mk(FS_OP_CREATE, 0, 1, "a", 0644, &f), DFS_OK);
    ck_assert_uint_eq(look(1, "a"), f);
    ck_assert_int_eq(mk(FS_OP_MKNOD, 0, 1, "a", S_IFREG | 0644, NULL), DFS_EEXIST);
    ck_assert_int_eq(mk(FS_OP_MKDIR, 0, 1, "d", 0755, &d), DFS_OK);
    ck_assert_uint_eq(nlink_of(1), 3);
    ck_assert_uint_eq(nlink_of(d), 2);
    uint64_t sub;
    ck_assert_int_eq(mk(FS_OP_MKDIR, 0, d, "s", 0755, &sub), DFS_OK);
    ck_assert_uint_eq(nlink_of(d), 3);
    ck_assert_uint_eq(look(sub, ".."), d);
    ck_assert_int_eq(mk(FS_OP_CREATE, 0, f, "x", 0644, NULL), DFS_ENOTDIR);
    ck_assert_int_eq(mk(FS_OP_CREATE, 0, 1, "a/b", 0644, NULL), DFS_EINVAL);
    char longname[300];
    memset(longname, 'x', 299);
    longname[299] = 0;
    ck_assert_int_eq(mk(FS_OP_CREATE, 0, 1, longname, 0644, NULL), DFS_ENAMETOOLONG);
    ck_assert_int_eq(rm(FS_OP_RMDIR, 0, d, "s"), DFS_OK);
    ck_assert_uint_eq(nlink_of(d), 2);
    ck_assert_int_eq(rm(FS_OP_RMDIR, 0, 1, "a"), DFS_ENOTDIR);
    ck_assert_int_eq(rm(FS_OP_UNLINK, 0, 1, "d"), DFS_EISDIR);
}
END_TEST

/* A new leader's FS_OP_EPOCH moves inode (and chunk) allocation past a gap,
 * so ids a lost log tail handed out are never reused. */
START_TEST(test_epoch_skips_ids)
{
    uint64_t a, b;
    ck_assert_int_eq(mk(FS_OP_CREATE, 0, 1, "a", 0644, &a), DFS_OK);
    struct fs_op op;
    memset(&op, 0, sizeof(op));
    op.type = FS_OP_EPOCH;
    ck_assert_int_eq(run(&op, NULL), DFS_OK);
    ck_assert_int_eq(mk(FS_OP_CREATE, 0, 1, "b", 0644, &b), DFS_OK);
    ck_assert_uint_ge(b, a + FS_EPOCH_GAP);
    /* and it survives a snapshot round trip like every other counter */
    size_t len;
    void *snap = fs_snapshot(fs, &len);
    ck_assert_ptr_nonnull(snap);
    ck_assert_int_eq(fs_restore(fs, snap, len), DFS_OK);
    free(snap);
    uint64_t c;
    ck_assert_int_eq(mk(FS_OP_CREATE, 0, 1, "c", 0644, &c), DFS_OK);
    ck_assert_uint_eq(c, b + 1);
}
END_TEST

START_TEST(test_rename_rules)
{
    uint64_t a, b, c, f;
    mk(FS_OP_MKDIR, 0, 1, "a", 0755, &a);
    mk(FS_OP_MKDIR, 0, a, "b", 0755, &b);
    mk(FS_OP_MKDIR, 0, 1, "c", 0755, &c);
    mk(FS_OP_CREATE, 0, c, "f", 0644, &f);
    /* into its own subtree */
    ck_assert_int_eq(ren(0, 1, "a", b, "x", 0), DFS_EINVAL);
    ck_assert_int_eq(ren(0, 1, "a", a, "x", 0), DFS_EINVAL);
    /* over a non-empty directory */
    ck_assert_int_eq(ren(0, 1, "a", 1, "c", 0), DFS_ENOTEMPTY);
    /* dir over file, file over dir */
    ck_assert_int_eq(ren(0, 1, "a", c, "f", 0), DFS_ENOTDIR);
    ck_assert_int_eq(ren(0, c, "f", 1, "a", 0), DFS_EISDIR);
    /* NOREPLACE */
    ck_assert_int_eq(ren(0, a, "b", 1, "c", DFS_RENAME_NOREPLACE), DFS_EEXIST);
    /* move dir between parents: link counts */
    ck_assert_uint_eq(nlink_of(1), 4);
    ck_assert_int_eq(ren(0, a, "b", c, "b2", 0), DFS_OK);
    ck_assert_uint_eq(nlink_of(a), 2);
    ck_assert_uint_eq(nlink_of(c), 3);
    ck_assert_uint_eq(look(b, ".."), c);
    /* replace empty dir atomically */
    uint64_t e;
    mk(FS_OP_MKDIR, 0, 1, "e", 0755, &e);
    ck_assert_int_eq(ren(0, 1, "a", 1, "e", 0), DFS_OK);
    ck_assert_uint_eq(look(1, "e"), a);
    ck_assert_uint_eq(look(1, "a"), 0);
    ck_assert_int_eq(fs_getattr(fs, e, &(struct dfs_attr){0}), DFS_ENOENT);
    ck_assert_uint_eq(nlink_of(1), 4); /* root: ., .., e(=a), c */
    /* replace a file: the old file is unlinked (orphaned: may be open) */
    uint64_t g;
    mk(FS_OP_CREATE, 0, 1, "g", 0644, &g);
    ck_assert_int_eq(ren(0, c, "f", 1, "g", 0), DFS_OK);
    ck_assert_uint_eq(look(1, "g"), f);
    ck_assert_uint_eq(nlink_of(g), 0);
    /* exchange */
    ck_assert_int_eq(ren(0, 1, "g", 1, "e", DFS_RENAME_EXCHANGE), DFS_OK);
    ck_assert_uint_eq(look(1, "g"), a);
    ck_assert_uint_eq(look(1, "e"), f);
    ck_assert_int_eq(ren(0, 1, "g", 1, "nope", DFS_RENAME_EXCHANGE), DFS_ENOENT);
    /* rename of a link onto another link of the same inode: no-op */
    struct fs_op l = mkop(FS_OP_LINK, 0);
    l.ino = f;
    l.newparent = 1;
    l.name = "f2";
    l.namelen = 2;
    ck_assert_int_eq(run(&l, NULL), DFS_OK);
    ck_assert_int_eq(ren(0, 1, "e", 1, "f2", 0), DFS_OK);
    ck_assert_uint_eq(look(1, "e"), f);
    ck_assert_uint_eq(nlink_of(f), 2);
    ck_assert_int_eq(ren(0, 1, ".", 1, "x", 0), DFS_EBUSY);
}
END_TEST

START_TEST(test_links_and_orphans)
{
    uint64_t f, d;
    mk(FS_OP_CREATE, 0, 1, "f", 0644, &f);
    mk(FS_OP_MKDIR, 0, 1, "d", 0755, &d);
    struct fs_op l = mkop(FS_OP_LINK, 0);
    l.ino = f;
    l.newparent = d;
    l.name = "h";
    l.namelen = 1;
    ck_assert_int_eq(run(&l, NULL), DFS_OK);
    ck_assert_uint_eq(nlink_of(f), 2);
    l.ino = d;
    l.name = "dd";
    l.namelen = 2;
    ck_assert_int_eq(run(&l, NULL), DFS_EPERM); /* no hard links to dirs */
    ck_assert_int_eq(rm(FS_OP_UNLINK, 0, 1, "f"), DFS_OK);
    ck_assert_uint_eq(nlink_of(f), 1);
    struct fs_op u = mkop(FS_OP_UNLINK, 0);
    u.parent = d;
    u.name = "h";
    u.namelen = 1;
    struct fs_result r;
    memset(&r, 0, sizeof(r));
    fs_apply(fs, &u, &r);
    ck_assert_int_eq(r.status, DFS_OK);
    ck_assert_uint_eq(r.orphan, f); /* kept for open handles */
    ck_assert_int_eq(fs_getattr(fs, f, &(struct dfs_attr){0}), DFS_OK);
    uint64_t o[4];
    ck_assert_uint_eq(fs_orphans(fs, o, 4), 1);
    struct fs_op p = mkop(FS_OP_PURGE, 0);
    p.ino = f;
    ck_assert_int_eq(run(&p, NULL), DFS_OK);
    ck_assert_int_eq(fs_getattr(fs, f, &(struct dfs_attr){0}), DFS_ENOENT);
    ck_assert_uint_eq(fs_orphans(fs, o, 4), 0);
    /* symlink */
    struct fs_op s = mkop(FS_OP_SYMLINK, 0);
    s.parent = 1;
    s.name = "ln";
    s.namelen = 2;
    s.name2 = "/some/where";
    s.name2len = 11;
    struct dfs_attr a;
    ck_assert_int_eq(run(&s, &a), DFS_OK);
    ck_assert(S_ISLNK(a.mode));
    ck_assert_uint_eq(a.size, 11);
    const char *t;
    ck_assert_int_eq(fs_readlink(fs, a.ino, &t), DFS_OK);
    ck_assert_str_eq(t, "/some/where");
}
END_TEST

START_TEST(test_permissions_sticky)
{
    uint64_t tmp, f1, f2;
    mk(FS_OP_MKDIR, 0, 1, "tmp", 01777, &tmp);
    ck_assert_int_eq(mk(FS_OP_CREATE, 1000, tmp, "f1", 0644, &f1), DFS_OK);
    ck_assert_int_eq(mk(FS_OP_CREATE, 1001, tmp, "f2", 0644, &f2), DFS_OK);
    /* 1001 may not delete or rename 1000's file in a sticky dir */
    ck_assert_int_eq(rm(FS_OP_UNLINK, 1001, tmp, "f1"), DFS_EPERM);
    ck_assert_int_eq(ren(1001, tmp, "f1", tmp, "z", 0), DFS_EPERM);
    /* nor replace it */
    ck_assert_int_eq(ren(1001, tmp, "f2", tmp, "f1", 0), DFS_EPERM);
    ck_assert_int_eq(rm(FS_OP_UNLINK, 1000, tmp, "f1"), DFS_OK);
    ck_assert_int_eq(rm(FS_OP_UNLINK, 0, tmp, "f2"), DFS_OK);
    /* plain permissions: no write on root for uid 1000 */
    ck_assert_int_eq(mk(FS_OP_CREATE, 1000, 1, "x", 0644, NULL), DFS_EACCES);
    uint64_t priv;
    mk(FS_OP_MKDIR, 1000, tmp, "priv", 0700, &priv);
    ck_assert_int_eq(mk(FS_OP_CREATE, 1001, priv, "x", 0644, NULL), DFS_EACCES);
    struct fs_cred c = {.uid = 1001, .gid = 1001};
    struct dfs_attr a;
    ck_assert_int_eq(fs_lookup(fs, &c, priv, "x", &a), DFS_EACCES);
    /* chmod only by the owner */
    struct fs_op sa = mkop(FS_OP_SETATTR, 1001);
    sa.ino = priv;
    sa.valid = DFS_SET_MODE;
    sa.mode = 0777;
    ck_assert_int_eq(run(&sa, NULL), DFS_EPERM);
    sa.cred.uid = 1000;
    ck_assert_int_eq(run(&sa, &a), DFS_OK);
    ck_assert_uint_eq(a.mode & 07777, 0777);
    /* group membership via supplementary groups */
    uint64_t g;
    mk(FS_OP_MKDIR, 0, 1, "g", 0770, &g);
    struct fs_op ch = mkop(FS_OP_SETATTR, 0);
    ch.ino = g;
    ch.valid = DFS_SET_GID;
    ch.gid = 500;
    ck_assert_int_eq(run(&ch, NULL), DFS_OK);
    struct fs_op cr = mkop(FS_OP_CREATE, 1000);
    cr.parent = g;
    cr.name = "y";
    cr.namelen = 1;
    cr.mode = 0644;
    ck_assert_int_eq(run(&cr, NULL), DFS_EACCES);
    cr.cred.ngroups = 1;
    cr.cred.groups[0] = 500;
    ck_assert_int_eq(run(&cr, NULL), DFS_OK);
}
END_TEST

struct rd {
    uint64_t last;
    unsigned n;
    char seen[2000];
};
static int rd_cb(void *arg, const char *name, uint32_t nl, uint64_t cookie,
                 const struct dfs_attr *a)
{
    (void)nl;
    (void)a;
    struct rd *r = arg;
    ck_assert_uint_gt(cookie, r->last);
    r->last = cookie;
    r->n++;
    int i = atoi(name + 1);
    ck_assert_int_eq(r->seen[i], 0);
    r->seen[i] = 1;
    return 0;
}

START_TEST(test_readdir_paged)
{
    uint64_t d;
    mk(FS_OP_MKDIR, 0, 1, "big", 0755, &d);
    char name[16];
    for (int i = 0; i < 2000; i++) {
        snprintf(name, sizeof(name), "f%d", i);
        ck_assert_int_eq(mk(FS_OP_CREATE, 0, d, name, 0644, NULL), DFS_OK);
    }
    struct rd r;
    memset(&r, 0, sizeof(r));
    struct fs_cred c = {0};
    int eof = 0, pages = 0;
    while (!eof) {
        ck_assert_int_eq(fs_readdir(fs, &c, d, r.last, 128, rd_cb, &r, &eof), DFS_OK);
        pages++;
        /* delete entries behind and ahead of the cursor while listing:
         * cookies stay valid and nothing is returned twice */
        if (pages == 3)
            for (int i = 0; i < 1500; i += 3) {
                snprintf(name, sizeof(name), "f%d", i);
                rm(FS_OP_UNLINK, 0, d, name);
            }
    }
    /* every entry that was never deleted was seen exactly once */
    for (int i = 0; i < 2000; i++)
        if (i >= 1500 || i % 3) ck_assert_int_eq(r.seen[i], 1);
    ck_assert_uint_ge(pages, 10);
}
END_TEST

START_TEST(test_striping_truncate)
{
    struct dfs_layout l = {64 << 10, 2, 1 << 20, {}};
    /* 1.5 stripes over 2 chunks: chunk0 = 64K, chunk1 = 32K */
    ck_assert_uint_eq(fs_chunk_length(&l, 0, 96 << 10), 64 << 10);
    ck_assert_uint_eq(fs_chunk_length(&l, 1, 96 << 10), 32 << 10);
    ck_assert_uint_eq(fs_chunk_length(&l, 2, 96 << 10), 0);
    /* full set: both chunks full; second set partially */
    uint64_t sz = (2u << 20) + (200u << 10);
    ck_assert_uint_eq(fs_chunk_length(&l, 0, sz), 1 << 20);
    ck_assert_uint_eq(fs_chunk_length(&l, 2, sz), 128 << 10); /* stripes 0 and 2 of set 1 */
    ck_assert_uint_eq(fs_chunk_length(&l, 3, sz), 72 << 10); /* stripe 1 + 8K of stripe 3 */

    struct chunks_opts o = {0};
    struct chunks_clock ck = {0};
    (void)ck;
    (void)o;
    /* Truncate a file with 4 chunks to 100K: chunks 2,3 dropped, chunk 1 cut. */
    uint64_t f;
    mk(FS_OP_CREATE, 0, 1, "f", 0644, &f);
    struct fs_op x = mkop(FS_OP_SETXATTR, 0);
    x.ino = f;
    x.name = "dfs.layout";
    x.namelen = 10;
    x.data = "stripe_unit=64K,stripe_count=2,chunk_size=1M";
    x.datalen = (uint32_t)strlen(x.data);
    ck_assert_int_eq(run(&x, NULL), DFS_OK);
    for (int i = 0; i < 4; i++) {
        struct fs_op cn = mkop(FS_OP_CHUNK_NEW, 0);
        cn.ino = f;
        cn.index = (uint64_t)i;
        ck_assert_int_eq(run(&cn, NULL), DFS_OK);
    }
    x.data = "stripe_unit=128K";
    x.datalen = (uint32_t)strlen(x.data);
    ck_assert_int_eq(run(&x, NULL), DFS_EBUSY);
    struct fs_op cm = mkop(FS_OP_COMMIT, 0);
    cm.ino = f;
    cm.size = 4u << 20;
    ck_assert_int_eq(run(&cm, NULL), DFS_OK);
    struct fs_op t = mkop(FS_OP_SETATTR, 0);
    t.ino = f;
    t.valid = DFS_SET_SIZE;
    t.size = 100u << 10;
    struct fs_result r;
    memset(&r, 0, sizeof(r));
    fs_apply(fs, &t, &r);
    ck_assert_int_eq(r.status, DFS_OK);
    ck_assert_uint_eq(r.attr.size, 100u << 10);
    unsigned dels = 0, truncs = 0;
    for (unsigned i = 0; i < r.ncops; i++) {
        if (r.cops[i].kind == FS_COP_DELETE) dels++;
        else {
            truncs++;
            ck_assert(r.cops[i].length == (64u << 10) || r.cops[i].length == (36u << 10));
        }
    }
    ck_assert_uint_eq(dels, 2);
    ck_assert_uint_eq(truncs, 2); /* chunk0 64K (was 1M) and chunk1 36K */
    fs_result_free(&r);
    ck_assert_uint_eq(fs_file_chunk(fs, f, 2), 0);
    ck_assert_uint_ne(fs_file_chunk(fs, f, 1), 0);
}
END_TEST

START_TEST(test_reply_cache)
{
    struct fs_op op = mkop(FS_OP_CREATE, 0);
    op.cred.session = 77;
    op.cred.seq = 5;
    op.parent = 1;
    op.name = "once";
    op.namelen = 4;
    op.mode = 0644;
    op.flags = 0200; /* O_EXCL */
    struct dfs_attr a1, a2;
    ck_assert_int_eq(run(&op, &a1), DFS_OK);
    /* the retry gets the first answer, not EEXIST */
    ck_assert_int_eq(run(&op, &a2), DFS_OK);
    ck_assert_uint_eq(a1.ino, a2.ino);
    op.cred.seq = 6;
    ck_assert_int_eq(run(&op, NULL), DFS_EEXIST);
    /* unlink retried after success: still OK */
    struct fs_op u = mkop(FS_OP_UNLINK, 0);
    u.cred.session = 77;
    u.cred.seq = 7;
    u.parent = 1;
    u.name = "once";
    u.namelen = 4;
    ck_assert_int_eq(run(&u, NULL), DFS_OK);
    ck_assert_int_eq(run(&u, NULL), DFS_OK);
    uint64_t ids[4];
    ck_assert_uint_eq(fs_idle_sessions(fs, clk + 1, ids, 4), 1);
    struct fs_op e = mkop(FS_OP_SESSION_EXPIRE, 0);
    e.id = 77;
    run(&e, NULL);
    ck_assert_uint_eq(fs_idle_sessions(fs, clk + 1, ids, 4), 0);
}
END_TEST

START_TEST(test_xattrs_goal)
{
    uint64_t d, f;
    mk(FS_OP_MKDIR, 0, 1, "d", 0755, &d);
    struct fs_op x = mkop(FS_OP_SETXATTR, 0);
    x.ino = d;
    x.name = "dfs.goal";
    x.namelen = 8;
    x.data = "3";
    x.datalen = 1;
    ck_assert_int_eq(run(&x, NULL), DFS_OK);
    mk(FS_OP_CREATE, 0, d, "f", 0644, &f);
    struct dfs_attr a;
    fs_getattr(fs, f, &a);
    ck_assert_uint_eq(a.goal, 3); /* inherited */
    x.data = "10";
    x.datalen = 2;
    ck_assert_int_eq(run(&x, NULL), DFS_EINVAL);
    struct fs_op g = mkop(FS_OP_SETGOAL, 0);
    g.ino = d;
    g.goal = 1;
    g.flags = 1;
    struct fs_result r;
    memset(&r, 0, sizeof(r));
    fs_apply(fs, &g, &r);
    ck_assert_uint_eq(r.val, 2);
    fs_getattr(fs, f, &a);
    ck_assert_uint_eq(a.goal, 1);
    /* user xattrs */
    struct fs_op u = mkop(FS_OP_SETXATTR, 0);
    u.ino = f;
    u.name = "user.k";
    u.namelen = 6;
    u.data = "vv";
    u.datalen = 2;
    ck_assert_int_eq(run(&u, NULL), DFS_OK);
    u.flags = DFS_XATTR_CREATE;
    ck_assert_int_eq(run(&u, NULL), DFS_EEXIST);
    char buf[256];
    const void *v;
    uint32_t len;
    struct fs_cred c = {0};
    ck_assert_int_eq(fs_getxattr(fs, &c, f, "user.k", buf, sizeof(buf), &v, &len), DFS_OK);
    ck_assert_uint_eq(len, 2);
    ck_assert(!memcmp(v, "vv", 2));
    ck_assert_int_eq(fs_getxattr(fs, &c, f, "dfs.goal", buf, sizeof(buf), &v, &len), DFS_OK);
    ck_assert(!memcmp(v, "1", 1));
    ck_assert_int_eq(fs_listxattr(fs, &c, f, buf, sizeof(buf), &len), DFS_OK);
    ck_assert_uint_eq(len, 7);
    struct fs_op rx = mkop(FS_OP_REMOVEXATTR, 0);
    rx.ino = f;
    rx.name = "user.k";
    rx.namelen = 6;
    ck_assert_int_eq(run(&rx, NULL), DFS_OK);
    ck_assert_int_eq(run(&rx, NULL), DFS_ENODATA);
}
END_TEST

/* A deterministic pseudo-random workload used by the snapshot and replay tests. */
static void workload(struct fs *f, unsigned n, unsigned seed)
{
    char name[32], name2[32];
    for (unsigned i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        unsigned k = (seed >> 16) % 8, a = (seed >> 8) % 50, b = (seed >> 20) % 50;
        snprintf(name, sizeof(name), "n%u", a);
        snprintf(name2, sizeof(name2), "n%u", b);
        struct fs_op op;
        memset(&op, 0, sizeof(op));
        op.now = 1000 + i;
        op.cred.session = 1 + (i % 3);
        op.cred.seq = i + 1;
        op.parent = 1;
        op.name = name;
        op.namelen = (uint32_t)strlen(name);
        op.mode = 0644;
        switch (k) {
        case 0: op.type = FS_OP_CREATE; break;
        case 1: op.type = FS_OP_MKDIR; break;
        case 2: op.type = FS_OP_UNLINK; break;
        case 3: op.type = FS_OP_RMDIR; break;
        case 4:
            op.type = FS_OP_RENAME;
            op.newparent = 1;
            op.name2 = name2;
            op.name2len = (uint32_t)strlen(name2);
            break;
        case 5:
            op.type = FS_OP_SETXATTR;
            op.ino = (seed >> 4) % 40 + 1;
            op.name = "user.x";
            op.namelen = 6;
            op.data = name2;
            op.datalen = (uint32_t)strlen(name2);
            break;
        case 6:
            op.type = FS_OP_CHUNK_NEW;
            op.ino = (seed >> 4) % 40 + 1;
            op.index = b % 4;
            break;
        default:
            op.type = FS_OP_SETATTR;
            op.ino = (seed >> 4) % 40 + 1;
            op.valid = DFS_SET_SIZE | DFS_SET_MODE;
            op.size = a * 100000ull;
            op.mode = 0600;
            break;
        }
        struct fs_result r;
        memset(&r, 0, sizeof(r));
        fs_apply(f, &op, &r);
        fs_result_free(&r);
    }
}

static uint64_t mono(void *arg) { return *(uint64_t *)arg; }
static uint64_t rnd(void *arg)
{
    (void)arg;
    return 4;
}

START_TEST(test_snapshot_roundtrip)
{
    uint64_t t = 0;
    struct chunks_opts o = {0};
    struct chunks_clock c = {mono, rnd, &t};
    struct chunks *cm1 = chunks_new(&o, &c), *cm2 = chunks_new(&o, &c);
    struct fs *a = fs_new(cm1), *b = fs_new(cm2);
    workload(a, 3000, 42);
    size_t len;
    void *snap = fs_snapshot(a, &len);
    ck_assert_uint_eq(len % 8, 0);
    ck_assert_int_eq(fs_restore(b, snap, len), DFS_OK);
    ck_assert_uint_eq(fs_digest(a), fs_digest(b));
    ck_assert_uint_eq(chunks_count(cm1), chunks_count(cm2));
    /* both continue identically */
    workload(a, 500, 7);
    workload(b, 500, 7);
    ck_assert_uint_eq(fs_digest(a), fs_digest(b));
    /* corrupt snapshots are refused and leave the state alone */
    uint64_t before = fs_digest(b);
    ((char *)snap)[len / 2] ^= 0x55;
    int st = fs_restore(b, snap, len);
    if (st == DFS_OK) {
        /* the flipped byte may be in a timestamp: then it is a valid state */
    } else {
        ck_assert_uint_eq(fs_digest(b), before);
    }
    ck_assert_int_eq(fs_restore(b, snap, len / 3), DFS_ECORRUPT);
    free(snap);
    fs_free(a);
    fs_free(b);
    chunks_free(cm1);
    chunks_free(cm2);
}
END_TEST

START_TEST(test_op_encoding)
{
    struct fs_op op = mkop(FS_OP_RENAME, 1000);
    op.cred.ngroups = 2;
    op.cred.groups[0] = 5;
    op.cred.groups[1] = 6;
    op.name = "abc";
    op.namelen = 3;
    op.name2 = "defg";
    op.name2len = 4;
    op.data = "\0\1\2";
    op.datalen = 3;
    op.parent = 9;
    op.size = 1ull << 40;
    size_t n = fs_op_encoded_size(&op);
    char *buf = malloc(n);
    ck_assert_uint_eq(fs_op_encode(&op, buf), n);
    struct fs_op d;
    ck_assert_uint_eq(fs_op_decode(&d, buf, n), n);
    ck_assert_str_eq(d.name, "abc");
    ck_assert_str_eq(d.name2, "defg");
    ck_assert_uint_eq(d.datalen, 3);
    ck_assert_uint_eq(d.cred.groups[1], 6);
    ck_assert_uint_eq(d.size, 1ull << 40);
    ck_assert_uint_eq(d.parent, 9);
    for (size_t k = 0; k < n; k++) fs_op_decode(&d, buf, k); /* truncated: no crash */
    ck_assert_uint_eq(fs_op_decode(&d, buf, n - 1), 0);
    free(buf);
}
END_TEST

/* ----- one-entry unlink (FS_XF_PURGE), chunk 0 with CREATE (FS_XF_ALLOC), TRIM ----- */

static uint64_t cm_now(void *arg)
{
    (void)arg;
    return 1000;
}
static uint64_t cm_rand(void *arg)
{
    static uint64_t x = 88172645463325252ull;
    (void)arg;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
}

static struct chunks *cm_fs(void)
{
    struct chunks_opts o = {0};
    struct chunks_clock c = {cm_now, cm_rand, NULL};
    struct chunks *cm = chunks_new(&o, &c);
    fs_free(fs);
    fs = fs_new(cm);
    return cm;
}

/* CREATE "name" in parent with chunk 0 (FS_XF_ALLOC); returns the ino, *chunk = its id. */
static uint64_t create_alloc(struct chunks *cm, uint64_t parent, const char *name,
                             uint64_t *chunk)
{
    struct fs_op op = mkop(FS_OP_CREATE, 0);
    op.parent = parent;
    op.name = name;
    op.namelen = (uint32_t)strlen(name);
    op.mode = 0644;
    op.xflags = FS_XF_ALLOC;
    struct fs_result r;
    memset(&r, 0, sizeof(r));
    fs_apply(fs, &op, &r);
    ck_assert_int_eq(r.status, DFS_OK);
    ck_assert_uint_ne(r.val, 0);
    ck_assert_uint_eq(r.version, 1);
    fs_result_free(&r);
    ck_assert_uint_eq(fs_file_chunk(fs, r.attr.ino, 0), r.val);
    struct cm_chunk *c = chunks_get(cm, r.val);
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq(c->version, 1);
    ck_assert_uint_eq(c->ino, r.attr.ino);
    ck_assert_uint_eq(c->index, 0);
    /* the leader's chain (soft state, as after a GRANT) */
    chunks_replica_set(cm, c, 1, 1, DFS_RS_OK);
    chunks_replica_set(cm, c, 2, 1, DFS_RS_OK);
    *chunk = r.val;
    return r.attr.ino;
}

START_TEST(test_unlink_purge_flag)
{
    struct chunks *cm = cm_fs();
    uint64_t ca, cb, cc;
    uint64_t a = create_alloc(cm, 1, "a", &ca);
    uint64_t b = create_alloc(cm, 1, "b", &cb);
    uint64_t c = create_alloc(cm, 1, "c", &cc);
    ck_assert_uint_ne(ca, cb);
    ck_assert_uint_eq(chunks_gc_pending(cm), 0);
    uint64_t o[4];

    /* With the flag: freed by the UNLINK itself, chunk replicas to GC. */
    struct fs_op u = mkop(FS_OP_UNLINK, 0);
    u.parent = 1;
    u.name = "a";
    u.namelen = 1;
    u.ino = a;
    u.xflags = FS_XF_PURGE;
    struct fs_result r;
    memset(&r, 0, sizeof(r));
    fs_apply(fs, &u, &r);
    ck_assert_int_eq(r.status, DFS_OK);
    ck_assert_uint_eq(r.orphan, 0);
    ck_assert_uint_eq(r.ncops, 1);
    ck_assert_uint_eq(r.cops[0].kind, FS_COP_DELETE);
    ck_assert_uint_eq(r.cops[0].chunk_id, ca);
    fs_result_free(&r);
    ck_assert_int_eq(fs_getattr(fs, a, &(struct dfs_attr){0}), DFS_ENOENT);
    ck_assert_ptr_null(chunks_get(cm, ca));
    ck_assert_uint_eq(chunks_gc_pending(cm), 2);
    ck_assert_uint_eq(fs_orphans(fs, o, 4), 0);

    /* Without it: an orphan, chunks kept (the old path: PURGE later). */
    u = mkop(FS_OP_UNLINK, 0);
    u.parent = 1;
    u.name = "b";
    u.namelen = 1;
    memset(&r, 0, sizeof(r));
    fs_apply(fs, &u, &r);
    ck_assert_int_eq(r.status, DFS_OK);
    ck_assert_uint_eq(r.orphan, b);
    ck_assert_uint_eq(r.ncops, 0);
    fs_result_free(&r);
    ck_assert_int_eq(fs_getattr(fs, b, &(struct dfs_attr){0}), DFS_OK);
    ck_assert_ptr_nonnull(chunks_get(cm, cb));
    ck_assert_uint_eq(fs_orphans(fs, o, 4), 1);
    ck_assert_uint_eq(chunks_gc_pending(cm), 2);

    /* The flag names another inode than the name binds when applied: no purge. */
    uint64_t h;
    struct fs_op l = mkop(FS_OP_LINK, 0);
    l.ino = c;
    l.newparent = 1;
    l.name = "c2";
    l.namelen = 2;
    ck_assert_int_eq(run(&l, NULL), DFS_OK);
    u = mkop(FS_OP_UNLINK, 0);
    u.parent = 1;
    u.name = "c";
    u.namelen = 1;
    u.ino = c;
    u.xflags = FS_XF_PURGE; /* nlink 2 -> 1: the flag does nothing */
    ck_assert_int_eq(run(&u, NULL), DFS_OK);
    ck_assert_uint_eq(nlink_of(c), 1);
    ck_assert_ptr_nonnull(chunks_get(cm, cc));
    mk(FS_OP_CREATE, 0, 1, "x", 0644, &h);
    u = mkop(FS_OP_UNLINK, 0);
    u.parent = 1;
    u.name = "c2";
    u.namelen = 2;
    u.ino = h; /* another inode: c becomes an orphan */
    u.xflags = FS_XF_PURGE;
    memset(&r, 0, sizeof(r));
    fs_apply(fs, &u, &r);
    ck_assert_uint_eq(r.orphan, c);
    fs_result_free(&r);
    ck_assert_uint_eq(fs_orphans(fs, o, 4), 2);
    ck_assert_int_eq(fs_getattr(fs, h, &(struct dfs_attr){0}), DFS_OK);

    /* RENAME over a file with the flag: the replaced file is freed. */
    uint64_t cd, ce;
    uint64_t d = create_alloc(cm, 1, "d", &cd);
    uint64_t e = create_alloc(cm, 1, "e", &ce);
    struct fs_op rn = mkop(FS_OP_RENAME, 0);
    rn.parent = 1;
    rn.name = "d";
    rn.namelen = 1;
    rn.newparent = 1;
    rn.name2 = "e";
    rn.name2len = 1;
    rn.ino = e;
    rn.xflags = FS_XF_PURGE;
    ck_assert_int_eq(run(&rn, NULL), DFS_OK);
    ck_assert_int_eq(fs_getattr(fs, e, &(struct dfs_attr){0}), DFS_ENOENT);
    ck_assert_ptr_null(chunks_get(cm, ce));
    ck_assert_uint_eq(look(1, "e"), d);
    ck_assert_ptr_nonnull(chunks_get(cm, cd));
    ck_assert_uint_eq(fs_orphans(fs, o, 4), 2);
    ck_assert_uint_eq(chunks_gc_pending(cm), 4);

    /* Followers replaying the same ops reach the same state. */
    struct fs_stats st;
    fs_stats(fs, &st);
    ck_assert_uint_eq(st.orphans, 2);
    fs_free(fs);
    fs = fs_new(NULL);
    chunks_free(cm);
}
END_TEST

START_TEST(test_create_alloc_trim)
{
    struct chunks *cm = cm_fs();
    uint64_t c0;
    uint64_t f = create_alloc(cm, 1, "f", &c0);
    struct fs_stats st;
    fs_stats(fs, &st);
    ck_assert_uint_eq(st.chunks, 1);
    uint64_t n = 0;
    ck_assert_int_eq(fs_file_info(fs, f, NULL, NULL, NULL, &n), DFS_OK);
    ck_assert_uint_eq(n, 1);
    /* A GRANT of index 0 now finds the chunk (CHUNK_NEW answers EEXIST). */
    struct fs_op cn = mkop(FS_OP_CHUNK_NEW, 0);
    cn.ino = f;
    cn.index = 0;
    struct fs_result r;
    memset(&r, 0, sizeof(r));
    fs_apply(fs, &cn, &r);
    ck_assert_int_eq(r.status, DFS_EEXIST);
    ck_assert_uint_eq(r.val, c0);
    /* CREATE (no O_EXCL) of the existing name with the flag allocates nothing. */
    struct fs_op op = mkop(FS_OP_CREATE, 0);
    op.parent = 1;
    op.name = "f";
    op.namelen = 1;
    op.mode = 0644;
    op.xflags = FS_XF_ALLOC;
    memset(&r, 0, sizeof(r));
    fs_apply(fs, &op, &r);
    ck_assert_int_eq(r.status, DFS_OK);
    ck_assert_uint_eq(r.attr.ino, f);
    ck_assert_uint_eq(r.val, 0);
    /* The op survives the log encoding with its flags. */
    size_t len = fs_op_encoded_size(&op);
    char *buf = malloc(len);
    fs_op_encode(&op, buf);
    struct fs_op d;
    ck_assert_uint_eq(fs_op_decode(&d, buf, len), len);
    ck_assert_uint_eq(d.xflags, FS_XF_ALLOC);
    free(buf);
    /* Ids stay deterministic: a snapshot round trip keeps chunk 0. */
    size_t sl;
    void *snap = fs_snapshot(fs, &sl);
    ck_assert_ptr_nonnull(snap);
    struct fs *f2 = fs_new(NULL);
    ck_assert_int_eq(fs_restore(f2, snap, sl), DFS_OK);
    ck_assert_uint_eq(fs_file_chunk(f2, f, 0), c0);
    fs_free(f2);
    free(snap);
    /* TRIM of a written file keeps its chunk; of an empty one drops it. */
    struct fs_op cm2 = mkop(FS_OP_COMMIT, 0);
    cm2.ino = f;
    cm2.size = 4096;
    ck_assert_int_eq(run(&cm2, NULL), DFS_OK);
    struct fs_op t = mkop(FS_OP_TRIM, 0);
    t.ino = f;
    ck_assert_int_eq(run(&t, NULL), DFS_OK);
    ck_assert_uint_eq(fs_file_chunk(fs, f, 0), c0);
    uint64_t c1;
    uint64_t g = create_alloc(cm, 1, "g", &c1);
    t.ino = g;
    memset(&r, 0, sizeof(r));
    fs_apply(fs, &t, &r);
    ck_assert_int_eq(r.status, DFS_OK);
    ck_assert_uint_eq(r.ncops, 1);
    ck_assert_uint_eq(r.cops[0].chunk_id, c1);
    fs_result_free(&r);
    ck_assert_uint_eq(fs_file_chunk(fs, g, 0), 0);
    ck_assert_ptr_null(chunks_get(cm, c1));
    ck_assert_uint_eq(chunks_gc_pending(cm), 2);
    ck_assert_int_eq(fs_file_info(fs, g, NULL, NULL, NULL, &n), DFS_OK);
    ck_assert_uint_eq(n, 0);
    fs_free(fs);
    fs = fs_new(NULL);
    chunks_free(cm);
}
END_TEST

TEST_SUITE(metad_fs)
{
    Suite *s = suite_create("metad_fs");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_create_lookup);
    tcase_add_test(tc, test_epoch_skips_ids);
    tcase_add_test(tc, test_rename_rules);
    tcase_add_test(tc, test_links_and_orphans);
    tcase_add_test(tc, test_permissions_sticky);
    tcase_add_test(tc, test_readdir_paged);
    tcase_add_test(tc, test_striping_truncate);
    tcase_add_test(tc, test_reply_cache);
    tcase_add_test(tc, test_xattrs_goal);
    tcase_add_test(tc, test_snapshot_roundtrip);
    tcase_add_test(tc, test_op_encoding);
    tcase_add_test(tc, test_unlink_purge_flag);
    tcase_add_test(tc, test_create_alloc_trim);
    suite_add_tcase(s, tc);
    return s;
}
