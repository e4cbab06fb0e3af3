/* mserv.h - metad's RPC side: client op handlers, open files, sessions; shared daemon context. */
#ifndef DFS_METAD_MSERV_H
#define DFS_METAD_MSERV_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "chunks.h"
#include "fs.h"
#include "journal.h"
#include "repair.h"
#include "rpc.h"

struct mserv_opts {
    const char *listen_host;
    int listen_port;
    uint64_t node_id;
    uint32_t session_timeout_ms;   /* idle client session: opens released (120000) */
    uint32_t reply_cache_idle_s;   /* reply cache of an idle session expires (3600) */
    uint32_t rpc_timeout_ms;       /* metad -> chunkd calls (5000) */
};

/* The daemon's state, shared by mserv.c and csconn.c (one per process). */
struct metad {
    uv_loop_t *loop;
    struct fs *fs;
    struct chunks *cm;
    struct journal *j;
    struct rpc_server *srv;
    struct mserv_opts o;
    uv_timer_t tick;
    struct oftab *opens;      /* ino -> number of open handles (all sessions) */
    struct msess *sessions;   /* client sessions with open handles */
    uint64_t leader_since_ms; /* 0 when not the leader */
    struct repair *rp;        /* self-healing (repair.c), driven by rtick */
    struct repair_opts ro;
    uint32_t replicate_timeout_ms; /* deadline of one REPLICATE (600000) */
    uv_timer_t rtick;
    char client_leader[300];  /* scratch for the HELLO leader field */
    const char *client_peers; /* "ID@HOST:PORT,...": client address of each metad */
};

extern struct metad *metad_g;

/* Start listening and serving.  Returns 0 or -1 with a reason in err. */
int mserv_start(struct metad *m, char *err, size_t errlen);
void mserv_stop(struct metad *m);
/* Leadership gained/lost (from journal). */
void mserv_on_leader(void *arg, bool leader);

/* After apply on the leader: chunk work (TRUNCATE/DELETE to replicas) and
 * orphans to purge when nobody has them open. */
void mserv_after_apply(struct metad *m, const struct fs_result *res);

/* ----- csconn.c: chunkd links ----- */
void csconn_register(struct rpc_req *req);
void csconn_report(struct rpc_req *req);
void csconn_heartbeat(struct rpc_req *req);
void csconn_disconnected(struct rpc_conn *c);
/* Ask one replica to do something; cb(arg, status) with the chunkd's status
 * or a transport error.  Returns DFS_OK or an error without calling cb. */
int csconn_setversion(struct metad *m, uint32_t server_id, uint64_t chunk, uint32_t oldv,
                      uint32_t newv, void (*cb)(void *arg, uint32_t server_id, int status),
                      void *arg);
int csconn_truncate(struct metad *m, uint32_t server_id, uint64_t chunk, uint32_t oldv,
                    uint32_t newv, uint64_t length);
int csconn_delete(struct metad *m, uint32_t server_id, uint64_t chunk, uint32_t version);
/* Same with a completion callback (length unused). */
int csconn_delete_cb(struct metad *m, uint32_t server_id, uint64_t chunk, uint32_t version,
                     void (*cb)(void *arg, int status, uint64_t length), void *arg);
/* REPLICATE chunk@version from sources onto target; cb gets the chunkd's
 * status and the copied length. */
int csconn_replicate(struct metad *m, uint32_t target, uint64_t chunk, uint32_t version,
                     const uint32_t *sources, unsigned nsources, uint32_t timeout_ms,
                     void (*cb)(void *arg, int status, uint64_t length), void *arg);

#endif /* DFS_METAD_MSERV_H */
