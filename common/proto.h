/* proto.h - the dfs wire protocol: version, frame layout, every message and status code. */
#ifndef DFS_PROTO_H
#define DFS_PROTO_H

#include <stddef.h>
#include <stdint.h>

/*
 * Protocol version changelog
 *   1  first version: HELLO, metadata ops, chunk data ops, chunkd registration.
 *
 * Frame layout (every connection, both directions):
 *
 *   +----------------------+-----------------------------------------------+
 *   | u32 body length (BE) | msgpack array [kind, req_id, op, payload]      |
 *   +----------------------+-----------------------------------------------+
 *
 *   kind    u8   DFS_KIND_REQUEST, DFS_KIND_RESPONSE or DFS_KIND_PUSH (one-way)
 *   req_id  u64  chosen by the sender of a request, echoed in its response;
 *                many requests may be in flight on one connection
 *   op      u16  one of DFS_OP_* below
 *   payload      msgpack array of the message's fields, in the order listed in
 *                the DFS_MSG_* tables below.  A response's first field is
 *                always its status (DFS_OK or a DFS_E* code); when status is not
 *                DFS_OK the rest may be omitted.  A decoder zero-fills missing
 *                trailing fields and ignores extra trailing fields (so a newer
 *                peer can append fields without a version bump).
 *
 * Bulk data (WRITE request, READ response) travels as the LAST field, a
 * msgpack bin, so an encoder can send it from the caller's buffer without a copy
 * and a decoder can point into the received frame.
 *
 * The first frame on every connection is HELLO from the connecting side.  A
 * peer with a different DFS_PROTO_VERSION, an unexpected role or bad auth gets
 * an error response naming the reason and the connection is closed.
 *
 * Every length read from the wire is checked against the maximum frame size of
 * that direction before anything is allocated (DFS_MAX_FRAME_*).
 */

#define DFS_PROTO_VERSION 1u

#define DFS_FRAME_HDR 4u

/* Maximum frame body per direction (bytes). */
#define DFS_MAX_IO (4u << 20)                          /* data bytes per READ/WRITE */
#define DFS_MAX_FRAME_TO_METAD (2u << 20)              /* client/chunkd -> metad */
#define DFS_MAX_FRAME_FROM_METAD (32u << 20)           /* metad -> anyone */
#define DFS_MAX_FRAME_CHUNKD (DFS_MAX_IO + (64u << 10)) /* to and from chunkd */
#define DFS_MAX_FRAME_ANY DFS_MAX_FRAME_FROM_METAD

#define DFS_MAX_NAME 255u
#define DFS_MAX_PATH 4096u
#define DFS_MAX_XATTR_NAME 255u
#define DFS_MAX_XATTR_VALUE (64u << 10)
#define DFS_MAX_GOAL 9u
#define DFS_READDIR_MAX 1024u /* entries per READDIR page */
#define DFS_REPORT_PAGE 32768u /* chunk entries per REPORT page */

/* Block size of the chunkd checksum table: one xxh3-64 per block. */
#define DFS_BLOCK_SIZE (64u << 10)

/* Default layout (DESIGN.md "Data model"). */
#define DFS_DEFAULT_STRIPE_UNIT (64u << 10)
#define DFS_DEFAULT_STRIPE_COUNT 2u
#define DFS_DEFAULT_CHUNK_SIZE (64ull << 20)
#define DFS_DEFAULT_GOAL 2u

#define DFS_ROOT_INO 1ull

/* Default ports. */
#define DFS_PORT_METAD 9520
#define DFS_PORT_RAFT 9521
#define DFS_PORT_HTTP 9580
#define DFS_PORT_CHUNKD 9530

enum dfs_kind {
    DFS_KIND_REQUEST = 0,
    DFS_KIND_RESPONSE = 1,
    DFS_KIND_PUSH = 2,
};

/* Roles announced in HELLO. */
enum dfs_role {
    DFS_ROLE_CLIENT = 1, /* dfsmount, library clients */
    DFS_ROLE_CHUNKD = 2, /* chunk server (to metad, or to a peer chunkd) */
    DFS_ROLE_METAD = 3,  /* metad (to a chunkd, or to another metad) */
    DFS_ROLE_ADMIN = 4,  /* dfsctl */
};

/*
 * Status codes.  X(name, value, string).  These are the only error values that
 * cross the wire; fuse-client maps them to errno (dfs_status_to_errno()).
 */
#define DFS_STATUS_MAP(X)                                               \
    X(OK, 0, "success")                                                 \
    X(EPERM, 1, "operation not permitted")                              \
    X(ENOENT, 2, "no such file or directory")                           \
    X(EIO, 3, "input/output error")                                     \
    X(EEXIST, 4, "file exists")                                         \
    X(ENOTDIR, 5, "not a directory")                                    \
    X(EISDIR, 6, "is a directory")                                      \
    X(EINVAL, 7, "invalid argument")                                    \
    X(ENOSPC, 8, "no space left")                                       \
    X(ENOTEMPTY, 9, "directory not empty")                              \
    X(ENAMETOOLONG, 10, "name too long")                                \
    X(EACCES, 11, "permission denied")                                  \
    X(ELOOP, 12, "too many levels of symbolic links or a rename loop")  \
    X(ENODATA, 13, "no such attribute")                                 \
    X(ERANGE, 14, "result too large")                                   \
    X(E2BIG, 15, "argument too large")                                  \
    X(ENOTSUP, 16, "operation not supported")                           \
    X(ETIMEDOUT, 17, "deadline exceeded")                               \
    X(ECONN, 18, "connection lost or refused")                          \
    X(EPROTO, 19, "protocol error")                                     \
    X(ECORRUPT, 20, "checksum mismatch: data corrupt")                  \
    X(ESTALE, 21, "stale chunk version")                                \
    X(ENOTLEADER, 22, "not the raft leader")                            \
    X(ENOCHUNK, 23, "no such chunk")                                    \
    X(EBUSY, 24, "resource busy")                                       \
    X(EAGAIN, 25, "try again")                                          \
    X(ENOMEM, 26, "out of memory")                                      \
    X(EROFS, 27, "read-only")                                           \
    X(EFBIG, 28, "file too large")                                      \
    X(ENOSYS, 29, "operation not implemented")                          \
    X(EAUTH, 30, "authentication failed")                               \
    X(ENOSERVERS, 31, "not enough chunk servers")                       \
    X(EMLINK, 32, "too many links")                                     \
    X(EVERSION, 33, "protocol version mismatch")                        \
    X(ECANCELED, 34, "canceled: connection closed")                     \
    X(EBADF, 35, "bad file handle")                                     \
    X(EXDEV, 36, "cross-device link")                                   \
    X(ECONFIG, 37, "bad configuration")                                 \
    X(EDISK, 38, "disk failed")

enum dfs_status {
#define DFS_X_ENUM(n, v, s) DFS_##n = v,
    DFS_STATUS_MAP(DFS_X_ENUM)
#undef DFS_X_ENUM
    DFS_STATUS_COUNT
};

/* Returns a static string for a status code ("unknown status" if out of range). */
const char *dfs_strerror(int status);

/* Replica state as reported in chunk listings. */
enum dfs_replica_state {
    DFS_RS_OK = 0,      /* current version, verified on last report */
    DFS_RS_STALE = 1,   /* older version than metad's */
    DFS_RS_CORRUPT = 2, /* a checksum failed */
    DFS_RS_LOST = 3,    /* its data dir failed or the server reported it gone */
    DFS_RS_DOWN = 4,    /* the server is down */
    DFS_RS_PENDING = 5, /* being replicated to this server */
};

/* Chunk server state. */
enum dfs_server_state {
    DFS_SS_UP = 0,
    DFS_SS_DOWN = 1,
    DFS_SS_DRAINING = 2,
};

/* Data dir state. */
enum dfs_dir_state {
    DFS_DS_OK = 0,
    DFS_DS_FAILED = 1, /* EIO or read-only: its chunks are lost */
    DFS_DS_FULL = 2,
};

/* SETATTR valid mask. */
#define DFS_SET_MODE (1u << 0)
#define DFS_SET_UID (1u << 1)
#define DFS_SET_GID (1u << 2)
#define DFS_SET_SIZE (1u << 3)
#define DFS_SET_ATIME (1u << 4)
#define DFS_SET_MTIME (1u << 5)
#define DFS_SET_ATIME_NOW (1u << 6)
#define DFS_SET_MTIME_NOW (1u << 7)
#define DFS_SET_CTIME (1u << 8)

/* RENAME flags (same values as Linux renameat2). */
#define DFS_RENAME_NOREPLACE (1u << 0)
#define DFS_RENAME_EXCHANGE (1u << 1)

/* SETXATTR flags (same values as Linux). */
#define DFS_XATTR_CREATE 1u
#define DFS_XATTR_REPLACE 2u

/* WRITE flags. */
#define DFS_WF_CREATE (1u << 0) /* create the chunk at `version` if absent */
#define DFS_WF_SYNC (1u << 1)   /* fdatasync before replying */

/* COMMIT flags. */
#define DFS_CF_SYNC (1u << 0)    /* fsync barrier: reply once the log is on disk */
#define DFS_CF_RELEASE (1u << 1) /* the writer is done: release its leases */
#define DFS_CF_NOCHANGE (1u << 2) /* size and mtime unchanged: only the barrier */

/* OPEN flags beyond the POSIX access mode. */
#define DFS_OF_WRITE (1u << 30)
/* CREATE (mknod `flags`): also allocate chunk 0 and answer it in `chunks`
 * with a write lease (lease_ms), so a small file needs no GRANT.  metad
 * that cannot place a chain answers without chunks (the client GRANTs). */
#define DFS_CREATE_ALLOC (1u << 29)

/* Message field tables.
 *
 * Each message is listed as FIELD(kind, name[, type]) items:
 *   U32 / U64 / I64  unsigned/signed integers
 *   STR              UTF-8 string, NUL-terminated after decoding (struct dfs_str)
 *   BIN              byte string (struct dfs_bin); points into the received frame
 *   BULK             like BIN but must be the last field; encoded from the
 *                    caller's buffer without a copy
 *   U64V             array of u64 (uint64_t *name; uint32_t name_count)
 *   ARR, t           array of struct dfs_t (struct dfs_t *name; uint32_t name_count)
 *   OBJ, t           embedded struct dfs_t
 */

/* Nested types. */
#define DFS_TYPE_cred(F) /* caller identity and idempotency key (client -> metad) */ \
    F(U64, session)  /* client session id (from HELLO node_id) */                    \
    F(U64, seq)      /* per-session request number, never reused; 0 = idempotent */ \
    F(U32, uid)      F(U32, gid)                                                     \
    F(U64V, groups)  /* supplementary groups */

#define DFS_TYPE_attr(F)                                                        \
    F(U64, ino) F(U32, mode) F(U32, nlink) F(U32, uid) F(U32, gid)              \
    F(U32, rdev) F(U64, size) F(I64, atime) /* ns since epoch */                 \
    F(I64, mtime) F(I64, ctime) F(U32, goal) F(U64, generation)

#define DFS_TYPE_layout(F) \
    F(U32, stripe_unit) F(U32, stripe_count) F(U64, chunk_size)

#define DFS_TYPE_replica(F) /* one copy of a chunk, or one hop of a chain */ \
    F(U32, server_id) F(STR, host) F(U32, port) F(U32, state)

#define DFS_TYPE_chunk(F) /* one chunk of a file */                            \
    F(U64, index)     /* chunk number within the file (see layout) */            \
    F(U64, chunk_id) F(U32, version) F(U64, length)                             \
    F(ARR, replicas, replica) /* readable copies first, best first */           \
    F(U32, lease_ms)  /* write grant: lease left; 0 for plain lookups */

#define DFS_TYPE_dirent(F) F(STR, name) F(U64, cookie) F(OBJ, attr, attr)

#define DFS_TYPE_chunkrep(F) /* a chunk as a chunkd reports it */ \
    F(U64, chunk_id) F(U32, version) F(U64, length) F(U32, state)

#define DFS_TYPE_dirinfo(F) /* a chunkd data dir */                                \
    F(STR, path) F(U64, total) F(U64, used) F(U64, avail) F(U32, state) F(U32, chunks)

#define DFS_TYPE_server(F) /* a chunk server as metad sees it */                      \
    F(U32, server_id) F(STR, host) F(U32, port) F(STR, label) F(U32, state)          \
    F(U64, total) F(U64, used) F(U64, avail) F(U64, chunks) F(U32, load)             \
    F(I64, last_seen) F(U64, bytes_read) F(U64, bytes_written)                        \
    F(U64, bytes_replicated) F(ARR, dirs, dirinfo)

#define DFS_TYPES(X)                                                              \
    X(cred) X(attr) X(layout) X(replica) X(chunk) X(dirent) X(chunkrep) X(dirinfo) \
    X(server)

/* Message bodies (requests and responses). */
#define DFS_MSG_status(F) F(U32, status)

#define DFS_MSG_hello(F)                                                             \
    F(U32, proto_version) F(U32, role) F(U64, node_id) F(STR, cluster)               \
    F(BIN, auth) /* reserved: HMAC of a challenge with the cluster secret */
#define DFS_MSG_hello_resp(F)                                                        \
    F(U32, status) F(U32, proto_version) F(U32, role) F(U64, node_id)               \
    F(STR, message) /* human-readable reason on failure */                           \
    F(STR, leader) /* metad: "host:port" of the leader when this node is not */

#define DFS_MSG_empty(F)
#define DFS_MSG_ino_req(F) F(OBJ, cred, cred) F(U64, ino)
#define DFS_MSG_name_req(F) F(OBJ, cred, cred) F(U64, parent) F(STR, name)
#define DFS_MSG_attr_resp(F) F(U32, status) F(OBJ, attr, attr)                  \
    F(OBJ, layout, layout) /* CREATE, OPEN of a file: its layout (else zero) */      \
    F(ARR, chunks, chunk)  /* OPEN: chunks with index < chunks_known, as CHUNKS */   \
    F(U32, chunks_known)   /* OPEN: chunk indices [0, chunks_known) are listed */
#define DFS_MSG_setattr(F)                                                          \
    F(OBJ, cred, cred) F(U64, ino) F(U32, valid) F(U32, mode) F(U32, uid)             \
    F(U32, gid) F(U64, size) F(I64, atime) F(I64, mtime)
#define DFS_MSG_mknod(F) /* MKNOD, MKDIR and CREATE */                              \
    F(OBJ, cred, cred) F(U64, parent) F(STR, name) F(U32, mode) F(U32, rdev)          \
    F(U32, flags) /* CREATE: open flags (O_EXCL...) */
#define DFS_MSG_symlink(F) F(OBJ, cred, cred) F(U64, parent) F(STR, name) F(STR, target)
#define DFS_MSG_readlink_resp(F) F(U32, status) F(STR, target)
#define DFS_MSG_rename(F)                                                            \
    F(OBJ, cred, cred) F(U64, parent) F(STR, name) F(U64, newparent) F(STR, newname) \
    F(U32, flags)
#define DFS_MSG_link(F) F(OBJ, cred, cred) F(U64, ino) F(U64, newparent) F(STR, newname)
#define DFS_MSG_open(F) F(OBJ, cred, cred) F(U64, ino) F(U32, flags)
#define DFS_MSG_readdir(F)                                                           \
    F(OBJ, cred, cred) F(U64, ino) F(U64, cookie) F(U32, max)
#define DFS_MSG_readdir_resp(F) F(U32, status) F(ARR, entries, dirent) F(U32, eof)
#define DFS_MSG_statfs_resp(F)                                                       \
    F(U32, status) F(U64, total) F(U64, avail) F(U64, files) F(U64, ffree)
#define DFS_MSG_setxattr(F)                                                          \
    F(OBJ, cred, cred) F(U64, ino) F(STR, name) F(BIN, value) F(U32, flags)
#define DFS_MSG_xattr_req(F) F(OBJ, cred, cred) F(U64, ino) F(STR, name)
#define DFS_MSG_bin_resp(F) F(U32, status) F(BIN, value)
#define DFS_MSG_chunks_req(F) F(OBJ, cred, cred) F(U64, ino) F(U64, first) F(U32, count)
#define DFS_MSG_chunks_resp(F)                                                       \
    F(U32, status) F(OBJ, layout, layout) F(U64, size) F(U32, goal)                  \
    F(ARR, chunks, chunk)
#define DFS_MSG_grant(F)                                                             \
    F(OBJ, cred, cred) F(U64, ino) F(U64, index)                                     \
    F(U32, bad_server) /* nonzero: this server failed in the current chain */
#define DFS_MSG_grant_resp(F) F(U32, status) F(OBJ, chunk, chunk)
#define DFS_MSG_commit(F)                                                            \
    F(OBJ, cred, cred) F(U64, ino) F(U64, size) F(I64, mtime) F(U32, flags)
#define DFS_MSG_badrep(F)                                                            \
    F(OBJ, cred, cred) F(U64, chunk_id) F(U32, server_id) F(U32, reason)
#define DFS_MSG_setgoal(F) F(OBJ, cred, cred) F(U64, ino) F(U32, goal) F(U32, recursive)
#define DFS_MSG_count_resp(F) F(U32, status) F(U64, count)
#define DFS_MSG_status_resp(F) /* cluster status for dfsctl and the dashboard */   \
    F(U32, status) F(ARR, servers, server) F(U64, chunks) F(U64, healthy)            \
    F(U64, under_goal) F(U64, over_goal) F(U64, missing) F(U64, repair_queue)         \
    F(U64, repairs_running) F(U64, repairs_done) F(U64, bytes_replicated)            \
    F(U64, files) F(U64, dirs) F(U64, gc_pending) F(STR, leader) F(U64, raft_index)
#define DFS_MSG_drain(F) F(OBJ, cred, cred) F(U32, server_id) F(U32, on)

/* chunkd -> metad */
#define DFS_MSG_register(F)                                                          \
    F(U32, server_id) /* 0: first start, metad assigns one */                        \
    F(STR, host) F(U32, port) F(STR, label) F(ARR, dirs, dirinfo)
#define DFS_MSG_register_resp(F) F(U32, status) F(U32, server_id)
#define DFS_MSG_report(F) /* full chunk report, in pages; after REGISTER */          \
    F(U32, server_id) F(ARR, chunks, chunkrep) F(U32, last)
#define DFS_MSG_heartbeat(F)                                                         \
    F(U32, server_id) F(ARR, dirs, dirinfo) F(U32, load)                            \
    F(ARR, changes, chunkrep) /* new, grown, corrupt or lost chunks since last */    \
    F(U64, bytes_read) F(U64, bytes_written) F(U64, bytes_replicated)

/* anyone -> chunkd */
#define DFS_MSG_write(F)                                                             \
    F(U64, chunk_id) F(U32, version) F(U64, offset) F(U32, flags)                    \
    F(ARR, chain, replica) /* servers after this one, in order */                     \
    F(U64, csum) /* xxh3-64 of data */                                                \
    F(BULK, data)
#define DFS_MSG_write_resp(F) F(U32, status) F(U64, length) F(U32, failed_server)
#define DFS_MSG_read(F) F(U64, chunk_id) F(U32, version) F(U64, offset) F(U32, length)
#define DFS_MSG_read_resp(F) /* data may be shorter than asked at end of chunk */ \
    F(U32, status) F(U64, length) F(U64, csum) F(BULK, data)
#define DFS_MSG_chunk_req(F) /* SYNC, DELETE, LIST-one */                           \
    F(U64, chunk_id) F(U32, version) F(ARR, chain, replica)
#define DFS_MSG_setversion(F) F(U64, chunk_id) F(U32, old_version) F(U32, version)
#define DFS_MSG_truncate(F)                                                          \
    F(U64, chunk_id) F(U32, old_version) F(U32, version) F(U64, length)
#define DFS_MSG_replicate(F) /* pull chunk_id@version from the first source that works */ \
    F(U64, chunk_id) F(U32, version) F(ARR, sources, replica)
#define DFS_MSG_list_resp(F) F(U32, status) F(ARR, chunks, chunkrep)

/*
 * Operations: X(OP, value, name, request message, response message).
 * Direction in the comment: C = client (dfsmount/dfsctl), M = metad, S = chunkd.
 */
#define DFS_OPS(X)                                                                   \
    /* any -> any */                                                                 \
    X(HELLO, 1, "hello", hello, hello_resp)                                           \
    X(PING, 2, "ping", empty, status)                                                \
    /* C -> M: namespace */                                                           \
    X(LOOKUP, 10, "lookup", name_req, attr_resp)                                      \
    X(GETATTR, 11, "getattr", ino_req, attr_resp)                                     \
    X(SETATTR, 12, "setattr", setattr, attr_resp)                                     \
    X(MKNOD, 13, "mknod", mknod, attr_resp)                                           \
    X(MKDIR, 14, "mkdir", mknod, attr_resp)                                           \
    X(CREATE, 15, "create", mknod, attr_resp) /* mknod of a file + open */            \
    X(UNLINK, 16, "unlink", name_req, status)                                         \
    X(RMDIR, 17, "rmdir", name_req, status)                                           \
    X(SYMLINK, 18, "symlink", symlink, attr_resp)                                     \
    X(READLINK, 19, "readlink", ino_req, readlink_resp)                              \
    X(RENAME, 20, "rename", rename, status)                                           \
    X(LINK, 21, "link", link, attr_resp)                                              \
    X(OPEN, 22, "open", open, attr_resp)                                              \
    X(RELEASE, 23, "release", open, status)                                           \
    X(READDIR, 24, "readdir", readdir, readdir_resp)                                  \
    X(STATFS, 25, "statfs", ino_req, statfs_resp)                                     \
    X(SETXATTR, 26, "setxattr", setxattr, status)                                     \
    X(GETXATTR, 27, "getxattr", xattr_req, bin_resp)                                  \
    X(LISTXATTR, 28, "listxattr", ino_req, bin_resp) /* NUL-separated names */        \
    X(REMOVEXATTR, 29, "removexattr", xattr_req, status)                             \
    /* C -> M: data path */                                                           \
    X(CHUNKS, 40, "chunks", chunks_req, chunks_resp)                                  \
    X(GRANT, 41, "grant", grant, grant_resp)                                          \
    X(COMMIT, 42, "commit", commit, attr_resp)                                        \
    X(BADREPLICA, 43, "badreplica", badrep, status)                                   \
    /* C -> M: administration */                                                      \
    X(SETGOAL, 50, "setgoal", setgoal, count_resp)                                    \
    X(STATUS, 51, "status", ino_req, status_resp)                                     \
    X(DRAIN, 52, "drain", drain, status)                                              \
    /* S -> M */                                                                       \
    X(REGISTER, 60, "register", register, register_resp)                              \
    X(REPORT, 61, "report", report, status)                                           \
    X(HEARTBEAT, 62, "heartbeat", heartbeat, status)                                  \
    /* C, M, S -> S */                                                                \
    X(WRITE, 80, "write", write, write_resp)                                          \
    X(READ, 81, "read", read, read_resp)                                              \
    X(SYNC, 82, "sync", chunk_req, write_resp)                                        \
    X(DELETE, 83, "delete", chunk_req, status)                                        \
    X(SETVERSION, 84, "setversion", setversion, status)                               \
    X(TRUNCATE, 85, "truncate", truncate, status)                                     \
    X(REPLICATE, 86, "replicate", replicate, write_resp)                              \
    X(LIST, 87, "list", empty, list_resp)

enum dfs_op {
#define DFS_X_OP(op, v, name, req, resp) DFS_OP_##op = v,
    DFS_OPS(DFS_X_OP)
#undef DFS_X_OP
    DFS_OP_MAX = 128
};

/* Returns the op's name for logs, or NULL if the op is unknown. */
const char *dfs_op_name(unsigned op);

/* ----- C structs generated from the tables above ----- */

struct dfs_str {
    const char *ptr; /* NUL-terminated after decoding */
    uint32_t len;
};

struct dfs_bin {
    const void *ptr;
    uint32_t len;
};

#define DFS_X_FIELD(kind, ...) DFS_X_FIELD_##kind(__VA_ARGS__)
#define DFS_X_FIELD_U32(n) uint32_t n;
#define DFS_X_FIELD_U64(n) uint64_t n;
#define DFS_X_FIELD_I64(n) int64_t n;
#define DFS_X_FIELD_STR(n) struct dfs_str n;
#define DFS_X_FIELD_BIN(n) struct dfs_bin n;
#define DFS_X_FIELD_BULK(n) struct dfs_bin n;
#define DFS_X_FIELD_U64V(n) \
    uint64_t *n;            \
    uint32_t n##_count;
#define DFS_X_FIELD_ARR(n, t) \
    struct dfs_##t *n;        \
    uint32_t n##_count;
#define DFS_X_FIELD_OBJ(n, t) struct dfs_##t n;

#define DFS_X_TYPE_STRUCT(t) \
    struct dfs_##t {         \
        DFS_TYPE_##t(DFS_X_FIELD) char _end[0]; \
    };
#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wzero-length-array"
#pragma clang diagnostic ignored "-Wgnu-empty-struct"
#endif
DFS_TYPES(DFS_X_TYPE_STRUCT)

#define DFS_X_MSG_STRUCT(m) \
    struct dfs_msg_##m {    \
        DFS_MSG_##m(DFS_X_FIELD) char _end[0]; \
    };
#define DFS_MSGS(X)                                                                    \
    X(status) X(hello) X(hello_resp) X(empty) X(ino_req) X(name_req) X(attr_resp)      \
    X(setattr) X(mknod) X(symlink) X(readlink_resp) X(rename) X(link) X(open)         \
    X(readdir) X(readdir_resp) X(statfs_resp) X(setxattr) X(xattr_req) X(bin_resp)     \
    X(chunks_req) X(chunks_resp) X(grant) X(grant_resp) X(commit) X(badrep)           \
    X(setgoal) X(count_resp) X(status_resp) X(drain) X(register) X(register_resp)     \
    X(report) X(heartbeat) X(write) X(write_resp) X(read) X(read_resp) X(chunk_req)    \
    X(setversion) X(truncate) X(replicate) X(list_resp)
DFS_MSGS(DFS_X_MSG_STRUCT)
#if defined(__clang__)
#pragma clang diagnostic pop
#endif

#endif /* DFS_PROTO_H */
