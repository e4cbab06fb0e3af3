/* gen_seeds.c - writes valid frames (several ops, both kinds) as fuzz seeds.
 *
 *   cc -std=gnu11 -D_GNU_SOURCE -Icommon test/fuzz/gen_seeds.c build/lib/libdfscommon.a \
 *      $(pkg-config --libs libuv msgpack libxxhash) -o /tmp/gen_seeds && /tmp/gen_seeds
 * test/fuzz/seeds
 */
#include "codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int write_frames(const char *dir, const char *name, const unsigned (*list)[2], size_t n,
                        uint64_t seed)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    if (fp == NULL)
        return -1;
    /* First byte of a seed also picks the read sizes; a HELLO starts with 0. */
    for (size_t i = 0; i < n; i++) {
        void *body = codec_sample(list[i][0], list[i][1], seed + i);
        struct dfs_wbuf wb;
        if (body == NULL || codec_encode(&wb, list[i][0], seed + i, list[i][1], body) != DFS_OK) {
            free(body);
            continue;
        }
        fwrite(wb.data, 1, wb.len, fp);
        if (wb.bulk_len)
            fwrite(wb.bulk, 1, wb.bulk_len, fp);
        codec_wbuf_free(&wb);
        free(body);
    }
    return fclose(fp);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "test/fuzz/seeds";
    static const unsigned hello[][2] = {{0, 1}, {1, 1}};
    static const unsigned meta[][2] = {{0, 1}, {0, 10}, {1, 10}, {0, 24}, {1, 24}, {0, 20}};
    static const unsigned data[][2] = {{0, 80}, {1, 80}, {0, 81}, {1, 81}};
    static const unsigned admin[][2] = {{0, 51}, {1, 51}, {1, 40}, {0, 60}, {0, 62}};
    static const unsigned misc[][2] = {{2, 2}, {0, 2}, {1, 2}, {1, 41}, {0, 86}, {1, 87}};
    int rc = 0;
    rc |= write_frames(dir, "hello", hello, 2, 1);
    rc |= write_frames(dir, "meta", meta, 6, 100);
    rc |= write_frames(dir, "data", data, 4, 200);
    rc |= write_frames(dir, "admin", admin, 5, 300);
    rc |= write_frames(dir, "misc", misc, 6, 400);
    for (unsigned op = 1; op < 128; op++) {
        unsigned one[2][2] = {{0, op}, {1, op}};
        char name[32];
        snprintf(name, sizeof(name), "op%u", op);
        void *b = codec_sample(0, op, 1);
        if (b == NULL)
            continue;
        free(b);
        rc |= write_frames(dir, name, (const unsigned(*)[2])one, 2, op * 1000);
    }
    return rc ? 1 : 0;
}
