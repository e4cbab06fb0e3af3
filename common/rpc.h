/* rpc.h - framed, pipelined request/response connections over libuv TCP. */
#ifndef DFS_RPC_H
#define DFS_RPC_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "codec.h"
#include "proto.h"

/*
 * Model
 * -----
 * A struct rpc_conn is one TCP connection carrying length-prefixed frames
 * (proto.h).  Either side may send requests; many may be in flight, matched
 * to responses by req_id.  Every outgoing request has a deadline: when it
 * passes, the caller's callback runs with DFS_ETIMEDOUT and a late response
 * is dropped.  If a request's bytes are still queued in libuv when its
 * deadline passes, the peer is not draining the socket and the connection is
 * closed (so bulk buffers are never freed while libuv still reads them).
 *
 * The connecting side sends HELLO first; the accepting side answers it (via
 * the on_hello hook) before any other frame is processed.  A version
 * mismatch or a refused role gets an error response with a message and the
 * connection is closed; the connecting side logs the message once.
 *
 * Outgoing connections (rpc_connect) reconnect by themselves with
 * exponential backoff (100 ms doubling up to 5 s) until rpc_conn_close().
 * Requests issued while disconnected wait for the connection until their
 * deadline.  When a connection drops, every request in flight on it fails
 * with DFS_ECONN (the caller decides whether to retry).
 *
 * Incoming frames larger than opts.max_frame_in, malformed frames, or a
 * response to an unknown req_id close the connection with one log line.
 * A well-formed request for an op with no handler is answered DFS_ENOSYS.
 *
 * Threading: every function here except the rpc_mt_* family must be called
 * on the loop thread.  Callbacks run on the loop thread.
 */

struct rpc_conn;
struct rpc_server;

/* An incoming request, handed to a handler.  The handler owns it and must
 * finish it exactly once with rpc_reply()/rpc_reply_status() (requests) or
 * rpc_req_free() (pushes).  It holds a reference on its connection, so it
 * may be answered later, after the connection closed (the reply is then
 * dropped).  `f.body` is the typed request struct. */
struct rpc_req {
    struct rpc_conn *conn;
    struct dfs_frame f;
};

typedef void (*rpc_handler_fn)(struct rpc_req *req);

/* Called with the outcome of rpc_call().  status is DFS_OK when a response
 * arrived (then `reply` is non-NULL and reply->status is the peer's status)
 * or DFS_ETIMEDOUT / DFS_ECONN / DFS_ECANCELED with reply NULL.  The
 * callback owns `reply` and must codec_frame_free() it (and free() the
 * struct: it was malloc'ed) -- use rpc_frame_release(). */
typedef void (*rpc_reply_cb)(void *arg, int status, struct dfs_frame *reply);

/* Called when a reply (or any write with borrowed bulk data) has left
 * libuv's queue (status 0) or was dropped (DFS_ECANCELED). */
typedef void (*rpc_done_cb)(void *arg, int status);

struct rpc_conn_opts {
    uint32_t role;            /* our role, sent in HELLO */
    uint64_t node_id;         /* our node id (client: session id) */
    const char *cluster;      /* cluster name (may be NULL) */
    uint32_t max_frame_in;    /* largest frame body accepted from the peer */
    uint32_t connect_timeout_ms; /* per attempt; 0 = 3000 */
    /* Incoming requests: table indexed by op (NULL entries -> DFS_ENOSYS).
     * May be NULL for pure clients. */
    const rpc_handler_fn *handlers;
    /* Accepting side: validate a HELLO.  Fill resp->status (DFS_OK to accept)
     * and optionally resp->message / resp->leader (strings must stay valid
     * until the call returns... they are encoded immediately).  NULL accepts
     * any HELLO with the right proto_version. */
    void (*on_hello)(struct rpc_conn *c, const struct dfs_msg_hello *hello,
                     struct dfs_msg_hello_resp *resp);
    /* Connecting side: called after each successful handshake (also after a
     * reconnect) with the peer's HELLO answer. */
    void (*on_connected)(struct rpc_conn *c, const struct dfs_msg_hello_resp *resp);
    /* Called when an established connection is lost (before a reconnect
     * attempt) or, on the accepting side, once when it is gone for good.
     * status says why. */
    void (*on_disconnected)(struct rpc_conn *c, int status);
    void *data;               /* user data, see rpc_conn_data() */
    /* Outgoing connections: do not make calls wait for a reconnect.  Once a
     * connect attempt has failed or the connection was lost (and until the
     * next successful HELLO), rpc_call()/rpc_call_encoded() return DFS_ECONN
     * at once (rpc_mt_submit completes the result with DFS_ECONN), and a
     * failed attempt fails every call still queued with DFS_ECONN instead of
     * keeping it until its deadline.  Calls issued before the first attempt
     * has finished wait for that attempt (bounded by its deadline and
     * connect_timeout_ms).  Reconnecting goes on in the background as usual.
     * For links where another replica/server can be tried (chunkd chain
     * forwarding, client data links). */
    bool fail_fast;
};

/* ----- connections ----- */

/* Start an outgoing connection to host:port (numeric address or name,
 * resolved on each attempt).  Returns NULL only on out of memory; failures
 * to connect are retried in the background.  The conn copies opts. */
struct rpc_conn *rpc_connect(uv_loop_t *loop, const char *host, int port,
                             const struct rpc_conn_opts *opts);

/* Stop reconnecting and close.  Requests in flight fail with DFS_ECANCELED;
 * the struct is freed once the last reference is gone. Idempotent. */
void rpc_conn_close(struct rpc_conn *c);

void rpc_conn_ref(struct rpc_conn *c);
void rpc_conn_unref(struct rpc_conn *c);

/* True once the HELLO exchange succeeded and until the socket is lost. */
bool rpc_conn_ready(const struct rpc_conn *c);
void *rpc_conn_data(const struct rpc_conn *c);
void rpc_conn_set_data(struct rpc_conn *c, void *data);
/* The peer's HELLO (accepting side) or HELLO answer (connecting side). */
uint32_t rpc_conn_peer_role(const struct rpc_conn *c);
uint64_t rpc_conn_peer_node(const struct rpc_conn *c);
/* "host:port" of the peer, for logs. */
const char *rpc_conn_peer_name(const struct rpc_conn *c);
/* Bytes received/sent so far on this connection. */
uint64_t rpc_conn_bytes_in(const struct rpc_conn *c);
uint64_t rpc_conn_bytes_out(const struct rpc_conn *c);

/* ----- listening ----- */

/* Listen on host:port; every accepted connection gets a copy of opts.
 * Returns NULL with a reason in err (e.g. "127.0.0.1:9520: address already
 * in use").  port 0 picks a free port (see rpc_server_port). */
struct rpc_server *rpc_listen(uv_loop_t *loop, const char *host, int port,
                              const struct rpc_conn_opts *opts, char *err, size_t errlen);
int rpc_server_port(const struct rpc_server *s);
/* Stop accepting and close every accepted connection. */
void rpc_server_close(struct rpc_server *s);

/* ----- calls ----- */

/* Send a request.  `body` is the typed request struct for op; it is encoded
 * before return except for a BULK field, whose buffer is borrowed and must
 * stay valid until `cb` runs.  `cb` runs exactly once, unless this returns
 * an error (then it never runs).  timeout_ms > 0. */
int rpc_call(struct rpc_conn *c, unsigned op, const void *body, uint32_t timeout_ms,
             rpc_reply_cb cb, void *arg);

/* Same with an already encoded request (wb->data ownership passes to the
 * conn; its req_id is rewritten).  Used by rpc_mt. */
int rpc_call_encoded(struct rpc_conn *c, struct dfs_wbuf *wb, uint32_t timeout_ms,
                     rpc_reply_cb cb, void *arg);

/* One-way message (kind PUSH); no reply. */
int rpc_push(struct rpc_conn *c, unsigned op, const void *body);

/* Answer a request and free it.  `body` is the typed response struct; a
 * BULK field is borrowed until `done` runs (done may be NULL when there is
 * no bulk).  Returns DFS_OK or DFS_ECANCELED if the connection is gone (done
 * still runs, with DFS_ECANCELED). */
int rpc_reply(struct rpc_req *req, const void *body, rpc_done_cb done, void *done_arg);
int rpc_reply_status(struct rpc_req *req, uint32_t status);
/* Free a request without answering (pushes, or a conn being torn down). */
void rpc_req_free(struct rpc_req *req);

/* codec_frame_free(f) + free(f); NULL is fine. */
void rpc_frame_release(struct dfs_frame *f);

/* ----- use from other threads: a loop running in its own thread ----- */

struct rpc_mt;

/* Start a loop thread. Returns NULL on failure. */
struct rpc_mt *rpc_mt_start(const char *name);
/* Stop it: closes every connection made through it and joins the thread. */
void rpc_mt_stop(struct rpc_mt *mt);
uv_loop_t *rpc_mt_loop(struct rpc_mt *mt);
/* Run fn(arg) on the loop thread and wait for it to return. */
void rpc_mt_exec(struct rpc_mt *mt, void (*fn)(void *arg), void *arg);
/* rpc_connect / rpc_conn_close on the loop thread, from any thread. */
struct rpc_conn *rpc_mt_connect(struct rpc_mt *mt, const char *host, int port,
                                const struct rpc_conn_opts *opts);
void rpc_mt_close(struct rpc_mt *mt, struct rpc_conn *c);
bool rpc_mt_ready(struct rpc_mt *mt, struct rpc_conn *c);

/* A set of calls issued together and awaited together. */
struct rpc_batch {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned pending;
};
struct rpc_result {
    int status;               /* DFS_OK when `reply` is set, else why not */
    struct dfs_frame *reply;  /* owned by the caller: rpc_frame_release() */
    struct rpc_batch *batch;
};

void rpc_batch_init(struct rpc_batch *b);
void rpc_batch_destroy(struct rpc_batch *b);
/* Issue a call from any thread; the request is encoded in the calling
 * thread.  BULK data is borrowed until the batch is waited for.  On error
 * (returned), r->status is set and nothing is pending. */
int rpc_mt_submit(struct rpc_mt *mt, struct rpc_conn *c, unsigned op, const void *body,
                  uint32_t timeout_ms, struct rpc_batch *b, struct rpc_result *r);
/* Block until every call submitted on b has completed. */
void rpc_batch_wait(struct rpc_batch *b);

/* Convenience: one synchronous call.  Returns the transport status (DFS_OK
 * means *reply is set; check (*reply)->status for the peer's answer). */
int rpc_mt_call(struct rpc_mt *mt, struct rpc_conn *c, unsigned op, const void *body,
                uint32_t timeout_ms, struct dfs_frame **reply);

#endif /* DFS_RPC_H */
