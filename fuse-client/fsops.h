/* fsops.h - the libfuse low-level operations of dfsmount. */
#ifndef DFS_FUSE_FSOPS_H
#define DFS_FUSE_FSOPS_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#include "data.h"

/* The operation table.  The session's userdata must be a struct dfsc *
 * (initialised with dfsc_init, mt and mc set) that outlives the session. */
extern const struct fuse_lowlevel_ops fsops_ops;

/* Map a DFS status to a positive errno for the kernel: transport failures
 * (deadline, lost connection, no leader...) become EIO. */
int fsops_errno(int status);

#endif /* DFS_FUSE_FSOPS_H */
