/* checksum.c - xxh3-64 checksums (libxxhash). */
#include "checksum.h"

#include <xxhash.h>

#include "proto.h"

uint64_t csum_buf(const void *p, size_t n)
{
    return XXH3_64bits(p, n);
}

void csum_blocks(const void *p, size_t n, uint64_t *out)
{
    const char *c = p;
    for (size_t off = 0, i = 0; off < n; off += DFS_BLOCK_SIZE, i++) {
        size_t len = n - off < DFS_BLOCK_SIZE ? n - off : DFS_BLOCK_SIZE;
        out[i] = XXH3_64bits(c + off, len);
    }
}
