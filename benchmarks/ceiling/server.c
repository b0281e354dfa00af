/* The ceiling: a single-threaded, edge-triggered epoll server in C, the figure no Python loop
 * can beat on the same machine with the same client. Two modes:
 *
 *     server echo ADDRESS    sends back every byte it receives
 *     server http ADDRESS    answers each HTTP/1.1 GET (keep-alive, pipelining allowed) with a
 *                            fixed 13-byte "Hello, World!" response
 *
 * ADDRESS is HOST:PORT (an IPv4 literal; PORT 0 picks a free port) or unix:PATH (a Unix
 * stream socket; a stale PATH is unlinked first). Once listening it prints one line, the port
 * (TCP) or the path (Unix), and serves until its stdin reaches end of file (or SIGINT or
 * SIGTERM arrives), then removes its Unix path and exits 0.
 *
 * Edge-triggered (EPOLLET) as in the article: on each event a connection first sends what it
 * owes, then reads until EAGAIN; the answer goes straight out with send() until EAGAIN, and
 * what the kernel refuses waits in a per-connection buffer for EPOLLOUT (later output queues
 * behind it, so nothing overtakes). The http mode does no more than it must: it only counts
 * the requests, by finding each "\r\n\r\n" with a four-state matcher that carries over
 * between reads (so a request split across reads, or many in one read, both work), and
 * answers from a buffer of responses built once. No allocation per request: a connection's
 * output buffer grows when the kernel pushes back and is then kept.
 */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common.h"

#define READ_BUFFER (256 * 1024)
#define BACKLOG 4096
#define MAX_EVENTS 256
/* Stop reading a connection whose unsent output reaches this (a peer that sends without
 * reading); the EPOLLOUT that follows the kernel taking some of it resumes the reading. */
#define PENDING_LIMIT (16 * 1024 * 1024)

static const char RESPONSE[] = "HTTP/1.1 200 OK\r\n"
                               "Content-Type: text/plain\r\n"
                               "Content-Length: 13\r\n"
                               "\r\n"
                               "Hello, World!";
#define RESPONSE_LEN (sizeof RESPONSE - 1)
#define RESPONSES_AT_ONCE 840 /* copies in the prebuilt buffer: about 64 KiB */

struct conn {
    int fd;
    unsigned matched;   /* http: how much of "\r\n\r\n" ends the bytes read so far (0..3) */
    char *out;          /* bytes the kernel has not taken yet are out[head..tail) */
    size_t head, tail, cap;
};

static char read_buffer[READ_BUFFER];
static char responses[RESPONSES_AT_ONCE * RESPONSE_LEN];
static int http_mode;
/* What data.ptr points at for the descriptors that are not connections. */
static char listener_tag, stdin_tag, signal_tag;



static void drop(struct conn *c) {
    close(c->fd); /* also takes it out of the epoll set: the descriptor is not shared */
    free(c->out);
    free(c);
}

/* Queue len bytes behind what is already pending; -1 when memory runs out. */
static int keep(struct conn *c, const char *data, size_t len) {
    if (c->tail + len > c->cap && c->head > 0) { /* first slide the pending bytes down */
        memmove(c->out, c->out + c->head, c->tail - c->head);
        c->tail -= c->head;
        c->head = 0;
    }
    if (c->tail + len > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        while (cap < c->tail + len) cap *= 2;
        char *out = realloc(c->out, cap);
        if (out == NULL) return -1;
        c->out = out;
        c->cap = cap;
    }
    memcpy(c->out + c->tail, data, len);
    c->tail += len;
    return 0;
}

/* Send data now if nothing is pending, keep what the kernel refuses; -1 on error. */
static int emit(struct conn *c, const char *data, size_t len) {
    if (c->head == c->tail) {
        while (len > 0) {
            ssize_t sent = send(c->fd, data, len, MSG_NOSIGNAL);
            if (sent < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                return -1;
            }
            data += sent;
            len -= (size_t)sent;
        }
        if (len == 0) return 0;
    }
    return keep(c, data, len);
}

/* Send what is pending: 0 when all is out or the kernel would block, -1 on error. */
static int flush(struct conn *c) {
    while (c->head < c->tail) {
        ssize_t sent = send(c->fd, c->out + c->head, c->tail - c->head, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR) continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        }
        c->head += (size_t)sent;
    }
    c->head = c->tail = 0;
    return 0;
}

/* http: count the requests that end in data (carrying a partial "\r\n\r\n" over to the next
 * read) and answer each one; -1 on error. */
static int serve_http(struct conn *c, const char *data, size_t len) {
    static const char end_of_head[4] = {'\r', '\n', '\r', '\n'};
    const char *p = data, *end = data + len;
    unsigned matched = c->matched;
    size_t requests = 0;
    while (p < end) {
        if (matched == 0) { /* skip to the next '\r' at memchr's speed */
            p = memchr(p, '\r', (size_t)(end - p));
            if (p == NULL) break;
            p++;
            matched = 1;
            continue;
        }
        char ch = *p++;
        if (ch == end_of_head[matched]) {
            if (++matched == 4) {
                requests++;
                matched = 0;
            }
        } else {
            matched = ch == '\r'; /* the only proper prefix of the pattern a mismatch leaves */
        }
    }
    c->matched = matched;
    while (requests > 0) {
        size_t batch = requests < RESPONSES_AT_ONCE ? requests : RESPONSES_AT_ONCE;
        if (emit(c, responses, batch * RESPONSE_LEN) < 0) return -1;
        requests -= batch;
    }
    return 0;
}

/* A connection's event, whatever it is: send what is owed, then read until EAGAIN. */
static void serve(struct conn *c) {
    if (flush(c) < 0) {
        drop(c);
        return;
    }
    while (c->tail - c->head < PENDING_LIMIT) {
        ssize_t got = recv(c->fd, read_buffer, READ_BUFFER, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return; /* drained */
        if (got <= 0) { /* the peer closed, or reset, or some other error */
            drop(c);
            return;
        }
        int failed = http_mode ? serve_http(c, read_buffer, (size_t)got)
                               : emit(c, read_buffer, (size_t)got);
        if (failed) {
            drop(c);
            return;
        }
    }
}

static void accept_all(int ep, int listener, int tcp) {
    int one = 1;
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
            return; /* EAGAIN: all taken; EMFILE, ENFILE, ENOBUFS, ENOMEM: not this time */
        }
        if (tcp) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (c == NULL) {
            close(fd);
            return;
        }
        c->fd = fd;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                 .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            drop(c);
            continue;
        }
    }
}

static void add(int ep, int fd, void *tag) {
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = tag};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
}

int main(int argc, char **argv) {
    if (argc != 3 || (strcmp(argv[1], "echo") != 0 && strcmp(argv[1], "http") != 0)) {
        fprintf(stderr, "usage: %s echo|http HOST:PORT|unix:PATH\n", argv[0]);
        return 2;
    }
    http_mode = strcmp(argv[1], "http") == 0;
    const char *address = argv[2];
    const char *unix_path = NULL;
    raise_file_limit();
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < RESPONSES_AT_ONCE; i++)
        memcpy(responses + i * RESPONSE_LEN, RESPONSE, RESPONSE_LEN);

    int listener, one = 1;
    if (strncmp(address, "unix:", 5) == 0) {
        unix_path = address + 5;
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        if (*unix_path == '\0' || strlen(unix_path) >= sizeof addr.sun_path) {
            fprintf(stderr, "%s: bad Unix socket path\n", address);
            return 2;
        }
        strcpy(addr.sun_path, unix_path);
        listener = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (listener < 0) die("socket");
        if (unlink(unix_path) < 0 && errno != ENOENT) die("unlink");
        if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    } else {
        char host[64];
        const char *colon = strrchr(address, ':');
        char *rest;
        long port = colon ? strtol(colon + 1, &rest, 10) : -1;
        struct sockaddr_in addr = {.sin_family = AF_INET};
        if (colon == NULL || (size_t)(colon - address) >= sizeof host || colon[1] == '\0' ||
            *rest != '\0' || port < 0 || port > 65535) {
            fprintf(stderr, "%s: not HOST:PORT or unix:PATH\n", address);
            return 2;
        }
        memcpy(host, address, (size_t)(colon - address));
        host[colon - address] = '\0';
        if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
            fprintf(stderr, "%s: HOST must be an IPv4 address\n", address);
            return 2;
        }
        addr.sin_port = htons((unsigned short)port);
        listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (listener < 0) die("socket");
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    }
    if (listen(listener, BACKLOG) < 0) die("listen");

    /* SIGINT and SIGTERM come through the loop too, so that the Unix path is removed. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &signals, NULL) < 0) die("sigprocmask");
    int sfd = signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0) die("signalfd");

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    add(ep, listener, &listener_tag);
    add(ep, sfd, &signal_tag);
    struct epoll_event stdin_event = {.events = EPOLLIN, .data.ptr = &stdin_tag};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, STDIN_FILENO, &stdin_event) < 0) {
        if (errno != EPERM) die("epoll_ctl(stdin)");
        fprintf(stderr, "stdin must be a pipe, socket or terminal: the server runs until it "
                        "closes\n");
        if (unix_path) unlink(unix_path);
        return 2;
    }

    if (unix_path) {
        printf("%s\n", unix_path);
    } else {
        struct sockaddr_in bound;
        socklen_t len = sizeof bound;
        if (getsockname(listener, (struct sockaddr *)&bound, &len) < 0) die("getsockname");
        printf("%d\n", ntohs(bound.sin_port));
    }
    if (fflush(stdout) != 0) die("stdout");

    struct epoll_event events[MAX_EVENTS];
    for (int running = 1; running;) {
        int n = epoll_wait(ep, events, MAX_EVENTS, -1);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int e = 0; e < n && running; e++) {
            void *who = events[e].data.ptr;
            if (who == &listener_tag) {
                accept_all(ep, listener, unix_path == NULL);
            } else if (who == &stdin_tag) {
                char scrap[512]; /* whatever comes before the end of file is ignored */
                ssize_t got = read(STDIN_FILENO, scrap, sizeof scrap);
                if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN)) running = 0;
            } else if (who == &signal_tag) {
                running = 0;
            } else {
                serve(who);
            }
        }
    }
    if (unix_path) unlink(unix_path);
    return 0;
}
