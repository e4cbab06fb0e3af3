/* layout.c - pure striping math (see layout.h and DESIGN.md "Data model"). */
#include "layout.h"

int layout_valid(const struct dfs_layout *l)
{
    return l && l->stripe_unit > 0 && l->stripe_count > 0 && l->chunk_size > 0 &&
           l->chunk_size % l->stripe_unit == 0;
}

void layout_map(const struct dfs_layout *l, uint64_t off, uint64_t *index, uint64_t *chunk_off)
{
    uint64_t u = l->stripe_unit, c = l->stripe_count;
    uint64_t setsz = c * l->chunk_size;
    uint64_t set = off / setsz, r = off % setsz, s = r / u;
    *index = set * c + s % c;
    *chunk_off = (s / c) * u + r % u;
}

uint64_t layout_unmap(const struct dfs_layout *l, uint64_t index, uint64_t chunk_off)
{
    uint64_t u = l->stripe_unit, c = l->stripe_count;
    uint64_t set = index / c, col = index % c;
    uint64_t row = chunk_off / u; /* stripe row inside the chunk set */
    uint64_t s = row * c + col;
    return set * c * l->chunk_size + s * u + chunk_off % u;
}

uint64_t layout_run(const struct dfs_layout *l, uint64_t off)
{
    return l->stripe_unit - off % l->stripe_unit;
}

size_t layout_split(const struct dfs_layout *l, uint64_t off, uint64_t len,
                    struct layout_piece *out, size_t max)
{
    size_t n = 0;
    while (len > 0) {
        uint64_t run = layout_run(l, off);
        if (run > len)
            run = len;
        if (n < max) {
            out[n].file_off = off;
            out[n].len = (uint32_t)run;
            layout_map(l, off, &out[n].index, &out[n].chunk_off);
        }
        n++;
        off += run;
        len -= run;
    }
    return n;
}

size_t layout_npieces(const struct dfs_layout *l, uint64_t off, uint64_t len)
{
    if (len == 0)
        return 0;
    uint64_t u = l->stripe_unit;
    return (size_t)((off + len - 1) / u - off / u + 1);
}

uint64_t layout_chunk_len_for_size(const struct dfs_layout *l, uint64_t index, uint64_t size)
{
    uint64_t u = l->stripe_unit, c = l->stripe_count, s = l->chunk_size;
    uint64_t set = index / c, col = index % c;
    uint64_t base = set * c * s; /* first file offset of this chunk set */
    if (size <= base)
        return 0;
    uint64_t r = size - base;
    if (r >= c * s)
        return s;
    /* Full stripe rows below r, plus the partial row. */
    uint64_t rows = r / (u * c), rem = r % (u * c);
    uint64_t len = rows * u;
    if (rem > col * u)
        len += ((rem - col * u) < u ? (rem - col * u) : u);
    return len;
}
