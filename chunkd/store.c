/* store.c - chunk replica files: headers, per-block checksums, the in-memory index.
 *
 * On-disk layout
 * --------------
 *   <dir>/.lock                  flock'ed while a chunkd uses the dir
 *   <dir>/chunks/XX/<id>.chk     one file per replica; XX = low byte of the id
 *                                in hex, <id> = 16 hex digits
 *   <dir>/chunks/tmp/            REPLICATE temp files (removed at startup)
 *
 * A chunk file:
 *
 *   0       4 KiB header page; the header proper is the first 64 bytes,
 *           all fields little-endian:
 *             0  magic "DFSCHNK1"      8  u32 format (1)  12 u32 version
 *             16 u64 chunk id          24 u64 length      32 u32 block size
 *             36 u32 flags (0)         40..56 reserved    56 u64 xxh3 of 0..56
 *   4 KiB   checksum table: u64 xxh3-64 per 64 KiB block of data, 1024
 *           entries (STORE_MAX_CHUNK / DFS_BLOCK_SIZE); the last block is
 *           summed over its real length
 *   16 KiB  data, `length` bytes (STORE_DATA_OFF)
 *
 * Keeping header, table and data in one file makes a replica one unit to
 * rename, delete and copy; the table is small enough (12 KiB with the header)
 * to be kept in memory while the chunk is open and rewritten with a single
 * pwrite after each data write.
 *
 * Write order and crash safety
 * ----------------------------
 * A write computes the new checksums (reading and verifying the old contents
 * of partially covered blocks), pwrites the data, then pwrites header + table
 * in one call.  All of it happens under the chunk's write lock, so readers
 * never see data and table out of step.  After kill -9 the page cache holds
 * every completed pwrite: a write interrupted between its data and its table
 * leaves blocks whose checksum does not match, which reads, the scrubber and
 * the startup scan (last block) detect -- such a replica is reported corrupt
 * and never served.  After power loss, everything before the last fdatasync
 * (SYNC, or WRITE with DFS_WF_SYNC) is on disk; later writes may be torn and
 * are caught the same way.  Bytes of the file past 16 KiB + length (an
 * append whose header never made it) are cut off by the scan.  Version
 * changes are fdatasync'ed before they are acknowledged.
 *
 * Locking: st->mu protects the hash index, refcounts and dir picks; each
 * chunk has a rwlock protecting its file, table and fields (readers share
 * it).  Order: st->mu, then a chunk lock, then the leaf chg_mu.  Fields read
 * for listings without the chunk lock (version, length, state) are accessed
 * atomically.
 */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "checksum.h"
#include "log.h"
#include "util.h"

#define BS DFS_BLOCK_SIZE
#define HDR_SIZE 64u
#define HDR_PAGE 4096u
#define TBL_OFF HDR_PAGE
#define TBL_ENTRIES ((uint32_t)(STORE_MAX_CHUNK / BS))
#define META_SIZE (TBL_OFF + TBL_ENTRIES * 8u)
#define FORMAT 1u
static const char MAGIC[8] = {'D', 'F', 'S', 'C', 'H', 'N', 'K', '1'};

#define ALOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define ASTORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)

struct chunk {
    uint64_t id;
    struct chunk *hnext;     /* st->mu */
    int refs;                /* st->mu */
    bool in_hash;            /* st->mu */
    bool removed;            /* atomic: deleted or never created */
    int dir;                 /* lock (changes only with the write lock + st->mu) */
    uint32_t version;        /* atomic writes under the write lock */
    uint64_t length;         /* atomic writes under the write lock */
    int state;               /* atomic, DFS_RS_* */
    bool changed;            /* chg_mu: queued in st->chg */
    bool dirent_unsynced;    /* lock: created, parent dir not fsync'ed yet */
    pthread_rwlock_t lock;
    int fd;                  /* lock; -1 when closed */
    uint8_t *meta;           /* lock; header page + table, NULL when closed */
    uint64_t last_use_ms;    /* atomic */
};

struct sdir {
    char *path;
    int lockfd;
    int dfd;                 /* the dir itself, for fsync of entries */
    int state;               /* atomic, DFS_DS_* */
    bool fail_pending;       /* atomic: failure not yet applied to its chunks */
    uint64_t total, avail, used; /* st->mu */
    uint64_t written_since;  /* st->mu: bytes placed since the last statvfs */
    uint32_t nchunks;        /* st->mu */
};

struct store {
    pthread_mutex_t mu;
    struct chunk **hash;
    size_t hcap, count;
    struct sdir *dirs;
    size_t ndirs;
    pthread_mutex_t chg_mu;
    uint64_t *chg;
    size_t nchg, chgcap;
    uint64_t bytes_read, bytes_written; /* atomic */
};

struct store_tmp {
    struct store *st;
    uint64_t id;
    uint32_t version;
    int dir;
    int fd;
    uint64_t length;
    char *path;
    uint8_t *meta;
    uint8_t *block; /* partial last block carried between appends */
    uint32_t block_len;
};

static uint8_t zero_block[BS];

/* ----- little-endian helpers ----- */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint64_t tbl_get(const uint8_t *meta, uint32_t b) { return get64(meta + TBL_OFF + 8u * b); }
static void tbl_set(uint8_t *meta, uint32_t b, uint64_t v) { put64(meta + TBL_OFF + 8u * b, v); }

static void hdr_fill(uint8_t *meta, uint64_t id, uint32_t version, uint64_t length)
{
    memset(meta, 0, HDR_SIZE);
    memcpy(meta, MAGIC, 8);
    put32(meta + 8, FORMAT);
    put32(meta + 12, version);
    put64(meta + 16, id);
    put64(meta + 24, length);
    put32(meta + 32, BS);
    put64(meta + 56, csum_buf(meta, 56));
}

/* Returns NULL if the header is valid, else a reason. */
static const char *hdr_check(const uint8_t *meta, uint64_t id)
{
    if (memcmp(meta, MAGIC, 8) != 0) return "bad magic";
    if (get64(meta + 56) != csum_buf(meta, 56)) return "header checksum mismatch";
    if (get32(meta + 8) != FORMAT) return "unknown format version";
    if (get64(meta + 16) != id) return "chunk id does not match the file name";
    if (get32(meta + 32) != BS) return "unsupported block size";
    if (get64(meta + 24) > STORE_MAX_CHUNK) return "length too large";
    return NULL;
}

static uint64_t block_csum_zero(uint32_t len) { return csum_buf(zero_block, len); }

/* ----- I/O helpers ----- */

static int pread_full(int fd, void *buf, size_t n, uint64_t off)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, (char *)buf + done, n - done, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (r == 0) { /* short file: the rest reads as zeros */
            memset((char *)buf + done, 0, n - done);
            return (int)1;
        }
        done += (size_t)r;
    }
    return 0;
}

static int pwrite_full(int fd, const void *buf, size_t n, uint64_t off)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = pwrite(fd, (const char *)buf + done, n - done, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        done += (size_t)r;
    }
    return 0;
}

static char *chunk_path_in(const char *dir, uint64_t id)
{
    char *p = NULL;
    if (asprintf(&p, "%s/chunks/%02X/%016" PRIX64 ".chk", dir, (unsigned)(id & 0xff), id) < 0)
        return NULL;
    return p;
}

/* ----- dirs and errors ----- */

static void dir_fail(struct store *st, int d, int err, const char *what)
{
    struct sdir *sd = &st->dirs[d];
    if (ALOAD(&sd->state) == DFS_DS_FAILED) return;
    log_errno(LOG_LVL_ERR, err, "data dir %s failed (%s); its chunks are lost", sd->path, what);
    ASTORE(&sd->state, DFS_DS_FAILED);
    ASTORE(&sd->fail_pending, true);
}

/* Map an errno from a chunk's file to a status; marks the dir failed/full. */
static int io_status(struct store *st, int d, int err, const char *what)
{
    if (err < 0) err = -err;
    switch (err) {
    case ENOSPC:
    case EDQUOT:
        if (d >= 0 && ALOAD(&st->dirs[d].state) == DFS_DS_OK) {
            log_warn("data dir %s is full (%s)", st->dirs[d].path, what);
            ASTORE(&st->dirs[d].state, DFS_DS_FULL);
        }
        return DFS_ENOSPC;
    case EIO:
    case EROFS:
    case ENXIO:
    case ENODEV:
        if (d >= 0) dir_fail(st, d, err, what);
        return DFS_EDISK;
    case ENOMEM:
        return DFS_ENOMEM;
    default:
        log_errno(LOG_LVL_ERR, err, "%s", what);
        return DFS_EIO;
    }
}

/* ----- changes ----- */

static void note_change(struct store *st, struct chunk *c)
{
    pthread_mutex_lock(&st->chg_mu);
    if (!c->changed) {
        if (st->nchg == st->chgcap) {
            size_t nc = st->chgcap ? st->chgcap * 2 : 64;
            uint64_t *n = realloc(st->chg, nc * sizeof(*n));
            if (!n) {
                pthread_mutex_unlock(&st->chg_mu);
                return; /* the next full report will carry it */
            }
            st->chg = n;
            st->chgcap = nc;
        }
        st->chg[st->nchg++] = c->id;
        c->changed = true;
    }
    pthread_mutex_unlock(&st->chg_mu);
}

static void mark_corrupt(struct store *st, struct chunk *c, const char *why)
{
    if (ALOAD(&c->state) != DFS_RS_CORRUPT) {
        log_err("chunk %016" PRIx64 " in %s is corrupt: %s; not served any more", c->id,
                st->dirs[c->dir].path, why);
        ASTORE(&c->state, DFS_RS_CORRUPT);
        note_change(st, c);
    }
}

/* ----- index ----- */

static size_t hslot(const struct store *st, uint64_t id)
{
    uint64_t h = id * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 20) & (st->hcap - 1);
}

static struct chunk *hfind(struct store *st, uint64_t id)
{
    for (struct chunk *c = st->hash[hslot(st, id)]; c; c = c->hnext)
        if (c->id == id) return c;
    return NULL;
}

static int hgrow(struct store *st)
{
    size_t ncap = st->hcap * 2;
    struct chunk **nh = calloc(ncap, sizeof(*nh));
    if (!nh) return -1;
    struct chunk **old = st->hash;
    size_t ocap = st->hcap;
    st->hash = nh;
    st->hcap = ncap;
    for (size_t i = 0; i < ocap; i++) {
        struct chunk *c = old[i], *next;
        for (; c; c = next) {
            next = c->hnext;
            size_t s = hslot(st, c->id);
            c->hnext = nh[s];
            nh[s] = c;
        }
    }
    free(old);
    return 0;
}

static int hinsert(struct store *st, struct chunk *c)
{
    if (st->count + 1 > st->hcap / 4 * 3 && hgrow(st) != 0) return -1;
    size_t s = hslot(st, c->id);
    c->hnext = st->hash[s];
    st->hash[s] = c;
    c->in_hash = true;
    st->count++;
    st->dirs[c->dir].nchunks++;
    return 0;
}

static void chunk_free(struct chunk *c)
{
    if (c->fd >= 0) close(c->fd);
    free(c->meta);
    pthread_rwlock_destroy(&c->lock);
    free(c);
}

static void hremove(struct store *st, struct chunk *c)
{
    if (!c->in_hash) return;
    struct chunk **pp = &st->hash[hslot(st, c->id)];
    while (*pp && *pp != c) pp = &(*pp)->hnext;
    if (*pp) *pp = c->hnext;
    c->in_hash = false;
    st->count--;
    st->dirs[c->dir].nchunks--;
    if (c->refs == 0) chunk_free(c);
}

static struct chunk *chunk_new(uint64_t id, int dir, uint32_t version, uint64_t length, int state)
{
    struct chunk *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->id = id;
    c->dir = dir;
    c->version = version;
    c->length = length;
    c->state = state;
    c->fd = -1;
    pthread_rwlock_init(&c->lock, NULL);
    return c;
}

static struct chunk *chunk_get(struct store *st, uint64_t id)
{
    pthread_mutex_lock(&st->mu);
    struct chunk *c = hfind(st, id);
    if (c && ALOAD(&c->removed)) c = NULL;
    if (c) c->refs++;
    pthread_mutex_unlock(&st->mu);
    return c;
}

static void chunk_put(struct store *st, struct chunk *c)
{
    pthread_mutex_lock(&st->mu);
    if (--c->refs == 0 && !c->in_hash) chunk_free(c);
    pthread_mutex_unlock(&st->mu);
}

/* Unlink a removed chunk from the index (takes st->mu; no chunk lock held). */
static void chunk_unindex(struct store *st, struct chunk *c)
{
    pthread_mutex_lock(&st->mu);
    if (c->in_hash && hfind(st, c->id) == c) hremove(st, c);
    pthread_mutex_unlock(&st->mu);
}

/* The dir with the most free space for a new chunk: a dir that ran out of
 * space (DFS_DS_FULL) only when every usable dir is full. */
static int pick_dir_locked(struct store *st)
{
    int best = -1;
    uint64_t best_free = 0;
    bool best_full = true;
    for (size_t i = 0; i < st->ndirs; i++) {
        struct sdir *d = &st->dirs[i];
        int state = ALOAD(&d->state);
        if (state == DFS_DS_FAILED) continue;
        bool full = state == DFS_DS_FULL;
        uint64_t f = d->avail > d->written_since ? d->avail - d->written_since : 0;
        if (best < 0 || (best_full && !full) || (full == best_full && f > best_free)) {
            best_full = full;
            best = (int)i;
            best_free = f;
        }
    }
    return best;
}

int store_pick_dir(struct store *st)
{
    pthread_mutex_lock(&st->mu);
    int d = pick_dir_locked(st);
    pthread_mutex_unlock(&st->mu);
    return d;
}

/* ----- open chunk files ----- */

/* Load fd + meta; caller holds the write lock. */
static int chunk_load(struct store *st, struct chunk *c)
{
    if (c->meta) return DFS_OK;
    if (ALOAD(&st->dirs[c->dir].state) == DFS_DS_FAILED) return DFS_EDISK;
    char *path = chunk_path_in(st->dirs[c->dir].path, c->id);
    if (!path) return DFS_ENOMEM;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT) {
            log_err("chunk file %s vanished; reporting the chunk lost", path);
            ASTORE(&c->state, DFS_RS_LOST);
            note_change(st, c);
            free(path);
            return DFS_ENOCHUNK;
        }
        free(path);
        return io_status(st, c->dir, e, "open chunk");
    }
    uint8_t *meta = malloc(META_SIZE);
    if (!meta) {
        close(fd);
        free(path);
        return DFS_ENOMEM;
    }
    int r = pread_full(fd, meta, META_SIZE, 0);
    if (r < 0) {
        free(meta);
        close(fd);
        free(path);
        return io_status(st, c->dir, -r, "read chunk header");
    }
    const char *why = hdr_check(meta, c->id);
    if (why) {
        free(meta);
        close(fd);
        mark_corrupt(st, c, why);
        free(path);
        return DFS_ECORRUPT;
    }
    free(path);
    /* Chunks are mostly read front to back: a larger readahead window. */
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    c->fd = fd;
    c->meta = meta;
    return DFS_OK;
}

/* Take the chunk lock (shared or exclusive) with the file loaded and the
 * chunk valid; returns DFS_OK holding the lock, else an error without it. */
static int chunk_lock(struct store *st, struct chunk *c, bool excl)
{
    for (;;) {
        if (excl)
            pthread_rwlock_wrlock(&c->lock);
        else
            pthread_rwlock_rdlock(&c->lock);
        if (ALOAD(&c->removed)) {
            pthread_rwlock_unlock(&c->lock);
            return DFS_ENOCHUNK;
        }
        int s = ALOAD(&c->state);
        if (s == DFS_RS_LOST || ALOAD(&st->dirs[c->dir].state) == DFS_DS_FAILED) {
            pthread_rwlock_unlock(&c->lock);
            return DFS_EDISK;
        }
        if (c->meta) {
            ASTORE(&c->last_use_ms, dfs_mono_ms());
            return DFS_OK;
        }
        if (!excl) {
            pthread_rwlock_unlock(&c->lock);
            pthread_rwlock_wrlock(&c->lock);
        }
        int r = ALOAD(&c->removed) ? DFS_ENOCHUNK : chunk_load(st, c);
        if (r != DFS_OK || excl) {
            if (r != DFS_OK) pthread_rwlock_unlock(&c->lock);
            else ASTORE(&c->last_use_ms, dfs_mono_ms());
            return r;
        }
        pthread_rwlock_unlock(&c->lock);
    }
}

static int write_meta(struct store *st, struct chunk *c, uint32_t last_block)
{
    size_t n = TBL_OFF + 8u * ((size_t)last_block + 1);
    if (n > META_SIZE) n = META_SIZE;
    int r = pwrite_full(c->fd, c->meta, n, 0);
    if (r < 0) return io_status(st, c->dir, -r, "write chunk header");
    return DFS_OK;
}

static int chunk_datasync(struct store *st, struct chunk *c)
{
    if (fdatasync(c->fd) != 0) return io_status(st, c->dir, errno, "fdatasync chunk");
    if (c->dirent_unsynced) {
        /* The new entry lives in chunks/XX: make it durable too. */
        char sub[32];
        snprintf(sub, sizeof(sub), "chunks/%02X", (unsigned)(c->id & 0xff));
        int sfd = openat(st->dirs[c->dir].dfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (sfd >= 0) {
            if (fsync(sfd) != 0) {
                int e = errno;
                close(sfd);
                return io_status(st, c->dir, e, "fsync chunk dir");
            }
            close(sfd);
        }
        c->dirent_unsynced = false;
    }
    return DFS_OK;
}

/*
 * Read the old contents of block b (its valid part, [bs, min(bs+BS, L)))
 * into buf and verify it.  Caller holds the write lock.
 */
static int read_old_block(struct store *st, struct chunk *c, uint32_t b, uint8_t *buf)
{
    uint64_t L = c->length;
    uint64_t bs = (uint64_t)b * BS;
    uint32_t blen = (uint32_t)DFS_MIN((uint64_t)BS, L - bs);
    int r = pread_full(c->fd, buf, blen, STORE_DATA_OFF + bs);
    if (r < 0) return io_status(st, c->dir, -r, "read chunk block");
    if (csum_buf(buf, blen) != tbl_get(c->meta, b)) {
        char why[64];
        snprintf(why, sizeof(why), "block %u checksum mismatch", b);
        mark_corrupt(st, c, why);
        return DFS_ECORRUPT;
    }
    return DFS_OK;
}

/*
 * Core of write and zero-extending truncate: the range [off, off+n) gets
 * data (or zeros when data is NULL; then nothing but the table is written,
 * the file hole reads as zeros).  Caller holds the write lock, c loaded.
 */
static int chunk_update(struct store *st, struct chunk *c, uint64_t off, const uint8_t *data,
                        uint64_t n)
{
    uint64_t L = c->length;
    uint64_t end = off + n;
    uint64_t NL = DFS_MAX(L, end);
    if (n == 0) return DFS_OK;
    uint64_t from = DFS_MIN(off, L);
    uint32_t b0 = (uint32_t)(from / BS);
    uint32_t b1 = (uint32_t)((NL - 1) / BS);
    if (end < NL) b1 = (uint32_t)((end - 1) / BS); /* overwrite inside the chunk */
    uint8_t *tmp = NULL;
    uint64_t *newsum = malloc(sizeof(uint64_t) * (b1 - b0 + 1));
    if (!newsum) return DFS_ENOMEM;
    int r = DFS_OK;

    for (uint32_t b = b0; b <= b1; b++) {
        uint64_t bs = (uint64_t)b * BS;
        uint64_t be = DFS_MIN(bs + BS, NL);
        uint64_t ds = DFS_MAX(bs, off), de = DFS_MIN(be, end); /* new bytes in block */
        bool has_data = ds < de;
        bool old_part = bs < L;
        uint64_t v;
        if (has_data && data && ds == bs && de == be) {
            v = csum_buf(data + (bs - off), be - bs);
        } else if (!old_part && (!has_data || !data)) {
            v = block_csum_zero((uint32_t)(be - bs));
        } else {
            if (!tmp && !(tmp = malloc(BS))) {
                r = DFS_ENOMEM;
                goto out;
            }
            memset(tmp, 0, BS);
            if (old_part) {
                r = read_old_block(st, c, b, tmp);
                if (r != DFS_OK) goto out;
                /* bytes past the old length read as zeros in the new block */
            }
            if (has_data) {
                if (data)
                    memcpy(tmp + (ds - bs), data + (ds - off), de - ds);
                else
                    memset(tmp + (ds - bs), 0, de - ds);
            }
            v = csum_buf(tmp, be - bs);
        }
        newsum[b - b0] = v;
    }

    /* Anything in the file past the old length is debris of an unacknowledged
     * write (or a shrink); cut it so a gap reads as zeros. */
    if (off > L && ftruncate(c->fd, (off_t)(STORE_DATA_OFF + L)) != 0) {
        r = io_status(st, c->dir, errno, "truncate chunk");
        goto out;
    }
    if (data && n) {
        int w = pwrite_full(c->fd, data, n, STORE_DATA_OFF + off);
        if (w < 0) {
            r = io_status(st, c->dir, -w, "write chunk data");
            if (off >= L) {
                /* A failed append left the old contents intact: drop the tail. */
                if (ftruncate(c->fd, (off_t)(STORE_DATA_OFF + L)) != 0) mark_corrupt(st, c, "failed write");
            } else {
                mark_corrupt(st, c, "failed overwrite");
            }
            goto out;
        }
        /* Streaming writes: start writeback now, so the data goes to disk
         * while more arrives and a later fdatasync (SYNC) has little left to
         * do.  SYNC_FILE_RANGE_WRITE only queues the I/O; durability still
         * comes from fdatasync. */
        if (n >= (256u << 10))
            (void)sync_file_range(c->fd, (off_t)(STORE_DATA_OFF + off), (off_t)n,
                                  SYNC_FILE_RANGE_WRITE);
    } else if (!data && NL > L) {
        if (ftruncate(c->fd, (off_t)(STORE_DATA_OFF + L)) != 0 ||
            ftruncate(c->fd, (off_t)(STORE_DATA_OFF + NL)) != 0) {
            r = io_status(st, c->dir, errno, "extend chunk");
            goto out;
        }
    }
    for (uint32_t b = b0; b <= b1; b++) tbl_set(c->meta, b, newsum[b - b0]);
    if (NL != L) {
        hdr_fill(c->meta, c->id, c->version, NL);
        ASTORE(&c->length, NL);
    }
    r = write_meta(st, c, (uint32_t)((NL - 1) / BS));
    if (r != DFS_OK) {
        mark_corrupt(st, c, "failed table write");
        goto out;
    }
    if (NL != L) note_change(st, c);
out:
    free(tmp);
    free(newsum);
    return r;
}

/* Create a chunk file for a new index entry c (write lock held). */
static int chunk_create_file(struct store *st, struct chunk *c)
{
    char *path = chunk_path_in(st->dirs[c->dir].path, c->id);
    if (!path) return DFS_ENOMEM;
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        free(path);
        return io_status(st, c->dir, e, "create chunk");
    }
    uint8_t *meta = calloc(1, META_SIZE);
    if (!meta) {
        close(fd);
        unlink(path);
        free(path);
        return DFS_ENOMEM;
    }
    hdr_fill(meta, c->id, c->version, 0);
    int r = pwrite_full(fd, meta, META_SIZE, 0);
    if (r == 0 && ftruncate(fd, STORE_DATA_OFF) != 0) r = -errno;
    if (r < 0) {
        int s = io_status(st, c->dir, -r, "write new chunk header");
        close(fd);
        unlink(path);
        free(meta);
        free(path);
        return s;
    }
    free(path);
    c->fd = fd;
    c->meta = meta;
    c->dirent_unsynced = true;
    return DFS_OK;
}

/* Find the chunk or create an entry (and its file) for it.  Returns it
 * referenced and write-locked, or an error. */
static int chunk_get_or_create(struct store *st, uint64_t id, uint32_t version, struct chunk **out,
                               bool *created)
{
    *created = false;
    pthread_mutex_lock(&st->mu);
    struct chunk *c = hfind(st, id);
    if (c && (ALOAD(&c->removed) || ALOAD(&c->state) == DFS_RS_LOST)) {
        /* A deleted or lost copy: the new one replaces it. */
        ASTORE(&c->removed, true);
        hremove(st, c);
        c = NULL;
    }
    if (c) {
        c->refs++;
        pthread_mutex_unlock(&st->mu);
        int r = chunk_lock(st, c, true);
        if (r != DFS_OK) {
            chunk_put(st, c);
            return r;
        }
        *out = c;
        return DFS_OK;
    }
    int d = pick_dir_locked(st);
    if (d < 0) {
        pthread_mutex_unlock(&st->mu);
        return DFS_EDISK;
    }
    c = chunk_new(id, d, version, 0, DFS_RS_OK);
    if (!c || hinsert(st, c) != 0) {
        pthread_mutex_unlock(&st->mu);
        if (c) chunk_free(c);
        return DFS_ENOMEM;
    }
    c->refs++;
    pthread_rwlock_wrlock(&c->lock); /* uncontended: nobody else has seen c */
    pthread_mutex_unlock(&st->mu);
    int r = chunk_create_file(st, c);
    if (r != DFS_OK) {
        ASTORE(&c->removed, true);
        pthread_rwlock_unlock(&c->lock);
        chunk_unindex(st, c);
        chunk_put(st, c);
        return r;
    }
    ASTORE(&c->last_use_ms, dfs_mono_ms());
    note_change(st, c);
    *created = true;
    *out = c;
    return DFS_OK;
}

/* ----- public operations ----- */

int store_write(struct store *st, uint64_t id, uint32_t version, uint32_t flags, uint64_t off,
                const void *data, uint32_t n, uint64_t *len_out)
{
    if (off > STORE_MAX_CHUNK || n > STORE_MAX_CHUNK - off) return DFS_EFBIG;
    struct chunk *c;
    int r;
    if (flags & DFS_WF_CREATE) {
        bool created;
        r = chunk_get_or_create(st, id, version, &c, &created);
        if (r != DFS_OK) return r;
    } else {
        c = chunk_get(st, id);
        if (!c) return DFS_ENOCHUNK;
        r = chunk_lock(st, c, true);
        if (r != DFS_OK) {
            chunk_put(st, c);
            return r;
        }
    }
    if (c->version != version) {
        r = DFS_ESTALE;
    } else if (ALOAD(&c->state) == DFS_RS_CORRUPT) {
        r = DFS_ECORRUPT;
    } else {
        r = chunk_update(st, c, off, data, n);
        if (r == DFS_OK && (flags & DFS_WF_SYNC)) r = chunk_datasync(st, c);
        if (r == DFS_OK) {
            __atomic_add_fetch(&st->bytes_written, n, __ATOMIC_RELAXED);
            pthread_mutex_lock(&st->mu);
            st->dirs[c->dir].written_since += n;
            pthread_mutex_unlock(&st->mu);
        }
    }
    if (len_out) *len_out = c->length;
    pthread_rwlock_unlock(&c->lock);
    chunk_put(st, c);
    return r;
}

int store_read(struct store *st, uint64_t id, uint32_t version, uint64_t off, uint32_t len,
               void **bufp, const void **data, uint32_t *n, uint64_t *chunk_len)
{
    *bufp = NULL;
    *data = NULL;
    *n = 0;
    *chunk_len = 0;
    struct chunk *c = chunk_get(st, id);
    if (!c) return DFS_ENOCHUNK;
    int r = chunk_lock(st, c, false);
    if (r != DFS_OK) {
        chunk_put(st, c);
        return r;
    }
    uint64_t L = c->length;
    *chunk_len = L;
    if (version && c->version != version) {
        r = DFS_ESTALE;
        goto out;
    }
    if (ALOAD(&c->state) == DFS_RS_CORRUPT) {
        r = DFS_ECORRUPT;
        goto out;
    }
    if (off >= L || len == 0) goto out;
    uint64_t end = DFS_MIN(L, off + len);
    uint64_t aoff = off / BS * BS;
    uint64_t aend = DFS_MIN((end + BS - 1) / BS * BS, L);
    uint8_t *buf = malloc(aend - aoff);
    if (!buf) {
        r = DFS_ENOMEM;
        goto out;
    }
    int e = pread_full(c->fd, buf, aend - aoff, STORE_DATA_OFF + aoff);
    if (e < 0) {
        free(buf);
        r = io_status(st, c->dir, -e, "read chunk data");
        goto out;
    }
    for (uint64_t bs = aoff; bs < aend; bs += BS) {
        uint32_t b = (uint32_t)(bs / BS);
        uint64_t blen = DFS_MIN((uint64_t)BS, aend - bs);
        if (csum_buf(buf + (bs - aoff), blen) != tbl_get(c->meta, b)) {
            free(buf);
            char why[64];
            snprintf(why, sizeof(why), "block %u checksum mismatch on read", b);
            mark_corrupt(st, c, why);
            r = DFS_ECORRUPT;
            goto out;
        }
    }
    *bufp = buf;
    *data = buf + (off - aoff);
    *n = (uint32_t)(end - off);
    __atomic_add_fetch(&st->bytes_read, *n, __ATOMIC_RELAXED);
out:
    pthread_rwlock_unlock(&c->lock);
    chunk_put(st, c);
    return r;
}

int store_sync(struct store *st, uint64_t id, uint32_t version, uint64_t *len_out)
{
    struct chunk *c = chunk_get(st, id);
    if (!c) return DFS_ENOCHUNK;
    int r = chunk_lock(st, c, true);
    if (r != DFS_OK) {
        chunk_put(st, c);
        return r;
    }
    if (version && c->version != version)
        r = DFS_ESTALE;
    else if (ALOAD(&c->state) == DFS_RS_CORRUPT)
        r = DFS_ECORRUPT;
    else
        r = chunk_datasync(st, c);
    if (len_out) *len_out = c->length;
    pthread_rwlock_unlock(&c->lock);
    chunk_put(st, c);
    return r;
}

int store_delete(struct store *st, uint64_t id, uint32_t version)
{
    struct chunk *c = chunk_get(st, id);
    if (!c) return DFS_ENOCHUNK;
    pthread_rwlock_wrlock(&c->lock);
    int r = DFS_OK;
    if (ALOAD(&c->removed)) {
        r = DFS_ENOCHUNK;
    } else if (version && c->version != version) {
        r = DFS_ESTALE;
    } else {
        char *path = chunk_path_in(st->dirs[c->dir].path, c->id);
        if (!path) {
            r = DFS_ENOMEM;
        } else {
            if (unlink(path) != 0 && errno != ENOENT &&
                ALOAD(&st->dirs[c->dir].state) != DFS_DS_FAILED)
                r = io_status(st, c->dir, errno, "unlink chunk");
            free(path);
        }
        if (r == DFS_OK) {
            ASTORE(&c->removed, true);
            if (c->fd >= 0) close(c->fd);
            c->fd = -1;
            free(c->meta);
            c->meta = NULL;
        }
    }
    pthread_rwlock_unlock(&c->lock);
    if (r == DFS_OK) chunk_unindex(st, c);
    chunk_put(st, c);
    return r;
}

/* Rewrite the header with a new version/length and fdatasync. Write lock held. */
static int chunk_set_hdr(struct store *st, struct chunk *c, uint32_t version)
{
    hdr_fill(c->meta, c->id, version, c->length);
    int r = pwrite_full(c->fd, c->meta, HDR_SIZE, 0);
    if (r < 0) return io_status(st, c->dir, -r, "write chunk header");
    ASTORE(&c->version, version);
    return chunk_datasync(st, c);
}

int store_setversion(struct store *st, uint64_t id, uint32_t old_version, uint32_t version)
{
    struct chunk *c = chunk_get(st, id);
    if (!c) return DFS_ENOCHUNK;
    int r = chunk_lock(st, c, true);
    if (r != DFS_OK) {
        chunk_put(st, c);
        return r;
    }
    if (c->version == version)
        r = DFS_OK;
    else if (c->version != old_version)
        r = DFS_ESTALE;
    else if (ALOAD(&c->state) == DFS_RS_CORRUPT)
        r = DFS_ECORRUPT;
    else {
        r = chunk_set_hdr(st, c, version);
        if (r == DFS_OK) note_change(st, c);
    }
    pthread_rwlock_unlock(&c->lock);
    chunk_put(st, c);
    return r;
}

int store_truncate(struct store *st, uint64_t id, uint32_t old_version, uint32_t version,
                   uint64_t length)
{
    if (length > STORE_MAX_CHUNK) return DFS_EFBIG;
    struct chunk *c = chunk_get(st, id);
    if (!c) return DFS_ENOCHUNK;
    int r = chunk_lock(st, c, true);
    if (r != DFS_OK) {
        chunk_put(st, c);
        return r;
    }
    uint64_t L = c->length;
    if (c->version != old_version && !(c->version == version && L == length)) {
        r = DFS_ESTALE;
    } else if (ALOAD(&c->state) == DFS_RS_CORRUPT) {
        r = DFS_ECORRUPT;
    } else if (length > L) {
        r = chunk_update(st, c, L, NULL, length - L);
    } else if (length < L) {
        /* New last block: verify the old one, then sum its surviving prefix. */
        uint32_t nb_old = (uint32_t)csum_nblocks(L);
        if (length % BS) {
            uint8_t *tmp = malloc(BS);
            uint32_t b = (uint32_t)(length / BS);
            r = tmp ? read_old_block(st, c, b, tmp) : DFS_ENOMEM;
            if (r == DFS_OK) tbl_set(c->meta, b, csum_buf(tmp, length % BS));
            free(tmp);
        }
        if (r == DFS_OK) {
            for (uint32_t b = (uint32_t)csum_nblocks(length); b < nb_old; b++) tbl_set(c->meta, b, 0);
            hdr_fill(c->meta, c->id, c->version, length);
            /* Table and header first: a crash before the ftruncate leaves a
             * longer file, whose tail the startup scan cuts. */
            r = write_meta(st, c, nb_old ? nb_old - 1 : 0);
            if (r == DFS_OK && ftruncate(c->fd, (off_t)(STORE_DATA_OFF + length)) != 0)
                r = io_status(st, c->dir, errno, "truncate chunk");
            if (r == DFS_OK) {
                ASTORE(&c->length, length);
                note_change(st, c);
            } else {
                mark_corrupt(st, c, "failed truncate");
            }
        }
    }
    if (r == DFS_OK && c->version != version) r = chunk_set_hdr(st, c, version);
    else if (r == DFS_OK) r = chunk_datasync(st, c);
    pthread_rwlock_unlock(&c->lock);
    chunk_put(st, c);
    return r;
}

static void fill_rep(const struct chunk *c, struct dfs_chunkrep *o)
{
    o->chunk_id = c->id;
    o->version = ALOAD(&c->version);
    o->length = ALOAD(&c->length);
    o->state = (uint32_t)ALOAD(&c->state);
}

int store_stat(struct store *st, uint64_t id, struct dfs_chunkrep *out)
{
    pthread_mutex_lock(&st->mu);
    struct chunk *c = hfind(st, id);
    int r = DFS_ENOCHUNK;
    if (c && !ALOAD(&c->removed)) {
        fill_rep(c, out);
        r = DFS_OK;
    }
    pthread_mutex_unlock(&st->mu);
    return r;
}

size_t store_list(struct store *st, struct dfs_chunkrep **out)
{
    pthread_mutex_lock(&st->mu);
    size_t n = 0;
    struct dfs_chunkrep *v = malloc(sizeof(*v) * (st->count ? st->count : 1));
    if (v) {
        for (size_t i = 0; i < st->hcap; i++)
            for (struct chunk *c = st->hash[i]; c; c = c->hnext)
                if (!ALOAD(&c->removed)) fill_rep(c, &v[n++]);
    }
    pthread_mutex_unlock(&st->mu);
    *out = v;
    return n;
}

/* Apply pending dir failures: every chunk of a failed dir becomes lost. */
static void apply_dir_failures(struct store *st)
{
    bool any = false;
    for (size_t i = 0; i < st->ndirs; i++)
        if (ALOAD(&st->dirs[i].fail_pending)) any = true;
    if (!any) return;
    pthread_mutex_lock(&st->mu);
    for (size_t i = 0; i < st->ndirs; i++) ASTORE(&st->dirs[i].fail_pending, false);
    for (size_t i = 0; i < st->hcap; i++)
        for (struct chunk *c = st->hash[i]; c; c = c->hnext)
            if (ALOAD(&st->dirs[c->dir].state) == DFS_DS_FAILED &&
                ALOAD(&c->state) != DFS_RS_LOST) {
                ASTORE(&c->state, DFS_RS_LOST);
                note_change(st, c);
            }
    pthread_mutex_unlock(&st->mu);
}

size_t store_take_changes(struct store *st, struct dfs_chunkrep **out)
{
    apply_dir_failures(st);
    pthread_mutex_lock(&st->mu);
    pthread_mutex_lock(&st->chg_mu);
    uint64_t *ids = st->chg;
    size_t nids = st->nchg;
    st->chg = NULL;
    st->nchg = st->chgcap = 0;
    struct dfs_chunkrep *v = malloc(sizeof(*v) * (nids ? nids : 1));
    size_t n = 0;
    for (size_t i = 0; i < nids; i++) {
        struct chunk *c = hfind(st, ids[i]);
        if (!c) continue;
        c->changed = false;
        if (v && !ALOAD(&c->removed)) fill_rep(c, &v[n++]);
    }
    pthread_mutex_unlock(&st->chg_mu);
    pthread_mutex_unlock(&st->mu);
    free(ids);
    *out = v;
    return n;
}

void store_requeue_changes(struct store *st, const struct dfs_chunkrep *chg, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct chunk *c = chunk_get(st, chg[i].chunk_id);
        if (!c) continue;
        note_change(st, c);
        chunk_put(st, c);
    }
}

/* A full dir takes new chunks again once this much is free: 256 MiB, or an
 * eighth of a small dir but at least two maximal writes (so a 16 MiB test
 * tmpfs recovers after deletes, and a big disk does not flap). */
static uint64_t full_clear_bytes(uint64_t total)
{
    uint64_t x = total / 8;
    if (x < 2ull * DFS_MAX_IO) x = 2ull * DFS_MAX_IO;
    if (x > (256ull << 20)) x = 256ull << 20;
    return x;
}

void store_refresh(struct store *st)
{
    apply_dir_failures(st);
    for (size_t i = 0; i < st->ndirs; i++) {
        struct sdir *d = &st->dirs[i];
        struct statvfs sv;
        if (ALOAD(&d->state) == DFS_DS_FAILED) continue;
        if (statvfs(d->path, &sv) != 0) {
            dir_fail(st, (int)i, errno, "statvfs");
            continue;
        }
        pthread_mutex_lock(&st->mu);
        d->total = (uint64_t)sv.f_blocks * sv.f_frsize;
        d->avail = (uint64_t)sv.f_bavail * sv.f_frsize;
        d->used = d->total - (uint64_t)sv.f_bfree * sv.f_frsize;
        d->written_since = 0;
        pthread_mutex_unlock(&st->mu);
        if (sv.f_flag & ST_RDONLY) {
            dir_fail(st, (int)i, EROFS, "mounted read-only");
        } else if (ALOAD(&d->state) == DFS_DS_FULL && d->avail > full_clear_bytes(d->total)) {
            log_notice("data dir %s has space again", d->path);
            ASTORE(&d->state, DFS_DS_OK);
        }
    }
    apply_dir_failures(st);
}

size_t store_ndirs(const struct store *st) { return st->ndirs; }
const char *store_dir_path(const struct store *st, size_t i) { return st->dirs[i].path; }

void store_dirinfo(struct store *st, size_t i, struct dfs_dirinfo *o)
{
    struct sdir *d = &st->dirs[i];
    pthread_mutex_lock(&st->mu);
    o->path.ptr = d->path;
    o->path.len = (uint32_t)strlen(d->path);
    o->total = d->total;
    o->used = d->used;
    /* Bytes written since the last statvfs are not free any more. */
    o->avail = d->avail > d->written_since ? d->avail - d->written_since : 0;
    o->state = (uint32_t)ALOAD(&d->state);
    o->chunks = d->nchunks;
    pthread_mutex_unlock(&st->mu);
}

int store_dir_of(struct store *st, uint64_t id)
{
    pthread_mutex_lock(&st->mu);
    struct chunk *c = hfind(st, id);
    int d = c ? c->dir : -1;
    pthread_mutex_unlock(&st->mu);
    return d;
}

void store_trim(struct store *st, uint64_t idle_ms)
{
    uint64_t now = dfs_mono_ms();
    pthread_mutex_lock(&st->mu);
    for (size_t i = 0; i < st->hcap; i++)
        for (struct chunk *c = st->hash[i]; c; c = c->hnext) {
            if (c->fd < 0 && !c->meta) continue; /* racy peek, rechecked under lock */
            if (now - ALOAD(&c->last_use_ms) < idle_ms) continue;
            if (pthread_rwlock_trywrlock(&c->lock) != 0) continue;
            if (!c->dirent_unsynced) {
                if (c->fd >= 0) close(c->fd);
                c->fd = -1;
                free(c->meta);
                c->meta = NULL;
            }
            pthread_rwlock_unlock(&c->lock);
        }
    pthread_mutex_unlock(&st->mu);
}

uint64_t store_bytes_read(const struct store *st) { return ALOAD(&st->bytes_read); }
uint64_t store_bytes_written(const struct store *st) { return ALOAD(&st->bytes_written); }

char *store_chunk_path(struct store *st, uint64_t id)
{
    int d = store_dir_of(st, id);
    return d < 0 ? NULL : chunk_path_in(st->dirs[d].path, id);
}

/* ----- scrubbing ----- */

int store_scrub_block(struct store *st, uint64_t id, uint32_t block, uint32_t *nblocks,
                      uint32_t *bytes)
{
    *nblocks = 0;
    *bytes = 0;
    struct chunk *c = chunk_get(st, id);
    if (!c) return DFS_ENOCHUNK;
    pthread_rwlock_rdlock(&c->lock);
    int r = DFS_OK;
    int d = c->dir;
    uint64_t L = c->length;
    *nblocks = (uint32_t)csum_nblocks(L);
    if (ALOAD(&c->removed)) {
        r = DFS_ENOCHUNK;
        goto out;
    }
    if (ALOAD(&c->state) != DFS_RS_OK || ALOAD(&st->dirs[d].state) == DFS_DS_FAILED ||
        block >= *nblocks)
        goto out;
    char *path = chunk_path_in(st->dirs[d].path, id);
    if (!path) {
        r = DFS_ENOMEM;
        goto out;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (fd < 0) {
        r = io_status(st, d, errno, "scrub open");
        goto out;
    }
    uint8_t hdr[HDR_SIZE], ent[8];
    uint8_t *buf = malloc(BS);
    uint32_t blen = (uint32_t)DFS_MIN((uint64_t)BS, L - (uint64_t)block * BS);
    int e = buf ? pread_full(fd, hdr, HDR_SIZE, 0) : -ENOMEM;
    if (e >= 0) e = pread_full(fd, ent, 8, TBL_OFF + 8u * block);
    if (e >= 0) e = pread_full(fd, buf, blen, STORE_DATA_OFF + (uint64_t)block * BS);
    close(fd);
    if (e < 0) {
        r = io_status(st, d, -e, "scrub read");
    } else {
        const char *why = hdr_check(hdr, id);
        char msg[64];
        if (!why && get64(hdr + 24) != L) why = "header length differs from the index";
        if (!why && csum_buf(buf, blen) != get64(ent)) {
            snprintf(msg, sizeof(msg), "scrub: block %u checksum mismatch", block);
            why = msg;
        }
        if (why) {
            mark_corrupt(st, c, why);
            r = DFS_ECORRUPT;
        }
        *bytes = blen;
    }
    free(buf);
out:
    pthread_rwlock_unlock(&c->lock);
    chunk_put(st, c);
    return r;
}

/* ----- replication temp files ----- */

int store_tmp_begin(struct store *st, uint64_t id, uint32_t version, struct store_tmp **out)
{
    int d = store_dir_of(st, id);
    if (d < 0 || ALOAD(&st->dirs[d].state) == DFS_DS_FAILED) d = store_pick_dir(st);
    if (d < 0) return DFS_EDISK;
    struct store_tmp *t = calloc(1, sizeof(*t));
    if (!t) return DFS_ENOMEM;
    t->st = st;
    t->id = id;
    t->version = version;
    t->dir = d;
    t->fd = -1;
    t->meta = calloc(1, META_SIZE);
    t->block = malloc(BS);
    if (!t->meta || !t->block ||
        asprintf(&t->path, "%s/chunks/tmp/%016" PRIX64 ".%016" PRIx64 ".tmp", st->dirs[d].path,
                 id, dfs_random_u64()) < 0) {
        t->path = NULL;
        store_tmp_abort(t);
        return DFS_ENOMEM;
    }
    t->fd = open(t->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (t->fd < 0) {
        int r = io_status(st, d, errno, "create replication temp file");
        store_tmp_abort(t);
        return r;
    }
    *out = t;
    return DFS_OK;
}

int store_tmp_append(struct store_tmp *t, const void *data, uint32_t n)
{
    const uint8_t *p = data;
    if (t->length + n > STORE_MAX_CHUNK) return DFS_EFBIG;
    int w = pwrite_full(t->fd, data, n, STORE_DATA_OFF + t->length);
    if (w < 0) return io_status(t->st, t->dir, -w, "write replication temp file");
    /* Sum whole blocks as they complete; carry a partial one. */
    while (n > 0) {
        uint32_t take = DFS_MIN(n, BS - t->block_len);
        memcpy(t->block + t->block_len, p, take);
        t->block_len += take;
        p += take;
        n -= take;
        t->length += take;
        if (t->block_len == BS) {
            tbl_set(t->meta, (uint32_t)((t->length - 1) / BS), csum_buf(t->block, BS));
            t->block_len = 0;
        }
    }
    return DFS_OK;
}

int store_tmp_commit(struct store_tmp *t)
{
    struct store *st = t->st;
    int r;
    if (t->block_len)
        tbl_set(t->meta, (uint32_t)((t->length - 1) / BS), csum_buf(t->block, t->block_len));
    hdr_fill(t->meta, t->id, t->version, t->length);
    int w = pwrite_full(t->fd, t->meta, META_SIZE, 0);
    if (w < 0) {
        r = io_status(st, t->dir, -w, "write replication temp file");
        goto fail;
    }
    if (ftruncate(t->fd, (off_t)(STORE_DATA_OFF + t->length)) != 0 || fsync(t->fd) != 0) {
        r = io_status(st, t->dir, errno, "fsync replication temp file");
        goto fail;
    }

    /* Install: the index entry (old or new) is write-locked across the rename
     * so no reader sees the old file with the new table or the reverse. */
    pthread_mutex_lock(&st->mu);
    struct chunk *c = hfind(st, t->id);
    if (c && (ALOAD(&c->removed) || c->dir != t->dir)) {
        /* An old copy in another dir (or a dead entry): drop it after. */
        if (!ALOAD(&c->removed)) {
            char *old = chunk_path_in(st->dirs[c->dir].path, c->id);
            if (old) {
                unlink(old);
                free(old);
            }
        }
        ASTORE(&c->removed, true);
        hremove(st, c);
        c = NULL;
    }
    bool fresh = c == NULL;
    if (fresh) {
        c = chunk_new(t->id, t->dir, t->version, t->length, DFS_RS_OK);
        if (!c || hinsert(st, c) != 0) {
            pthread_mutex_unlock(&st->mu);
            if (c) chunk_free(c);
            r = DFS_ENOMEM;
            goto fail;
        }
    }
    c->refs++;
    pthread_mutex_unlock(&st->mu);
    pthread_rwlock_wrlock(&c->lock);
    char *dst = chunk_path_in(st->dirs[t->dir].path, t->id);
    if (!dst || rename(t->path, dst) != 0) {
        r = dst ? io_status(st, t->dir, errno, "rename replicated chunk") : DFS_ENOMEM;
        free(dst);
        if (fresh) ASTORE(&c->removed, true);
        pthread_rwlock_unlock(&c->lock);
        if (fresh) chunk_unindex(st, c);
        chunk_put(st, c);
        goto fail;
    }
    free(dst);
    char sub[32];
    snprintf(sub, sizeof(sub), "chunks/%02X", (unsigned)(t->id & 0xff));
    int sfd = openat(st->dirs[t->dir].dfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sfd >= 0) {
        (void)fsync(sfd);
        close(sfd);
    }
    if (c->fd >= 0) close(c->fd);
    free(c->meta);
    c->fd = t->fd;
    c->meta = t->meta;
    t->fd = -1;
    t->meta = NULL;
    ASTORE(&c->version, t->version);
    ASTORE(&c->length, t->length);
    ASTORE(&c->state, DFS_RS_OK);
    c->dirent_unsynced = false;
    ASTORE(&c->last_use_ms, dfs_mono_ms());
    note_change(st, c);
    pthread_rwlock_unlock(&c->lock);
    chunk_put(st, c);
    __atomic_add_fetch(&st->bytes_written, t->length, __ATOMIC_RELAXED);
    free(t->path);
    t->path = NULL;
    store_tmp_abort(t);
    return DFS_OK;
fail:
    store_tmp_abort(t);
    return r;
}

void store_tmp_abort(struct store_tmp *t)
{
    if (!t) return;
    if (t->fd >= 0) close(t->fd);
    if (t->path) unlink(t->path);
    free(t->path);
    free(t->meta);
    free(t->block);
    free(t);
}

/* ----- startup ----- */

/* Check one chunk file found by the scan; returns the index entry or NULL. */
static struct chunk *scan_file(struct store *st, int d, int subfd, const char *name, uint64_t id)
{
    const char *dpath = st->dirs[d].path;
    int fd = openat(subfd, name, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        log_errno(LOG_LVL_WARNING, errno, "scan %s: cannot open %s", dpath, name);
        return chunk_new(id, d, 0, 0, DFS_RS_CORRUPT);
    }
    uint8_t *meta = malloc(META_SIZE);
    uint8_t *blk = malloc(BS);
    struct stat sb;
    const char *why = NULL;
    uint32_t version = 0;
    uint64_t L = 0;
    if (!meta || !blk) {
        why = "out of memory";
    } else if (fstat(fd, &sb) != 0 || pread_full(fd, meta, META_SIZE, 0) < 0) {
        why = "unreadable";
    } else if ((why = hdr_check(meta, id)) == NULL) {
        version = get32(meta + 12);
        L = get64(meta + 24);
        uint64_t want = STORE_DATA_OFF + L;
        if ((uint64_t)sb.st_size < want) {
            why = "file shorter than its length (torn write)";
        } else {
            if ((uint64_t)sb.st_size > want) {
                /* Tail of an append that was never acknowledged. */
                log_info("chunk %016" PRIx64 ": cutting %" PRIu64 " unaccounted bytes", id,
                         (uint64_t)sb.st_size - want);
                if (ftruncate(fd, (off_t)want) != 0) why = "cannot truncate the tail";
            }
            if (!why && L > 0) {
                uint32_t b = (uint32_t)((L - 1) / BS);
                uint32_t blen = (uint32_t)(L - (uint64_t)b * BS);
                if (pread_full(fd, blk, blen, STORE_DATA_OFF + (uint64_t)b * BS) != 0)
                    why = "unreadable last block";
                else if (csum_buf(blk, blen) != tbl_get(meta, b))
                    why = "last block checksum mismatch (torn write)";
            }
        }
    }
    close(fd);
    free(meta);
    free(blk);
    struct chunk *c = chunk_new(id, d, version, L, why ? DFS_RS_CORRUPT : DFS_RS_OK);
    if (c && why) log_warn("scan %s: chunk %016" PRIx64 " is corrupt: %s", dpath, id, why);
    return c;
}

static int scan_dir(struct store *st, int d)
{
    struct sdir *sd = &st->dirs[d];
    size_t found = 0, bad = 0;
    for (unsigned x = 0; x < 256; x++) {
        char sub[32];
        snprintf(sub, sizeof(sub), "chunks/%02X", x);
        int subfd = openat(sd->dfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (subfd < 0) return -errno;
        DIR *dp = fdopendir(subfd);
        if (!dp) {
            close(subfd);
            return -errno;
        }
        struct dirent *de;
        while ((de = readdir(dp)) != NULL) {
            const char *nm = de->d_name;
            size_t len = strlen(nm);
            if (nm[0] == '.') continue;
            char *endp;
            uint64_t id = strtoull(nm, &endp, 16);
            if (len != 20 || endp != nm + 16 || strcmp(endp, ".chk") != 0 || (id & 0xff) != x) {
                log_warn("scan %s: ignoring stray file %s/%s", sd->path, sub, nm);
                continue;
            }
            struct chunk *c = scan_file(st, d, dirfd(dp), nm, id);
            if (!c) {
                closedir(dp);
                return -ENOMEM;
            }
            pthread_mutex_lock(&st->mu);
            struct chunk *old = hfind(st, id);
            if (old) {
                /* The same chunk in two dirs (a moved disk): keep the newer. */
                bool keep_new = (c->state == DFS_RS_OK && old->state != DFS_RS_OK) ||
                                (c->state == old->state && c->version > old->version);
                log_warn("chunk %016" PRIx64 " found in %s and %s; using the copy in %s", id,
                         st->dirs[old->dir].path, sd->path,
                         keep_new ? sd->path : st->dirs[old->dir].path);
                if (keep_new) {
                    hremove(st, old);
                } else {
                    pthread_mutex_unlock(&st->mu);
                    chunk_free(c);
                    continue;
                }
            }
            if (hinsert(st, c) != 0) {
                pthread_mutex_unlock(&st->mu);
                chunk_free(c);
                closedir(dp);
                return -ENOMEM;
            }
            pthread_mutex_unlock(&st->mu);
            found++;
            if (c->state != DFS_RS_OK) {
                bad++;
                note_change(st, c);
            }
        }
        closedir(dp);
    }
    log_info("data dir %s: %zu chunks (%zu corrupt)", sd->path, found, bad);
    return 0;
}

static int dir_prepare(struct store *st, int d, bool lock, char *err, size_t errlen)
{
    struct sdir *sd = &st->dirs[d];
    if (mkdir(sd->path, 0755) != 0 && errno != EEXIST) return -errno;
    sd->dfd = open(sd->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sd->dfd < 0) return -errno;
    if (lock) {
        /* Read-only descriptor: flock does not need write access, and a
         * file held open for writing would keep the dir's filesystem from
         * being remounted read-only. */
        sd->lockfd = openat(sd->dfd, ".lock", O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
        if (sd->lockfd < 0) return -errno;
        if (flock(sd->lockfd, LOCK_EX | LOCK_NB) != 0) {
            snprintf(err, errlen, "data dir %s is in use by another chunkd", sd->path);
            return -EBUSY;
        }
    }
    if (mkdirat(sd->dfd, "chunks", 0755) != 0 && errno != EEXIST) return -errno;
    for (unsigned x = 0; x < 256; x++) {
        char sub[32];
        snprintf(sub, sizeof(sub), "chunks/%02X", x);
        if (mkdirat(sd->dfd, sub, 0755) != 0 && errno != EEXIST) return -errno;
    }
    if (mkdirat(sd->dfd, "chunks/tmp", 0755) != 0 && errno != EEXIST) return -errno;
    /* Leftover replication temp files are never valid. */
    int tfd = openat(sd->dfd, "chunks/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (tfd >= 0) {
        DIR *dp = fdopendir(tfd);
        if (dp) {
            struct dirent *de;
            while ((de = readdir(dp)) != NULL)
                if (de->d_name[0] != '.') unlinkat(dirfd(dp), de->d_name, 0);
            closedir(dp);
        } else {
            close(tfd);
        }
    }
    return 0;
}

int store_open(struct store **out, const struct store_opts *opts, char *err, size_t errlen)
{
    *out = NULL;
    if (opts->ndirs == 0) {
        snprintf(err, errlen, "no data_dir configured");
        return DFS_ECONFIG;
    }
    struct store *st = calloc(1, sizeof(*st));
    if (!st) goto err_oom;
    pthread_mutex_init(&st->mu, NULL);
    pthread_mutex_init(&st->chg_mu, NULL);
    st->hcap = 1024;
    st->hash = calloc(st->hcap, sizeof(*st->hash));
    st->dirs = calloc(opts->ndirs, sizeof(*st->dirs));
    if (!st->hash || !st->dirs) goto err_oom;
    st->ndirs = opts->ndirs;
    for (size_t i = 0; i < opts->ndirs; i++) {
        st->dirs[i].lockfd = -1;
        st->dirs[i].dfd = -1;
        if (!(st->dirs[i].path = strdup(opts->dirs[i]))) goto err_oom;
    }
    for (size_t i = 0; i < st->ndirs; i++) {
        err[0] = '\0';
        int e = dir_prepare(st, (int)i, opts->lock_dirs, err, errlen);
        if (e == -EBUSY) {
            store_close(st);
            return DFS_EBUSY;
        }
        if (e == 0) e = scan_dir(st, (int)i);
        if (e == -ENOMEM) goto err_oom;
        if (e < 0) {
            log_errno(LOG_LVL_ERR, -e, "data dir %s unusable", st->dirs[i].path);
            st->dirs[i].state = DFS_DS_FAILED;
            st->dirs[i].fail_pending = true;
        }
    }
    store_refresh(st);
    *out = st;
    return DFS_OK;
err_oom:
    snprintf(err, errlen, "out of memory");
    store_close(st);
    return DFS_ENOMEM;
}

void store_close(struct store *st)
{
    if (!st) return;
    if (st->hash) {
        for (size_t i = 0; i < st->hcap; i++) {
            struct chunk *c = st->hash[i], *next;
            for (; c; c = next) {
                next = c->hnext;
                chunk_free(c);
            }
        }
    }
    for (size_t i = 0; st->dirs && i < st->ndirs; i++) {
        if (st->dirs[i].dfd >= 0) close(st->dirs[i].dfd);
        if (st->dirs[i].lockfd >= 0) close(st->dirs[i].lockfd);
        free(st->dirs[i].path);
    }
    free(st->dirs);
    free(st->hash);
    free(st->chg);
    pthread_mutex_destroy(&st->mu);
    pthread_mutex_destroy(&st->chg_mu);
    free(st);
}
