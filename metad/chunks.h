/* chunks.h - chunk map, chunk server registry, placement and write leases. */
#ifndef DFS_METAD_CHUNKS_H
#define DFS_METAD_CHUNKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"

/*
 * The chunk map has two halves:
 *  - replicated: which chunk ids exist, their version and owner (ino, index).
 *    Only fs_apply() changes these (chunks_chunk_add/del/set_version).
 *  - soft: replicas (which server holds which version, DFS_RS_* state),
 *    servers (capacity, label, DFS_SS_* state, last heartbeat), leases.
 *    Rebuilt after a restart from chunkd REGISTER/REPORT.
 * Time comes from an injected clock and randomness from an injected source,
 * so placement and lease expiry run in unit tests without sockets or sleeps.
 * Not thread-safe: owned by the metad loop thread.
 */

struct chunks;

struct chunks_clock {
    uint64_t (*now_ms)(void *arg); /* monotonic milliseconds */
    uint64_t (*random)(void *arg); /* uniformly random 64 bits */
    void *arg;
};

struct cm_replica {
    uint32_t server_id;
    uint32_t version; /* version the server last reported (or was set to) */
    uint8_t state;    /* DFS_RS_* (DOWN is derived from the server state) */
};

struct cm_chunk {
    uint64_t id;
    uint64_t ino, index; /* owner */
    uint64_t length;     /* largest length a replica reported */
    uint32_t version;    /* replicated */
    uint8_t nrep, caprep;
    uint8_t busy;        /* a version bump is in progress */
    uint32_t adopting;   /* soft: version being committed by adoption (0 = none) */
    struct cm_replica *reps;
    uint64_t lease_session;
    uint64_t lease_expire_ms;
    /* repair bookkeeping (repair.c; soft) */
    uint8_t rq;              /* queued in the repair queue */
    uint8_t rops;            /* repair operations in flight */
    uint64_t retry_after_ms; /* repair backs off until then */
};

struct cm_server {
    uint32_t id;
    uint32_t state; /* DFS_SS_UP / DOWN / DRAINING */
    bool draining;  /* replicated admin flag (DRAIN op) */
    bool registered; /* registered since this metad started */
    char host[64];
    int port;
    char label[64];
    uint64_t total, used, avail, nchunks;
    uint64_t dir_avail_max; /* free space of its emptiest usable (ok, not full) dir */
    uint32_t load;
    uint64_t last_seen_ms;
    int64_t last_seen_ns;
    uint64_t bytes_read, bytes_written, bytes_replicated;
    struct dfs_dirinfo *dirs; /* copied, strings malloc'ed */
    uint32_t ndirs;
    void *conn; /* csconn's link (struct rpc_conn *) while connected */
};

struct chunks_opts {
    uint32_t server_timeout_ms; /* no heartbeat for this long -> down (5000) */
    uint32_t lease_ms;          /* write lease (30000) */
    uint64_t min_free;          /* a server with less free space is full (1 GiB) */
};

struct chunks *chunks_new(const struct chunks_opts *opts, const struct chunks_clock *clk);
void chunks_free(struct chunks *cm);

/* ----- replicated half (called from fs_apply only) ----- */
void chunks_chunk_add(struct chunks *cm, uint64_t id, uint32_t version, uint64_t ino,
                      uint64_t index);
void chunks_chunk_del(struct chunks *cm, uint64_t id);
void chunks_chunk_set_version(struct chunks *cm, uint64_t id, uint32_t version);
/* A server id became known (SERVER_NEW) or its drain flag changed. */
void chunks_server_known(struct chunks *cm, uint32_t id);
void chunks_server_set_draining(struct chunks *cm, uint32_t id, bool on);
/* Drop all replicated knowledge (before a snapshot restore). */
void chunks_reset_replicated(struct chunks *cm);

/* Replicas of deleted chunks wait here until the leader sends DELETE (or a
 * repair/GC pass takes them).  Bounded; overflow is caught later by REPORT,
 * which flags unknown chunks.  Returns how many were moved into out. */
struct cm_gc {
    uint64_t chunk_id;
    uint32_t server_id, version;
};
unsigned chunks_gc_take(struct chunks *cm, struct cm_gc *out, unsigned max);
uint64_t chunks_gc_pending(struct chunks *cm);

/* ----- lookups ----- */
struct cm_chunk *chunks_get(struct chunks *cm, uint64_t id);
struct cm_server *chunks_server(struct chunks *cm, uint32_t id);
/* Iterate servers: index 0..n-1 (NULL past the end). */
struct cm_server *chunks_server_at(struct chunks *cm, uint32_t i);
uint64_t chunks_count(struct chunks *cm);
/* Iterate the chunk table: *pos starts at 0; returns the next chunk at or
 * after *pos and advances *pos past it, or NULL (and *pos = 0) at the end.
 * Positions stay meaningful across inserts/deletes (entries may be seen twice
 * or missed after a resize: fine for background scans). */
struct cm_chunk *chunks_iter(struct chunks *cm, uint64_t *pos);
/* Replica usable for reads/writes: state OK, server up. */
bool chunks_replica_live(struct chunks *cm, const struct cm_replica *r);
/* Effective state of a replica for listings (DOWN if its server is down). */
uint32_t chunks_replica_state(struct chunks *cm, const struct cm_replica *r);
/* Fill a dfs_replica for a server (host points into the server struct). */
void chunks_fill_replica(struct chunks *cm, uint32_t server_id, uint32_t state,
                         struct dfs_replica *out);
/* Every known server has registered with this metad and is up (so every
 * existing copy of a chunk has been reported). */
bool chunks_all_servers_up(struct chunks *cm);
/* Total and free space over up servers. */
void chunks_capacity(struct chunks *cm, uint64_t *total, uint64_t *avail);
struct chunks_health {
    uint64_t chunks, healthy, under_goal, over_goal, missing;
};
/* goal_of(ino) gives the goal of a chunk's file. */
void chunks_health(struct chunks *cm, uint32_t (*goal_of)(void *arg, uint64_t ino), void *arg,
                   struct chunks_health *h);

/* ----- servers (soft) ----- */
/* REGISTER of an already allocated id: records address/label/dirs, state UP.
 * Returns the server. */
struct cm_server *chunks_server_register(struct chunks *cm, uint32_t id, const char *host,
                                         int port, const char *label,
                                         const struct dfs_dirinfo *dirs, uint32_t ndirs);
/* HEARTBEAT: capacity, load, counters; marks the server seen now. */
int chunks_server_heartbeat(struct chunks *cm, const struct dfs_msg_heartbeat *hb, int64_t now_ns);
/* The connection went away: the server is down now. */
void chunks_server_lost(struct chunks *cm, uint32_t id);
/* Mark servers without a heartbeat for server_timeout_ms down; returns how many changed. */
unsigned chunks_tick(struct chunks *cm);

/* A reported replica (REPORT page entry or HEARTBEAT change).  Returns 1 if
 * the chunk is unknown or the copy is stale (the caller may delete it), else 0. */
int chunks_report(struct chunks *cm, uint32_t server_id, const struct dfs_chunkrep *rep);
/* Set a replica explicitly (e.g. a new chunk's chosen chain). */
void chunks_replica_set(struct chunks *cm, struct cm_chunk *c, uint32_t server_id,
                        uint32_t version, uint32_t state);
void chunks_replica_drop(struct chunks *cm, struct cm_chunk *c, uint32_t server_id);

/* ----- placement ----- */
/* Choose up to `want` distinct servers for a new copy: up, not draining, not
 * full, not in exclude[]; weighted random by free space; distinct labels
 * first (also distinct from the labels of exclude[]).  Returns how many were
 * chosen (ids in out[]). */
unsigned chunks_place(struct chunks *cm, unsigned want, const uint32_t *exclude,
                      unsigned nexclude, uint32_t *out);

/* Room a new copy of a chunk needs on a server beyond min_free: one maximal
 * write plus the replica file's header page and checksum table. */
#define CHUNKS_WRITE_NEED ((uint64_t)DFS_MAX_IO + (16u << 10))
/* A server is full when its reported free space is at most min_free +
 * CHUNKS_WRITE_NEED, or no data dir of it can take CHUNKS_WRITE_NEED (a dir
 * that returned ENOSPC is reported DFS_DS_FULL and counts as empty space 0). */
bool chunks_server_full(struct chunks *cm, uint32_t id);
/* Status for a GRANT that could not place a chain: DFS_ENOSPC when up,
 * non-draining servers exist but all are full, else DFS_ENOSERVERS. */
int chunks_place_fail_status(struct chunks *cm);
/* GRANT with bad_server: the writer saw `bad` fail in c's chain.  If another
 * live copy at c's version remains, bad's copy is marked stale (it missed the
 * write; the chain continues without it) and DFS_OK is returned.  If bad
 * holds the last live copy, it is kept (it has every acknowledged byte) and
 * the GRANT must fail: DFS_ENOSPC when bad is full, else DFS_EIO (the writer
 * may retry: a restarted server comes back with its copy).  A bad server
 * that is not in the chain: DFS_OK. */
int chunks_chain_fail(struct chunks *cm, struct cm_chunk *c, uint32_t bad);

/* ----- version adoption ----- */
/* The newest version reported by an OK copy on an up server, if it is newer
 * than c->version (a SETVERSION that reached the chunkd whose commit was
 * lost with the old leader) and no bump or adoption runs; else 0.  The
 * caller commits it (FS_OP_CHUNK_VERSION) and calls chunks_adopt_done. */
uint32_t chunks_adopt_version(struct chunks *cm, struct cm_chunk *c);
/* Mark/unmark an adoption commit in flight (soft). */
void chunks_adopt_start(struct chunks *cm, struct cm_chunk *c, uint32_t version);
void chunks_adopt_done(struct chunks *cm, struct cm_chunk *c);

/* ----- leases ----- */
/* Try to take or renew the write lease of chunk c for session.  Returns
 * DFS_OK (*renewed = 1 if this session already held a live lease) or
 * DFS_EBUSY if another session holds an unexpired lease or a bump runs. */
int chunks_lease(struct chunks *cm, struct cm_chunk *c, uint64_t session, int *renewed);
/* Milliseconds left on c's lease (0 if none). */
uint32_t chunks_lease_left(struct chunks *cm, const struct cm_chunk *c);
void chunks_lease_release(struct chunks *cm, struct cm_chunk *c, uint64_t session);
uint64_t chunks_now_ms(struct chunks *cm);

#endif /* DFS_METAD_CHUNKS_H */
