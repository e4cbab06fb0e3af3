/* bench_metad.c - metadata ops/s against a running metad: create, lookup, getattr, unlink. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "mclient.h"
#include "rpc.h"
#include "util.h"

/*
 * usage: bench_metad -m HOST:PORT [-t THREADS] [-n FILES_PER_THREAD] [-k]
 * Each thread works in its own directory with its own client session (one
 * mclient per thread, so they are truly concurrent clients).  -k keeps the
 * files (skips the unlink phase), for memory measurements.
 */

static const char *addr = "127.0.0.1:9520";
static int nthreads = 1, keep = 0;
static long nfiles = 10000;
static struct rpc_mt *mt;
static pthread_barrier_t bar;
static const char *phases[] = {"create", "lookup", "getattr", "unlink"};
static uint64_t t_start[4], t_end[4];
static long errors;

struct th {
    int id;
    struct mclient *mc;
    uint64_t dir;
    uint64_t *inos;
};

static void cred(struct dfs_cred *c)
{
    memset(c, 0, sizeof(*c));
}

static void *run(void *arg)
{
    struct th *t = arg;
    char name[64];
    struct dfs_frame *rep;
    long err = 0;
    for (int ph = 0; ph < 4; ph++) {
        pthread_barrier_wait(&bar);
        if (t->id == 0) t_start[ph] = dfs_mono_ns();
        pthread_barrier_wait(&bar);
        if (ph == 3 && keep) goto next;
        for (long i = 0; i < nfiles; i++) {
            snprintf(name, sizeof(name), "file-%ld", i);
            int st;
            if (ph == 0) {
                struct dfs_msg_mknod b;
                memset(&b, 0, sizeof(b));
                cred(&b.cred);
                b.parent = t->dir;
                b.name.ptr = name;
                b.name.len = (uint32_t)strlen(name);
                b.mode = 0644;
                st = mclient_do(t->mc, DFS_OP_CREATE, &b, &rep);
                if (st == DFS_OK) t->inos[i] = ((struct dfs_msg_attr_resp *)rep->body)->attr.ino;
                rpc_frame_release(rep);
            } else if (ph == 1) {
                struct dfs_msg_name_req b;
                memset(&b, 0, sizeof(b));
                cred(&b.cred);
                b.parent = t->dir;
                b.name.ptr = name;
                b.name.len = (uint32_t)strlen(name);
                st = mclient_do(t->mc, DFS_OP_LOOKUP, &b, NULL);
            } else if (ph == 2) {
                struct dfs_msg_ino_req b;
                memset(&b, 0, sizeof(b));
                cred(&b.cred);
                b.ino = t->inos[i];
                st = mclient_do(t->mc, DFS_OP_GETATTR, &b, NULL);
            } else {
                struct dfs_msg_name_req b;
                memset(&b, 0, sizeof(b));
                cred(&b.cred);
                b.parent = t->dir;
                b.name.ptr = name;
                b.name.len = (uint32_t)strlen(name);
                st = mclient_do(t->mc, DFS_OP_UNLINK, &b, NULL);
            }
            if (st != DFS_OK) err++;
        }
        /* Handles opened by CREATE are released after the timed phase. */
        if (ph == 0) {
            pthread_barrier_wait(&bar);
            if (t->id == 0) t_end[0] = dfs_mono_ns();
            for (long i = 0; i < nfiles; i++) {
                struct dfs_msg_open b;
                memset(&b, 0, sizeof(b));
                cred(&b.cred);
                b.ino = t->inos[i];
                mclient_do(t->mc, DFS_OP_RELEASE, &b, NULL);
            }
        }
    next:
        pthread_barrier_wait(&bar);
        if (t->id == 0 && ph != 0) t_end[ph] = dfs_mono_ns();
    }
    __atomic_add_fetch(&errors, err, __ATOMIC_RELAXED);
    return NULL;
}

int main(int argc, char **argv)
{
    int opt;
    while ((opt = getopt(argc, argv, "m:t:n:k")) != -1) {
        switch (opt) {
        case 'm': addr = optarg; break;
        case 't': nthreads = atoi(optarg); break;
        case 'n': nfiles = atol(optarg); break;
        case 'k': keep = 1; break;
        default:
            fprintf(stderr, "usage: bench_metad -m HOST:PORT [-t THREADS] [-n FILES] [-k]\n");
            return 2;
        }
    }
    log_init("bench_metad");
    log_set_level(LOG_LVL_WARNING);
    mt = rpc_mt_start("bench");
    if (!mt) return 1;
    struct th *ths = calloc((size_t)nthreads, sizeof(*ths));
    pthread_t *tids = calloc((size_t)nthreads, sizeof(*tids));
    char err[256];
    uint64_t tag = dfs_random_u64() % 1000000;
    for (int i = 0; i < nthreads; i++) {
        struct mclient_opts mo = {.addrs = addr, .role = DFS_ROLE_CLIENT};
        ths[i].id = i;
        ths[i].mc = mclient_new(mt, &mo, err, sizeof(err));
        if (!ths[i].mc) {
            fprintf(stderr, "bench_metad: %s\n", err);
            return 1;
        }
        ths[i].inos = calloc((size_t)nfiles, sizeof(uint64_t));
        struct dfs_msg_mknod b;
        memset(&b, 0, sizeof(b));
        char name[64];
        snprintf(name, sizeof(name), "bench-%llu-%d", (unsigned long long)tag, i);
        b.parent = DFS_ROOT_INO;
        b.name.ptr = name;
        b.name.len = (uint32_t)strlen(name);
        b.mode = 0755;
        struct dfs_frame *rep;
        int st = mclient_do(ths[i].mc, DFS_OP_MKDIR, &b, &rep);
        if (st != DFS_OK) {
            fprintf(stderr, "bench_metad: mkdir %s: %s\n", name, dfs_strerror(st));
            return 1;
        }
        ths[i].dir = ((struct dfs_msg_attr_resp *)rep->body)->attr.ino;
        rpc_frame_release(rep);
    }
    pthread_barrier_init(&bar, NULL, (unsigned)nthreads);
    for (int i = 0; i < nthreads; i++) pthread_create(&tids[i], NULL, run, &ths[i]);
    for (int i = 0; i < nthreads; i++) pthread_join(tids[i], NULL);
    for (int ph = 0; ph < 4; ph++) {
        if (ph == 3 && keep) continue;
        double s = (double)(t_end[ph] - t_start[ph]) / 1e9;
        printf("%-8s threads=%-3d ops=%-9ld %.0f ops/s\n", phases[ph], nthreads,
               nfiles * nthreads, (double)(nfiles * nthreads) / s);
    }
    printf("errors=%ld\n", errors);
    for (int i = 0; i < nthreads; i++) mclient_free(ths[i].mc);
    rpc_mt_stop(mt);
    return errors ? 1 : 0;
}
