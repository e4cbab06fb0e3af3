/* codec.c - table-driven msgpack encoding and decoding of every dfs message. */
#include "codec.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

/*
 * Every struct in proto.h has a descriptor table (codec_tables.h, generated
 * from the same X-macro lists that generate the structs), so one encoder and
 * one decoder serve every message.  A struct is encoded as a msgpack array of
 * its fields in order; OBJ fields nest arrays, ARR fields are arrays of
 * arrays.  Decoding checks every type and range; decoded arrays and strings
 * live in the msgpack zone of the frame, bins point into the frame buffer.
 */

enum ftype { FT_END, FT_U32, FT_U64, FT_I64, FT_STR, FT_BIN, FT_BULK, FT_U64V, FT_ARR, FT_OBJ };

struct mdesc;
struct fdesc {
    uint8_t type;
    uint32_t off;       /* offset of the field */
    uint32_t count_off; /* U64V/ARR: offset of the <name>_count field */
    const struct mdesc *sub;
};
struct mdesc {
    const char *name;
    uint32_t size;
    const struct fdesc *f;
};

#define DF(kind, ...) DF_##kind(__VA_ARGS__)
#define DF_U32(n) {FT_U32, offsetof(CUR, n), 0, NULL},
#define DF_U64(n) {FT_U64, offsetof(CUR, n), 0, NULL},
#define DF_I64(n) {FT_I64, offsetof(CUR, n), 0, NULL},
#define DF_STR(n) {FT_STR, offsetof(CUR, n), 0, NULL},
#define DF_BIN(n) {FT_BIN, offsetof(CUR, n), 0, NULL},
#define DF_BULK(n) {FT_BULK, offsetof(CUR, n), 0, NULL},
#define DF_U64V(n) {FT_U64V, offsetof(CUR, n), offsetof(CUR, n##_count), NULL},
#define DF_ARR(n, t) {FT_ARR, offsetof(CUR, n), offsetof(CUR, n##_count), &md_##t},
#define DF_OBJ(n, t) {FT_OBJ, offsetof(CUR, n), 0, &md_##t},

#include "codec_tables.h"

struct opdesc {
    const char *name;
    const struct mdesc *req;
    const struct mdesc *resp;
};

static const struct opdesc ops[DFS_OP_MAX] = {
#define X_OPDESC(op, v, nm, rq, rs) [v] = {nm, &mdm_##rq, &mdm_##rs},
    DFS_OPS(X_OPDESC)
#undef X_OPDESC
};

static const char *const status_names[] = {
#define X_STR(n, v, s) [v] = s,
    DFS_STATUS_MAP(X_STR)
#undef X_STR
};

const char *dfs_strerror(int status)
{
    if (status < 0 || (size_t)status >= sizeof(status_names) / sizeof(status_names[0]) ||
        status_names[status] == NULL)
        return "unknown status";
    return status_names[status];
}

const char *dfs_op_name(unsigned op)
{
    return op < DFS_OP_MAX ? ops[op].name : NULL;
}

static const struct mdesc *body_desc(unsigned kind, unsigned op)
{
    if (op >= DFS_OP_MAX || ops[op].name == NULL)
        return NULL;
    return kind == DFS_KIND_RESPONSE ? ops[op].resp : ops[op].req;
}

size_t codec_body_size(unsigned kind, unsigned op)
{
    const struct mdesc *d = body_desc(kind, op);
    return d ? d->size : 0;
}

/* ----- encoding ----- */

static int wbuf_write(void *data, const char *buf, size_t len)
{
    struct dfs_wbuf *wb = data;
    if (wb->len + len > wb->cap) {
        size_t cap = wb->cap ? wb->cap : 256;
        while (cap < wb->len + len)
            cap *= 2;
        char *p = realloc(wb->data, cap);
        if (p == NULL)
            return -1;
        wb->data = p;
        wb->cap = cap;
    }
    memcpy(wb->data + wb->len, buf, len);
    wb->len += len;
    return 0;
}

static int fields_count(const struct mdesc *d)
{
    int n = 0;
    while (d->f[n].type != FT_END)
        n++;
    return n;
}

static int encode_struct(msgpack_packer *pk, struct dfs_wbuf *wb, const struct mdesc *d,
                         const char *base, int top)
{
    int n = fields_count(d);
    if (msgpack_pack_array(pk, (size_t)n) != 0)
        return DFS_ENOMEM;
    for (int i = 0; i < n; i++) {
        const struct fdesc *f = &d->f[i];
        const char *p = base + f->off;
        int rc = 0;
        switch (f->type) {
        case FT_U32:
            rc = msgpack_pack_uint32(pk, *(const uint32_t *)p);
            break;
        case FT_U64:
            rc = msgpack_pack_uint64(pk, *(const uint64_t *)p);
            break;
        case FT_I64:
            rc = msgpack_pack_int64(pk, *(const int64_t *)p);
            break;
        case FT_STR: {
            const struct dfs_str *s = (const struct dfs_str *)p;
            uint32_t len = s->ptr ? s->len : 0;
            rc = msgpack_pack_str(pk, len);
            if (rc == 0 && len)
                rc = msgpack_pack_str_body(pk, s->ptr, len);
            break;
        }
        case FT_BIN: {
            const struct dfs_bin *b = (const struct dfs_bin *)p;
            uint32_t len = b->ptr ? b->len : 0;
            rc = msgpack_pack_bin(pk, len);
            if (rc == 0 && len)
                rc = msgpack_pack_bin_body(pk, b->ptr, len);
            break;
        }
        case FT_BULK: {
            const struct dfs_bin *b = (const struct dfs_bin *)p;
            uint32_t len = b->ptr ? b->len : 0;
            if (!top || i != n - 1)
                return DFS_EINVAL;
            rc = msgpack_pack_bin(pk, len);
            wb->bulk = len ? b->ptr : NULL;
            wb->bulk_len = len;
            break;
        }
        case FT_U64V: {
            const uint64_t *v = *(uint64_t *const *)p;
            uint32_t cnt = *(const uint32_t *)(base + f->count_off);
            rc = msgpack_pack_array(pk, cnt);
            for (uint32_t j = 0; rc == 0 && j < cnt; j++)
                rc = msgpack_pack_uint64(pk, v[j]);
            break;
        }
        case FT_ARR: {
            const char *v = *(const char *const *)p;
            uint32_t cnt = *(const uint32_t *)(base + f->count_off);
            rc = msgpack_pack_array(pk, cnt);
            for (uint32_t j = 0; rc == 0 && j < cnt; j++) {
                int st = encode_struct(pk, wb, f->sub, v + (size_t)j * f->sub->size, 0);
                if (st != DFS_OK)
                    return st;
            }
            break;
        }
        case FT_OBJ: {
            int st = encode_struct(pk, wb, f->sub, p, 0);
            if (st != DFS_OK)
                return st;
            break;
        }
        default:
            return DFS_EINVAL;
        }
        if (rc != 0)
            return DFS_ENOMEM;
    }
    return DFS_OK;
}

static int encode_frame(struct dfs_wbuf *wb, unsigned kind, uint64_t req_id, unsigned op,
                        const struct mdesc *d, const void *body)
{
    memset(wb, 0, sizeof(*wb));
    msgpack_packer pk;
    msgpack_packer_init(&pk, wb, wbuf_write);
    char hdr[DFS_FRAME_HDR] = {0};
    int st = DFS_ENOMEM;
    if (wbuf_write(wb, hdr, sizeof(hdr)) != 0)
        goto err;
    if (msgpack_pack_array(&pk, 4) != 0 || msgpack_pack_uint8(&pk, (uint8_t)kind) != 0 ||
        msgpack_pack_uint64(&pk, req_id) != 0 || msgpack_pack_uint16(&pk, (uint16_t)op) != 0)
        goto err;
    if (d != NULL) {
        st = encode_struct(&pk, wb, d, body, 1);
        if (st != DFS_OK)
            goto err;
    }
    uint64_t blen = wb->len - DFS_FRAME_HDR + wb->bulk_len;
    if (blen > DFS_MAX_FRAME_ANY) {
        st = DFS_E2BIG;
        goto err;
    }
    wb->data[0] = (char)(blen >> 24);
    wb->data[1] = (char)(blen >> 16);
    wb->data[2] = (char)(blen >> 8);
    wb->data[3] = (char)blen;
    return DFS_OK;
err:
    codec_wbuf_free(wb);
    return st;
}

int codec_encode(struct dfs_wbuf *wb, unsigned kind, uint64_t req_id, unsigned op,
                 const void *body)
{
    const struct mdesc *d = body_desc(kind, op);
    if (d == NULL || kind > DFS_KIND_PUSH) {
        memset(wb, 0, sizeof(*wb));
        return DFS_EINVAL;
    }
    return encode_frame(wb, kind, req_id, op, d, body);
}

int codec_encode_status(struct dfs_wbuf *wb, uint64_t req_id, unsigned op, uint32_t status)
{
    struct dfs_msg_status s = {.status = status};
    return encode_frame(wb, DFS_KIND_RESPONSE, req_id, op, &mdm_status, &s);
}

int codec_wbuf_set_req_id(struct dfs_wbuf *wb, uint64_t id)
{
    uint8_t *d = (uint8_t *)wb->data;
    if (wb->len < DFS_FRAME_HDR + 11 || d[4] != 0x94 || d[5] > 0x7f || d[6] != 0xcf)
        return DFS_EINVAL;
    for (int i = 0; i < 8; i++)
        d[7 + i] = (uint8_t)(id >> (56 - 8 * i));
    return DFS_OK;
}

void codec_wbuf_free(struct dfs_wbuf *wb)
{
    free(wb->data);
    wb->data = NULL;
    wb->len = wb->cap = 0;
    wb->bulk = NULL;
    wb->bulk_len = 0;
}

/* ----- decoding ----- */

struct dctx {
    msgpack_zone *zone;
    char *err;
    size_t errlen;
};

static int derr(struct dctx *c, const char *what, const struct mdesc *d, int field)
{
    if (c->err && c->errlen)
        snprintf(c->err, c->errlen, "malformed %s: field %d of %s", what, field, d->name);
    return DFS_EPROTO;
}

static int get_u64(const msgpack_object *o, uint64_t *out)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return -1;
    *out = o->via.u64;
    return 0;
}

static int decode_struct(struct dctx *c, const struct mdesc *d, const msgpack_object *o,
                         char *base)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return derr(c, "struct (not an array)", d, -1);
    uint32_t have = o->via.array.size;
    const msgpack_object *v = o->via.array.ptr;
    for (uint32_t i = 0; d->f[i].type != FT_END; i++) {
        const struct fdesc *f = &d->f[i];
        char *p = base + f->off;
        if (i >= have)
            break; /* missing trailing fields stay zero */
        const msgpack_object *e = &v[i];
        uint64_t u;
        switch (f->type) {
        case FT_U32:
            if (get_u64(e, &u) != 0 || u > UINT32_MAX)
                return derr(c, "u32", d, (int)i);
            *(uint32_t *)p = (uint32_t)u;
            break;
        case FT_U64:
            if (get_u64(e, &u) != 0)
                return derr(c, "u64", d, (int)i);
            *(uint64_t *)p = u;
            break;
        case FT_I64:
            if (e->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
                *(int64_t *)p = e->via.i64;
            else if (e->type == MSGPACK_OBJECT_POSITIVE_INTEGER && e->via.u64 <= INT64_MAX)
                *(int64_t *)p = (int64_t)e->via.u64;
            else
                return derr(c, "i64", d, (int)i);
            break;
        case FT_STR: {
            if (e->type != MSGPACK_OBJECT_STR)
                return derr(c, "str", d, (int)i);
            uint32_t len = e->via.str.size;
            char *s = msgpack_zone_malloc(c->zone, (size_t)len + 1);
            if (s == NULL)
                return DFS_ENOMEM;
            if (len)
                memcpy(s, e->via.str.ptr, len);
            s[len] = '\0';
            ((struct dfs_str *)p)->ptr = s;
            ((struct dfs_str *)p)->len = len;
            break;
        }
        case FT_BIN:
        case FT_BULK:
            if (e->type != MSGPACK_OBJECT_BIN)
                return derr(c, "bin", d, (int)i);
            ((struct dfs_bin *)p)->ptr = e->via.bin.ptr;
            ((struct dfs_bin *)p)->len = e->via.bin.size;
            break;
        case FT_U64V: {
            if (e->type != MSGPACK_OBJECT_ARRAY)
                return derr(c, "u64 array", d, (int)i);
            uint32_t cnt = e->via.array.size;
            uint64_t *arr = NULL;
            if (cnt) {
                arr = msgpack_zone_malloc(c->zone, (size_t)cnt * sizeof(uint64_t));
                if (arr == NULL)
                    return DFS_ENOMEM;
                for (uint32_t j = 0; j < cnt; j++)
                    if (get_u64(&e->via.array.ptr[j], &arr[j]) != 0)
                        return derr(c, "u64 array element", d, (int)i);
            }
            *(uint64_t **)p = arr;
            *(uint32_t *)(base + f->count_off) = cnt;
            break;
        }
        case FT_ARR: {
            if (e->type != MSGPACK_OBJECT_ARRAY)
                return derr(c, "array", d, (int)i);
            uint32_t cnt = e->via.array.size;
            char *arr = NULL;
            if (cnt) {
                size_t sz = (size_t)cnt * f->sub->size;
                arr = msgpack_zone_malloc(c->zone, sz);
                if (arr == NULL)
                    return DFS_ENOMEM;
                memset(arr, 0, sz);
                for (uint32_t j = 0; j < cnt; j++) {
                    int st = decode_struct(c, f->sub, &e->via.array.ptr[j],
                                           arr + (size_t)j * f->sub->size);
                    if (st != DFS_OK)
                        return st;
                }
            }
            *(char **)p = arr;
            *(uint32_t *)(base + f->count_off) = cnt;
            break;
        }
        case FT_OBJ: {
            int st = decode_struct(c, f->sub, e, p);
            if (st != DFS_OK)
                return st;
            break;
        }
        default:
            return derr(c, "descriptor", d, (int)i);
        }
    }
    return DFS_OK;
}

static uint64_t be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/*
 * Walk the msgpack bytes once before handing them to msgpack-c: every
 * declared array/map size must be coverable by the bytes that remain (each
 * element takes at least one byte), and every length must fit.  msgpack-c
 * allocates an array's elements as soon as it reads the header, so without
 * this a 10-byte frame claiming 16M elements would allocate 400 MB.
 */
static int mp_validate(const uint8_t *p, size_t len)
{
    size_t off = 0;
    uint64_t pending = 1; /* one top-level object */
    while (pending > 0) {
        if (off >= len)
            return -1;
        uint8_t c = p[off++];
        size_t rem = len - off;
        uint64_t skip = 0, items = 0;
        if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
            /* fixint, nil, bool */
        } else if (c >= 0x80 && c <= 0x8f) {
            items = 2u * (c & 0x0f);
        } else if (c >= 0x90 && c <= 0x9f) {
            items = c & 0x0f;
        } else if (c >= 0xa0 && c <= 0xbf) {
            skip = c & 0x1f;
        } else {
            static const uint8_t lenbytes[] = {
                [0xc4 - 0xc4] = 1, [0xc5 - 0xc4] = 2, [0xc6 - 0xc4] = 4, /* bin */
                [0xc7 - 0xc4] = 1, [0xc8 - 0xc4] = 2, [0xc9 - 0xc4] = 4, /* ext */
                [0xd9 - 0xc4] = 1, [0xda - 0xc4] = 2, [0xdb - 0xc4] = 4, /* str */
                [0xdc - 0xc4] = 2, [0xdd - 0xc4] = 4,                   /* array */
                [0xde - 0xc4] = 2, [0xdf - 0xc4] = 4,                   /* map */
            };
            static const uint8_t fixed[] = {
                [0xca - 0xc4] = 4, [0xcb - 0xc4] = 8, [0xcc - 0xc4] = 1, [0xcd - 0xc4] = 2,
                [0xce - 0xc4] = 4, [0xcf - 0xc4] = 8, [0xd0 - 0xc4] = 1, [0xd1 - 0xc4] = 2,
                [0xd2 - 0xc4] = 4, [0xd3 - 0xc4] = 8, [0xd4 - 0xc4] = 2, [0xd5 - 0xc4] = 3,
                [0xd6 - 0xc4] = 5, [0xd7 - 0xc4] = 9, [0xd8 - 0xc4] = 17,
            };
            if (c < 0xc4 || c > 0xdf)
                return -1; /* 0xc1 is never used */
            unsigned lb = lenbytes[c - 0xc4];
            if (lb) {
                if (rem < lb)
                    return -1;
                uint64_t n = be(p + off, lb);
                off += lb;
                rem -= lb;
                if (c >= 0xdc && c <= 0xdd)
                    items = n;
                else if (c >= 0xde)
                    items = 2 * n;
                else
                    skip = n + ((c >= 0xc7 && c <= 0xc9) ? 1 : 0);
            } else {
                skip = fixed[c - 0xc4];
                if (skip == 0)
                    return -1;
            }
        }
        if (skip > rem)
            return -1;
        off += skip;
        pending--;
        if (items > len - off)
            return -1;
        pending += items;
    }
    return off == len ? 0 : -1;
}

int codec_decode(void *buf, size_t len, struct dfs_frame *f, char *err, size_t errlen)
{
    memset(f, 0, sizeof(*f));
    if (err && errlen)
        err[0] = '\0';
    msgpack_unpacked *up = malloc(sizeof(*up));
    if (up == NULL)
        return DFS_ENOMEM;
    msgpack_unpacked_init(up);
    size_t off = 0;
    int st = DFS_EPROTO;
    if (mp_validate(buf, len) != 0) {
        snprintf(err, errlen, "frame is not one well-formed msgpack object");
        goto fail;
    }
    msgpack_unpack_return ur = msgpack_unpack_next(up, buf, len, &off);
    if (ur != MSGPACK_UNPACK_SUCCESS) {
        snprintf(err, errlen, "frame is not valid msgpack (%d)", (int)ur);
        goto fail;
    }
    if (off != len) {
        snprintf(err, errlen, "%zu trailing bytes after the frame", len - off);
        goto fail;
    }
    const msgpack_object *top = &up->data;
    if (top->type != MSGPACK_OBJECT_ARRAY || top->via.array.size != 4) {
        snprintf(err, errlen, "frame is not [kind, req_id, op, payload]");
        goto fail;
    }
    const msgpack_object *a = top->via.array.ptr;
    uint64_t kind, req_id, op;
    if (get_u64(&a[0], &kind) != 0 || kind > DFS_KIND_PUSH || get_u64(&a[1], &req_id) != 0 ||
        get_u64(&a[2], &op) != 0 || op > UINT16_MAX) {
        snprintf(err, errlen, "bad frame header");
        goto fail;
    }
    f->kind = (uint8_t)kind;
    f->req_id = req_id;
    f->op = (uint16_t)op;
    const struct mdesc *d = body_desc((unsigned)kind, (unsigned)op);
    if (d == NULL) {
        snprintf(err, errlen, "unknown op %u", (unsigned)op);
        st = DFS_ENOSYS;
        goto fail;
    }
    void *body = msgpack_zone_malloc(up->zone, d->size ? d->size : 1);
    if (body == NULL) {
        st = DFS_ENOMEM;
        goto fail;
    }
    memset(body, 0, d->size ? d->size : 1);
    struct dctx c = {up->zone, err, errlen};
    st = decode_struct(&c, d, &a[3], body);
    if (st != DFS_OK)
        goto fail;
    f->body = body;
    if (kind == DFS_KIND_RESPONSE)
        f->status = *(const uint32_t *)body; /* every response starts with status */
    f->buf = buf;
    f->len = len;
    f->zone = up;
    return DFS_OK;
fail:
    msgpack_unpacked_destroy(up);
    free(up);
    return st;
}

void *codec_frame_alloc(struct dfs_frame *f, size_t n)
{
    msgpack_unpacked *up = f->zone;
    return up ? msgpack_zone_malloc(up->zone, n ? n : 1) : NULL;
}

void codec_frame_free(struct dfs_frame *f)
{
    if (f == NULL)
        return;
    if (f->zone) {
        msgpack_unpacked_destroy(f->zone);
        free(f->zone);
    }
    free(f->buf);
    f->zone = NULL;
    f->buf = NULL;
    f->body = NULL;
}

/* ----- samples for tests and fuzz seeds ----- */

struct sarena {
    char *base;
    size_t used, cap;
    uint64_t rng;
};

static void *sa_alloc(struct sarena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (a->used + n > a->cap)
        return NULL;
    void *p = a->base + a->used;
    a->used += n;
    memset(p, 0, n);
    return p;
}

static uint64_t sa_rand(struct sarena *a)
{
    a->rng ^= a->rng << 13;
    a->rng ^= a->rng >> 7;
    a->rng ^= a->rng << 17;
    return a->rng;
}

static int sample_struct(struct sarena *a, const struct mdesc *d, char *base, int depth)
{
    for (const struct fdesc *f = d->f; f->type != FT_END; f++) {
        char *p = base + f->off;
        uint64_t r = sa_rand(a);
        switch (f->type) {
        case FT_U32:
            *(uint32_t *)p = (uint32_t)(r % 7 == 0 ? UINT32_MAX : r >> (r % 32));
            break;
        case FT_U64:
            *(uint64_t *)p = r % 5 == 0 ? UINT64_MAX : r >> (r % 64);
            break;
        case FT_I64:
            *(int64_t *)p = (int64_t)r;
            break;
        case FT_STR: {
            uint32_t len = (uint32_t)(r % 40);
            char *s = sa_alloc(a, len + 1);
            if (s == NULL)
                return -1;
            for (uint32_t i = 0; i < len; i++)
                s[i] = (char)('a' + sa_rand(a) % 26);
            ((struct dfs_str *)p)->ptr = s;
            ((struct dfs_str *)p)->len = len;
            break;
        }
        case FT_BIN:
        case FT_BULK: {
            uint32_t len = (uint32_t)(r % 300);
            char *s = sa_alloc(a, len);
            if (s == NULL)
                return -1;
            for (uint32_t i = 0; i < len; i++)
                s[i] = (char)sa_rand(a);
            ((struct dfs_bin *)p)->ptr = len ? s : NULL;
            ((struct dfs_bin *)p)->len = len;
            break;
        }
        case FT_U64V: {
            uint32_t cnt = (uint32_t)(r % 4);
            uint64_t *v = sa_alloc(a, cnt * sizeof(uint64_t));
            if (v == NULL)
                return -1;
            for (uint32_t i = 0; i < cnt; i++)
                v[i] = sa_rand(a);
            *(uint64_t **)p = cnt ? v : NULL;
            *(uint32_t *)(base + f->count_off) = cnt;
            break;
        }
        case FT_ARR: {
            uint32_t cnt = depth > 2 ? 0 : (uint32_t)(r % 4);
            char *v = sa_alloc(a, (size_t)cnt * f->sub->size);
            if (v == NULL)
                return -1;
            for (uint32_t i = 0; i < cnt; i++)
                if (sample_struct(a, f->sub, v + (size_t)i * f->sub->size, depth + 1) != 0)
                    return -1;
            *(char **)p = cnt ? v : NULL;
            *(uint32_t *)(base + f->count_off) = cnt;
            break;
        }
        case FT_OBJ:
            if (sample_struct(a, f->sub, p, depth + 1) != 0)
                return -1;
            break;
        default:
            return -1;
        }
    }
    return 0;
}

void *codec_sample(unsigned kind, unsigned op, uint64_t seed)
{
    const struct mdesc *d = body_desc(kind, op);
    if (d == NULL)
        return NULL;
    struct sarena a = {.cap = 1u << 20, .rng = seed ? seed : 88172645463325252ull};
    a.base = malloc(a.cap);
    if (a.base == NULL)
        return NULL;
    char *body = sa_alloc(&a, d->size ? d->size : 1);
    if (body != a.base || sample_struct(&a, d, body, 0) != 0) {
        free(a.base);
        return NULL;
    }
    return body;
}
