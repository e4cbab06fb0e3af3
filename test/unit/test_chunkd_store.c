/* test_chunkd_store.c - chunk store: checksums, partial writes, truncation, versions, recovery. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checksum.h"
#include "proto.h"
#include "../../chunkd/store.h"
#include "testlib.h"
#include "util.h"

#define BS DFS_BLOCK_SIZE

static char *tdir;
static char *dirs[2];
static struct store *st;

static void open_store(size_t ndirs)
{
    struct store_opts o = {.dirs = (const char *const *)dirs, .ndirs = ndirs, .lock_dirs = true};
    char err[256] = "";
    int r = store_open(&st, &o, err, sizeof(err));
    ck_assert_msg(r == DFS_OK, "store_open: %s", err);
}

static void setup(void)
{
    tdir = testlib_tmpdir("store");
    ck_assert_int_ge(asprintf(&dirs[0], "%s/d0", tdir), 0);
    ck_assert_int_ge(asprintf(&dirs[1], "%s/d1", tdir), 0);
    open_store(1);
}

static void teardown(void)
{
    store_close(st);
    st = NULL;
    testlib_rmrf(tdir);
    free(tdir);
    free(dirs[0]);
    free(dirs[1]);
}

static void reopen(void)
{
    store_close(st);
    open_store(1);
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (uint8_t)(x >> 16);
    }
}

/* Read the whole chunk and compare with want[0..len). */
static void check_content(uint64_t id, uint32_t ver, const uint8_t *want, uint64_t len)
{
    void *buf;
    const void *data;
    uint32_t n;
    uint64_t clen;
    ck_assert_int_eq(store_read(st, id, ver, 0, (uint32_t)len + 100, &buf, &data, &n, &clen),
                     DFS_OK);
    ck_assert_uint_eq(clen, len);
    ck_assert_uint_eq(n, len);
    ck_assert(len == 0 || memcmp(data, want, len) == 0);
    free(buf);
}

static int state_of(uint64_t id)
{
    struct dfs_chunkrep r;
    ck_assert_int_eq(store_stat(st, id, &r), DFS_OK);
    return (int)r.state;
}

/* Flip one byte of the chunk file at file offset off. */
static void flip_byte(uint64_t id, uint64_t off)
{
    char *path = store_chunk_path(st, id);
    ck_assert_ptr_nonnull(path);
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    uint8_t b;
    ck_assert_int_eq(pread(fd, &b, 1, (off_t)off), 1);
    b ^= 0x5a;
    ck_assert_int_eq(pwrite(fd, &b, 1, (off_t)off), 1);
    close(fd);
    free(path);
}

START_TEST(test_roundtrip)
{
    size_t len = 3 * BS + 1234;
    uint8_t *d = malloc(len);
    fill(d, len, 1);
    uint64_t L;
    ck_assert_int_eq(store_write(st, 42, 1, 0, 0, d, (uint32_t)len, &L), DFS_ENOCHUNK);
    ck_assert_int_eq(store_write(st, 42, 1, DFS_WF_CREATE, 0, d, (uint32_t)len, &L), DFS_OK);
    ck_assert_uint_eq(L, len);
    check_content(42, 1, d, len);
    /* A read in the middle, unaligned. */
    void *buf;
    const void *data;
    uint32_t n;
    uint64_t clen;
    ck_assert_int_eq(store_read(st, 42, 1, BS - 7, 100, &buf, &data, &n, &clen), DFS_OK);
    ck_assert_uint_eq(n, 100);
    ck_assert(memcmp(data, d + BS - 7, 100) == 0);
    free(buf);
    /* Past the end: nothing, not an error. */
    ck_assert_int_eq(store_read(st, 42, 1, len + 5, 100, &buf, &data, &n, &clen), DFS_OK);
    ck_assert_uint_eq(n, 0);
    free(buf);
    ck_assert_int_eq(store_sync(st, 42, 1, &L), DFS_OK);
    reopen();
    check_content(42, 1, d, len);
    ck_assert_int_eq(state_of(42), DFS_RS_OK);
    free(d);
}
END_TEST

START_TEST(test_file_layout)
{
    uint8_t d[1000];
    fill(d, sizeof(d), 2);
    ck_assert_int_eq(store_write(st, 0xabcdef, 7, DFS_WF_CREATE, 0, d, sizeof(d), NULL), DFS_OK);
    char *path = store_chunk_path(st, 0xabcdef);
    ck_assert_ptr_nonnull(strstr(path, "/chunks/EF/0000000000ABCDEF.chk"));
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_int_eq(sb.st_size, STORE_DATA_OFF + sizeof(d));
    int fd = open(path, O_RDONLY);
    char magic[8];
    ck_assert_int_eq(pread(fd, magic, 8, 0), 8);
    ck_assert(memcmp(magic, "DFSCHNK1", 8) == 0);
    uint8_t back[1000];
    ck_assert_int_eq(pread(fd, back, sizeof(back), STORE_DATA_OFF), (ssize_t)sizeof(back));
    ck_assert(memcmp(back, d, sizeof(d)) == 0);
    uint64_t sum;
    ck_assert_int_eq(pread(fd, &sum, 8, 4096), 8);
    ck_assert_uint_eq(sum, csum_buf(d, sizeof(d))); /* little-endian host */
    close(fd);
    free(path);
}
END_TEST

/* Random partial writes (inside blocks, across blocks, past the end) against a
 * shadow copy; every read verifies checksums, a reopen re-scans. */
START_TEST(test_partial_writes)
{
    size_t max = 6 * BS;
    uint8_t *shadow = calloc(1, max), *d = malloc(max);
    uint64_t len = 0;
    uint32_t x = 99;
    for (int i = 0; i < 300; i++) {
        x = x * 1103515245u + 12345u;
        uint64_t off = (x >> 8) % (max - 1);
        x = x * 1103515245u + 12345u;
        uint32_t n = 1 + (x >> 8) % (uint32_t)DFS_MIN((uint64_t)(BS + 5000), max - off);
        if (i % 7 == 0) n = 1;
        fill(d, n, (unsigned)i);
        uint64_t L;
        ck_assert_int_eq(store_write(st, 5, 3, DFS_WF_CREATE, off, d, n, &L), DFS_OK);
        memcpy(shadow + off, d, n);
        if (off + n > len) len = off + n;
        ck_assert_uint_eq(L, len);
        if (i % 25 == 0) check_content(5, 3, shadow, len);
        if (i % 100 == 0) reopen();
    }
    check_content(5, 3, shadow, len);
    reopen();
    ck_assert_int_eq(state_of(5), DFS_RS_OK);
    check_content(5, 3, shadow, len);
    free(shadow);
    free(d);
}
END_TEST

START_TEST(test_gap_zero_fill)
{
    uint8_t d[100];
    fill(d, sizeof(d), 3);
    ck_assert_int_eq(store_write(st, 9, 1, DFS_WF_CREATE, 10, d, 50, NULL), DFS_OK);
    uint64_t off = 3 * BS + 17;
    uint64_t L;
    ck_assert_int_eq(store_write(st, 9, 1, 0, off, d, 100, &L), DFS_OK);
    ck_assert_uint_eq(L, off + 100);
    uint8_t *want = calloc(1, L);
    memcpy(want + 10, d, 50);
    memcpy(want + off, d, 100);
    check_content(9, 1, want, L);
    reopen();
    check_content(9, 1, want, L);
    free(want);
}
END_TEST

START_TEST(test_truncate)
{
    size_t len = 4 * BS + 500;
    uint8_t *d = malloc(len), *want = calloc(1, 8 * BS);
    fill(d, len, 4);
    ck_assert_int_eq(store_write(st, 11, 1, DFS_WF_CREATE, 0, d, (uint32_t)len, NULL), DFS_OK);
    /* Shrink into the middle of a block. */
    ck_assert_int_eq(store_truncate(st, 11, 1, 2, 2 * BS + 100), DFS_OK);
    memcpy(want, d, 2 * BS + 100);
    check_content(11, 2, want, 2 * BS + 100);
    ck_assert_int_eq(store_truncate(st, 11, 1, 2, 2 * BS + 100), DFS_OK); /* retry */
    ck_assert_int_eq(store_truncate(st, 11, 1, 3, 10), DFS_ESTALE);
    /* Grow: zeros. */
    ck_assert_int_eq(store_truncate(st, 11, 2, 3, 5 * BS + 3), DFS_OK);
    check_content(11, 3, want, 5 * BS + 3);
    /* A write after the grow reads back merged. */
    ck_assert_int_eq(store_write(st, 11, 3, 0, 2 * BS + 50, d, 100, NULL), DFS_OK);
    memcpy(want + 2 * BS + 50, d, 100);
    check_content(11, 3, want, 5 * BS + 3);
    reopen();
    check_content(11, 3, want, 5 * BS + 3);
    /* To zero and on a block boundary. */
    ck_assert_int_eq(store_truncate(st, 11, 3, 4, BS), DFS_OK);
    check_content(11, 4, want, BS);
    ck_assert_int_eq(store_truncate(st, 11, 4, 5, 0), DFS_OK);
    check_content(11, 5, want, 0);
    reopen();
    ck_assert_int_eq(state_of(11), DFS_RS_OK);
    ck_assert_int_eq(store_truncate(st, 12, 1, 2, 0), DFS_ENOCHUNK);
    free(d);
    free(want);
}
END_TEST

START_TEST(test_versions)
{
    uint8_t d[10] = "0123456789";
    ck_assert_int_eq(store_write(st, 1, 5, DFS_WF_CREATE, 0, d, 10, NULL), DFS_OK);
    ck_assert_int_eq(store_write(st, 1, 4, 0, 0, d, 10, NULL), DFS_ESTALE);
    ck_assert_int_eq(store_write(st, 1, 6, DFS_WF_CREATE, 0, d, 10, NULL), DFS_ESTALE);
    ck_assert_int_eq(store_write(st, 1, 5, DFS_WF_CREATE, 0, d, 10, NULL), DFS_OK);
    void *buf;
    const void *data;
    uint32_t n;
    uint64_t L;
    ck_assert_int_eq(store_read(st, 1, 6, 0, 10, &buf, &data, &n, &L), DFS_ESTALE);
    ck_assert_int_eq(store_setversion(st, 1, 4, 6), DFS_ESTALE);
    ck_assert_int_eq(store_setversion(st, 1, 5, 6), DFS_OK);
    ck_assert_int_eq(store_setversion(st, 1, 5, 6), DFS_OK); /* already there */
    ck_assert_int_eq(store_setversion(st, 2, 5, 6), DFS_ENOCHUNK);
    ck_assert_int_eq(store_read(st, 1, 5, 0, 10, &buf, &data, &n, &L), DFS_ESTALE);
    reopen();
    check_content(1, 6, d, 10);
    struct dfs_chunkrep r;
    ck_assert_int_eq(store_stat(st, 1, &r), DFS_OK);
    ck_assert_uint_eq(r.version, 6);
    ck_assert_uint_eq(r.length, 10);
    ck_assert_int_eq(store_delete(st, 1, 5), DFS_ESTALE);
    ck_assert_int_eq(store_delete(st, 1, 6), DFS_OK);
    ck_assert_int_eq(store_delete(st, 1, 6), DFS_ENOCHUNK);
    ck_assert_int_eq(store_read(st, 1, 6, 0, 10, &buf, &data, &n, &L), DFS_ENOCHUNK);
    /* Recreated after a delete. */
    ck_assert_int_eq(store_write(st, 1, 9, DFS_WF_CREATE, 0, d, 3, NULL), DFS_OK);
    check_content(1, 9, d, 3);
    reopen();
    check_content(1, 9, d, 3);
    ck_assert_int_eq(store_write(st, 1, 9, 0, STORE_MAX_CHUNK, d, 1, NULL), DFS_EFBIG);
}
END_TEST

START_TEST(test_corrupt_block)
{
    size_t len = 3 * BS;
    uint8_t *d = malloc(len);
    fill(d, len, 5);
    ck_assert_int_eq(store_write(st, 77, 1, DFS_WF_CREATE, 0, d, (uint32_t)len, NULL), DFS_OK);
    struct dfs_chunkrep *chg;
    free(chg = NULL);
    size_t nc = store_take_changes(st, &chg);
    ck_assert_uint_eq(nc, 1);
    free(chg);
    flip_byte(77, STORE_DATA_OFF + BS + 5);
    void *buf;
    const void *data;
    uint32_t n;
    uint64_t L;
    /* Block 0 is fine until the corruption is found... */
    ck_assert_int_eq(store_read(st, 77, 1, 0, 100, &buf, &data, &n, &L), DFS_OK);
    free(buf);
    ck_assert_int_eq(store_read(st, 77, 1, BS, 100, &buf, &data, &n, &L), DFS_ECORRUPT);
    ck_assert_ptr_null(buf);
    /* ...then the replica is never served again. */
    ck_assert_int_eq(store_read(st, 77, 1, 0, 100, &buf, &data, &n, &L), DFS_ECORRUPT);
    ck_assert_int_eq(store_write(st, 77, 1, 0, 0, d, 10, NULL), DFS_ECORRUPT);
    ck_assert_int_eq(state_of(77), DFS_RS_CORRUPT);
    nc = store_take_changes(st, &chg);
    ck_assert_uint_eq(nc, 1);
    ck_assert_uint_eq(chg[0].chunk_id, 77);
    ck_assert_uint_eq(chg[0].state, DFS_RS_CORRUPT);
    free(chg);
    /* A partial write into a corrupt block of another chunk is refused. */
    ck_assert_int_eq(store_write(st, 78, 1, DFS_WF_CREATE, 0, d, (uint32_t)len, NULL), DFS_OK);
    flip_byte(78, STORE_DATA_OFF + 2 * BS + 1);
    ck_assert_int_eq(store_write(st, 78, 1, 0, 2 * BS + 10, d, 10, NULL), DFS_ECORRUPT);
    ck_assert_int_eq(state_of(78), DFS_RS_CORRUPT);
    /* Deleting a corrupt replica works. */
    ck_assert_int_eq(store_delete(st, 78, 0), DFS_OK);
    free(d);
}
END_TEST

START_TEST(test_scrub)
{
    size_t len = 2 * BS + 10;
    uint8_t *d = malloc(len);
    fill(d, len, 6);
    ck_assert_int_eq(store_write(st, 3, 1, DFS_WF_CREATE, 0, d, (uint32_t)len, NULL), DFS_OK);
    uint32_t nb, bytes;
    for (uint32_t b = 0; b < 3; b++) ck_assert_int_eq(store_scrub_block(st, 3, b, &nb, &bytes), DFS_OK);
    ck_assert_uint_eq(nb, 3);
    flip_byte(3, STORE_DATA_OFF + 2 * BS + 3);
    ck_assert_int_eq(store_scrub_block(st, 3, 0, &nb, &bytes), DFS_OK);
    ck_assert_int_eq(store_scrub_block(st, 3, 2, &nb, &bytes), DFS_ECORRUPT);
    ck_assert_int_eq(state_of(3), DFS_RS_CORRUPT);
    /* The corrupt table entry is caught too. */
    ck_assert_int_eq(store_write(st, 4, 1, DFS_WF_CREATE, 0, d, (uint32_t)len, NULL), DFS_OK);
    flip_byte(4, 4096 + 8 + 2);
    ck_assert_int_eq(store_scrub_block(st, 4, 1, &nb, &bytes), DFS_ECORRUPT);
    free(d);
}
END_TEST

/* Crash-recovery scan: torn last block, debris past the length, short file,
 * bad header, leftover temp files. */
START_TEST(test_recovery_scan)
{
    size_t len = 2 * BS + 300;
    uint8_t *d = malloc(len);
    fill(d, len, 7);
    for (uint64_t id = 100; id < 105; id++)
        ck_assert_int_eq(store_write(st, id, 1, DFS_WF_CREATE, 0, d, (uint32_t)len, NULL), DFS_OK);
    char *p101 = store_chunk_path(st, 101), *p102 = store_chunk_path(st, 102),
         *p103 = store_chunk_path(st, 103), *p104 = store_chunk_path(st, 104);
    store_close(st);
    st = NULL;
    /* 100: untouched. 101: last block torn (data written, table not). */
    int fd = open(p101, O_RDWR);
    ck_assert_int_eq(pwrite(fd, "garbage", 7, STORE_DATA_OFF + 2 * BS + 5), 7);
    close(fd);
    /* 102: an append whose header never made it: debris past the length. */
    fd = open(p102, O_RDWR);
    ck_assert_int_eq(pwrite(fd, d, 5000, STORE_DATA_OFF + len), 5000);
    close(fd);
    /* 103: file shorter than the header says. */
    ck_assert_int_eq(truncate(p103, STORE_DATA_OFF + len - 10), 0);
    /* 104: header torn. */
    fd = open(p104, O_RDWR);
    ck_assert_int_eq(pwrite(fd, "X", 1, 20), 1);
    close(fd);
    /* A stale replication temp file and a stray file. */
    char *tmp, *stray;
    ck_assert_int_ge(asprintf(&tmp, "%s/chunks/tmp/0000000000000001.x.tmp", dirs[0]), 0);
    ck_assert_int_ge(asprintf(&stray, "%s/chunks/00/hello.txt", dirs[0]), 0);
    fd = open(tmp, O_CREAT | O_WRONLY, 0644);
    close(fd);
    fd = open(stray, O_CREAT | O_WRONLY, 0644);
    close(fd);
    open_store(1);
    ck_assert_int_eq(state_of(100), DFS_RS_OK);
    ck_assert_int_eq(state_of(101), DFS_RS_CORRUPT);
    ck_assert_int_eq(state_of(102), DFS_RS_OK);
    ck_assert_int_eq(state_of(103), DFS_RS_CORRUPT);
    ck_assert_int_eq(state_of(104), DFS_RS_CORRUPT);
    check_content(102, 1, d, len);
    struct stat sb;
    ck_assert_int_eq(stat(p102, &sb), 0);
    ck_assert_int_eq(sb.st_size, STORE_DATA_OFF + len);
    ck_assert_int_ne(access(tmp, F_OK), 0);
    void *buf;
    const void *data;
    uint32_t n;
    uint64_t L;
    ck_assert_int_eq(store_read(st, 101, 1, 0, 10, &buf, &data, &n, &L), DFS_ECORRUPT);
    ck_assert_int_eq(store_read(st, 104, 1, 0, 10, &buf, &data, &n, &L), DFS_ECORRUPT);
    /* Corrupt ones are in the first changes (reported to metad). */
    struct dfs_chunkrep *chg;
    size_t nc = store_take_changes(st, &chg);
    ck_assert_uint_eq(nc, 3);
    for (size_t i = 0; i < nc; i++) ck_assert_uint_eq(chg[i].state, DFS_RS_CORRUPT);
    free(chg);
    struct dfs_chunkrep *all;
    ck_assert_uint_eq(store_list(st, &all), 5);
    free(all);
    free(p101), free(p102), free(p103), free(p104), free(tmp), free(stray);
    free(d);
}
END_TEST

START_TEST(test_replicate_tmp)
{
    size_t len = 3 * BS + 999;
    uint8_t *d = malloc(len);
    fill(d, len, 8);
    /* An old stale copy gets replaced atomically. */
    ck_assert_int_eq(store_write(st, 55, 1, DFS_WF_CREATE, 0, d, 100, NULL), DFS_OK);
    struct store_tmp *t;
    ck_assert_int_eq(store_tmp_begin(st, 55, 4, &t), DFS_OK);
    ck_assert_int_eq(store_tmp_append(t, d, 1000), DFS_OK);
    ck_assert_int_eq(store_tmp_append(t, d + 1000, BS), DFS_OK);
    ck_assert_int_eq(store_tmp_append(t, d + 1000 + BS, (uint32_t)(len - 1000 - BS)), DFS_OK);
    ck_assert_int_eq(store_tmp_commit(t), DFS_OK);
    check_content(55, 4, d, len);
    reopen();
    check_content(55, 4, d, len);
    ck_assert_int_eq(state_of(55), DFS_RS_OK);
    /* Aborted: no trace. */
    ck_assert_int_eq(store_tmp_begin(st, 56, 1, &t), DFS_OK);
    ck_assert_int_eq(store_tmp_append(t, d, 100), DFS_OK);
    store_tmp_abort(t);
    struct dfs_chunkrep r;
    ck_assert_int_eq(store_stat(st, 56, &r), DFS_ENOCHUNK);
    free(d);
}
END_TEST

START_TEST(test_two_dirs)
{
    store_close(st);
    open_store(2);
    uint8_t d[100];
    fill(d, sizeof(d), 9);
    for (uint64_t id = 1; id <= 20; id++)
        ck_assert_int_eq(store_write(st, id, 1, DFS_WF_CREATE, 0, d, sizeof(d), NULL), DFS_OK);
    ck_assert_uint_eq(store_ndirs(st), 2);
    struct dfs_dirinfo di0, di1;
    store_refresh(st);
    store_dirinfo(st, 0, &di0);
    store_dirinfo(st, 1, &di1);
    ck_assert_uint_eq(di0.chunks + di1.chunks, 20);
    ck_assert_uint_gt(di0.total, 0);
    store_close(st);
    open_store(2);
    for (uint64_t id = 1; id <= 20; id++) check_content(id, 1, d, sizeof(d));
    /* A second store on the same dirs is refused. */
    struct store *st2;
    struct store_opts o = {.dirs = (const char *const *)dirs, .ndirs = 2, .lock_dirs = true};
    char err[256];
    ck_assert_int_ne(store_open(&st2, &o, err, sizeof(err)), DFS_OK);
    ck_assert_ptr_nonnull(strstr(err, "in use"));
}
END_TEST

struct wr_arg {
    int t;
    uint8_t *d;
};

static void *writer(void *p)
{
    struct wr_arg *a = p;
    /* Thread t writes 16 KiB pieces at offsets t, t+4, ...: partial blocks
     * shared with other threads, so the table must stay right under races. */
    for (int i = a->t; i < 64; i += 4) {
        uint64_t off = (uint64_t)i * 16384;
        ck_assert_int_eq(store_write(st, 8, 1, DFS_WF_CREATE, off, a->d + off, 16384, NULL), DFS_OK);
        void *buf;
        const void *data;
        uint32_t n;
        uint64_t L;
        ck_assert_int_eq(store_read(st, 8, 1, 0, 1u << 20, &buf, &data, &n, &L), DFS_OK);
        free(buf);
    }
    return NULL;
}

START_TEST(test_concurrent)
{
    size_t len = 64 * 16384;
    uint8_t *d = malloc(len);
    fill(d, len, 10);
    pthread_t th[4];
    struct wr_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (struct wr_arg){i, d};
        pthread_create(&th[i], NULL, writer, &a[i]);
    }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    check_content(8, 1, d, len);
    store_trim(st, 0);
    check_content(8, 1, d, len);
    free(d);
}
END_TEST

TEST_SUITE(store)
{
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("store");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_roundtrip);
    tcase_add_test(tc, test_file_layout);
    tcase_add_test(tc, test_partial_writes);
    tcase_add_test(tc, test_gap_zero_fill);
    tcase_add_test(tc, test_truncate);
    tcase_add_test(tc, test_versions);
    tcase_add_test(tc, test_corrupt_block);
    tcase_add_test(tc, test_scrub);
    tcase_add_test(tc, test_recovery_scan);
    tcase_add_test(tc, test_replicate_tmp);
    tcase_add_test(tc, test_two_dirs);
    tcase_add_test(tc, test_concurrent);
    suite_add_tcase(s, tc);
    return s;
}
