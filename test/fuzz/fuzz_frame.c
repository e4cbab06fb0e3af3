/* fuzz_frame.c - libFuzzer target: a byte stream through frame splitting and codec_decode. */
#include "codec.h"
#include "frame.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * The input is a TCP byte stream.  It is cut into reads of varying sizes
 * (chosen by the first input byte) and fed through frame_rd exactly as
 * rpc.c's read path does: into the reader, or straight into the body buffer
 * once a large enough body is under way.  Every frame is decoded; a frame
 * that decodes must survive encode -> decode -> encode byte for byte.
 */

#define FUZZ_MAX_FRAME (1u << 16)

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_frame: %s\n", what);
        abort();
    }
}

/* Flatten an encoded frame (header + body + bulk) into one malloc'ed body. */
static char *flatten_body(const struct dfs_wbuf *wb, size_t *len)
{
    size_t n = wb->len - DFS_FRAME_HDR + wb->bulk_len;
    check(frame_get_be32(wb->data) == n, "header length does not match the frame");
    char *p = malloc(n ? n : 1);
    check(p != NULL, "out of memory");
    memcpy(p, wb->data + DFS_FRAME_HDR, wb->len - DFS_FRAME_HDR);
    if (wb->bulk_len)
        memcpy(p + wb->len - DFS_FRAME_HDR, wb->bulk, wb->bulk_len);
    *len = n;
    return p;
}

static void roundtrip(const struct dfs_frame *f)
{
    struct dfs_wbuf w1, w2;
    char err[256];
    int rc = codec_encode(&w1, f->kind, f->req_id, f->op, f->body);
    check(rc == DFS_OK, "a decoded frame does not encode");
    size_t n;
    char *flat = flatten_body(&w1, &n);
    struct dfs_frame g;
    rc = codec_decode(flat, n, &g, err, sizeof(err));
    if (rc != DFS_OK) {
        fprintf(stderr, "re-decode: %s\n", err);
        check(0, "an encoded frame does not decode");
    }
    check(g.kind == f->kind && g.op == f->op && g.req_id == f->req_id, "header changed");
    check(g.kind != DFS_KIND_RESPONSE || g.status == f->status, "status changed");
    rc = codec_encode(&w2, g.kind, g.req_id, g.op, g.body);
    check(rc == DFS_OK, "a re-decoded frame does not encode");
    check(w1.len == w2.len && memcmp(w1.data, w2.data, w1.len) == 0, "encoding changed");
    check(w1.bulk_len == w2.bulk_len &&
              (w1.bulk_len == 0 || memcmp(w1.bulk, w2.bulk, w1.bulk_len) == 0),
          "bulk changed");
    codec_wbuf_free(&w1);
    codec_wbuf_free(&w2);
    codec_frame_free(&g);
}

static int on_body(void *arg, char *body, uint32_t len)
{
    struct dfs_frame f;
    char err[256];
    unsigned *frames = arg;

    (*frames)++;
    memset(&f, 0, sizeof(f));
    int rc = codec_decode(body, len, &f, err, sizeof(err));
    if (rc != DFS_OK) {
        check(err[0] != '\0', "decode failed without a reason");
        free(body); /* still ours on error */
        /* rpc.c answers DFS_ENOSYS and goes on; other errors close. */
        return rc == DFS_ENOSYS ? 0 : 1;
    }
    roundtrip(&f);
    codec_frame_free(&f);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t steps[8] = {1, 3, 7, 64, 4096, 2, 5, 65536};
    struct frame_rd r;
    char err[256];
    unsigned frames = 0;
    size_t pat = size ? data[0] : 0;
    size_t off = 0, i = 0;

    frame_rd_init(&r, FUZZ_MAX_FRAME);
    while (off < size) {
        size_t step = steps[(pat + i++) % 8];
        size_t k = size - off < step ? size - off : step;
        size_t room = 0;
        char *direct = frame_rd_direct(&r, 16, &room);
        int rc;
        if (direct != NULL) {
            k = k < room ? k : room;
            memcpy(direct, data + off, k);
            rc = frame_rd_direct_done(&r, k, on_body, &frames);
        } else {
            rc = frame_rd_feed(&r, (const char *)data + off, k, on_body, &frames, err, sizeof(err));
            if (rc < 0)
                check(err[0] != '\0', "splitter failed without a reason");
        }
        off += k;
        if (rc != 0)
            break;
    }
    frame_rd_reset(&r);
    return 0;
}
