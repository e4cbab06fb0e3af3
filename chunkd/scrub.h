/* scrub.h - background re-verification of every stored block at a bounded rate. */
#ifndef DFS_CHUNKD_SCRUB_H
#define DFS_CHUNKD_SCRUB_H

#include <stdint.h>

#include "store.h"

/*
 * A dedicated thread walks every chunk, block by block, verifying each
 * against its stored checksum (store_scrub_block) at no more than `rate`
 * bytes per second (0 = paused).  A mismatch marks the replica corrupt; the
 * store queues it for the next heartbeat (state DFS_RS_CORRUPT) and logs it.
 * Any thread may call these functions.
 */
int scrub_start(struct store *st, uint64_t rate);
/* Change the rate (SIGHUP reload); takes effect within a second. */
void scrub_set_rate(uint64_t rate);
/* Least time between the starts of two passes (a pass that takes longer is
 * followed at once by the next).  Callable any time. */
void scrub_set_interval(uint64_t seconds);
/* Stop and join the thread. */
void scrub_stop(void);
/* Counters: completed passes, blocks verified, corrupt replicas found. */
void scrub_stats(uint64_t *passes, uint64_t *blocks, uint64_t *corrupt);

#endif /* DFS_CHUNKD_SCRUB_H */
