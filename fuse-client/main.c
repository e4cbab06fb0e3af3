/* main.c - dfsmount: option parsing, config file, mount, daemonize, session loop. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "fsops.h"
#include "log.h"
#include "mclient.h"
#include "rpc.h"
#include "util.h"

#define DEFAULT_CONF "/etc/dfs/dfsmount.conf"
#define DEFAULT_META "127.0.0.1:9520"

/* Keys of /etc/dfs/dfsmount.conf (every one can also be given as -o key=value). */
static const struct cfg_key conf_keys[] = {
    {"meta", CFG_STR, DEFAULT_META, 0, 0, "metad address list host:port[,host:port...]"},
    {"timeout", CFG_U64, "60", 1, 86400, "seconds before a call fails with EIO"},
    {"attr_timeout", CFG_U64, "1000", 0, 3600000, "attribute cache time (ms)"},
    {"entry_timeout", CFG_U64, "1000", 0, 3600000, "name cache time (ms)"},
    {"readahead", CFG_SIZE, "8M", 0, 64u << 20, "largest read-ahead window per file"},
    {"write_buffer", CFG_SIZE, "2M", 1u << 20, 256u << 20, "buffered bytes per file"},
    {"prealloc", CFG_BOOL, "no", 0, 0, "ask CREATE to allocate chunk 0 (saves a GRANT per new file)"},
    {"fresh_dirs", CFG_BOOL, "no", 0, 0,
     "answer lookups in directories this mount just created locally (breaks close-to-open for other clients' new names for entry_timeout)"},
    {"log_level", CFG_STR, "info", 0, 0, "err, warning, notice, info, debug, trace"},
    {NULL, 0, NULL, 0, 0, NULL},
};

/* Options only meaningful to mount(8)/fstab: dropped before libfuse sees them. */
static bool fstab_only(const char *o)
{
    static const char *const drop[] = {"defaults", "_netdev", "nofail", "auto", "noauto",
                                       "user", "users", "nouser", "owner", "group", NULL};
    for (int i = 0; drop[i]; i++)
        if (strcmp(o, drop[i]) == 0)
            return true;
    return strncmp(o, "x-", 2) == 0 || strncmp(o, "comment=", 8) == 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: dfsmount [SOURCE] MOUNTPOINT [-f] [-d] [-c FILE] [-o opt[,opt...]]\n"
            "  SOURCE               metad address list host:port[,host:port...]\n"
            "  -f                   stay in the foreground\n"
            "  -d                   foreground with FUSE debug output\n"
            "  -c FILE              config file (default " DEFAULT_CONF ")\n"
            "  -o meta=ADDRS        metad addresses (overrides SOURCE and the config file)\n"
            "  -o timeout=SECONDS   every call answers within this time (default 60)\n"
            "  -o attr_timeout=MS, entry_timeout=MS, readahead=SIZE, write_buffer=SIZE,\n"
            "     log_level=LEVEL\n"
            "  other -o options (allow_other, default_permissions, ro, ...) go to FUSE.\n");
}

struct opts {
    const char *source;
    const char *mountpoint;
    const char *conf;
    bool conf_given;
    bool foreground, debug;
    char *fuse_opts; /* comma-separated, for libfuse */
    size_t fuse_len;
    char *ours[32];  /* key=value for our config */
    int nours;
    bool ro;
};

static int add_fuse_opt(struct opts *o, const char *s)
{
    size_t l = strlen(s);
    char *p = realloc(o->fuse_opts, o->fuse_len + l + 2);
    if (p == NULL)
        return -1;
    o->fuse_opts = p;
    if (o->fuse_len)
        p[o->fuse_len++] = ',';
    memcpy(p + o->fuse_len, s, l + 1);
    o->fuse_len += l;
    return 0;
}

static void opts_free(struct opts *o)
{
    free(o->fuse_opts);
    for (int i = 0; i < o->nours; i++)
        free(o->ours[i]);
    if (o->conf_given)
        free((char *)o->conf);
}

static int parse_o(struct opts *o, const char *list)
{
    char *dup = strdup(list), *save = NULL;
    if (dup == NULL)
        return -1;
    for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(t, '=');
        size_t kl = eq ? (size_t)(eq - t) : strlen(t);
        bool ours = false;
        for (int i = 0; conf_keys[i].name; i++)
            if (strlen(conf_keys[i].name) == kl && strncmp(t, conf_keys[i].name, kl) == 0)
                ours = true;
        if (ours) {
            if (eq == NULL || o->nours >= 32) {
                fprintf(stderr, "dfsmount: option '%s' needs a value\n", t);
                free(dup);
                return -1;
            }
            o->ours[o->nours++] = strdup(t);
        } else if (strncmp(t, "config=", 7) == 0) {
            o->conf = strdup(t + 7);
            o->conf_given = true;
        } else if (fstab_only(t)) {
            continue;
        } else {
            if (strcmp(t, "ro") == 0)
                o->ro = true;
            if (strcmp(t, "rw") == 0)
                o->ro = false;
            if (add_fuse_opt(o, t) != 0) {
                free(dup);
                return -1;
            }
        }
    }
    free(dup);
    return 0;
}

static int parse_args(struct opts *o, int argc, char **argv)
{
    const char *pos[2];
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            printf("dfsmount protocol %u, libfuse %s\n", DFS_PROTO_VERSION, fuse_pkgversion());
            exit(0);
        } else if (strcmp(a, "-f") == 0) {
            o->foreground = true;
        } else if (strcmp(a, "-d") == 0) {
            o->foreground = o->debug = true;
        } else if (strcmp(a, "-s") == 0) {
            /* single-threaded: accepted for compatibility, ignored */
        } else if (strcmp(a, "-n") == 0) {
            /* mount -n (no mtab): nothing to do */
        } else if (strcmp(a, "-c") == 0 && i + 1 < argc) {
            o->conf = strdup(argv[++i]);
            o->conf_given = true;
        } else if (strcmp(a, "-o") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "dfsmount: -o needs an argument\n");
                return -1;
            }
            if (parse_o(o, argv[++i]) != 0)
                return -1;
        } else if (strncmp(a, "-o", 2) == 0) {
            if (parse_o(o, a + 2) != 0)
                return -1;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "dfsmount: unknown option '%s'\n", a);
            return -1;
        } else {
            if (npos == 2) {
                fprintf(stderr, "dfsmount: too many arguments\n");
                return -1;
            }
            pos[npos++] = a;
        }
    }
    if (npos == 0) {
        usage(stderr);
        return -1;
    }
    if (npos == 2) {
        o->source = pos[0];
        o->mountpoint = pos[1];
    } else {
        o->mountpoint = pos[0];
    }
    return 0;
}

/* A SOURCE that is a plain name ("dfs", "none") is only a label. */
static bool source_is_address(const char *s)
{
    return s && *s && strcmp(s, "dfs") != 0 && strcmp(s, "none") != 0 &&
           strcmp(s, "dfsmount") != 0;
}

/* Check that metad answers before mounting, so a wrong address is a clear
 * error at mount time rather than EIO later.  Runs before the fork. */
static int preflight(const char *addrs, uint32_t timeout_ms)
{
    struct rpc_mt *mt = rpc_mt_start("dfsmount-pre");
    if (mt == NULL)
        return -1;
    char err[256];
    struct mclient_opts mo = {addrs, DFS_ROLE_CLIENT, DFS_MIN(timeout_ms, 5000u),
                              DFS_MIN(timeout_ms, 15000u)};
    struct mclient *m = mclient_new(mt, &mo, err, sizeof(err));
    if (m == NULL) {
        fprintf(stderr, "dfsmount: %s\n", err);
        rpc_mt_stop(mt);
        return -1;
    }
    struct dfs_msg_ino_req rq;
    memset(&rq, 0, sizeof(rq));
    rq.ino = DFS_ROOT_INO;
    int st = mclient_do(m, DFS_OP_GETATTR, &rq, NULL);
    mclient_free(m);
    rpc_mt_stop(mt);
    if (st != DFS_OK) {
        fprintf(stderr, "dfsmount: metad at %s: %s\n", addrs, dfs_strerror(st));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    log_init("dfsmount");
    struct opts o;
    memset(&o, 0, sizeof(o));
    o.conf = DEFAULT_CONF;
    if (parse_args(&o, argc, argv) != 0)
        return 2;

    /* Defaults, then the config file, then -o (SOURCE sits between). */
    char err[512];
    struct cfg *cfg = cfg_new(conf_keys);
    if (cfg == NULL)
        return 1;
    if (access(o.conf, F_OK) == 0 || o.conf_given) {
        if (cfg_load(cfg, o.conf, err, sizeof(err)) != 0) {
            fprintf(stderr, "dfsmount: %s\n", err);
            return 2;
        }
    }
    if (source_is_address(o.source) &&
        cfg_set(cfg, "meta", o.source, "SOURCE", err, sizeof(err)) != 0) {
        fprintf(stderr, "dfsmount: %s\n", err);
        return 2;
    }
    for (int i = 0; i < o.nours; i++) {
        char *eq = strchr(o.ours[i], '=');
        *eq = '\0';
        if (cfg_set(cfg, o.ours[i], eq + 1, "-o", err, sizeof(err)) != 0) {
            fprintf(stderr, "dfsmount: %s\n", err);
            return 2;
        }
    }
    int lvl = log_level_parse(cfg_str(cfg, "log_level"));
    if (lvl < 0) {
        fprintf(stderr, "dfsmount: -o log_level: unknown level '%s'\n",
                cfg_str(cfg, "log_level"));
        return 2;
    }
    if (getenv("DFS_TRACE") == NULL && getenv("DFS_LOG") == NULL)
        log_set_level(lvl);
    const char *meta = cfg_str(cfg, "meta");
    char host[256];
    int port;
    {
        /* Validate every address now (mclient also does, but later). */
        char *dup = strdup(meta), *save = NULL;
        for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save))
            if (dfs_parse_hostport(t, DFS_PORT_METAD, host, sizeof(host), &port, err,
                                   sizeof(err)) != 0) {
                fprintf(stderr, "dfsmount: metad address: %s\n", err);
                return 2;
            }
        free(dup);
    }

    static struct dfsc client;
    client.timeout_ms = (uint32_t)cfg_u64(cfg, "timeout") * 1000u;
    client.create_alloc = cfg_bool(cfg, "prealloc");
    client.fresh_dirs = cfg_bool(cfg, "fresh_dirs");
    client.attr_timeout = (double)cfg_u64(cfg, "attr_timeout") / 1000.0;
    client.entry_timeout = (double)cfg_u64(cfg, "entry_timeout") / 1000.0;
    client.ra_max = (uint32_t)cfg_u64(cfg, "readahead");
    client.wbuf_max = (uint32_t)cfg_u64(cfg, "write_buffer");
    client.ro = o.ro;

    char mp[PATH_MAX];
    if (realpath(o.mountpoint, mp) == NULL) {
        fprintf(stderr, "dfsmount: mount point %s: %s\n", o.mountpoint, strerror(errno));
        return 1;
    }
    if (preflight(meta, client.timeout_ms) != 0)
        return 1;

    /* libfuse arguments: our fsname/subtype plus the pass-through options. */
    char base[600];
    /* fsname is the metad list, which has commas: libfuse splits options on
     * commas unless they are escaped with a backslash. */
    char fsname[512];
    size_t fl = 0;
    for (const char *p = meta; *p && fl + 2 < sizeof(fsname); p++) {
        if (*p == ',' || *p == '\\')
            fsname[fl++] = '\\';
        fsname[fl++] = *p;
    }
    fsname[fl] = '\0';
    snprintf(base, sizeof(base), "fsname=%s,subtype=dfsmount", fsname);
    char *fopts = NULL;
    if (asprintf(&fopts, "%s%s%s", base, o.fuse_len ? "," : "",
                 o.fuse_opts ? o.fuse_opts : "") < 0)
        return 1;
    char *fargv[5];
    int fargc = 0;
    fargv[fargc++] = argv[0];
    fargv[fargc++] = "-o";
    fargv[fargc++] = fopts;
    if (o.debug)
        fargv[fargc++] = "-d";
    fargv[fargc] = NULL;
    struct fuse_args args = FUSE_ARGS_INIT(fargc, fargv);

    struct fuse_session *se = fuse_session_new(&args, &fsops_ops, sizeof(fsops_ops), &client);
    if (se == NULL) {
        fprintf(stderr, "dfsmount: bad FUSE options: %s\n", fopts);
        return 2;
    }
    if (fuse_set_signal_handlers(se) != 0)
        return 1;
    if (fuse_session_mount(se, mp) != 0) {
        fprintf(stderr, "dfsmount: cannot mount on %s\n", mp);
        fuse_remove_signal_handlers(se);
        fuse_session_destroy(se);
        return 1;
    }
    /* Fork only now: the mount exists when the parent returns.  Threads are
     * started after the fork. */
    if (fuse_daemonize(o.foreground) != 0) {
        fuse_session_unmount(se);
        return 1;
    }
    if (!o.foreground)
        log_use_syslog();

    int ret = 1;
    client.mt = rpc_mt_start("dfsmount-rpc");
    if (client.mt == NULL) {
        log_err("cannot start the rpc thread");
        goto err_after_mount;
    }
    struct mclient_opts mo = {meta, DFS_ROLE_CLIENT, DFS_MIN(client.timeout_ms, 10000u),
                              client.timeout_ms};
    client.mc = mclient_new(client.mt, &mo, err, sizeof(err));
    if (client.mc == NULL) {
        log_err("%s", err);
        goto err_after_mt;
    }
    client.session = mclient_session(client.mc);
    if (dfsc_init(&client) != 0)
        goto err_after_mc;
    dfsc_start_flusher(&client);
    log_notice("mounted %s on %s (timeout %us)", meta, mp, client.timeout_ms / 1000);

    struct fuse_loop_config *lc = fuse_loop_cfg_create();
    fuse_loop_cfg_set_clone_fd(lc, 0);
    fuse_loop_cfg_set_idle_threads(lc, 16);
    fuse_loop_cfg_set_max_threads(lc, 64);
    ret = fuse_session_loop_mt(se, lc) != 0 ? 1 : 0;
    fuse_loop_cfg_destroy(lc);
    log_notice("unmounting %s", mp);

    dfsc_shutdown(&client);
err_after_mc:
    mclient_free(client.mc);
err_after_mt:
    rpc_mt_stop(client.mt);
err_after_mount:
    fuse_session_unmount(se);
    fuse_remove_signal_handlers(se);
    fuse_session_destroy(se);
    cfg_free(cfg);
    fuse_opt_free_args(&args);
    free(fopts);
    opts_free(&o);
    return ret;
}
