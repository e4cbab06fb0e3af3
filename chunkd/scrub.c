/* scrub.c - background re-verification of every stored block at a bounded rate. */
#include "scrub.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "log.h"
#include "util.h"

static struct {
    struct store *st;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool running, stop;
    uint64_t rate; /* mu */
    uint64_t interval_ns; /* mu: least time from one pass's start to the next */
    uint64_t passes, blocks, corrupt; /* atomic */
    bool cv_init;
} X = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Sleep up to ns (capped at 1 s so rate changes apply soon); false if stopping. */
static bool nap(uint64_t ns)
{
    if (ns > 1000000000ull) ns = 1000000000ull;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t t = (uint64_t)ts.tv_nsec + ns;
    ts.tv_sec += (time_t)(t / 1000000000ull);
    ts.tv_nsec = (long)(t % 1000000000ull);
    pthread_mutex_lock(&X.mu);
    if (!X.stop) pthread_cond_timedwait(&X.cv, &X.mu, &ts);
    bool go = !X.stop;
    pthread_mutex_unlock(&X.mu);
    return go;
}

static uint64_t cur_rate(void)
{
    pthread_mutex_lock(&X.mu);
    uint64_t r = X.rate;
    pthread_mutex_unlock(&X.mu);
    return r;
}

/* Wait until the budget allows `bytes` more at the current rate. */
static bool pace(uint64_t bytes, uint64_t started_ns)
{
    for (;;) {
        uint64_t rate = cur_rate();
        if (rate == 0) {
            if (!nap(1000000000ull)) return false;
            continue;
        }
        uint64_t want = bytes * 1000000000ull / rate;
        uint64_t spent = dfs_mono_ns() - started_ns;
        if (spent >= want) return true;
        if (!nap(want - spent)) return false;
        if (dfs_mono_ns() - started_ns >= want) return true;
    }
}

static void *scrub_main(void *arg)
{
    while (nap(0)) {
        if (cur_rate() == 0) {
            if (!nap(1000000000ull)) break;
            continue;
        }
        struct dfs_chunkrep *list = NULL;
        size_t n = store_list(X.st, &list);
        uint64_t bytes = 0, found = 0, t0 = dfs_mono_ms();
        bool go = true;
        for (size_t i = 0; go && i < n; i++) {
            if (list[i].state != DFS_RS_OK) continue;
            uint32_t nb = 1;
            for (uint32_t b = 0; go && b < nb; b++) {
                uint64_t s = dfs_mono_ns();
                uint32_t got = 0;
                int r = store_scrub_block(X.st, list[i].chunk_id, b, &nb, &got);
                __atomic_add_fetch(&X.blocks, 1, __ATOMIC_RELAXED);
                bytes += got;
                if (r == DFS_ECORRUPT) {
                    found++;
                    __atomic_add_fetch(&X.corrupt, 1, __ATOMIC_RELAXED);
                    log_err("scrub: chunk %016" PRIx64 " block %u is corrupt; reported", list[i].chunk_id, b);
                    break;
                }
                if (r != DFS_OK) break; /* deleted meanwhile, or its disk failed */
                go = pace(got ? got : 4096, s);
            }
        }
        free(list);
        if (!go) break;
        __atomic_add_fetch(&X.passes, 1, __ATOMIC_RELAXED);
        if (n) log_debug("scrub pass done: %zu chunks, %" PRIu64 " bytes in %" PRIu64 " ms, %" PRIu64
                 " corrupt", n, bytes, dfs_mono_ms() - t0, found);
        /* Rest until the next pass is due: without this a small store would
         * be re-read back to back, burning a core for nothing. */
        pthread_mutex_lock(&X.mu);
        uint64_t iv = X.interval_ns;
        pthread_mutex_unlock(&X.mu);
        uint64_t spent = (dfs_mono_ms() - t0) * 1000000ull;
        uint64_t rest = iv > spent ? iv - spent : 0;
        if (n == 0 && rest < 1000000000ull)
            rest = 1000000000ull;
        while (rest > 0) {
            uint64_t step = rest > 1000000000ull ? 1000000000ull : rest;
            if (!nap(step))
                return NULL;
            rest -= step;
        }
    }
    return NULL;
}

int scrub_start(struct store *st, uint64_t rate)
{
    if (!X.cv_init) {
        /* nap() computes deadlines on the monotonic clock. */
        dfs_cond_init_mono(&X.cv);
        X.cv_init = true;
    }
    X.st = st;
    X.rate = rate;
    X.stop = false;
    if (pthread_create(&X.th, NULL, scrub_main, NULL) != 0) return -1;
    X.running = true;
    return 0;
}

void scrub_set_interval(uint64_t seconds)
{
    pthread_mutex_lock(&X.mu);
    X.interval_ns = seconds * 1000000000ull;
    pthread_mutex_unlock(&X.mu);
}

void scrub_set_rate(uint64_t rate)
{
    pthread_mutex_lock(&X.mu);
    X.rate = rate;
    if (X.cv_init) pthread_cond_broadcast(&X.cv);
    pthread_mutex_unlock(&X.mu);
}

void scrub_stop(void)
{
    if (!X.running) return;
    pthread_mutex_lock(&X.mu);
    X.stop = true;
    pthread_cond_broadcast(&X.cv);
    pthread_mutex_unlock(&X.mu);
    pthread_join(X.th, NULL);
    X.running = false;
}

void scrub_stats(uint64_t *passes, uint64_t *blocks, uint64_t *corrupt)
{
    *passes = __atomic_load_n(&X.passes, __ATOMIC_RELAXED);
    *blocks = __atomic_load_n(&X.blocks, __ATOMIC_RELAXED);
    *corrupt = __atomic_load_n(&X.corrupt, __ATOMIC_RELAXED);
}
