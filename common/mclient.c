/* mclient.c - synchronous metadata client: leader following, retries, idempotency. */
#include "mclient.h"

#include "log.h"
#include "util.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MCLIENT_MAX_ADDRS 16
#define MCLIENT_HOSTLEN   256

struct maddr {
    char host[MCLIENT_HOSTLEN];
    int port;
};

struct mclient {
    struct rpc_mt *mt;
    struct mclient_opts opts;
    uint64_t session;
    _Atomic uint64_t seq;

    struct maddr addrs[MCLIENT_MAX_ADDRS];
    unsigned naddrs;

    /* mu protects the fields below.  It is held while posting to the loop
     * thread (rpc_mt_submit, rpc_mt_close), which keeps the FIFO order
     * "call, then close" so a conn is never used after it was closed, but
     * never while waiting for the loop thread (rpc_mt_connect waits; the
     * loop thread does not take mu). */
    pthread_mutex_t mu;
    struct rpc_conn *conn;
    uint64_t conn_gen;   /* bumps whenever conn is replaced */
    struct maddr target; /* where conn goes */
    unsigned next_addr;  /* next index to try in addrs */

    /* Leader named by the last HELLO answer; written on the loop thread. */
    pthread_mutex_t leader_mu;
    char leader[MCLIENT_HOSTLEN + 8];
};

static void on_connected(struct rpc_conn *c, const struct dfs_msg_hello_resp *resp)
{
    struct mclient *m = rpc_conn_data(c);
    pthread_mutex_lock(&m->leader_mu);
    if (resp->leader.len > 0 && resp->leader.len < sizeof(m->leader)) {
        memcpy(m->leader, resp->leader.ptr, resp->leader.len);
        m->leader[resp->leader.len] = '\0';
    } else {
        m->leader[0] = '\0';
    }
    pthread_mutex_unlock(&m->leader_mu);
}

static int parse_addrs(struct mclient *m, const char *list, char *err, size_t errlen)
{
    const char *p = list;
    if (list == NULL || *list == '\0') {
        snprintf(err, errlen, "empty metad address list");
        return -1;
    }
    while (*p != '\0') {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char one[MCLIENT_HOSTLEN + 16];
        if (n == 0 || n >= sizeof(one)) {
            snprintf(err, errlen, "bad metad address list \"%s\"", list);
            return -1;
        }
        if (m->naddrs == MCLIENT_MAX_ADDRS) {
            snprintf(err, errlen, "more than %d metad addresses", MCLIENT_MAX_ADDRS);
            return -1;
        }
        memcpy(one, p, n);
        one[n] = '\0';
        struct maddr *a = &m->addrs[m->naddrs];
        if (dfs_parse_hostport(one, DFS_PORT_METAD, a->host, sizeof(a->host), &a->port, err,
                               errlen) != 0)
            return -1;
        m->naddrs++;
        p += n;
        if (*p == ',')
            p++;
    }
    return 0;
}

struct mclient *mclient_new(struct rpc_mt *mt, const struct mclient_opts *opts, char *err,
                            size_t errlen)
{
    struct mclient *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    m->mt = mt;
    m->opts = *opts;
    m->opts.addrs = NULL;
    if (m->opts.call_timeout_ms == 0)
        m->opts.call_timeout_ms = 10000;
    if (m->opts.total_timeout_ms == 0)
        m->opts.total_timeout_ms = 60000;
    if (m->opts.role == 0)
        m->opts.role = DFS_ROLE_CLIENT;
    if (parse_addrs(m, opts->addrs, err, errlen) != 0) {
        free(m);
        return NULL;
    }
    m->session = dfs_random_u64();
    atomic_init(&m->seq, 0);
    pthread_mutex_init(&m->mu, NULL);
    pthread_mutex_init(&m->leader_mu, NULL);
    m->target = m->addrs[0];
    m->next_addr = 1 % m->naddrs;
    return m;
}

static void noop(void *arg)
{
}

void mclient_free(struct mclient *m)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->mu);
    if (m->conn != NULL)
        rpc_mt_close(m->mt, m->conn);
    m->conn = NULL;
    pthread_mutex_unlock(&m->mu);
    /* Wait for the close to run: on_connected may not touch m after this. */
    rpc_mt_exec(m->mt, noop, NULL);
    pthread_mutex_destroy(&m->leader_mu);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

uint64_t mclient_session(const struct mclient *m)
{
    return m->session;
}

int mclient_op_mutates(unsigned op)
{
    switch (op) {
    case DFS_OP_SETATTR:
    case DFS_OP_MKNOD:
    case DFS_OP_MKDIR:
    case DFS_OP_CREATE:
    case DFS_OP_UNLINK:
    case DFS_OP_RMDIR:
    case DFS_OP_SYMLINK:
    case DFS_OP_RENAME:
    case DFS_OP_LINK:
    case DFS_OP_OPEN:    /* counts an open file handle */
    case DFS_OP_RELEASE: /* and releases it */
    case DFS_OP_SETXATTR:
    case DFS_OP_REMOVEXATTR:
    case DFS_OP_GRANT: /* bumps the chunk version */
    case DFS_OP_COMMIT:
    case DFS_OP_BADREPLICA:
    case DFS_OP_SETGOAL:
    case DFS_OP_DRAIN:
        return 1;
    default:
        return 0;
    }
}

/* Ops whose request starts with struct dfs_cred (client -> metad). */
static int op_has_cred(unsigned op)
{
    return (op >= DFS_OP_LOOKUP && op <= DFS_OP_REMOVEXATTR) ||
           (op >= DFS_OP_CHUNKS && op <= DFS_OP_BADREPLICA) ||
           (op >= DFS_OP_SETGOAL && op <= DFS_OP_DRAIN);
}

/* The conn to use now (connecting if there is none); *gen identifies it.
 * Called with m->mu held. */
static struct rpc_conn *get_conn(struct mclient *m, uint64_t *gen)
{
    if (m->conn == NULL) {
        struct rpc_conn_opts o;
        memset(&o, 0, sizeof(o));
        o.role = m->opts.role;
        o.node_id = m->session;
        o.max_frame_in = DFS_MAX_FRAME_FROM_METAD;
        o.on_connected = on_connected;
        o.data = m;
        m->conn = rpc_mt_connect(m->mt, m->target.host, m->target.port, &o);
        m->conn_gen++;
    }
    *gen = m->conn_gen;
    return m->conn;
}

/* The attempt on conn `gen` failed with `why`: move to the leader named in
 * a HELLO answer, else to the next address.  Another thread may have moved
 * already (then gen is old and nothing happens). */
static void switch_conn(struct mclient *m, uint64_t gen, int why)
{
    char leader[sizeof(m->leader)];

    pthread_mutex_lock(&m->leader_mu);
    memcpy(leader, m->leader, sizeof(leader));
    pthread_mutex_unlock(&m->leader_mu);

    pthread_mutex_lock(&m->mu);
    if (gen != m->conn_gen || m->conn == NULL) {
        pthread_mutex_unlock(&m->mu);
        return;
    }
    struct maddr next = m->target;
    char lhost[MCLIENT_HOSTLEN];
    int lport = 0;
    char err[128];
    bool moved = false;
    if (leader[0] != '\0' &&
        dfs_parse_hostport(leader, DFS_PORT_METAD, lhost, sizeof(lhost), &lport, err,
                           sizeof(err)) == 0 &&
        (strcmp(lhost, m->target.host) != 0 || lport != m->target.port)) {
        snprintf(next.host, sizeof(next.host), "%s", lhost);
        next.port = lport;
        moved = true;
    } else if (m->naddrs > 1) {
        next = m->addrs[m->next_addr];
        m->next_addr = (m->next_addr + 1) % m->naddrs;
        moved = true;
    }
    if (moved || why == DFS_ENOTLEADER) {
        log_debug("mclient: %s, moving from %s:%d to %s:%d", dfs_strerror(why), m->target.host,
                  m->target.port, next.host, next.port);
        rpc_mt_close(m->mt, m->conn);
        m->conn = NULL;
        m->target = next;
        pthread_mutex_lock(&m->leader_mu);
        m->leader[0] = '\0';
        pthread_mutex_unlock(&m->leader_mu);
    }
    /* One address and a lost connection: the conn reconnects by itself. */
    pthread_mutex_unlock(&m->mu);
}

static void sleep_ms(uint32_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int mclient_call(struct mclient *m, unsigned op, void *body, struct dfs_frame **reply)
{
    *reply = NULL;
    if (op_has_cred(op)) {
        struct dfs_cred *cred = body;
        cred->session = m->session;
        cred->seq = mclient_op_mutates(op) ? atomic_fetch_add(&m->seq, 1) + 1 : 0;
    }
    uint64_t start = dfs_mono_ms();
    uint64_t end = start + m->opts.total_timeout_ms;
    int last = DFS_ETIMEDOUT;
    uint32_t pause = 50;

    for (;;) {
        uint64_t now = dfs_mono_ms();
        if (now >= end)
            return last;
        uint64_t left = end - now;
        uint32_t t = left < m->opts.call_timeout_ms ? (uint32_t)left : m->opts.call_timeout_ms;

        struct rpc_batch b;
        struct rpc_result r;
        uint64_t gen;
        rpc_batch_init(&b);
        pthread_mutex_lock(&m->mu);
        struct rpc_conn *c = get_conn(m, &gen);
        int rc = c ? rpc_mt_submit(m->mt, c, op, body, t, &b, &r) : DFS_ENOMEM;
        pthread_mutex_unlock(&m->mu);
        if (rc == DFS_OK) {
            rpc_batch_wait(&b);
            rc = r.status;
        }
        rpc_batch_destroy(&b);
        if (rc != DFS_OK && rc != DFS_ETIMEDOUT && rc != DFS_ECONN && rc != DFS_ECANCELED)
            return rc; /* encoding error or out of memory: retrying will not help */
        if (rc == DFS_OK) {
            if (r.reply->status != DFS_ENOTLEADER) {
                *reply = r.reply;
                return DFS_OK;
            }
            rpc_frame_release(r.reply);
            last = DFS_ETIMEDOUT; /* no leader found in time */
            switch_conn(m, gen, DFS_ENOTLEADER);
        } else {
            last = rc == DFS_ECANCELED ? DFS_ECONN : rc;
            switch_conn(m, gen, rc);
        }
        /* Do not spin against a cluster that is electing a leader. */
        now = dfs_mono_ms();
        if (now >= end)
            return last;
        sleep_ms((uint32_t)DFS_MIN((uint64_t)pause, end - now));
        pause = pause * 2 > 1000 ? 1000 : pause * 2;
    }
}

int mclient_do(struct mclient *m, unsigned op, void *body, struct dfs_frame **reply)
{
    struct dfs_frame *f = NULL;
    int rc = mclient_call(m, op, body, &f);
    if (rc != DFS_OK)
        return rc;
    int st = (int)f->status;
    if (reply != NULL)
        *reply = f;
    else
        rpc_frame_release(f);
    return st;
}
