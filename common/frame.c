/* frame.c - split a TCP byte stream into length-prefixed frame bodies. */
#include "frame.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FRAME_MIN(a, b) ((a) < (b) ? (a) : (b))

void frame_rd_init(struct frame_rd *r, uint32_t max)
{
    memset(r, 0, sizeof(*r));
    r->max = max;
}

void frame_rd_reset(struct frame_rd *r)
{
    free(r->body);
    r->body = NULL;
    r->hdr_got = 0;
    r->len = r->got = 0;
}

/* The body is complete: hand it over and get ready for the next header. */
static int deliver(struct frame_rd *r, frame_fn fn, void *arg)
{
    char *body = r->body;
    uint32_t len = r->len;

    r->body = NULL;
    r->hdr_got = 0;
    r->len = r->got = 0;
    return fn(arg, body, len);
}

int frame_rd_feed(struct frame_rd *r, const char *p, size_t n, frame_fn fn, void *arg, char *err,
                  size_t errlen)
{
    while (n > 0) {
        if (r->body == NULL) {
            size_t k = FRAME_MIN(4 - r->hdr_got, n);
            memcpy(r->hdr + r->hdr_got, p, k);
            r->hdr_got += (uint32_t)k;
            p += k;
            n -= k;
            if (r->hdr_got < 4)
                return 0;
            uint32_t len = frame_get_be32(r->hdr);
            if (len == 0) {
                snprintf(err, errlen, "empty frame");
                return FRAME_EEMPTY;
            }
            /* Checked before anything is allocated (proto.h). */
            if (len > r->max) {
                snprintf(err, errlen, "frame of %u bytes exceeds the limit of %u", len, r->max);
                return FRAME_ETOOBIG;
            }
            r->body = malloc(len);
            if (r->body == NULL) {
                snprintf(err, errlen, "out of memory for a frame of %u bytes", len);
                return FRAME_ENOMEM;
            }
            r->len = len;
            r->got = 0;
        }
        size_t k = FRAME_MIN((size_t)(r->len - r->got), n);
        memcpy(r->body + r->got, p, k);
        r->got += (uint32_t)k;
        p += k;
        n -= k;
        if (r->got == r->len) {
            int rc = deliver(r, fn, arg);
            if (rc != 0)
                return rc;
        }
    }
    return 0;
}

char *frame_rd_direct(struct frame_rd *r, size_t min, size_t *room)
{
    if (r->body == NULL || r->len - r->got < min)
        return NULL;
    *room = r->len - r->got;
    return r->body + r->got;
}

int frame_rd_direct_done(struct frame_rd *r, size_t k, frame_fn fn, void *arg)
{
    r->got += (uint32_t)k;
    if (r->got == r->len)
        return deliver(r, fn, arg);
    return 0;
}
