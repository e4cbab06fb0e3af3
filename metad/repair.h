/* repair.h - self-healing: re-replication, stale/surplus deletion, GC, drain, rebalance. */
#ifndef DFS_METAD_REPAIR_H
#define DFS_METAD_REPAIR_H

#include <stdbool.h>
#include <stdint.h>

#include "chunks.h"

/*
 * The leader runs repair_tick() every tick_ms.  Each tick:
 *  - notices server state changes (down long enough, back, draining) and then
 *    re-examines every chunk; events (reports, corrupt copies, goal changes)
 *    re-examine single chunks (repair_note_chunk) or all (repair_note_all);
 *    a bounded background cursor scan is the safety net;
 *  - chunks needing work sit in buckets by danger: bucket k = k good copies
 *    left on non-draining servers (0 = only draining copies left), served
 *    first to last, then a bucket of pure deletions (stale, corrupt, surplus,
 *    drained copies).  Chunks without any good copy wait (nothing to copy);
 *  - a chunk with a live write lease or a version bump in progress is put
 *    aside and retried retry_ms later;
 *  - replication asks a target (chosen with chunks_place) to REPLICATE
 *    chunk@version from the good copies; while it runs the target is a
 *    PENDING replica; it counts as a copy only if the chunk's version did not
 *    change meanwhile.  Limits: max_per_target / max_per_source replications
 *    per server, max_running in the cluster;
 *  - a copy to delete is first marked STALE (so nobody reads it any more),
 *    then DELETEd; a good copy is deleted only while enough other good copies
 *    on non-draining servers remain (goal), so a drain never drops a chunk
 *    below its goal;
 *  - GC: replicas of deleted chunks (chunks_gc_take) get DELETE, at most
 *    gc_rate per second per server;
 *  - rebalance (when no repair is queued): copy chunks from the server with
 *    the highest share of stored bytes (bytes of its good copies / capacity)
 *    to the lowest, while they differ from the mean by more than
 *    rebalance_pct; the surplus copy is then deleted from the fullest server.
 * All decisions are pure: chunkd calls go through struct repair_io, time
 * through the chunk map's clock, so the unit tests drive it synchronously.
 */

struct repair;

struct repair_opts {
    uint32_t tick_ms;           /* 250 */
    uint32_t max_running;       /* replications in flight, cluster-wide (16) */
    uint32_t max_per_target;    /* per server as target (2) */
    uint32_t max_per_source;    /* per server as first source (4) */
    uint32_t gc_rate;           /* GC DELETEs per second per server (200) */
    uint32_t rebalance_pct;     /* spread tolerated around the mean, % (5; 0 = off) */
    uint32_t rebalance_max;     /* rebalance copies in flight (4) */
    uint64_t rebalance_min_bytes; /* least stored-bytes gap between the fullest and the
                                   * emptiest server worth a move (8 MiB) */
    uint32_t server_timeout_ms; /* a down server's copies are given up after (5000) */
    uint32_t start_delay_ms;    /* no replication this long after becoming leader (10000) */
    uint32_t retry_ms;          /* back-off of a chunk that could not be repaired (2000) */
    uint32_t scan_per_tick;     /* chunks examined per tick by the background scan (20000) */
};

struct repair_io {
    /* Start REPLICATE(chunk, version, sources) on target; when it ends call
     * repair_replicate_done(rp, token, status, length).  Returns DFS_OK or an
     * error (then it never calls back). */
    int (*replicate)(void *arg, uint32_t target, uint64_t chunk, uint32_t version,
                     const uint32_t *sources, unsigned nsources, void *token);
    /* DELETE chunk@version on server.  token NULL: nobody waits for the
     * answer; else call repair_delete_done(rp, token, status). */
    int (*del)(void *arg, uint32_t server, uint64_t chunk, uint32_t version, void *token);
    /* goal of a file (1..DFS_MAX_GOAL) */
    uint32_t (*goal_of)(void *arg, uint64_t ino);
    void *arg;
};

struct repair_stats {
    uint64_t queued;        /* chunks waiting for repair (incl. backed off) */
    uint64_t running;       /* replications in flight */
    uint64_t deleting;      /* deletions (not GC) in flight */
    uint64_t done;          /* replications that produced a counted copy */
    uint64_t failed;        /* replications that failed or did not count */
    uint64_t bytes;         /* bytes copied by counted replications */
    uint64_t deleted;       /* stale/corrupt/surplus/drained copies deleted */
    uint64_t gc_sent;       /* GC DELETEs sent */
    uint64_t gc_queued;     /* GC DELETEs waiting (throttle) */
    uint64_t moves;         /* rebalance copies started */
};

struct repair *repair_new(struct chunks *cm, const struct repair_opts *o,
                          const struct repair_io *io);
void repair_free(struct repair *rp);

/* Leadership changed (the queue is dropped when lost; replication waits
 * start_delay_ms after it is gained). */
void repair_set_leader(struct repair *rp, bool leader);
/* One round of work (call every tick_ms on the leader). */
void repair_tick(struct repair *rp);

/* Events. */
void repair_note_chunk(struct repair *rp, uint64_t chunk_id);
void repair_note_all(struct repair *rp);

/* Completions (see struct repair_io). */
void repair_replicate_done(struct repair *rp, void *token, int status, uint64_t length);
void repair_delete_done(struct repair *rp, void *token, int status);

void repair_stats(struct repair *rp, struct repair_stats *st);

#endif /* DFS_METAD_REPAIR_H */
