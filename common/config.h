/* config.h - "key = value" config files checked against a table of known keys. */
#ifndef DFS_CONFIG_H
#define DFS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum cfg_type {
    CFG_STR,  /* any string */
    CFG_U64,  /* decimal integer within [min, max] */
    CFG_SIZE, /* integer with optional K/M/G/T suffix (powers of 1024) */
    CFG_BOOL, /* yes/no/true/false/1/0/on/off */
    CFG_LIST, /* may repeat; every occurrence is kept in order */
};

/* One known key: its type, default (as text, NULL = none / empty list), bounds
 * for numbers, and a one-line description (used by packaging samples). */
struct cfg_key {
    const char *name;
    enum cfg_type type;
    const char *def;
    uint64_t min, max;
    const char *help;
};

struct cfg;

/* Create a config with every key at its default. `keys` ends with a {NULL}
 * entry and must outlive the cfg.  Returns NULL on out of memory. */
struct cfg *cfg_new(const struct cfg_key *keys);
void cfg_free(struct cfg *c);

/* Read a file.  Lines are "key = value"; '#' starts a comment; blank lines
 * are ignored.  An unknown key, a missing '=', or a bad value is an error:
 * returns -1 and writes "FILE:LINE: reason" into err.  Returns 0 on success. */
int cfg_load(struct cfg *c, const char *path, char *err, size_t errlen);

/* Set one key from text (command-line override "key=value"); same checks.
 * `where` names the source in error messages (e.g. "-o"). */
int cfg_set(struct cfg *c, const char *key, const char *value, const char *where,
            char *err, size_t errlen);

/* Getters: the key must be in the table with that type (else abort: a bug). */
const char *cfg_str(const struct cfg *c, const char *key);
uint64_t cfg_u64(const struct cfg *c, const char *key); /* CFG_U64 and CFG_SIZE */
bool cfg_bool(const struct cfg *c, const char *key);
/* CFG_LIST: number of values; *values points to an internal array. */
size_t cfg_list(const struct cfg *c, const char *key, const char *const **values);

/* Parse helpers shared with command-line parsing. Return 0 or -1. */
int cfg_parse_u64(const char *s, uint64_t *out);
int cfg_parse_size(const char *s, uint64_t *out);
int cfg_parse_bool(const char *s, bool *out);

#endif /* DFS_CONFIG_H */
