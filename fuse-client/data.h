/* data.h - the dfsmount client core: inode table, caches, striped chunk I/O. */
#ifndef DFS_FUSE_DATA_H
#define DFS_FUSE_DATA_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "layout.h"
#include "mclient.h"
#include "proto.h"
#include "rpc.h"

/*
 * Threads: FUSE worker threads call everything here synchronously; network
 * I/O goes through one rpc_mt loop thread (mclient for metad, one rpc_conn
 * per chunk server).  A background flusher thread writes out data that sat
 * in a write buffer too long and commits sizes periodically.
 *
 * Every inode the kernel knows (lookup count > 0) or that is open has a
 * struct dnode in the client's table.  The table lock (dfsc.itab_mu)
 * protects the table and the nlookup/nopen/refs counters of every node; the
 * node lock (dnode.mu) protects everything else in the node, and is held
 * across network I/O for that inode (so one inode's data ops are serialised,
 * different inodes run in parallel).  Lock order: dnode.mu, then itab_mu,
 * then srv_mu.
 */

struct dsrv; /* a chunk server connection (data.c) */

/* Write-buffer extent in file coordinates (sorted, non-overlapping). */
struct dext {
    uint64_t off;
    size_t len, cap;
    char *buf;
};

/* What the client knows about one chunk of a file (by chunk index). */
struct dchunk {
    bool known;           /* location fetched (else ask CHUNKS) */
    bool exists;          /* false: a hole */
    bool unsynced;        /* written since the last fsync */
    bool fresh;           /* handed out with our CREATE, not written yet: it
                           * exists only in metad, so it reads as a hole */
    uint64_t chunk_id;
    uint32_t version;
    uint32_t nrep;
    struct dsrv *rep[DFS_MAX_GOAL]; /* read order / write chain order */
    uint32_t rep_id[DFS_MAX_GOAL];
    uint64_t grant_until_ms; /* monotonic; nonzero: we hold a write lease */
};

struct dflight;  /* an in-flight batch of chunk writes (data.c) */
struct dwindow;  /* a read-ahead window (data.c) */

struct dnode {
    uint64_t ino;
    struct dnode *hnext;
    /* protected by dfsc.itab_mu */
    uint64_t nlookup;
    uint32_t nopen, nwriters;
    uint32_t refs;

    pthread_mutex_t mu;
    /* Everything below: protected by mu. */
    bool have_attr;
    struct dfs_attr attr;        /* last attributes from metad */
    bool have_open_stamp;        /* mtime/size seen at the last open */
    int64_t open_mtime;
    uint64_t open_size;

    bool have_layout;
    struct dfs_layout layout;
    struct dchunk *chunks;       /* indexed by chunk index */
    size_t nchunks;
    uint64_t chunks_ms;          /* when the chunk cache was last filled */

    /* Local, not yet committed changes (writes). */
    bool dirty_meta;
    uint64_t size;               /* valid when dirty_meta */
    int64_t mtime;               /* valid when dirty_meta */
    uint64_t dirty_since_ms;
    uint64_t commit_due_ms;
    struct dext *ext;
    size_t next, capext, dirty_bytes;
    struct dflight *flight;      /* writes in flight, or NULL */
    int werr;                    /* deferred write error (DFS status), 0 = none */

    /* Read-ahead. */
    struct dwindow *win[2];      /* [0] ready, [1] in flight */
    uint64_t seq_next;
    uint32_t ra_size;
};

struct dfsc {
    struct rpc_mt *mt;
    struct mclient *mc;
    uint64_t session;
    uint32_t timeout_ms;         /* bound for every operation */
    bool create_alloc; /* -o prealloc: CREATE hands out chunk 0 */
    bool fresh_dirs;   /* -o fresh_dirs: local ENOENT in dirs this mount just made */
    uint32_t chunk_timeout_ms;   /* one chunkd call attempt */
    double attr_timeout, entry_timeout;
    uint32_t ra_max;             /* largest read-ahead window, bytes */
    uint32_t wbuf_max;           /* buffered bytes per file before writing out */
    bool ro;

    pthread_mutex_t itab_mu;
    struct dnode **buckets;
    size_t nbuckets, count;

    pthread_mutex_t srv_mu;
    struct dsrv *servers;

    pthread_t flusher;
    bool flusher_running;
    pthread_mutex_t fl_mu;
    pthread_cond_t fl_cv;
    bool stopping;
};

/* Create the client state; start the flusher with dfsc_start_flusher().
 * Returns 0 or -1. */
int dfsc_init(struct dfsc *c);
void dfsc_start_flusher(struct dfsc *c);
/* Flush every dirty inode, stop the flusher, close chunk connections, free
 * every node.  mt/mc are left to the caller. */
void dfsc_shutdown(struct dfsc *c);

/* ----- the inode table ----- */

/* Find or create the node for ino and take one temporary reference
 * (dnode_put releases it).  Returns NULL only on out of memory. */
struct dnode *dnode_get(struct dfsc *c, uint64_t ino);
/* Find an existing node (with a temporary reference) or NULL. */
struct dnode *dnode_find(struct dfsc *c, uint64_t ino);
void dnode_put(struct dfsc *c, struct dnode *n);
/* Add n lookups (an entry reply reached the kernel). */
void dnode_lookup_add(struct dfsc *c, struct dnode *n, uint64_t cnt);
/* Kernel forget: drop cnt lookups of ino; frees the node when unused. */
void dnode_forget(struct dfsc *c, uint64_t ino, uint64_t cnt);
void dnode_open_add(struct dfsc *c, struct dnode *n, bool writer);
void dnode_open_drop(struct dfsc *c, struct dnode *n, bool writer);

/* Store attributes from metad in the node (n->mu held). */
void dnode_set_attr(struct dnode *n, const struct dfs_attr *a);
/* Overlay local uncommitted size/mtime on attributes (n->mu held). */
void dnode_patch_attr(const struct dnode *n, struct dfs_attr *a);

/* ----- data path; every function: n->mu held by the caller, returns a DFS status ----- */

/* Buffer a write of [off, off+len). */
int data_write(struct dfsc *c, struct dnode *n, uint64_t off, const void *buf, size_t len);
/* Read up to len bytes at off into buf; *got = bytes (short at EOF). */
int data_read(struct dfsc *c, struct dnode *n, uint64_t off, size_t len, char *buf,
              size_t *got);
/* Write out every buffered byte and wait for it. */
int data_flush(struct dfsc *c, struct dnode *n);
/* data_flush + COMMIT of size/mtime if changed (flags: DFS_CF_*). */
int data_commit(struct dfsc *c, struct dnode *n, uint32_t flags);
/* data_flush + SYNC on every replica of every chunk written since the last
 * fsync + COMMIT with DFS_CF_SYNC. */
int data_fsync(struct dfsc *c, struct dnode *n);
/* Forget cached chunk locations, grants and read-ahead (after truncate or
 * when the file changed behind our back). */
void data_invalidate(struct dfsc *c, struct dnode *n);
/* Make sure n->layout is known (CHUNKS). */
int data_ensure_layout(struct dfsc *c, struct dnode *n);
/* Layout and chunk listing that came with an OPEN/CREATE reply: chunk
 * indices [0, known) are listed in chs (nch of them exist).  Ignored when l
 * is not a valid layout (an older metad). */
void data_seed_chunks(struct dfsc *c, struct dnode *n, const struct dfs_layout *l,
                      const struct dfs_chunk *chs, uint32_t nch, uint32_t known);
/* The same for a CREATE reply: chunks listed with lease_ms were allocated
 * with the file and leased to us (as by GRANT); they are `fresh` (read as
 * holes) until written, and created empty on their chain before a size that
 * covers them is committed. */
void data_seed_created(struct dfsc *c, struct dnode *n, const struct dfs_layout *l,
                       const struct dfs_chunk *chs, uint32_t nch, uint32_t known);
/* Extend the file to at least size (fallocate mode 0). */
int data_extend(struct dfsc *c, struct dnode *n, uint64_t size);

/* Fill the cred of a request from the calling context. */
void data_cred(struct dfs_cred *cr, uint32_t uid, uint32_t gid, uint64_t *groups, uint32_t ngroups);

/* fsync barrier for an inode with nothing to commit (a clean file, a
 * directory): returns once metad's log holding every earlier change is on
 * disk. */
int data_meta_barrier(struct dfsc *c, uint64_t ino);

/* A file opened for reading whose pages the kernel does not keep: start
 * reading its first window (up to 1 MiB) now, so the first READ finds the
 * data on its way (n->mu held). */
void data_open_prefetch(struct dfsc *c, struct dnode *n);

#endif /* DFS_FUSE_DATA_H */
