/* What the load client and the ceiling server share. */
#ifndef EPOLLOOP_CEILING_COMMON_H
#define EPOLLOOP_CEILING_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* Benchmarks open tens of thousands of sockets: raise the open files limit as far as the
 * kernel lets anyone (fs.nr_open) when privileged, else to the hard limit. */
static void raise_file_limit(void) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) < 0) die("getrlimit");
    struct rlimit most = {.rlim_cur = 1048576, .rlim_max = 1048576};
    FILE *nr_open = fopen("/proc/sys/fs/nr_open", "r");
    if (nr_open != NULL) {
        unsigned long value;
        if (fscanf(nr_open, "%lu", &value) == 1) most.rlim_cur = most.rlim_max = value;
        fclose(nr_open);
    }
    if (most.rlim_max > limit.rlim_max && setrlimit(RLIMIT_NOFILE, &most) == 0) return;
    if (limit.rlim_cur == limit.rlim_max) return;
    limit.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &limit) < 0) perror("setrlimit(RLIMIT_NOFILE) (going on)");
}

#endif
