/* mclient.c - synchronous metadata client: leader following, retries, idempotency. */
#include "mclient.h"

#include "frame.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MCLIENT_MAX_ADDRS 16
#define MCLIENT_HOSTLEN   256
#define MCLIENT_CONNECT_MS 3000
#define MCLIENT_RBUF      (64u << 10)
#define MCLIENT_SOCKBUF   (1 << 20)
/* The HELLO exchange uses this req_id; calls start at 1 (as in rpc.c). */
#define MCLIENT_HELLO_ID 0

struct maddr {
    char host[MCLIENT_HOSTLEN];
    int port;
};

/*
 * Calls run on the calling thread, with no hand-over to a loop thread: the
 * caller writes its request to the socket itself, and one of the callers
 * waiting for an answer reads the socket for everybody ("reader"), handing
 * each answer to its caller.  A lone caller (the common case: one FUSE op at
 * a time) so sends and receives its own frames, and an op costs no thread
 * wake-ups besides the peer's.  When the reader's own answer has arrived it
 * passes the reader role to another waiting caller.
 */

/* One connection.  Freed when it is dead and nobody uses it any more. */
struct msock {
    int fd;
    int refs;      /* mclient's current-socket reference + calls using it */
    bool dead;     /* failed or replaced: shut down, no new calls */
    bool reading;  /* a caller is the reader */
    struct frame_rd rd; /* the reader's */
    char *rbuf;
};

/* A call waiting for its answer. */
struct waiter {
    uint64_t id;
    struct msock *sk;
    pthread_cond_t cv;
    int status; /* DFS_EAGAIN until done */
    struct dfs_frame *reply;
    struct waiter *next;
};

struct mclient {
    struct mclient_opts opts;
    uint64_t session;
    _Atomic uint64_t seq;

    struct maddr addrs[MCLIENT_MAX_ADDRS];
    unsigned naddrs;

    /* cmu: one connect at a time (taken before mu, never while holding it). */
    pthread_mutex_t cmu;
    /* mu protects everything below and the msock fields but fd/rd/rbuf,
     * which belong to the reader (rd, rbuf) or are constant (fd). */
    pthread_mutex_t mu;
    struct msock *sk;    /* current connection or NULL */
    uint64_t conn_gen;   /* bumps whenever sk is replaced */
    struct maddr target; /* where sk goes */
    unsigned next_addr;  /* next index to try in addrs */
    uint64_t next_id;
    struct waiter *waiters;
    /* Leader named by the last HELLO answer. */
    char leader[MCLIENT_HOSTLEN + 8];
    /* wmu: one writer at a time on the socket (taken without mu). */
    pthread_mutex_t wmu;
};

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
    (void)mt; /* calls run on the caller's thread (see above) */
    struct mclient *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
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
    pthread_mutex_init(&m->cmu, NULL);
    pthread_mutex_init(&m->mu, NULL);
    pthread_mutex_init(&m->wmu, NULL);
    m->target = m->addrs[0];
    m->next_addr = 1 % m->naddrs;
    m->next_id = 1;
    return m;
}

/* ----- sockets ----- */

/* Drop a reference (mu held); the last one closes the socket. */
static void sock_unref(struct msock *s)
{
    if (--s->refs > 0)
        return;
    close(s->fd);
    frame_rd_reset(&s->rd);
    free(s->rbuf);
    free(s);
}

/* The socket failed (or is replaced): fail the calls waiting on it and wake
 * a caller blocked in it.  mu held. */
static void sock_kill(struct mclient *m, struct msock *s, int why)
{
    if (s->dead)
        return;
    s->dead = true;
    shutdown(s->fd, SHUT_RDWR);
    for (struct waiter *w = m->waiters; w; w = w->next)
        if (w->sk == s && w->status == DFS_EAGAIN) {
            w->status = why;
            pthread_cond_signal(&w->cv);
        }
    if (m->sk == s) {
        /* conn_gen stays: switch_conn still knows the failed attempt */
        m->sk = NULL;
        sock_unref(s);
    }
}

static int wait_fd(int fd, short ev, uint64_t deadline)
{
    for (;;) {
        uint64_t now = dfs_mono_ms();
        if (now >= deadline)
            return DFS_ETIMEDOUT;
        struct pollfd p = {.fd = fd, .events = ev};
        int r = poll(&p, 1, (int)DFS_MIN(deadline - now, (uint64_t)INT32_MAX));
        if (r > 0)
            return DFS_OK;
        if (r < 0 && errno != EINTR)
            return DFS_ECONN;
    }
}

/* Write a whole frame (header+body, then bulk) before the deadline. */
static int send_all(int fd, const struct dfs_wbuf *wb, uint64_t deadline)
{
    const char *parts[2] = {wb->data, wb->bulk};
    size_t lens[2] = {wb->len, wb->bulk_len};
    for (int i = 0; i < 2; i++) {
        size_t off = 0;
        while (off < lens[i]) {
            ssize_t k = send(fd, parts[i] + off, lens[i] - off, MSG_NOSIGNAL);
            if (k > 0) {
                off += (size_t)k;
            } else if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                int st = wait_fd(fd, POLLOUT, deadline);
                if (st != DFS_OK)
                    return st;
            } else if (k < 0 && errno == EINTR) {
                continue;
            } else {
                return DFS_ECONN;
            }
        }
    }
    return DFS_OK;
}

struct hello_rd {
    struct dfs_frame f;
    bool got;
    int st;
};

static int hello_frame(void *arg, char *body, uint32_t len)
{
    struct hello_rd *h = arg;
    char err[160];
    if (codec_decode(body, len, &h->f, err, sizeof(err)) != DFS_OK) {
        free(body);
        h->st = DFS_EPROTO;
        return 1;
    }
    if (h->f.kind != DFS_KIND_RESPONSE || h->f.op != DFS_OP_HELLO ||
        h->f.req_id != MCLIENT_HELLO_ID) {
        codec_frame_free(&h->f);
        h->st = DFS_EPROTO;
        return 1;
    }
    h->got = true;
    return 1;
}

/* Connect to a, HELLO included.  Returns the socket (one reference) or NULL
 * with *st set.  No lock held. */
static struct msock *sock_open(struct mclient *m, const struct maddr *a, uint64_t deadline,
                               int *st, char *leader, size_t leaderlen)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", a->port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    *st = DFS_ECONN;
    if (getaddrinfo(a->host, port, &hints, &res) != 0 || res == NULL) {
        log_debug("mclient: cannot resolve %s", a->host);
        return NULL;
    }
    int fd = -1;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            int ok = errno == EINPROGRESS ? wait_fd(fd, POLLOUT, deadline) : DFS_ECONN;
            int e = 0;
            socklen_t el = sizeof(e);
            if (ok == DFS_OK &&
                (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) != 0 || e != 0))
                ok = DFS_ECONN;
            if (ok != DFS_OK) {
                *st = ok;
                close(fd);
                fd = -1;
            }
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        log_debug("mclient: connect to %s:%d: %s", a->host, a->port, dfs_strerror(*st));
        return NULL;
    }
    int one = 1, sz = MCLIENT_SOCKBUF;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    int idle = 30;
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));

    struct msock *s = calloc(1, sizeof(*s));
    char *rbuf = malloc(MCLIENT_RBUF);
    if (s == NULL || rbuf == NULL) {
        free(s);
        free(rbuf);
        close(fd);
        *st = DFS_ENOMEM;
        return NULL;
    }
    s->fd = fd;
    s->refs = 1;
    s->rbuf = rbuf;
    frame_rd_init(&s->rd, DFS_MAX_FRAME_FROM_METAD);

    struct dfs_msg_hello h;
    memset(&h, 0, sizeof(h));
    h.proto_version = DFS_PROTO_VERSION;
    h.role = m->opts.role;
    h.node_id = m->session;
    struct dfs_wbuf wb;
    *st = codec_encode(&wb, DFS_KIND_REQUEST, MCLIENT_HELLO_ID, DFS_OP_HELLO, &h);
    if (*st == DFS_OK) {
        *st = send_all(fd, &wb, deadline);
        codec_wbuf_free(&wb);
    }
    struct hello_rd hr;
    memset(&hr, 0, sizeof(hr));
    hr.st = DFS_OK;
    char err[160];
    while (*st == DFS_OK && !hr.got) {
        ssize_t k = recv(fd, rbuf, MCLIENT_RBUF, 0);
        if (k > 0) {
            int rc = frame_rd_feed(&s->rd, rbuf, (size_t)k, hello_frame, &hr, err, sizeof(err));
            if (rc < 0 || hr.st != DFS_OK)
                *st = DFS_EPROTO;
        } else if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            *st = wait_fd(fd, POLLIN, deadline);
        } else {
            *st = DFS_ECONN;
        }
    }
    if (*st == DFS_OK) {
        const struct dfs_msg_hello_resp *r = hr.f.body;
        if (r->status != DFS_OK) {
            log_warn("mclient: %s:%d: HELLO refused: %s%s%.*s", a->host, a->port,
                     dfs_strerror((int)r->status), r->message.len ? ": " : "",
                     (int)r->message.len, r->message.ptr ? r->message.ptr : "");
            *st = DFS_ECONN;
        } else {
            leader[0] = '\0';
            if (r->leader.len > 0 && r->leader.len < leaderlen) {
                memcpy(leader, r->leader.ptr, r->leader.len);
                leader[r->leader.len] = '\0';
            }
        }
    }
    if (hr.got)
        codec_frame_free(&hr.f);
    if (*st != DFS_OK) {
        if (*st == DFS_EPROTO)
            log_warn("mclient: %s:%d: bad HELLO answer", a->host, a->port);
        log_debug("mclient: HELLO to %s:%d: %s", a->host, a->port, dfs_strerror(*st));
        close(fd);
        frame_rd_reset(&s->rd);
        free(rbuf);
        free(s);
        return NULL;
    }
    return s;
}

/* The socket to use now, with a reference for the caller (connecting if
 * there is none); *gen identifies it.  No lock held on entry or return. */
static struct msock *get_sock(struct mclient *m, uint64_t *gen, uint64_t deadline, int *st)
{
    pthread_mutex_lock(&m->mu);
    struct msock *s = m->sk;
    if (s != NULL) {
        s->refs++;
        *gen = m->conn_gen;
        pthread_mutex_unlock(&m->mu);
        return s;
    }
    pthread_mutex_unlock(&m->mu);

    pthread_mutex_lock(&m->cmu);
    pthread_mutex_lock(&m->mu);
    s = m->sk;
    struct maddr target = m->target;
    pthread_mutex_unlock(&m->mu);
    if (s == NULL) {
        char leader[sizeof(m->leader)];
        uint64_t now = dfs_mono_ms();
        uint64_t cdl = DFS_MIN(deadline, now + MCLIENT_CONNECT_MS);
        s = sock_open(m, &target, cdl, st, leader, sizeof(leader));
        pthread_mutex_lock(&m->mu);
        m->conn_gen++; /* a failed attempt counts too: switch_conn moves on */
        if (s != NULL) {
            m->sk = s;
            memcpy(m->leader, leader, sizeof(leader));
        } else {
            m->leader[0] = '\0';
        }
    } else {
        pthread_mutex_lock(&m->mu);
        s = m->sk; /* may be gone again */
    }
    *gen = m->conn_gen;
    if (s != NULL)
        s->refs++;
    pthread_mutex_unlock(&m->mu);
    pthread_mutex_unlock(&m->cmu);
    return s;
}

/* ----- reading (by the reader, without mu) ----- */

struct rd_ctx {
    struct mclient *m;
    struct msock *s;
    struct waiter *self;
    int err; /* DFS_OK, or why the socket must be dropped */
};

static struct waiter *find_waiter(struct mclient *m, uint64_t id)
{
    for (struct waiter *w = m->waiters; w; w = w->next)
        if (w->id == id)
            return w;
    return NULL;
}

/* metad sends clients no requests; answer one like rpc.c would. */
static void answer_enosys(struct rd_ctx *x, uint64_t id, unsigned op)
{
    struct dfs_wbuf wb;
    if (codec_encode_status(&wb, id, op, DFS_ENOSYS) != DFS_OK)
        return;
    pthread_mutex_lock(&x->m->wmu);
    if (send_all(x->s->fd, &wb, dfs_mono_ms() + x->m->opts.call_timeout_ms) != DFS_OK)
        x->err = DFS_ECONN;
    pthread_mutex_unlock(&x->m->wmu);
    codec_wbuf_free(&wb);
}

static int on_frame(void *arg, char *body, uint32_t len)
{
    struct rd_ctx *x = arg;
    struct mclient *m = x->m;
    char err[160];
    struct dfs_frame *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        free(body);
        x->err = DFS_ENOMEM;
        return 1;
    }
    int rc = codec_decode(body, len, f, err, sizeof(err));
    if (rc != DFS_OK) {
        free(body);
        uint8_t kind = f->kind;
        uint64_t id = f->req_id;
        unsigned op = f->op;
        free(f);
        if (rc == DFS_ENOSYS && kind != DFS_KIND_RESPONSE) {
            if (kind == DFS_KIND_REQUEST)
                answer_enosys(x, id, op);
            return 0;
        }
        log_warn("mclient: bad frame from metad: %s", err);
        x->err = DFS_EPROTO;
        return 1;
    }
    if (f->kind != DFS_KIND_RESPONSE) {
        if (f->kind == DFS_KIND_REQUEST)
            answer_enosys(x, f->req_id, f->op);
        rpc_frame_release(f);
        return 0;
    }
    pthread_mutex_lock(&m->mu);
    struct waiter *w = find_waiter(m, f->req_id);
    if (w != NULL && w->sk == x->s && w->status == DFS_EAGAIN) {
        w->reply = f;
        w->status = DFS_OK;
        if (w != x->self)
            pthread_cond_signal(&w->cv);
        f = NULL;
    }
    pthread_mutex_unlock(&m->mu);
    rpc_frame_release(f); /* an answer nobody waits for any more (timed out) */
    return 0;
}

/* Read what the socket has (waiting until deadline for something) and hand
 * the answers out.  Called by the reader without mu.  Returns DFS_OK,
 * DFS_ETIMEDOUT (nothing arrived) or why the socket failed. */
static int read_some(struct mclient *m, struct msock *s, struct waiter *self, uint64_t deadline)
{
    struct rd_ctx x = {.m = m, .s = s, .self = self, .err = DFS_OK};
    char err[160];
    bool got = false;
    for (;;) {
        ssize_t k = recv(s->fd, s->rbuf, MCLIENT_RBUF, 0);
        if (k > 0) {
            got = true;
            int rc = frame_rd_feed(&s->rd, s->rbuf, (size_t)k, on_frame, &x, err, sizeof(err));
            if (rc < 0) {
                log_warn("mclient: bad frame from metad: %s", err);
                return DFS_EPROTO;
            }
            if (x.err != DFS_OK)
                return x.err;
            if ((size_t)k < MCLIENT_RBUF)
                return DFS_OK;
            continue; /* maybe more */
        }
        if (k == 0)
            return DFS_ECONN;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return DFS_ECONN;
        if (got)
            return DFS_OK;
        int st = wait_fd(s->fd, POLLIN, deadline);
        if (st != DFS_OK)
            return st;
    }
}

/* Pass the reader role on to a caller still waiting on s.  mu held. */
static void hand_over(struct mclient *m, struct msock *s)
{
    for (struct waiter *w = m->waiters; w; w = w->next)
        if (w->sk == s && w->status == DFS_EAGAIN) {
            pthread_cond_signal(&w->cv);
            return;
        }
}

static void waiter_unlink(struct mclient *m, struct waiter *w)
{
    for (struct waiter **pp = &m->waiters; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            return;
        }
}

static void cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t deadline)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = dfs_mono_ms();
    uint64_t ms = deadline > now ? deadline - now : 0;
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(cv, mu, &ts);
}

/* One attempt: send `wb` on the current socket and wait for the answer. */
static int attempt(struct mclient *m, struct dfs_wbuf *wb, uint32_t timeout_ms, uint64_t *gen,
                   struct dfs_frame **reply)
{
    uint64_t deadline = dfs_mono_ms() + timeout_ms;
    int st = DFS_ECONN;
    struct msock *s = get_sock(m, gen, deadline, &st);
    if (s == NULL) /* no metad reachable (yet): like a call that waited in vain */
        return st == DFS_ENOMEM ? st : DFS_ETIMEDOUT;

    struct waiter w;
    memset(&w, 0, sizeof(w));
    dfs_cond_init_mono(&w.cv);
    w.sk = s;
    w.status = DFS_EAGAIN;

    pthread_mutex_lock(&m->mu);
    w.id = m->next_id++;
    w.next = m->waiters;
    m->waiters = &w;
    bool dead = s->dead;
    pthread_mutex_unlock(&m->mu);

    st = dead ? DFS_ECONN : codec_wbuf_set_req_id(wb, w.id);
    if (st == DFS_OK) {
        pthread_mutex_lock(&m->wmu);
        st = send_all(s->fd, wb, deadline);
        pthread_mutex_unlock(&m->wmu);
        if (st != DFS_OK)
            st = DFS_ECONN; /* a partial frame may be out: the socket is unusable */
    }

    pthread_mutex_lock(&m->mu);
    if (st != DFS_OK) {
        sock_kill(m, s, DFS_ECONN);
    } else {
        while (w.status == DFS_EAGAIN) {
            if (dfs_mono_ms() >= deadline) {
                w.status = DFS_ETIMEDOUT;
                break;
            }
            if (s->reading || s->dead) {
                cond_wait_until(&w.cv, &m->mu, deadline);
                continue;
            }
            s->reading = true;
            pthread_mutex_unlock(&m->mu);
            int rs = read_some(m, s, &w, deadline);
            pthread_mutex_lock(&m->mu);
            s->reading = false;
            if (rs != DFS_OK && rs != DFS_ETIMEDOUT)
                sock_kill(m, s, rs);
        }
        st = w.status;
    }
    waiter_unlink(m, &w);
    if (!s->reading && !s->dead)
        hand_over(m, s);
    *reply = w.reply;
    sock_unref(s);
    pthread_mutex_unlock(&m->mu);
    pthread_cond_destroy(&w.cv);
    if (st != DFS_OK) {
        rpc_frame_release(*reply);
        *reply = NULL;
    }
    return st;
}

void mclient_free(struct mclient *m)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->mu);
    if (m->sk != NULL)
        sock_kill(m, m->sk, DFS_ECANCELED);
    pthread_mutex_unlock(&m->mu);
    pthread_mutex_destroy(&m->wmu);
    pthread_mutex_destroy(&m->mu);
    pthread_mutex_destroy(&m->cmu);
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

/* The attempt on connection `gen` failed with `why`: move to the leader
 * named in a HELLO answer, else to the next address.  Another thread may
 * have moved already (then gen is old and nothing happens). */
static void switch_conn(struct mclient *m, uint64_t gen, int why)
{
    pthread_mutex_lock(&m->mu);
    if (gen != m->conn_gen) {
        pthread_mutex_unlock(&m->mu);
        return;
    }
    struct maddr next = m->target;
    char lhost[MCLIENT_HOSTLEN];
    int lport = 0;
    char err[128];
    bool moved = false;
    if (m->leader[0] != '\0' &&
        dfs_parse_hostport(m->leader, DFS_PORT_METAD, lhost, sizeof(lhost), &lport, err,
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
        if (m->sk != NULL)
            sock_kill(m, m->sk, DFS_ECANCELED);
        m->conn_gen++;
        m->target = next;
        m->leader[0] = '\0';
    }
    /* One address and a timeout: keep the connection. */
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
    /* Encoded once; every attempt only rewrites the req_id. */
    struct dfs_wbuf wb;
    int rc = codec_encode(&wb, DFS_KIND_REQUEST, UINT64_MAX, op, body);
    if (rc != DFS_OK)
        return rc;
    uint64_t start = dfs_mono_ms();
    uint64_t end = start + m->opts.total_timeout_ms;
    int last = DFS_ETIMEDOUT;
    uint32_t pause = 50;

    for (;;) {
        uint64_t now = dfs_mono_ms();
        if (now >= end)
            break;
        uint64_t left = end - now;
        uint32_t t = left < m->opts.call_timeout_ms ? (uint32_t)left : m->opts.call_timeout_ms;

        uint64_t gen = 0;
        struct dfs_frame *r = NULL;
        rc = attempt(m, &wb, t, &gen, &r);
        if (rc != DFS_OK && rc != DFS_ETIMEDOUT && rc != DFS_ECONN && rc != DFS_ECANCELED) {
            last = rc; /* encoding error or out of memory: retrying will not help */
            break;
        }
        if (rc == DFS_OK) {
            if (r->status != DFS_ENOTLEADER) {
                *reply = r;
                codec_wbuf_free(&wb);
                return DFS_OK;
            }
            rpc_frame_release(r);
            last = DFS_ETIMEDOUT; /* no leader found in time */
            switch_conn(m, gen, DFS_ENOTLEADER);
        } else {
            last = rc == DFS_ECANCELED ? DFS_ECONN : rc;
            switch_conn(m, gen, rc);
        }
        /* Do not spin against a cluster that is electing a leader. */
        now = dfs_mono_ms();
        if (now >= end)
            break;
        sleep_ms((uint32_t)DFS_MIN((uint64_t)pause, end - now));
        pause = pause * 2 > 1000 ? 1000 : pause * 2;
    }
    codec_wbuf_free(&wb);
    return last;
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
