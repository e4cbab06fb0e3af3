/* rlog.h - metad's raft log storage: a raft_io whose disk side is ours. */
#ifndef DFS_METAD_RLOG_H
#define DFS_METAD_RLOG_H

#include <raft.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

/*
 * libraft's uv backend writes every log append with O_DSYNC and only then
 * lets raft count the entry as stored, so each metadata op costs a disk
 * flush.  rlog is a raft_io that keeps libraft's network side (the inner
 * raft_uv io: transport, ticks, message encoding) and replaces the storage:
 *
 *   append    the entries are written (write(2), page cache) before append()
 *             returns, so a crash of the process loses nothing that raft has
 *             been told is stored.  When raft hears about it depends on the
 *             sync mode:
 *               RLOG_SYNC_ALWAYS  after fdatasync (one flush shared by every
 *                                 append written while the previous flush ran)
 *               RLOG_SYNC_BATCH   at once (next loop iteration); a flush
 *                                 follows within sync_ms, or sooner when
 *                                 someone waits in rlog_sync().  A power
 *                                 loss of the machine may lose the last
 *                                 sync_ms of acknowledged changes unless a
 *                                 majority of voters kept them.
 *   term/vote fdatasync'ed, renamed into place, before the call returns
 *             (elections stay safe in both modes).
 *   snapshots written by a worker thread: temp file, fsync, rename, fsync
 *             of the directory; then whole log segments that only hold
 *             entries older than the snapshot's trailing window are removed.
 *
 * Files in dir:
 *   meta                term and vote (magic, term, vote, checksum)
 *   log-FIRSTINDEX      segments of up to 8 MiB: a 16-byte header (magic,
 *                       first index) then records: u32 magic, u32 length,
 *                       u64 term, u64 index, u16 type, u16 0, u32 checksum
 *                       (xxh3 of header and data), data padded to 8 bytes.
 *                       A segment is flushed before the next one is started,
 *                       so only the last can end torn (crash or power loss
 *                       mid-write): its first bad record and everything
 *                       after it are cut at load.  A bad record in any other
 *                       segment refuses the load.  A log that disagrees with
 *                       the snapshot at the snapshot's index (crash between
 *                       installing a leader's snapshot and removing the log)
 *                       is dropped.
 *   snap-INDEX          snapshot: header (magic, index, term, conf index,
 *                       conf length, data length, checksum), conf, data.
 *   LOCK                flock'ed while a process uses the directory.
 */

enum { RLOG_SYNC_ALWAYS = 0, RLOG_SYNC_BATCH = 1 };

struct rlog_opts {
    const char *dir;
    int sync_mode;        /* RLOG_SYNC_* */
    unsigned sync_ms;     /* BATCH: longest time between a write and its flush */
    size_t segment_bytes; /* 0 = 8 MiB */
};

/* Set up `io` over the storage in o->dir and the network side `net` (an
 * initialised raft_uv io, whose own data dir only holds its probe files).
 * Both must stay alive until the close callback.  Returns 0 or a RAFT_*
 * code with a reason in io->errmsg. */
int rlog_init(struct raft_io *io, struct raft_io *net, uv_loop_t *loop,
              const struct rlog_opts *o);
/* Free what rlog_init allocated (after raft's close callback). */
void rlog_free(struct raft_io *io);

/* Run cb(arg, status) once every entry appended so far is on disk (status 0)
 * or the flush failed (RAFT_IOERR).  Always asynchronous. */
int rlog_sync(struct raft_io *io, void (*cb)(void *arg, int status), void *arg);

/* Figures for STATUS/metrics: bytes appended, flushes done, last index. */
void rlog_stats(struct raft_io *io, uint64_t *bytes, uint64_t *syncs, uint64_t *last_index);

#endif /* DFS_METAD_RLOG_H */
