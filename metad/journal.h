/* journal.h - raft glue: fs ops as log entries, group commit, snapshots, leadership. */
#ifndef DFS_METAD_JOURNAL_H
#define DFS_METAD_JOURNAL_H

#include <raft.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "fs.h"

/*
 * Every change to struct fs goes through here: journal_submit() queues an op;
 * once per loop iteration (a uv_check handle) all queued ops are encoded into
 * ONE raft entry and proposed with one raft_apply (group commit: the fsync of
 * the log is shared by every request that arrived in that iteration).  When
 * the entry is committed, the FSM apply decodes it and runs fs_apply() on each
 * op in order; on the node that proposed it, each op's callback then gets its
 * result.
 *
 * Entry layout (little-endian, padded with zeros to a multiple of 8 bytes,
 * which libraft 0.15 needs to reload its log):
 *   u64 magic, u64 nonce (random per process), u64 batch id, u32 count, u32 0,
 *   then count x { u32 len, op bytes (fs_op_encode) padded to 4 }.
 * The nonce tells the proposing process its own entries from older ones
 * replayed from disk.
 *
 * Loop thread only.
 */

struct journal;

/* status: DFS_OK and res filled (res->cops owned by the callee only during
 * the call), or DFS_ENOTLEADER / DFS_EIO with res NULL. */
typedef void (*journal_done_fn)(void *arg, int status, struct fs_result *res);

struct journal_opts {
    const char *dir;         /* raft data dir (created if missing) */
    uint64_t node_id;        /* raft id (1..) */
    const char *raft_addr;   /* our raft "host:port" */
    const char *peers;       /* "ID@HOST:PORT,..." (may include us; empty = 1 voter) */
    unsigned snapshot_threshold; /* entries between snapshots (100000) */
    int sync_mode;               /* RLOG_SYNC_ALWAYS or RLOG_SYNC_BATCH (rlog.h) */
    unsigned sync_ms;            /* BATCH: flush at most this long after a write */
    size_t segment_bytes;        /* log segment size (0 = 8 MiB) */
    /* called once leadership is usable (after the barrier) or lost */
    void (*on_leader)(void *arg, bool leader);
    void *arg;
};

/* Open the log and start raft.  Returns NULL with a reason in err (bad dir,
 * port in use, corrupt log). */
struct journal *journal_open(uv_loop_t *loop, struct fs *fs, const struct journal_opts *opts,
                             char *err, size_t errlen);

/* Queue an op (copied, with its strings).  cb runs exactly once, later.
 * Returns DFS_OK, or DFS_ENOTLEADER without running cb. */
int journal_submit(struct journal *j, const struct fs_op *op, journal_done_fn cb, void *arg);

/* cb(arg, 0) once every entry proposed so far is flushed to this node's
 * disk (whatever the sync mode), or cb(arg, RAFT_IOERR).  Returns DFS_OK, or
 * an error without running cb. */
int journal_sync(struct journal *j, void (*cb)(void *arg, int status), void *arg);

/* Leader with the barrier done: may serve reads and writes. */
bool journal_ready(struct journal *j);
/* "host:port" of the raft leader's raft address, or NULL if unknown. */
const char *journal_leader(struct journal *j, uint64_t *id);
uint64_t journal_applied(struct journal *j);
/* Raft log bytes written and flushes done by this process (for /metrics). */
void journal_log_stats(struct journal *j, uint64_t *bytes, uint64_t *flushes);
/* Ops proposed and entries so far (for stats/bench). */
void journal_stats(struct journal *j, uint64_t *ops, uint64_t *entries);

/* Stop: closes raft; `done` runs from raft's close callback (the process
 * should exit there: libraft 0.15 may crash if it keeps running). */
void journal_close(struct journal *j, void (*done)(void *arg), void *arg);

/* ----- pieces shared with tests (raft_fixture) ----- */

/* An FSM over fs: apply decodes entries produced by journal_encode_batch. */
void journal_fsm_init(struct raft_fsm *fsm, struct fs *fs);
void journal_fsm_close(struct raft_fsm *fsm);
/* Encode ops as one entry buffer (raft_malloc'ed, padded to 8). */
int journal_encode_batch(const struct fs_op *ops, unsigned n, uint64_t nonce, uint64_t id,
                         struct raft_buffer *buf);

#endif /* DFS_METAD_JOURNAL_H */
