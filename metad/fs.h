/* fs.h - metad's replicated state: namespace, file chunk lists, reply cache; one apply(). */
#ifndef DFS_METAD_FS_H
#define DFS_METAD_FS_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

/*
 * Everything that survives a restart lives here and changes only through
 * fs_apply(), which is deterministic: it never reads a clock or a random
 * source.  The leader puts the time (`now`) into every op; inode numbers,
 * chunk ids and server ids come from counters that are themselves part of
 * this state, so every replica (and every replay of the log) allocates the
 * same numbers in the same order.
 *
 * Soft state (chunk replicas, servers' capacity, leases, open files) lives in
 * chunks.[ch] and mserv.[ch]; fs only tells the chunk map which chunk ids
 * exist and at which version (chunks_chunk_add/del/set_version).
 *
 * Not thread-safe: one thread (the metad loop, or a test) owns a struct fs.
 */

struct chunks;
struct fs;

#define FS_MAX_GROUPS 64u     /* supplementary groups kept per request */
#define FS_REPLY_CACHE 64u    /* replies remembered per client session */
#define FS_MAX_LINK 65000u    /* largest nlink */
/* Ids a new leader skips (FS_OP_EPOCH): with raft_sync=batch a power loss can
 * forget the last few ms of allocations, and ids a client or chunkd already
 * used must never be handed out again.  The skip is flushed before the
 * leader serves, so ids allocated after it are always above the last ids a
 * lost tail could have held. */
#define FS_EPOCH_GAP (1ull << 24)

enum fs_optype {
    FS_OP_NONE = 0,
    /* client ops (carry a cred; deduplicated by (session, seq)) */
    FS_OP_MKNOD = 1,
    FS_OP_MKDIR = 2,
    FS_OP_CREATE = 3,
    FS_OP_SYMLINK = 4,
    FS_OP_LINK = 5,
    FS_OP_UNLINK = 6,
    FS_OP_RMDIR = 7,
    FS_OP_RENAME = 8,
    FS_OP_SETATTR = 9,
    FS_OP_SETXATTR = 10,
    FS_OP_REMOVEXATTR = 11,
    FS_OP_SETGOAL = 12,
    FS_OP_COMMIT = 13,
    FS_OP_DRAIN = 14,           /* id = server id, flags = on */
    /* internal ops issued by the leader */
    FS_OP_PURGE = 20,           /* free orphan `ino` (nlink 0, last close) */
    FS_OP_CHUNK_NEW = 21,       /* ino, index: allocate a chunk id at version 1 */
    FS_OP_CHUNK_VERSION = 22,   /* id = chunk id, version = new version */
    FS_OP_SERVER_NEW = 23,      /* allocate a server id */
    FS_OP_SESSION_EXPIRE = 24,  /* id = session: forget its reply cache */
    FS_OP_NOOP = 25,
    FS_OP_TRIM = 26,            /* ino: drop the chunks wholly beyond its end (never written) */
    FS_OP_EPOCH = 27,           /* new leader: skip FS_EPOCH_GAP inode and chunk ids */
    FS_OP_COUNT
};

/* fs_op.xflags: decided by the leader at submit time, so every replica
 * applies the same thing. */
#define FS_XF_PURGE 1u /* UNLINK / RENAME over a file: if this drops the nlink of
                        * inode `ino` to 0, free it at once (the leader saw no
                        * open handle) instead of keeping an orphan */
#define FS_XF_ALLOC 2u /* CREATE of a new regular file: allocate chunk 0 at
                        * version 1 (res->val = its id) */

struct fs_cred {
    uint64_t session, seq; /* seq 0: not deduplicated */
    uint32_t uid, gid;
    uint32_t ngroups;
    uint32_t groups[FS_MAX_GROUPS];
};

/* One state change.  Strings point to NUL-terminated memory owned by the
 * caller (the request frame or the log entry being applied). */
struct fs_op {
    uint32_t type;
    struct fs_cred cred;
    int64_t now; /* ns since the epoch, decided by the leader */
    uint64_t ino, parent, newparent, size, id, index;
    uint32_t mode, rdev, flags, valid, uid, gid, goal, version;
    uint32_t xflags; /* FS_XF_* */
    int64_t atime, mtime;
    const char *name;  /* name / xattr name */
    uint32_t namelen;
    const char *name2; /* newname / symlink target */
    uint32_t name2len;
    const void *data;  /* xattr value */
    uint32_t datalen;
};

/* Work for the leader produced by apply: chunk replicas to truncate or delete. */
enum { FS_COP_TRUNCATE = 1, FS_COP_DELETE = 2 };
struct fs_chunkop {
    uint32_t kind;
    uint32_t old_version, version;
    uint64_t chunk_id;
    uint64_t length; /* TRUNCATE: new chunk-local length */
};

struct fs_result {
    int status;            /* DFS_OK or DFS_E* */
    struct dfs_attr attr;  /* ops answering with attributes */
    uint64_t val;          /* SETGOAL count, CHUNK_NEW chunk id, SERVER_NEW id,
                            * CREATE with FS_XF_ALLOC: chunk 0's id (0 = none) */
    uint32_t version;      /* CHUNK_NEW / CHUNK_VERSION / CREATE with a chunk */
    int cached;            /* answered from the reply cache */
    uint64_t orphan;       /* an inode whose last link went away (0 = none) */
    struct fs_chunkop *cops; /* malloc'ed; fs_result_free() */
    uint32_t ncops, capcops;
};

/* Create an empty filesystem (root directory, mode 0755, owned by root).
 * `cm` (may be NULL in namespace-only tests) is told about chunk ids. */
struct fs *fs_new(struct chunks *cm);
void fs_free(struct fs *fs);

/* Apply one op.  Deterministic.  Fills *res (zero it first); the caller
 * frees res->cops with fs_result_free(). */
void fs_apply(struct fs *fs, const struct fs_op *op, struct fs_result *res);
void fs_result_free(struct fs_result *res);

/* True if the op type carries a cred and is cached by (session, seq). */
int fs_op_is_client(uint32_t type);

/* ----- read-only queries (leader and followers) ----- */

int fs_getattr(struct fs *fs, uint64_t ino, struct dfs_attr *attr);
/* Lookup needs exec permission on the parent. */
int fs_lookup(struct fs *fs, const struct fs_cred *cred, uint64_t parent, const char *name,
              struct dfs_attr *attr);
int fs_readlink(struct fs *fs, uint64_t ino, const char **target);
/* Permission check against mask (4 read, 2 write, 1 exec). */
int fs_access(struct fs *fs, const struct fs_cred *cred, uint64_t ino, int mask);

/* Readdir: entries whose cookie is > `cookie`, at most `max`, in cookie order.
 * cb returns nonzero to stop early (that entry is not counted).  *eof set when
 * the listing reached the end.  Returns DFS_OK or an error. */
typedef int (*fs_readdir_cb)(void *arg, const char *name, uint32_t namelen, uint64_t cookie,
                             const struct dfs_attr *attr);
int fs_readdir(struct fs *fs, const struct fs_cred *cred, uint64_t ino, uint64_t cookie,
               uint32_t max, fs_readdir_cb cb, void *arg, int *eof);

/* xattrs (incl. the virtual dfs.goal / dfs.layout).  *value points into fs
 * memory or into buf (size buflen) and is valid until the next apply. */
int fs_getxattr(struct fs *fs, const struct fs_cred *cred, uint64_t ino, const char *name,
                char *buf, size_t buflen, const void **value, uint32_t *len);
/* NUL-separated names into buf; returns DFS_ERANGE if it does not fit. */
int fs_listxattr(struct fs *fs, const struct fs_cred *cred, uint64_t ino, char *buf,
                 size_t buflen, uint32_t *len);

/* File layout and chunk list.  chunk id 0 = hole. */
int fs_file_info(struct fs *fs, uint64_t ino, struct dfs_layout *layout, uint64_t *size,
                 uint32_t *goal, uint64_t *nchunks);
uint64_t fs_file_chunk(struct fs *fs, uint64_t ino, uint64_t index);
/* Is the inode a regular file the caller may write? */
int fs_may_write_file(struct fs *fs, const struct fs_cred *cred, uint64_t ino);

/* Reply cache lookup: 1 and *res filled if (session, seq) was answered. */
int fs_cached_reply(struct fs *fs, uint64_t session, uint64_t seq, struct fs_result *res);
/* Sessions idle since before `before_ns`: up to max ids into out. */
uint32_t fs_idle_sessions(struct fs *fs, int64_t before_ns, uint64_t *out, uint32_t max);
/* Orphans (nlink 0, kept for open handles): up to max into out. */
uint32_t fs_orphans(struct fs *fs, uint64_t *out, uint32_t max);

struct fs_stats {
    uint64_t inodes, files, dirs, chunks, orphans, sessions;
};
void fs_stats(struct fs *fs, struct fs_stats *st);

/* ----- snapshots ----- */

/* Serialize the whole state canonically (inodes by number, entries by cookie):
 * two states are equal iff their snapshots are equal.  Returns a malloc'ed
 * buffer (length in *len, a multiple of 8) or NULL on out of memory. */
void *fs_snapshot(struct fs *fs, size_t *len);
/* Replace the state with a snapshot.  Returns DFS_OK or DFS_ECORRUPT (then
 * the state is unchanged). */
int fs_restore(struct fs *fs, const void *buf, size_t len);
/* xxh3 of the snapshot: a digest for comparing states. */
uint64_t fs_digest(struct fs *fs);

/* ----- log entry encoding of ops ----- */

/* Bytes needed to encode op. */
size_t fs_op_encoded_size(const struct fs_op *op);
/* Encode into p (fs_op_encoded_size bytes); returns bytes written. */
size_t fs_op_encode(const struct fs_op *op, void *p);
/* Decode; strings point into p (which must stay alive).  Returns bytes read or
 * 0 if malformed. */
size_t fs_op_decode(struct fs_op *op, const void *p, size_t len);

/* Striping: chunk-local length of chunk `index` for a file of `size` bytes. */
uint64_t fs_chunk_length(const struct dfs_layout *l, uint64_t index, uint64_t size);

#endif /* DFS_METAD_FS_H */
