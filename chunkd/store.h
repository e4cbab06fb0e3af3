/* store.h - chunk replica files: headers, per-block checksums, the in-memory index. */
#ifndef DFS_CHUNKD_STORE_H
#define DFS_CHUNKD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"

/*
 * The store owns every chunk file in the configured data dirs and an index
 * chunk id -> (dir, version, length, state).  File layout and crash rules
 * are described at the top of store.c.
 *
 * Threading: every function is thread-safe and blocking (disk I/O), so the
 * data server calls them from worker threads, never on the loop thread --
 * except store_list/store_take_changes/store_dirinfo/store_dir_of, which only
 * touch memory (plus statvfs for store_refresh) and are cheap.
 *
 * Status values are DFS_* codes (proto.h).
 */

/* Largest chunk a replica file can hold (checksum table size). */
#define STORE_MAX_CHUNK (64ull << 20)

struct store;

struct store_opts {
    const char *const *dirs; /* data dirs, at least one */
    size_t ndirs;
    bool lock_dirs;          /* flock <dir>/.lock so two daemons never share a dir */
};

/*
 * Open every data dir (creating chunks/XX subdirs), scan existing chunk files
 * (crash-recovery checks: header, length vs file size, last block's
 * checksum) and build the index.  A dir that cannot be used is marked
 * failed, not fatal.  Returns DFS_OK or an error with a reason in err
 * (no dirs, dir locked by another process, out of memory).
 */
int store_open(struct store **out, const struct store_opts *opts, char *err, size_t errlen);
/* Close every file and free the store.  No call may be in progress. */
void store_close(struct store *st);

/*
 * Write data[0..n) at chunk offset off.  With DFS_WF_CREATE a missing chunk
 * is created at `version`; an existing chunk must have exactly `version`
 * (else DFS_ESTALE).  A write past the end fills the gap with zeros.
 * DFS_WF_SYNC fdatasyncs before returning.  *len_out gets the chunk length
 * after the write.  Errors: DFS_ENOCHUNK, DFS_ESTALE, DFS_ECORRUPT (the
 * chunk is corrupt, or a partially overwritten block failed verification),
 * DFS_EFBIG (beyond STORE_MAX_CHUNK), DFS_ENOSPC, DFS_EDISK, DFS_EIO.
 */
int store_write(struct store *st, uint64_t id, uint32_t version, uint32_t flags, uint64_t off,
                const void *data, uint32_t n, uint64_t *len_out);

/*
 * Read up to len bytes at off (clamped to the chunk length), verifying the
 * checksum of every block touched.  On DFS_OK, *buf is a malloc'ed buffer
 * the caller frees, *data points inside it at the requested bytes, *n is
 * their count (0 at or past the end; then *buf may be NULL) and
 * *chunk_len the chunk length.  Errors: DFS_ENOCHUNK, DFS_ESTALE,
 * DFS_ECORRUPT (the replica is then marked corrupt), DFS_EDISK, DFS_EIO.
 * version 0 matches any version.
 */
int store_read(struct store *st, uint64_t id, uint32_t version, uint64_t off, uint32_t len,
               void **buf, const void **data, uint32_t *n, uint64_t *chunk_len);

/* fdatasync the chunk (and its dir entry if new).  version 0 = any. */
int store_sync(struct store *st, uint64_t id, uint32_t version, uint64_t *len_out);
/* Remove the chunk file.  version 0 = any. */
int store_delete(struct store *st, uint64_t id, uint32_t version);
/* Change the version: old_version must match (already at version -> OK). Durable. */
int store_setversion(struct store *st, uint64_t id, uint32_t old_version, uint32_t version);
/* Set length (shrink or zero-extend) and version; old_version must match. Durable. */
int store_truncate(struct store *st, uint64_t id, uint32_t old_version, uint32_t version,
                   uint64_t length);
/* Current state of one chunk; DFS_ENOCHUNK if absent. */
int store_stat(struct store *st, uint64_t id, struct dfs_chunkrep *out);

/* Every chunk, malloc'ed array (caller frees); returns the count. */
size_t store_list(struct store *st, struct dfs_chunkrep **out);
/* Chunks created, grown, corrupted or lost since the last call (each once,
 * current state); malloc'ed array, returns the count. */
size_t store_take_changes(struct store *st, struct dfs_chunkrep **out);
/* Put changes back (a heartbeat that could not be sent). */
void store_requeue_changes(struct store *st, const struct dfs_chunkrep *chg, size_t n);

/* Refresh capacity figures (statvfs) and apply pending dir failures. */
void store_refresh(struct store *st);
size_t store_ndirs(const struct store *st);
/* Fill d (path points into the store) for dir i. */
void store_dirinfo(struct store *st, size_t i, struct dfs_dirinfo *d);
/* Dir index holding the chunk, or -1 (new chunks go to store_pick_dir()). */
int store_dir_of(struct store *st, uint64_t id);
int store_pick_dir(struct store *st);
const char *store_dir_path(const struct store *st, size_t i);

/* Close files of chunks idle for more than idle_ms (called periodically). */
void store_trim(struct store *st, uint64_t idle_ms);

/* Counters since start. */
uint64_t store_bytes_read(const struct store *st);
uint64_t store_bytes_written(const struct store *st);

/*
 * Scrubbing: verify block `block` of chunk id against its stored checksum,
 * reading through a separate descriptor (the hot file cache is untouched).
 * *nblocks gets the chunk's block count.  A mismatch marks the replica
 * corrupt and returns DFS_ECORRUPT.  *bytes gets the bytes read.
 */
int store_scrub_block(struct store *st, uint64_t id, uint32_t block, uint32_t *nblocks,
                      uint32_t *bytes);

/*
 * Replication target: a temp file in the chunk's destination dir, filled
 * sequentially and installed atomically (fsync, rename over any old copy).
 */
struct store_tmp;
int store_tmp_begin(struct store *st, uint64_t id, uint32_t version, struct store_tmp **out);
/* Append n bytes (sequential, starting at 0). */
int store_tmp_append(struct store_tmp *t, const void *data, uint32_t n);
/* fsync + rename + index update; frees t. */
int store_tmp_commit(struct store_tmp *t);
/* Remove the temp file; frees t. NULL is fine. */
void store_tmp_abort(struct store_tmp *t);

/* Test hooks: path of a chunk's file (malloc'ed) or NULL; data offset in it. */
char *store_chunk_path(struct store *st, uint64_t id);
#define STORE_DATA_OFF (16u << 10)

#endif /* DFS_CHUNKD_STORE_H */
