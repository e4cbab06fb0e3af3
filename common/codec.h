/* codec.h - frames <-> typed message structs; the only user of msgpack-c. */
#ifndef DFS_CODEC_H
#define DFS_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

/*
 * A decoded frame.  `body` points to the typed message struct selected by
 * (kind, op): struct dfs_msg_<request type> for DFS_KIND_REQUEST/PUSH and
 * struct dfs_msg_<response type> for DFS_KIND_RESPONSE (see DFS_OPS in
 * proto.h).  Strings, bins and arrays in the body point into memory owned by
 * the frame; everything is released by codec_frame_free().
 */
struct dfs_frame {
    uint8_t kind;
    uint16_t op;
    uint64_t req_id;
    uint32_t status; /* responses: the status field (also inside body) */
    void *body;
    /* private to the codec */
    void *buf;   /* the frame body bytes (malloc'ed), owned */
    size_t len;
    void *zone;  /* allocation arena for decoded arrays and strings */
};

/* An encoded frame ready to send: `data[0..len)` (4-byte header included)
 * followed by `bulk[0..bulk_len)` when the message has a BULK field. The
 * header's length covers both.  `data` is malloc'ed and owned by the wbuf;
 * `bulk` is borrowed from the body that was encoded. */
struct dfs_wbuf {
    char *data;
    size_t len;
    size_t cap;
    const void *bulk;
    uint32_t bulk_len;
};

/*
 * Encode one frame.  `body` must point to the struct matching (kind, op).
 * Returns DFS_OK, DFS_EINVAL for an unknown op, DFS_E2BIG if the frame would
 * exceed DFS_MAX_FRAME_ANY, DFS_ENOMEM.  Thread-safe (no shared state).
 * On success the caller owns wb->data (codec_wbuf_free()).
 */
int codec_encode(struct dfs_wbuf *wb, unsigned kind, uint64_t req_id, unsigned op,
                 const void *body);

/* Encode a response carrying only a status (valid for every op). */
int codec_encode_status(struct dfs_wbuf *wb, uint64_t req_id, unsigned op, uint32_t status);

void codec_wbuf_free(struct dfs_wbuf *wb);

/* Overwrite the req_id of an encoded frame in place.  The encoder writes a
 * u64 in the shortest msgpack form, so callers that encode ahead of time use
 * UINT64_MAX as a placeholder: that forces the 9-byte form [0xcf + 8 bytes]
 * at a fixed offset, which any msgpack reader accepts for a smaller value
 * too.  DFS_EINVAL if the frame was not encoded that way. */
int codec_wbuf_set_req_id(struct dfs_wbuf *wb, uint64_t id);

/*
 * Decode one frame body (the bytes after the 4-byte length header).
 * On DFS_OK, `f` owns `buf` (which must be malloc'ed) and must be released
 * with codec_frame_free().  On error `buf` is still the caller's, `err`
 * holds a one-line reason, and f->kind/op/req_id are filled in as far as
 * they could be read; DFS_ENOSYS means a well-formed frame with an unknown
 * op (a server may answer it with a status), anything else (DFS_EPROTO)
 * means the peer is broken and the connection should be closed.
 * Never asserts on input; every type and length is checked.
 */
int codec_decode(void *buf, size_t len, struct dfs_frame *f, char *err, size_t errlen);

void codec_frame_free(struct dfs_frame *f);

/* Size of the body struct for (kind, op), 0 if unknown (tests, fuzzing). */
size_t codec_body_size(unsigned kind, unsigned op);

/* Allocate `n` bytes that live as long as the frame (e.g. to build a reply
 * that points into it).  Returns NULL on failure. */
void *codec_frame_alloc(struct dfs_frame *f, size_t n);

/* Tests and fuzz seeds: a body for (kind, op) filled with pseudo-random
 * values derived from seed (arrays, strings and bins included).  One malloc'ed
 * block; release it with free().  NULL for an unknown op. */
void *codec_sample(unsigned kind, unsigned op, uint64_t seed);

#endif /* DFS_CODEC_H */
