/* csserv.h - the chunkd data port: WRITE/READ/SYNC/... handlers, chain forwarding. */
#ifndef DFS_CHUNKD_CSSERV_H
#define DFS_CHUNKD_CSSERV_H

#include <stdint.h>
#include <uv.h>

#include "rpc.h"
#include "store.h"

/*
 * One data server per process (module state is static).  Requests are
 * decoded on the loop thread; disk work runs on the libuv thread pool with a
 * per-data-dir limit of in-flight jobs (io_per_dir), so a slow or hung disk
 * can hold at most that many pool threads and the other dirs keep going.
 *
 * WRITE/SYNC/DELETE with a non-empty chain are forwarded to chain[0] (with
 * chain[1..] as its chain) concurrently with the local work, from the same
 * received buffer; the reply waits for both.  failed_server in the reply
 * names the first server of the chain that failed (0: none, or unknown).
 *
 * Pipelined writers of a new chunk must set DFS_WF_CREATE on every write
 * that may reach the server before the first one is done.
 *
 * All functions: loop thread only.
 */

struct csserv_opts {
    uv_loop_t *loop;
    struct store *st;
    const char *host;             /* listen address */
    int port;                     /* 0 = any free port */
    const char *cluster;          /* cluster name for HELLO, may be NULL */
    uint32_t io_per_dir;          /* pool jobs in flight per data dir */
    uint32_t forward_timeout_ms;  /* deadline of a forwarded chain request */
    uint32_t replicate_max;       /* concurrent REPLICATE pulls */
};

/* Listen and serve.  Returns 0, or -1 with a reason in err. */
int csserv_start(const struct csserv_opts *o, char *err, size_t errlen);
/* The bound port (after csserv_start). */
int csserv_port(void);
/* The handler table (indexed by op) to serve on other connections too (the
 * metad link).  Valid after csserv_start. */
const rpc_handler_fn *csserv_handlers(void);
/* Our server id (0 until metad assigned one); used in failed_server and HELLO. */
void csserv_set_server_id(uint32_t id);
uint32_t csserv_server_id(void);
/* Requests in flight (the heartbeat's load figure). */
uint32_t csserv_load(void);
/* Bytes pulled by REPLICATE so far. */
uint64_t csserv_bytes_replicated(void);
/* Stop listening, close peer connections.  Jobs already on the pool finish
 * (their replies are dropped); call, then let the loop drain. */
void csserv_stop(void);
/* Free the rest (replication thread) once the loop has drained. */
void csserv_free(void);

#endif /* DFS_CHUNKD_CSSERV_H */
