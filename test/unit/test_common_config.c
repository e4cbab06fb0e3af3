/* test_common_config.c - config parser: defaults, files, errors naming file:line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "testlib.h"
#include "util.h"

static const struct cfg_key keys[] = {
    {"listen", CFG_STR, "0.0.0.0:9530", 0, 0, "address"},
    {"heartbeat_ms", CFG_U64, "1000", 10, 60000, "heartbeat"},
    {"scrub_rate", CFG_SIZE, "8M", 0, 0, "bytes/s"},
    {"fsync", CFG_BOOL, "yes", 0, 0, "sync"},
    {"data_dir", CFG_LIST, "/var/lib/dfs", 0, 0, "dirs"},
    {NULL, 0, NULL, 0, 0, NULL},
};

static char *write_file(const char *text)
{
    char *dir = testlib_tmpdir("cfg");
    char *path;
    ck_assert_int_ge(asprintf(&path, "%s/x.conf", dir), 0);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    free(dir);
    return path;
}

START_TEST(test_defaults)
{
    struct cfg *c = cfg_new(keys);
    ck_assert_str_eq(cfg_str(c, "listen"), "0.0.0.0:9530");
    ck_assert_uint_eq(cfg_u64(c, "heartbeat_ms"), 1000);
    ck_assert_uint_eq(cfg_u64(c, "scrub_rate"), 8u << 20);
    ck_assert(cfg_bool(c, "fsync"));
    const char *const *v;
    ck_assert_uint_eq(cfg_list(c, "data_dir", &v), 1);
    ck_assert_str_eq(v[0], "/var/lib/dfs");
    cfg_free(c);
}
END_TEST

START_TEST(test_file)
{
    char *path = write_file("# comment\n\n listen = 127.0.0.1:1 # trailing\nheartbeat_ms=250\n"
                            "scrub_rate = 1G\nfsync = off\ndata_dir = /a\ndata_dir = /b\n");
    struct cfg *c = cfg_new(keys);
    char err[256];
    ck_assert_int_eq(cfg_load(c, path, err, sizeof(err)), 0);
    ck_assert_str_eq(cfg_str(c, "listen"), "127.0.0.1:1");
    ck_assert_uint_eq(cfg_u64(c, "heartbeat_ms"), 250);
    ck_assert_uint_eq(cfg_u64(c, "scrub_rate"), 1ull << 30);
    ck_assert(!cfg_bool(c, "fsync"));
    const char *const *v;
    ck_assert_uint_eq(cfg_list(c, "data_dir", &v), 2); /* replaces the default */
    ck_assert_str_eq(v[1], "/b");
    ck_assert_int_eq(cfg_set(c, "heartbeat_ms", "500", "-o", err, sizeof(err)), 0);
    ck_assert_uint_eq(cfg_u64(c, "heartbeat_ms"), 500);
    cfg_free(c);
    free(path);
}
END_TEST

static void expect_error(const char *text, const char *needle)
{
    char *path = write_file(text);
    struct cfg *c = cfg_new(keys);
    char err[512];
    ck_assert_int_eq(cfg_load(c, path, err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, path) != NULL, "error does not name the file: %s", err);
    ck_assert_msg(strstr(err, needle) != NULL, "error '%s' lacks '%s'", err, needle);
    cfg_free(c);
    free(path);
}

START_TEST(test_errors)
{
    expect_error("listen = x\nbogus = 1\n", ":2: unknown key 'bogus'");
    expect_error("heartbeat_ms = 5\n", ":1: heartbeat_ms: 5 is out of range");
    expect_error("\n\nheartbeat_ms = 12abc\n", ":3: heartbeat_ms: '12abc' is not a number");
    expect_error("scrub_rate = 12Q\n", ":1: scrub_rate");
    expect_error("fsync = maybe\n", ":1: fsync: 'maybe' is not yes/no");
    expect_error("just words\n", ":1: expected 'key = value'");
    struct cfg *c = cfg_new(keys);
    char err[256];
    ck_assert_int_eq(cfg_load(c, "/nonexistent/dfs.conf", err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/dfs.conf: No such file"));
    cfg_free(c);
}
END_TEST

START_TEST(test_hostport)
{
    char host[64], err[128];
    int port;
    ck_assert_int_eq(dfs_parse_hostport("10.1.2.3:99", 1, host, sizeof(host), &port, err, sizeof(err)), 0);
    ck_assert_str_eq(host, "10.1.2.3");
    ck_assert_int_eq(port, 99);
    ck_assert_int_eq(dfs_parse_hostport("myhost", 9520, host, sizeof(host), &port, err, sizeof(err)), 0);
    ck_assert_int_eq(port, 9520);
    ck_assert_int_eq(dfs_parse_hostport("[::1]:7", 1, host, sizeof(host), &port, err, sizeof(err)), 0);
    ck_assert_str_eq(host, "::1");
    ck_assert_int_eq(port, 7);
    ck_assert_int_eq(dfs_parse_hostport("h:99999", 1, host, sizeof(host), &port, err, sizeof(err)), -1);
    ck_assert_int_eq(dfs_parse_hostport(":5", 1, host, sizeof(host), &port, err, sizeof(err)), -1);
}
END_TEST

TEST_SUITE(config)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_file);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_hostport);
    suite_add_tcase(s, tc);
    return s;
}
