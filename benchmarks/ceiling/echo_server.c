/* The ceiling: a single-threaded, edge-triggered epoll echo server in C, the figure no Python
 * loop can beat on the same machine with the same client. It listens on 127.0.0.1 (an
 * ephemeral port), prints the port, and serves until its stdin closes.
 *
 * Edge-triggered (EPOLLET) as in the article: on each event, read until EAGAIN, echo what was
 * read (send until EAGAIN; what the kernel refuses waits in a per-connection buffer for
 * EPOLLOUT), accept until EAGAIN.
 */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUFFER 262144

struct conn {
    int fd;
    char *pending; /* bytes the kernel did not take yet */
    size_t pending_len;
};

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void drop(int ep, struct conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->pending);
    free(c);
}

/* Send what is pending; 0 when all is out, 1 when the kernel would block, -1 on error. */
static int flush(struct conn *c) {
    while (c->pending_len) {
        ssize_t sent = send(c->fd, c->pending, c->pending_len, MSG_NOSIGNAL);
        if (sent < 0) return errno == EAGAIN ? 1 : -1;
        memmove(c->pending, c->pending + sent, c->pending_len - sent);
        c->pending_len -= sent;
    }
    return 0;
}

int main(void) {
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(listener, 1024) < 0) die("listen");
    getsockname(listener, (struct sockaddr *)&addr, &len);
    printf("%d\n", ntohs(addr.sin_port));
    fflush(stdout);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
    ev.data.ptr = &ev; /* stdin: its EOF (or hang-up) ends the server */
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
    static char buffer[BUFFER];
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int e = 0; e < n; e++) {
            void *who = events[e].data.ptr;
            if (who == &ev) return 0;
            if (who == NULL) {
                int fd;
                while ((fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *c = calloc(1, sizeof *c);
                    c->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            struct conn *c = who;
            if (flush(c) < 0) {
                drop(ep, c);
                continue;
            }
            int alive = 1;
            for (;;) {
                ssize_t got = recv(c->fd, buffer, BUFFER, 0);
                if (got == 0 || (got < 0 && errno != EAGAIN)) {
                    alive = 0;
                    break;
                }
                if (got < 0) break; /* EAGAIN: drained, as edge triggering requires */
                ssize_t sent = 0;
                if (c->pending_len == 0) { /* the usual case: straight back out */
                    sent = send(c->fd, buffer, got, MSG_NOSIGNAL);
                    if (sent < 0 && errno != EAGAIN) {
                        alive = 0;
                        break;
                    }
                    if (sent < 0) sent = 0;
                }
                if (sent < got) { /* keep the rest for EPOLLOUT */
                    c->pending = realloc(c->pending, c->pending_len + (got - sent));
                    memcpy(c->pending + c->pending_len, buffer + sent, got - sent);
                    c->pending_len += got - sent;
                }
            }
            if (!alive) drop(ep, c);
        }
    }
}
