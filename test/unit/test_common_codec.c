/* test_common_codec.c - codec round trips for every message, malformed input. */
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "checksum.h"
#include "codec.h"
#include "config.h"
#include "testlib.h"
#include "util.h"

/* Encode, decode, re-encode: the two encodings must be byte-identical (so
 * every field, string, bin and array survived), for every op and kind. */
static void roundtrip(unsigned kind, unsigned op, uint64_t seed)
{
    void *body = codec_sample(kind, op, seed);
    ck_assert_ptr_nonnull(body);
    struct dfs_wbuf w1, w2;
    ck_assert_int_eq(codec_encode(&w1, kind, 12345 + seed, op, body), DFS_OK);
    /* Flatten (header + bulk) like the wire does, then decode the body part. */
    size_t blen = w1.len - DFS_FRAME_HDR + w1.bulk_len;
    uint32_t hdr = ((uint32_t)(uint8_t)w1.data[0] << 24) | ((uint32_t)(uint8_t)w1.data[1] << 16) |
                   ((uint32_t)(uint8_t)w1.data[2] << 8) | (uint8_t)w1.data[3];
    ck_assert_uint_eq(hdr, blen);
    char *flat = malloc(blen ? blen : 1);
    memcpy(flat, w1.data + DFS_FRAME_HDR, w1.len - DFS_FRAME_HDR);
    if (w1.bulk_len)
        memcpy(flat + w1.len - DFS_FRAME_HDR, w1.bulk, w1.bulk_len);
    struct dfs_frame f;
    char err[256];
    int st = codec_decode(flat, blen, &f, err, sizeof(err));
    ck_assert_msg(st == DFS_OK, "op %u kind %u: %s", op, kind, err);
    ck_assert_uint_eq(f.kind, kind);
    ck_assert_uint_eq(f.op, op);
    ck_assert_uint_eq(f.req_id, 12345 + seed);
    ck_assert_int_eq(codec_encode(&w2, kind, f.req_id, op, f.body), DFS_OK);
    ck_assert_uint_eq(w1.len, w2.len);
    ck_assert_uint_eq(w1.bulk_len, w2.bulk_len);
    ck_assert(memcmp(w1.data, w2.data, w1.len) == 0);
    if (w1.bulk_len)
        ck_assert(memcmp(w1.bulk, w2.bulk, w1.bulk_len) == 0);
    if (kind == DFS_KIND_RESPONSE)
        ck_assert_uint_eq(f.status, *(uint32_t *)body);
    codec_wbuf_free(&w1);
    codec_wbuf_free(&w2);
    codec_frame_free(&f);
    free(body);
}

START_TEST(test_roundtrip_every_op)
{
    unsigned n = 0;
    for (unsigned op = 0; op < DFS_OP_MAX; op++) {
        if (dfs_op_name(op) == NULL)
            continue;
        for (uint64_t seed = 1; seed <= 20; seed++) {
            roundtrip(DFS_KIND_REQUEST, op, seed * 7919);
            roundtrip(DFS_KIND_RESPONSE, op, seed * 104729);
        }
        n++;
    }
    ck_assert_uint_ge(n, 38);
}
END_TEST

START_TEST(test_fields_by_hand)
{
    struct dfs_replica chain[2] = {{.server_id = 7, .host = {"127.0.0.1", 9}, .port = 9531},
                                   {.server_id = 8, .host = {"10.0.0.2", 8}, .port = 9532}};
    char data[100000];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (char)(i * 31);
    struct dfs_msg_write w = {.chunk_id = 0x1122334455667788ull, .version = 3, .offset = 65536,
                              .flags = DFS_WF_CREATE, .chain = chain, .chain_count = 2,
                              .csum = csum_buf(data, sizeof(data)),
                              .data = {data, sizeof(data)}};
    struct dfs_wbuf wb;
    ck_assert_int_eq(codec_encode(&wb, DFS_KIND_REQUEST, 99, DFS_OP_WRITE, &w), DFS_OK);
    ck_assert_ptr_eq(wb.bulk, data); /* bulk is not copied */
    size_t blen = wb.len - DFS_FRAME_HDR + wb.bulk_len;
    char *flat = malloc(blen);
    memcpy(flat, wb.data + DFS_FRAME_HDR, wb.len - DFS_FRAME_HDR);
    memcpy(flat + wb.len - DFS_FRAME_HDR, data, sizeof(data));
    struct dfs_frame f;
    char err[128];
    ck_assert_int_eq(codec_decode(flat, blen, &f, err, sizeof(err)), DFS_OK);
    struct dfs_msg_write *d = f.body;
    ck_assert_uint_eq(d->chunk_id, w.chunk_id);
    ck_assert_uint_eq(d->version, 3);
    ck_assert_uint_eq(d->offset, 65536);
    ck_assert_uint_eq(d->chain_count, 2);
    ck_assert_str_eq(d->chain[1].host.ptr, "10.0.0.2");
    ck_assert_uint_eq(d->chain[1].port, 9532);
    ck_assert_uint_eq(d->data.len, sizeof(data));
    ck_assert(memcmp(d->data.ptr, data, sizeof(data)) == 0);
    ck_assert_uint_eq(csum_buf(d->data.ptr, d->data.len), w.csum);
    codec_frame_free(&f);
    codec_wbuf_free(&wb);
}
END_TEST

START_TEST(test_status_only_response)
{
    struct dfs_wbuf wb;
    ck_assert_int_eq(codec_encode_status(&wb, 5, DFS_OP_CHUNKS, DFS_ENOENT), DFS_OK);
    void *buf = malloc(wb.len);
    memcpy(buf, wb.data + 4, wb.len - 4);
    struct dfs_frame f;
    char err[128];
    ck_assert_int_eq(codec_decode(buf, wb.len - 4, &f, err, sizeof(err)), DFS_OK);
    ck_assert_uint_eq(f.status, DFS_ENOENT);
    struct dfs_msg_chunks_resp *r = f.body;
    ck_assert_uint_eq(r->chunks_count, 0); /* missing fields are zero */
    ck_assert_ptr_null(r->chunks);
    codec_frame_free(&f);
    codec_wbuf_free(&wb);
}
END_TEST

static int decode_bytes(const void *p, size_t n)
{
    void *buf = malloc(n ? n : 1);
    memcpy(buf, p, n);
    struct dfs_frame f;
    char err[128];
    int st = codec_decode(buf, n, &f, err, sizeof(err));
    if (st == DFS_OK)
        codec_frame_free(&f);
    else
        free(buf);
    return st;
}

START_TEST(test_malformed)
{
    /* not an array */
    ck_assert_int_eq(decode_bytes("\x01", 1), DFS_EPROTO);
    /* truncated msgpack */
    ck_assert_int_eq(decode_bytes("\x94\x00", 2), DFS_EPROTO);
    /* unknown op -> ENOSYS with the header filled */
    ck_assert_int_eq(decode_bytes("\x94\x00\x07\xcd\x03\xe7\x90", 7), DFS_ENOSYS);
    /* LOOKUP with a string where the cred object should be */
    ck_assert_int_eq(decode_bytes("\x94\x00\x01\x0a\x91\xa1x", 7), DFS_EPROTO);
    /* u32 field with a value > 2^32 */
    ck_assert_int_eq(decode_bytes("\x94\x01\x01\x02\x91\xcf\x00\x00\x00\x01\x00\x00\x00\x00", 14),
                     DFS_EPROTO);
    /* trailing garbage */
    ck_assert_int_eq(decode_bytes("\x94\x00\x01\x02\x90\x00", 6), DFS_EPROTO);
    /* kind out of range */
    ck_assert_int_eq(decode_bytes("\x94\x05\x01\x02\x90", 5), DFS_EPROTO);
    /* array claiming 2^32-1 elements in 10 bytes must not allocate that much */
    ck_assert_int_eq(decode_bytes("\x94\x00\x01\x02\xdd\xff\xff\xff\xff\x00", 10), DFS_EPROTO);
    /* 65535-element array in a 7-byte frame: rejected before any allocation */
    ck_assert_int_eq(decode_bytes("\x94\x00\x01\x02\xdc\xff\xff", 7), DFS_EPROTO);
    /* 0xc1 is never valid msgpack */
    ck_assert_int_eq(decode_bytes("\x94\x00\x01\x02\xc1", 5), DFS_EPROTO);
    /* a bin whose length runs past the end */
    ck_assert_int_eq(decode_bytes("\x94\x00\x01\x02\x91\xc6\x00\x10\x00\x00", 10), DFS_EPROTO);
    /* a well-formed PING */
    ck_assert_int_eq(decode_bytes("\x94\x00\x01\x02\x90", 5), DFS_OK);
}
END_TEST

START_TEST(test_strerror_and_errno)
{
    ck_assert_str_eq(dfs_strerror(DFS_OK), "success");
    ck_assert_str_eq(dfs_strerror(DFS_ECORRUPT), "checksum mismatch: data corrupt");
    ck_assert_str_eq(dfs_strerror(9999), "unknown status");
    for (int s = 0; s < DFS_STATUS_COUNT; s++)
        ck_assert_str_ne(dfs_strerror(s), "unknown status");
    ck_assert_int_eq(dfs_status_to_errno(DFS_ENOENT), 2);
    ck_assert_int_eq(dfs_errno_to_status(2), DFS_ENOENT);
    ck_assert_int_eq(dfs_status_to_errno(DFS_ECORRUPT), 5);
}
END_TEST

START_TEST(test_checksum_blocks)
{
    size_t n = 3 * DFS_BLOCK_SIZE + 100;
    char *p = malloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = (char)(i ^ (i >> 8));
    uint64_t sums[4];
    ck_assert_uint_eq(csum_nblocks(n), 4);
    csum_blocks(p, n, sums);
    ck_assert_uint_eq(sums[0], csum_buf(p, DFS_BLOCK_SIZE));
    ck_assert_uint_eq(sums[3], csum_buf(p + 3 * DFS_BLOCK_SIZE, 100));
    p[DFS_BLOCK_SIZE + 5] ^= 1;
    ck_assert_uint_ne(csum_buf(p + DFS_BLOCK_SIZE, DFS_BLOCK_SIZE), sums[1]);
    free(p);
}
END_TEST

TEST_SUITE(codec)
{
    Suite *s = suite_create("codec");
    TCase *tc = tcase_create("codec");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_roundtrip_every_op);
    tcase_add_test(tc, test_fields_by_hand);
    tcase_add_test(tc, test_status_only_response);
    tcase_add_test(tc, test_malformed);
    tcase_add_test(tc, test_strerror_and_errno);
    tcase_add_test(tc, test_checksum_blocks);
    suite_add_tcase(s, tc);
    return s;
}
