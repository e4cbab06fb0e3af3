/* masterconn.h - chunkd's link to metad: REGISTER, REPORT pages, HEARTBEAT. */
#ifndef DFS_CHUNKD_MASTERCONN_H
#define DFS_CHUNKD_MASTERCONN_H

#include <stdint.h>
#include <uv.h>

#include "rpc.h"
#include "store.h"

/*
 * On every (re)connect: REGISTER (server id 0 the first time; metad's answer
 * is persisted in <first data dir>/server_id), then the full chunk list in
 * REPORT pages of DFS_REPORT_PAGE entries, then a HEARTBEAT every
 * heartbeat_ms with capacity per data dir, load and changes.  metad may send
 * requests on the same connection; they go to `handlers` (csserv's table).
 * With several metad addresses the link moves to the leader named in a
 * HELLO answer or on DFS_ENOTLEADER, else to the next address after a
 * failure.  Loop thread only.
 */
struct masterconn_opts {
    uv_loop_t *loop;
    struct store *st;
    const char *metad;        /* "host:port[,host:port...]"; empty = no metad */
    const char *host;         /* our advertised address */
    int port;
    const char *label;
    const char *cluster;
    uint32_t heartbeat_ms;
    const rpc_handler_fn *handlers;
};

/* Read the persisted server id (0 if none).  Returns 0, or -1 with err set
 * when the file exists but is unreadable/malformed. */
int masterconn_load_server_id(const char *dir, uint32_t *id, char *err, size_t errlen);
/* Start (no-op when metad is empty).  Returns 0 or -1 with err set. */
int masterconn_start(const struct masterconn_opts *o, char *err, size_t errlen);
void masterconn_set_heartbeat_ms(uint32_t ms);
/* True when registered with a metad now. */
int masterconn_registered(void);
/* Send a heartbeat now (capacity changed: a data dir ran out of space), unless
 * one is in flight or metad is not connected.  Loop thread. */
void masterconn_kick(void);
void masterconn_stop(void);

#endif /* DFS_CHUNKD_MASTERCONN_H */
