/* main.c - runs every unit test suite registered with TEST_SUITE(). */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "testlib.h"

size_t testlib_suites(const char ***names, testlib_suite_fn **fns);

static int wanted(const char *name)
{
    const char *sel = getenv("DFS_TEST_SUITE");
    if (sel == NULL || *sel == '\0')
        return 1;
    size_t n = strlen(name);
    for (const char *p = sel; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0)
            return 1;
        p += len + (e ? 1 : 0);
    }
    return 0;
}

int main(void)
{
    log_init("unit");
    if (getenv("DFS_LOG") == NULL && getenv("DFS_TRACE") == NULL)
        log_set_level(LOG_LVL_ERR);
    const char **names;
    testlib_suite_fn *fns;
    size_t n = testlib_suites(&names, &fns);
    SRunner *sr = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!wanted(names[i]))
            continue;
        Suite *s = fns[i]();
        if (sr == NULL)
            sr = srunner_create(s);
        else
            srunner_add_suite(sr, s);
    }
    if (sr == NULL)
        return 0;
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
