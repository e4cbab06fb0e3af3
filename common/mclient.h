/* mclient.h - synchronous metadata client: leader following, retries, idempotency. */
#ifndef DFS_MCLIENT_H
#define DFS_MCLIENT_H

#include <stdint.h>

#include "codec.h"
#include "rpc.h"

/*
 * A connection to the metad cluster for dfsmount, dfsctl, tests and
 * benchmarks.  Thread-safe: any thread may call mclient_call() concurrently
 * (the calls are pipelined on one TCP connection).  A call runs on the
 * calling thread: it writes its request itself, and one waiting caller at a
 * time reads the socket and hands each answer to its caller, so a lone call
 * costs no thread hand-over (metadata ops are latency-bound: rm -rf, untar).
 *
 * Every client->metad request struct starts with `struct dfs_cred cred`.
 * mclient_call() fills cred.session with this client's session id and, for
 * ops that change state, a fresh cred.seq.  A retry of the same call (after
 * a timeout, a lost connection, or DFS_ENOTLEADER) reuses that seq, so metad
 * answers it from its reply cache instead of running it twice.  The caller
 * fills cred.uid/gid/groups.
 *
 * Retries go on until total_timeout_ms has passed, then the call fails with
 * DFS_ETIMEDOUT (or the last transport error).  Each attempt has its own
 * deadline of call_timeout_ms.  On DFS_ENOTLEADER or a lost connection the
 * client moves to the leader named in a HELLO answer, else to the next
 * address in the list.
 */

struct mclient;

struct mclient_opts {
    const char *addrs;          /* "host:port[,host:port...]" */
    uint32_t role;              /* DFS_ROLE_CLIENT or DFS_ROLE_ADMIN */
    uint32_t call_timeout_ms;   /* per attempt; 0 = 10000 */
    uint32_t total_timeout_ms;  /* including retries; 0 = 60000 */
};

/* Returns NULL with a reason in err (bad address list, out of memory).
 * Does not wait for the connection; the first call does.  `mt` is not used
 * any more (calls need no loop thread); it may be NULL. */
struct mclient *mclient_new(struct rpc_mt *mt, const struct mclient_opts *opts, char *err,
                            size_t errlen);
void mclient_free(struct mclient *m);

uint64_t mclient_session(const struct mclient *m);

/* True for ops that change state (they get a seq and are deduplicated). */
int mclient_op_mutates(unsigned op);

/*
 * One call.  `body` is the op's request struct (cred first); it is modified
 * (cred.session, cred.seq).  Returns DFS_OK with *reply set (the caller
 * checks (*reply)->status and releases it with rpc_frame_release()), or a
 * transport error (DFS_ETIMEDOUT, DFS_ECONN) with *reply NULL.
 */
int mclient_call(struct mclient *m, unsigned op, void *body, struct dfs_frame **reply);

/* Same, returning the peer's status directly (or the transport error) and
 * releasing the reply unless `reply` is non-NULL. */
int mclient_do(struct mclient *m, unsigned op, void *body, struct dfs_frame **reply);

#endif /* DFS_MCLIENT_H */
