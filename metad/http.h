/* http.h - metad's HTTP endpoint: dashboard, JSON API, Prometheus metrics. */
#ifndef DFS_METAD_HTTP_H
#define DFS_METAD_HTTP_H

#include <stddef.h>

struct metad;

/*
 * A minimal HTTP/1.1 server on the metad loop (loop thread only):
 *   GET /                 self-contained HTML dashboard (polls /api/v1/status)
 *   GET /api/v1/status    cluster status as JSON (same data as the STATUS RPC)
 *   GET /api/v1/servers   the servers array alone
 *   GET /metrics          Prometheus text format 0.0.4
 * GET and HEAD only; one request per connection (Connection: close).  A
 * request head larger than HTTP_MAX_REQUEST, or not complete within
 * HTTP_READ_TIMEOUT_MS, or malformed, gets an error status and the connection
 * is closed.  At most HTTP_MAX_CONNS connections are served at once.
 */
#define HTTP_MAX_REQUEST 8192u
#define HTTP_READ_TIMEOUT_MS 5000u
#define HTTP_WRITE_TIMEOUT_MS 10000u
#define HTTP_MAX_CONNS 64u

struct http_server;

/* Listen on "HOST[:PORT]" (port defaults to DFS_PORT_HTTP).  Returns NULL
 * with a reason in err. */
struct http_server *http_start(struct metad *m, const char *listen, char *err, size_t errlen);
/* Stop listening and close every connection (the loop finishes the closes). */
void http_stop(struct http_server *h);

/* The documents, malloc'ed and NUL-terminated (length in *len); NULL on out
 * of memory.  Exposed for tests. */
char *http_status_json(struct metad *m, size_t *len);
char *http_servers_json(struct metad *m, size_t *len);
char *http_metrics_text(struct metad *m, size_t *len);

/* Parse a request head (bytes up to and including the blank line).
 * Returns the HTTP status to answer with (200 = ok: *method and the path are
 * filled; path is NUL-terminated in pathbuf without the query string), or
 * 400/405/414/505. */
int http_parse_request(const char *buf, size_t len, int *is_head, char *pathbuf,
                       size_t pathlen);

#endif /* DFS_METAD_HTTP_H */
