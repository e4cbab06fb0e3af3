/* test_fuse_layout.c - striping math of fuse-client/layout.c. */
#include <stdlib.h>

#include "../../fuse-client/layout.h"
#include "testlib.h"

static const struct dfs_layout deflt = {64u << 10, 2, 64ull << 20};

/* Brute-force reference straight from the formula in DESIGN.md. */
static void ref_map(const struct dfs_layout *l, uint64_t o, uint64_t *idx, uint64_t *co)
{
    uint64_t C = l->stripe_count, S = l->chunk_size, U = l->stripe_unit;
    uint64_t set = o / (C * S), r = o % (C * S), s = r / U;
    *idx = set * C + s % C;
    *co = (s / C) * U + r % U;
}

START_TEST(test_map_examples)
{
    uint64_t idx, co;
    layout_map(&deflt, 0, &idx, &co);
    ck_assert_uint_eq(idx, 0);
    ck_assert_uint_eq(co, 0);
    layout_map(&deflt, 65536, &idx, &co);
    ck_assert_uint_eq(idx, 1);
    ck_assert_uint_eq(co, 0);
    layout_map(&deflt, 131072 + 5, &idx, &co);
    ck_assert_uint_eq(idx, 0);
    ck_assert_uint_eq(co, 65536 + 5);
    /* First byte of the second chunk set. */
    layout_map(&deflt, 128ull << 20, &idx, &co);
    ck_assert_uint_eq(idx, 2);
    ck_assert_uint_eq(co, 0);
    /* Last byte of the first set is the last byte of chunk 1. */
    layout_map(&deflt, (128ull << 20) - 1, &idx, &co);
    ck_assert_uint_eq(idx, 1);
    ck_assert_uint_eq(co, (64ull << 20) - 1);
}
END_TEST

START_TEST(test_map_matches_reference_and_unmap)
{
    const struct dfs_layout ls[] = {
        {64u << 10, 2, 64ull << 20}, {4096, 3, 1u << 20}, {1u << 20, 1, 64ull << 20},
        {65536, 4, 65536}, {512, 5, 512 * 7},
    };
    srand(42);
    for (size_t k = 0; k < sizeof ls / sizeof ls[0]; k++) {
        ck_assert(layout_valid(&ls[k]));
        for (int i = 0; i < 20000; i++) {
            uint64_t o = ((uint64_t)rand() << 20 ^ (uint64_t)rand()) % (1ull << 40);
            if (i < 5000)
                o = (uint64_t)i * 511;
            uint64_t a, b, ra, rb;
            layout_map(&ls[k], o, &a, &b);
            ref_map(&ls[k], o, &ra, &rb);
            ck_assert_uint_eq(a, ra);
            ck_assert_uint_eq(b, rb);
            ck_assert_uint_lt(b, ls[k].chunk_size);
            ck_assert_uint_eq(layout_unmap(&ls[k], a, b), o);
        }
    }
}
END_TEST

START_TEST(test_split)
{
    struct layout_piece p[64];
    /* A 1 MiB write at 0: 16 pieces alternating between chunks 0 and 1. */
    size_t n = layout_split(&deflt, 0, 1u << 20, p, 64);
    ck_assert_uint_eq(n, 16);
    ck_assert_uint_eq(layout_npieces(&deflt, 0, 1u << 20), 16);
    uint64_t tot[2] = {0, 0};
    for (size_t i = 0; i < n; i++) {
        ck_assert_uint_eq(p[i].index, i % 2);
        ck_assert_uint_eq(p[i].len, 65536);
        ck_assert_uint_eq(p[i].file_off, i * 65536);
        ck_assert_uint_eq(p[i].chunk_off, (i / 2) * 65536);
        tot[i % 2] += p[i].len;
    }
    ck_assert_uint_eq(tot[0], 512u << 10);
    ck_assert_uint_eq(tot[1], 512u << 10);
    /* Unaligned small range inside one unit, and one crossing a unit. */
    n = layout_split(&deflt, 100, 200, p, 64);
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_eq(p[0].len, 200);
    ck_assert_uint_eq(p[0].chunk_off, 100);
    n = layout_split(&deflt, 65530, 12, p, 64);
    ck_assert_uint_eq(n, 2);
    ck_assert_uint_eq(p[0].len, 6);
    ck_assert_uint_eq(p[1].len, 6);
    ck_assert_uint_eq(p[1].index, 1);
    ck_assert_uint_eq(p[1].chunk_off, 0);
    ck_assert_uint_eq(layout_npieces(&deflt, 65530, 12), 2);
    ck_assert_uint_eq(layout_npieces(&deflt, 65530, 0), 0);
    /* Too small an output array still reports the needed count. */
    ck_assert_uint_eq(layout_split(&deflt, 0, 1u << 20, p, 3), 16);
}
END_TEST

START_TEST(test_chunk_len_for_size)
{
    const struct dfs_layout l = {4096, 3, 4096 * 4};
    /* Reference: count bytes of each chunk below size by mapping every byte. */
    for (uint64_t size = 0; size <= 3 * 4096 * 4 * 2 + 100; size += 37) {
        uint64_t want[6] = {0};
        for (uint64_t o = 0; o < size; o += 1) {
            uint64_t idx, co;
            layout_map(&l, o, &idx, &co);
            if (idx < 6 && co + 1 > want[idx])
                want[idx] = co + 1;
            if (o % 4096 == 0 && o + 4096 <= size) {
                /* jump to the unit's last byte */
                layout_map(&l, o + 4095, &idx, &co);
                if (idx < 6 && co + 1 > want[idx])
                    want[idx] = co + 1;
                o += 4095;
            }
        }
        for (uint64_t i = 0; i < 6; i++)
            ck_assert_uint_eq(layout_chunk_len_for_size(&l, i, size), want[i]);
    }
}
END_TEST

START_TEST(test_valid)
{
    struct dfs_layout bad = {0, 2, 1 << 20};
    ck_assert(!layout_valid(&bad));
    bad = (struct dfs_layout){65536, 0, 1 << 20};
    ck_assert(!layout_valid(&bad));
    bad = (struct dfs_layout){65536, 2, 100000};
    ck_assert(!layout_valid(&bad));
    ck_assert(!layout_valid(NULL));
    ck_assert(layout_valid(&deflt));
}
END_TEST

TEST_SUITE(layout)
{
    Suite *s = suite_create("layout");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_map_examples);
    tcase_add_test(tc, test_map_matches_reference_and_unmap);
    tcase_add_test(tc, test_split);
    tcase_add_test(tc, test_chunk_len_for_size);
    tcase_add_test(tc, test_valid);
    suite_add_tcase(s, tc);
    return s;
}
