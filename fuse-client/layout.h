/* layout.h - pure striping math: file offsets <-> (chunk index, chunk-local offset). */
#ifndef DFS_FUSE_LAYOUT_H
#define DFS_FUSE_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

/*
 * DESIGN.md "Data model": with stripe unit U, stripe count C and chunk size S,
 * file offset o lies in chunk set o / (C*S); with r = o % (C*S) and stripe
 * s = r / U it is in chunk set*C + s % C at chunk-local offset
 * (s / C)*U + r % U.  A layout is valid when U > 0, C > 0, S > 0 and S is a
 * multiple of U (layout_valid); every function below requires a valid layout.
 * All functions are pure and thread-safe.
 */

/* One contiguous piece of a file range inside one chunk. */
struct layout_piece {
    uint64_t index;      /* chunk index within the file */
    uint64_t chunk_off;  /* offset inside the chunk */
    uint64_t file_off;   /* offset inside the file */
    uint32_t len;        /* bytes */
};

/* Nonzero when l can be used (see above). */
int layout_valid(const struct dfs_layout *l);

/* Map one file offset to its chunk index and chunk-local offset. */
void layout_map(const struct dfs_layout *l, uint64_t off, uint64_t *index, uint64_t *chunk_off);

/* Inverse of layout_map: the file offset of chunk_off inside chunk index. */
uint64_t layout_unmap(const struct dfs_layout *l, uint64_t index, uint64_t chunk_off);

/* Bytes from off to the end of its stripe unit (how far a piece may run). */
uint64_t layout_run(const struct dfs_layout *l, uint64_t off);

/*
 * Split the file range [off, off+len) into pieces, one per stripe unit (or
 * part of one), in file order.  Writes at most max pieces into out and
 * returns how many pieces the whole range needs (so a return > max means out
 * was too small).
 */
size_t layout_split(const struct dfs_layout *l, uint64_t off, uint64_t len,
                    struct layout_piece *out, size_t max);

/* Number of stripe-unit pieces [off, off+len) is cut into. */
size_t layout_npieces(const struct dfs_layout *l, uint64_t off, uint64_t len);

/*
 * The length a chunk must have so the file is `size` bytes long: the number
 * of bytes of chunk `index` that lie below file offset `size` (0 if none).
 */
uint64_t layout_chunk_len_for_size(const struct dfs_layout *l, uint64_t index, uint64_t size);

#endif /* DFS_FUSE_LAYOUT_H */
