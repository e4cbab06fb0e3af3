/* dfsctl.c - admin CLI: cluster status, file chunk info, goals, draining servers. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "mclient.h"
#include "proto.h"
#include "rpc.h"
#include "util.h"

static struct rpc_mt *g_mt;
static struct mclient *g_mc;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: dfsctl [-m HOST:PORT[,...]] [-t SECONDS] COMMAND\n"
            "  status                  servers, capacity, chunk health, repairs\n"
            "  fileinfo [-n] PATH      layout and chunks of a file\n"
            "  setgoal N [-n] PATH [-r]  set the number of copies (-r: recursive)\n"
            "  drain ID [off]          move every chunk off server ID (or stop)\n"
            "PATH is a path on a dfsmount mount, or with -n a path inside the dfs\n"
            "namespace (\"/dir/file\").  The metad address defaults to the mount's\n"
            "source, then 127.0.0.1:9520.\n");
}

static void cred(struct dfs_cred *c)
{
    memset(c, 0, sizeof(*c));
    c->uid = (uint32_t)getuid();
    c->gid = (uint32_t)getgid();
}

static const char *human(uint64_t v, char *buf, size_t len)
{
    const char *u[] = {"B", "K", "M", "G", "T", "P"};
    double d = (double)v;
    int i = 0;
    while (d >= 1024 && i < 5) {
        d /= 1024;
        i++;
    }
    if (i == 0)
        snprintf(buf, len, "%llu", (unsigned long long)v);
    else
        snprintf(buf, len, "%.1f%s", d, u[i]);
    return buf;
}

static const char *server_state(uint32_t s)
{
    switch (s) {
    case DFS_SS_UP: return "up";
    case DFS_SS_DOWN: return "down";
    case DFS_SS_DRAINING: return "draining";
    default: return "?";
    }
}

static const char *replica_state(uint32_t s)
{
    switch (s) {
    case DFS_RS_OK: return "ok";
    case DFS_RS_STALE: return "stale";
    case DFS_RS_CORRUPT: return "corrupt";
    case DFS_RS_LOST: return "lost";
    case DFS_RS_DOWN: return "down";
    case DFS_RS_PENDING: return "pending";
    default: return "?";
    }
}

static int fail(const char *what, int st)
{
    fprintf(stderr, "dfsctl: %s: %s\n", what, dfs_strerror(st));
    return 1;
}

static int cmd_status(void)
{
    struct dfs_msg_ino_req rq;
    memset(&rq, 0, sizeof(rq));
    cred(&rq.cred);
    rq.ino = DFS_ROOT_INO;
    struct dfs_frame *rep = NULL;
    int st = mclient_do(g_mc, DFS_OP_STATUS, &rq, &rep);
    if (st != DFS_OK)
        return fail("status", st);
    const struct dfs_msg_status_resp *r = rep->body;
    char b1[32], b2[32], b3[32];
    printf("metad leader: %s   raft index: %llu   files: %llu   dirs: %llu\n\n",
           r->leader.ptr && r->leader.len ? r->leader.ptr : "-",
           (unsigned long long)r->raft_index, (unsigned long long)r->files,
           (unsigned long long)r->dirs);
    printf("%-4s %-22s %-10s %-9s %10s %10s %10s %5s %8s\n", "ID", "ADDRESS", "LABEL", "STATE",
           "CAPACITY", "USED", "AVAIL", "USE%", "CHUNKS");
    uint64_t tot = 0, used = 0;
    for (uint32_t i = 0; i < r->servers_count; i++) {
        const struct dfs_server *s = &r->servers[i];
        char addr[300];
        snprintf(addr, sizeof(addr), "%s:%u", s->host.ptr ? s->host.ptr : "?", s->port);
        double pct = s->total ? 100.0 * (double)s->used / (double)s->total : 0;
        printf("%-4u %-22s %-10s %-9s %10s %10s %10s %4.0f%% %8llu\n", s->server_id, addr,
               s->label.ptr && s->label.len ? s->label.ptr : "-", server_state(s->state),
               human(s->total, b1, sizeof b1), human(s->used, b2, sizeof b2),
               human(s->avail, b3, sizeof b3), pct, (unsigned long long)s->chunks);
        tot += s->total;
        used += s->used;
    }
    printf("%-4s %-22s %-10s %-9s %10s %10s\n\n", "", "total", "", "", human(tot, b1, sizeof b1),
           human(used, b2, sizeof b2));
    uint32_t up = 0;
    for (uint32_t i = 0; i < r->servers_count; i++)
        if (r->servers[i].state != DFS_SS_DOWN)
            up++;
    printf("servers: %u up, %u total\n", up, r->servers_count);
    printf("chunks: %llu total, %llu healthy, %llu under-goal, %llu over-goal, %llu missing\n",
           (unsigned long long)r->chunks, (unsigned long long)r->healthy,
           (unsigned long long)r->under_goal, (unsigned long long)r->over_goal,
           (unsigned long long)r->missing);
    printf("repairs: %llu queued, %llu running, %llu done, %s replicated\n",
           (unsigned long long)r->repair_queue, (unsigned long long)r->repairs_running,
           (unsigned long long)r->repairs_done, human(r->bytes_replicated, b1, sizeof b1));
    printf("gc:      %llu chunks pending deletion\n", (unsigned long long)r->gc_pending);
    rpc_frame_release(rep);
    return 0;
}

/* Find the fuse.dfsmount mount containing abs (longest match).  Writes the
 * mount point and its source. Returns 0 or -1. */
static int find_mount(const char *abs, char *mnt, size_t mlen, char *src, size_t slen)
{
    FILE *f = fopen("/proc/mounts", "r");
    if (f == NULL)
        return -1;
    char line[8192];
    size_t best = 0;
    while (fgets(line, sizeof(line), f)) {
        char dev[4096], dir[4096], type[256];
        if (sscanf(line, "%4095s %4095s %255s", dev, dir, type) != 3)
            continue;
        if (strcmp(type, "fuse.dfsmount") != 0)
            continue;
        size_t l = strlen(dir);
        bool inside = strncmp(abs, dir, l) == 0 && (abs[l] == '/' || abs[l] == '\0');
        if (strcmp(dir, "/") == 0)
            inside = true, l = 0;
        if (inside && l + 1 > best) {
            best = l + 1;
            snprintf(mnt, mlen, "%s", dir);
            snprintf(src, slen, "%s", dev);
        }
    }
    fclose(f);
    return best ? 0 : -1;
}

/* Turn PATH into a path inside the dfs namespace. */
static int to_dfs_path(const char *path, bool ns, char *out, size_t olen, char *src, size_t slen)
{
    src[0] = '\0';
    if (ns) {
        snprintf(out, olen, "%s", path);
        return 0;
    }
    char abs[PATH_MAX];
    if (realpath(path, abs) == NULL) {
        fprintf(stderr, "dfsctl: %s: %s\n", path, strerror(errno));
        return -1;
    }
    char mnt[4096];
    if (find_mount(abs, mnt, sizeof(mnt), src, slen) != 0) {
        fprintf(stderr, "dfsctl: %s is not on a dfsmount mount (use -n for a dfs path)\n",
                path);
        return -1;
    }
    const char *rest = abs + (strcmp(mnt, "/") == 0 ? 0 : strlen(mnt));
    snprintf(out, olen, "%s", *rest ? rest : "/");
    return 0;
}

/* Walk a dfs path from the root with LOOKUP. */
static int resolve(const char *dpath, uint64_t *ino, struct dfs_attr *attr)
{
    char *dup = strdup(dpath), *save = NULL;
    uint64_t cur = DFS_ROOT_INO;
    int st = DFS_OK;
    struct dfs_attr a;
    memset(&a, 0, sizeof(a));
    for (char *t = strtok_r(dup, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
        if (strcmp(t, ".") == 0)
            continue;
        struct dfs_msg_name_req rq;
        memset(&rq, 0, sizeof(rq));
        cred(&rq.cred);
        rq.parent = cur;
        rq.name.ptr = t;
        rq.name.len = (uint32_t)strlen(t);
        struct dfs_frame *rep = NULL;
        st = mclient_do(g_mc, DFS_OP_LOOKUP, &rq, &rep);
        if (st != DFS_OK) {
            fprintf(stderr, "dfsctl: %s: lookup of '%s': %s\n", dpath, t, dfs_strerror(st));
            free(dup);
            return st;
        }
        a = ((struct dfs_msg_attr_resp *)rep->body)->attr;
        cur = a.ino;
        rpc_frame_release(rep);
    }
    free(dup);
    if (cur == DFS_ROOT_INO) {
        struct dfs_msg_ino_req rq;
        memset(&rq, 0, sizeof(rq));
        cred(&rq.cred);
        rq.ino = cur;
        struct dfs_frame *rep = NULL;
        st = mclient_do(g_mc, DFS_OP_GETATTR, &rq, &rep);
        if (st != DFS_OK)
            return fail("getattr /", st);
        a = ((struct dfs_msg_attr_resp *)rep->body)->attr;
        rpc_frame_release(rep);
    }
    *ino = cur;
    *attr = a;
    return DFS_OK;
}

static int cmd_fileinfo(const char *dpath)
{
    uint64_t ino;
    struct dfs_attr a;
    if (resolve(dpath, &ino, &a) != DFS_OK)
        return 1;
    char b1[32];
    printf("path:    %s\ninode:   %llu\nsize:    %llu (%s)\ngoal:    %u\n", dpath,
           (unsigned long long)ino, (unsigned long long)a.size, human(a.size, b1, sizeof b1),
           a.goal);
    uint64_t first = 0;
    bool header = false;
    for (;;) {
        struct dfs_msg_chunks_req rq;
        memset(&rq, 0, sizeof(rq));
        cred(&rq.cred);
        rq.ino = ino;
        rq.first = first;
        rq.count = 1024;
        struct dfs_frame *rep = NULL;
        int st = mclient_do(g_mc, DFS_OP_CHUNKS, &rq, &rep);
        if (st != DFS_OK) {
            if (!header && (st == DFS_EISDIR || st == DFS_EINVAL))
                return 0; /* directories and symlinks have no chunks */
            return fail("chunks", st);
        }
        const struct dfs_msg_chunks_resp *r = rep->body;
        if (!header) {
            printf("layout:  stripe_unit %u, stripe_count %u, chunk_size %llu\n",
                   r->layout.stripe_unit, r->layout.stripe_count,
                   (unsigned long long)r->layout.chunk_size);
            printf("chunks:  %u listed\n", r->chunks_count);
            header = true;
        }
        for (uint32_t i = 0; i < r->chunks_count; i++) {
            const struct dfs_chunk *ch = &r->chunks[i];
            printf("chunk %llu id %016llx version %u length %llu copies %u\n",
                   (unsigned long long)ch->index, (unsigned long long)ch->chunk_id,
                   ch->version, (unsigned long long)ch->length, ch->replicas_count);
            for (uint32_t k = 0; k < ch->replicas_count; k++) {
                const struct dfs_replica *rp = &ch->replicas[k];
                printf("    replica server %u %s:%u %s\n", rp->server_id,
                       rp->host.ptr ? rp->host.ptr : "?", rp->port, replica_state(rp->state));
            }
            if (ch->replicas_count == 0)
                printf("    (no copies left)\n");
        }
        /* Chunks needed for the size: stop once past the last one. */
        uint64_t setsz = (uint64_t)r->layout.stripe_count * r->layout.chunk_size;
        uint64_t nidx = setsz ? (r->size + setsz - 1) / setsz * r->layout.stripe_count : 0;
        rpc_frame_release(rep);
        first += 1024;
        if (first >= nidx)
            break;
    }
    return 0;
}

static int cmd_setgoal(unsigned goal, const char *dpath, bool recursive)
{
    uint64_t ino;
    struct dfs_attr a;
    if (resolve(dpath, &ino, &a) != DFS_OK)
        return 1;
    struct dfs_msg_setgoal rq;
    memset(&rq, 0, sizeof(rq));
    cred(&rq.cred);
    rq.ino = ino;
    rq.goal = goal;
    rq.recursive = recursive;
    struct dfs_frame *rep = NULL;
    int st = mclient_do(g_mc, DFS_OP_SETGOAL, &rq, &rep);
    if (st != DFS_OK)
        return fail("setgoal", st);
    printf("%s: goal %u set on %llu inode(s)\n", dpath, goal,
           (unsigned long long)((struct dfs_msg_count_resp *)rep->body)->count);
    rpc_frame_release(rep);
    return 0;
}

static int cmd_drain(unsigned id, bool on)
{
    struct dfs_msg_drain rq;
    memset(&rq, 0, sizeof(rq));
    cred(&rq.cred);
    rq.server_id = id;
    rq.on = on;
    int st = mclient_do(g_mc, DFS_OP_DRAIN, &rq, NULL);
    if (st != DFS_OK)
        return fail("drain", st);
    printf("server %u: draining %s\n", id, on ? "started" : "stopped");
    return 0;
}

static int parse_uint(const char *s, unsigned max, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || end == s || v > max)
        return -1;
    *out = (unsigned)v;
    return 0;
}

int main(int argc, char **argv)
{
    log_init("dfsctl");
    if (getenv("DFS_LOG") == NULL && getenv("DFS_TRACE") == NULL)
        log_set_level(LOG_LVL_WARNING);
    const char *meta = NULL;
    unsigned timeout = 30;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "-m") == 0 && i + 1 < argc) {
            meta = argv[++i];
        } else if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) {
            if (parse_uint(argv[++i], 86400, &timeout) != 0 || timeout == 0) {
                fprintf(stderr, "dfsctl: bad timeout '%s'\n", argv[i]);
                return 2;
            }
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "dfsctl: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[i++];
    /* Command arguments: collect flags -n/-r anywhere, positionals in order. */
    bool ns = false, rec = false;
    const char *pos[4];
    int npos = 0;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "-n") == 0)
            ns = true;
        else if (strcmp(argv[i], "-m") == 0 && i + 1 < argc)
            meta = argv[++i];
        else if (strcmp(argv[i], "-r") == 0)
            rec = true;
        else if (npos < 4)
            pos[npos++] = argv[i];
        else {
            fprintf(stderr, "dfsctl: too many arguments\n");
            return 2;
        }
    }

    char dpath[PATH_MAX], src[4096] = "";
    const char *path_arg = NULL;
    unsigned num = 0;
    bool on = true;
    if (strcmp(cmd, "status") == 0) {
        if (npos != 0)
            goto bad_usage;
    } else if (strcmp(cmd, "fileinfo") == 0) {
        if (npos != 1)
            goto bad_usage;
        path_arg = pos[0];
    } else if (strcmp(cmd, "setgoal") == 0) {
        if (npos != 2 || parse_uint(pos[0], DFS_MAX_GOAL, &num) != 0 || num == 0) {
            fprintf(stderr, "dfsctl: setgoal N PATH [-r] with 1 <= N <= %u\n", DFS_MAX_GOAL);
            return 2;
        }
        path_arg = pos[1];
    } else if (strcmp(cmd, "drain") == 0) {
        if (npos < 1 || npos > 2 || parse_uint(pos[0], UINT32_MAX, &num) != 0)
            goto bad_usage;
        if (npos == 2) {
            if (strcmp(pos[1], "off") == 0)
                on = false;
            else if (strcmp(pos[1], "on") != 0)
                goto bad_usage;
        }
    } else {
        fprintf(stderr, "dfsctl: unknown command '%s'\n", cmd);
        goto bad_usage;
    }
    if (path_arg && to_dfs_path(path_arg, ns, dpath, sizeof(dpath), src, sizeof(src)) != 0)
        return 1;
    if (meta == NULL)
        meta = src[0] && strchr(src, ':') ? src : "127.0.0.1:9520";

    g_mt = rpc_mt_start("dfsctl");
    if (g_mt == NULL)
        return 1;
    char err[256];
    struct mclient_opts mo = {meta, DFS_ROLE_ADMIN, DFS_MIN(timeout * 1000u, 5000u),
                              timeout * 1000u};
    g_mc = mclient_new(g_mt, &mo, err, sizeof(err));
    if (g_mc == NULL) {
        fprintf(stderr, "dfsctl: %s\n", err);
        rpc_mt_stop(g_mt);
        return 2;
    }
    int ret;
    if (strcmp(cmd, "status") == 0)
        ret = cmd_status();
    else if (strcmp(cmd, "fileinfo") == 0)
        ret = cmd_fileinfo(dpath);
    else if (strcmp(cmd, "setgoal") == 0)
        ret = cmd_setgoal(num, dpath, rec);
    else
        ret = cmd_drain(num, on);
    mclient_free(g_mc);
    rpc_mt_stop(g_mt);
    return ret;

bad_usage:
    usage(stderr);
    return 2;
}
