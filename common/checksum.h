/* checksum.h - xxh3-64 checksums of payloads and of 64 KiB blocks. */
#ifndef DFS_CHECKSUM_H
#define DFS_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

/* xxh3-64 of a buffer (seed 0). Thread-safe. */
uint64_t csum_buf(const void *p, size_t n);

/* One xxh3-64 per DFS_BLOCK_SIZE block of p[0..n): writes
 * ceil(n / DFS_BLOCK_SIZE) values into out.  The last block may be short and
 * is summed over its real length. */
void csum_blocks(const void *p, size_t n, uint64_t *out);

/* Number of blocks covering n bytes. */
static inline size_t csum_nblocks(uint64_t n)
{
    return (size_t)((n + (64u << 10) - 1) / (64u << 10));
}

#endif /* DFS_CHECKSUM_H */
