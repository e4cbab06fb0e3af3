/* frame.h - split a TCP byte stream into length-prefixed frame bodies (pure, no I/O). */
#ifndef DFS_FRAME_H
#define DFS_FRAME_H

#include <stddef.h>
#include <stdint.h>

/*
 * A frame on the wire is a 4-byte big-endian body length followed by the body
 * (proto.h).  struct frame_rd accumulates bytes as they arrive, checks every
 * length against `max` before allocating, and hands each complete body, in a
 * buffer malloc'ed to exactly its size, to a callback.  rpc.c and the fuzz
 * target share this code, so what the fuzzer covers is what the daemons run.
 */

/* Errors returned by frame_rd_feed() (negative; a callback's own nonzero
 * return value is passed through unchanged). */
enum {
    FRAME_ETOOBIG = -1, /* length above the maximum */
    FRAME_EEMPTY = -2,  /* zero-length body (never valid) */
    FRAME_ENOMEM = -3,
};

struct frame_rd {
    uint32_t max; /* largest body accepted */
    uint32_t hdr_got;
    uint8_t hdr[4];
    char *body;   /* body being filled, NULL between frames */
    uint32_t len; /* its size */
    uint32_t got; /* bytes filled so far */
};

/* Receives one complete body; owns `body` (malloc'ed, exactly `len` bytes).
 * Return 0 to go on, nonzero to stop (frame_rd_feed then returns it). */
typedef int (*frame_fn)(void *arg, char *body, uint32_t len);

void frame_rd_init(struct frame_rd *r, uint32_t max);
/* Drop a partial frame (free its buffer) and start over. */
void frame_rd_reset(struct frame_rd *r);

/*
 * Consume n bytes.  Calls fn for every frame completed, in order.  Returns 0,
 * a FRAME_E* error with a one-line reason in err (the reader is then in an
 * undefined state: reset it or drop the connection), or fn's nonzero return.
 */
int frame_rd_feed(struct frame_rd *r, const char *p, size_t n, frame_fn fn, void *arg, char *err,
                  size_t errlen);

/*
 * Zero-copy receive: when a body is partly read and at least `min` bytes of
 * it are still missing, returns where the next bytes go and how many fit
 * (*room); else NULL.  After reading k <= *room bytes there, call
 * frame_rd_direct_done(r, k, fn, arg), which delivers the body once complete.
 */
char *frame_rd_direct(struct frame_rd *r, size_t min, size_t *room);
int frame_rd_direct_done(struct frame_rd *r, size_t k, frame_fn fn, void *arg);

static inline uint32_t frame_get_be32(const void *p)
{
    const uint8_t *b = p;
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static inline void frame_put_be32(void *p, uint32_t v)
{
    uint8_t *b = p;
    b[0] = (uint8_t)(v >> 24);
    b[1] = (uint8_t)(v >> 16);
    b[2] = (uint8_t)(v >> 8);
    b[3] = (uint8_t)v;
}

#endif /* DFS_FRAME_H */
