/* config.c - "key = value" files validated against a table of known keys. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

struct cfg_val {
    char *str;      /* CFG_STR (and the text of any value) */
    uint64_t num;   /* CFG_U64, CFG_SIZE */
    bool b;         /* CFG_BOOL */
    char **list;    /* CFG_LIST */
    size_t nlist;
    bool from_default; /* a list given explicitly replaces its default */
};

struct cfg {
    const struct cfg_key *keys;
    size_t nkeys;
    struct cfg_val *vals;
};

int cfg_parse_u64(const char *s, uint64_t *out)
{
    if (s == NULL || !isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

int cfg_parse_size(const char *s, uint64_t *out)
{
    if (s == NULL || !isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0)
        return -1;
    unsigned shift = 0;
    switch (toupper((unsigned char)*end)) {
    case '\0':
        break;
    case 'K': shift = 10; break;
    case 'M': shift = 20; break;
    case 'G': shift = 30; break;
    case 'T': shift = 40; break;
    default:
        return -1;
    }
    if (*end != '\0') {
        end++;
        if (*end == 'i' || *end == 'I')
            end++;
        if (*end == 'B' || *end == 'b')
            end++;
        if (*end != '\0')
            return -1;
    }
    if (shift && v > (UINT64_MAX >> shift))
        return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

int cfg_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "yes", "true", "on"};
    static const char *const no[] = {"0", "no", "false", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

static ssize_t key_index(const struct cfg *c, const char *name)
{
    for (size_t i = 0; i < c->nkeys; i++)
        if (strcmp(c->keys[i].name, name) == 0)
            return (ssize_t)i;
    return -1;
}

static void val_clear_list(struct cfg_val *v)
{
    for (size_t i = 0; i < v->nlist; i++)
        free(v->list[i]);
    free(v->list);
    v->list = NULL;
    v->nlist = 0;
}

/* Parse text into key i. Returns 0, or -1 with a reason in err. */
static int set_value(struct cfg *c, size_t i, const char *text, bool is_default, char *err,
                     size_t errlen)
{
    const struct cfg_key *k = &c->keys[i];
    struct cfg_val *v = &c->vals[i];
    uint64_t num;
    bool b;
    switch (k->type) {
    case CFG_U64:
    case CFG_SIZE:
        if ((k->type == CFG_U64 ? cfg_parse_u64(text, &num) : cfg_parse_size(text, &num)) != 0) {
            snprintf(err, errlen, "%s: '%s' is not a %s", k->name, text,
                     k->type == CFG_U64 ? "number" : "size (e.g. 64M)");
            return -1;
        }
        if (num < k->min || (k->max && num > k->max)) {
            snprintf(err, errlen, "%s: %s is out of range [%llu, %llu]", k->name, text,
                     (unsigned long long)k->min, (unsigned long long)k->max);
            return -1;
        }
        v->num = num;
        break;
    case CFG_BOOL:
        if (cfg_parse_bool(text, &b) != 0) {
            snprintf(err, errlen, "%s: '%s' is not yes/no", k->name, text);
            return -1;
        }
        v->b = b;
        break;
    case CFG_LIST: {
        if (!is_default && v->from_default) {
            val_clear_list(v);
            v->from_default = false;
        }
        if (*text == '\0')
            return 0;
        char **nl = realloc(v->list, (v->nlist + 1) * sizeof(char *));
        if (nl == NULL)
            goto nomem;
        v->list = nl;
        if ((v->list[v->nlist] = strdup(text)) == NULL)
            goto nomem;
        v->nlist++;
        if (is_default)
            v->from_default = true;
        return 0;
    }
    case CFG_STR:
        break;
    }
    char *s = strdup(text);
    if (s == NULL)
        goto nomem;
    free(v->str);
    v->str = s;
    return 0;
nomem:
    snprintf(err, errlen, "out of memory");
    return -1;
}

struct cfg *cfg_new(const struct cfg_key *keys)
{
    struct cfg *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->keys = keys;
    while (keys[c->nkeys].name)
        c->nkeys++;
    c->vals = calloc(c->nkeys ? c->nkeys : 1, sizeof(*c->vals));
    if (c->vals == NULL) {
        free(c);
        return NULL;
    }
    for (size_t i = 0; i < c->nkeys; i++) {
        char err[256];
        const char *def = keys[i].def ? keys[i].def : "";
        if (*def == '\0' && keys[i].type != CFG_STR && keys[i].type != CFG_LIST)
            continue;
        if (set_value(c, i, def, true, err, sizeof(err)) != 0) {
            log_err("config: bad built-in default: %s", err);
            abort();
        }
    }
    return c;
}

void cfg_free(struct cfg *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->nkeys; i++) {
        free(c->vals[i].str);
        val_clear_list(&c->vals[i]);
    }
    free(c->vals);
    free(c);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

int cfg_set(struct cfg *c, const char *key, const char *value, const char *where, char *err,
            size_t errlen)
{
    ssize_t i = key_index(c, key);
    if (i < 0) {
        snprintf(err, errlen, "%s: unknown key '%s'", where, key);
        return -1;
    }
    char reason[512];
    if (set_value(c, (size_t)i, value, false, reason, sizeof(reason)) != 0) {
        snprintf(err, errlen, "%s: %s", where, reason);
        return -1;
    }
    return 0;
}

int cfg_load(struct cfg *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    char line[4096];
    unsigned lineno = 0;
    int rc = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char where[512];
        snprintf(where, sizeof(where), "%s:%u", path, lineno);
        if (strchr(line, '\n') == NULL && !feof(f)) {
            snprintf(err, errlen, "%s: line too long", where);
            rc = -1;
            break;
        }
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = trim(line);
        if (*s == '\0')
            continue;
        char *eq = strchr(s, '=');
        if (eq == NULL) {
            snprintf(err, errlen, "%s: expected 'key = value', got '%s'", where, s);
            rc = -1;
            break;
        }
        *eq = '\0';
        char *key = trim(s), *val = trim(eq + 1);
        if (cfg_set(c, key, val, where, err, errlen) != 0) {
            rc = -1;
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        rc = -1;
    }
    fclose(f);
    return rc;
}

static const struct cfg_val *get(const struct cfg *c, const char *key, enum cfg_type t1,
                                 enum cfg_type t2)
{
    ssize_t i = key_index(c, key);
    if (i < 0 || (c->keys[i].type != t1 && c->keys[i].type != t2)) {
        log_err("config: key '%s' used with the wrong type or not declared", key);
        abort();
    }
    return &c->vals[i];
}

const char *cfg_str(const struct cfg *c, const char *key)
{
    const struct cfg_val *v = get(c, key, CFG_STR, CFG_STR);
    return v->str ? v->str : "";
}

uint64_t cfg_u64(const struct cfg *c, const char *key)
{
    return get(c, key, CFG_U64, CFG_SIZE)->num;
}

bool cfg_bool(const struct cfg *c, const char *key)
{
    return get(c, key, CFG_BOOL, CFG_BOOL)->b;
}

size_t cfg_list(const struct cfg *c, const char *key, const char *const **values)
{
    const struct cfg_val *v = get(c, key, CFG_LIST, CFG_LIST);
    *values = (const char *const *)v->list;
    return v->nlist;
}
