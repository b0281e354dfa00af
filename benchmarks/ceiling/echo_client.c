/* The load client of the echo benchmarks: C, one thread, epoll, so that the client is not what
 * is measured. N connections to HOST:PORT; each sends SIZE bytes, waits until the same SIZE
 * bytes have come back, and sends again, until SECONDS have passed. Prints the number of
 * round trips completed and the bytes verified.
 *
 *     echo_client HOST PORT CONNECTIONS SIZE SECONDS
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd;
    size_t sent, received; /* of the current message */
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s HOST PORT CONNECTIONS SIZE SECONDS\n", argv[0]);
        return 2;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) die("inet_pton");
    int count = atoi(argv[3]);
    size_t size = (size_t)atol(argv[4]);
    double seconds = atof(argv[5]);
    char *message = malloc(size), *buffer = malloc(size);
    for (size_t i = 0; i < size; i++) message[i] = (char)('a' + i % 26);
    struct conn *conns = calloc(count, sizeof *conns);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < count; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conns[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    }
    long long round_trips = 0, verified = 0;
    double deadline = now() + seconds;
    for (int i = 0; i < count; i++) /* blocking sends: a message fits the socket buffer */
        if (send(conns[i].fd, message, size, MSG_NOSIGNAL) != (ssize_t)size) die("send");
    struct epoll_event events[256];
    while (now() < deadline) {
        int n = epoll_wait(ep, events, 256, 100);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int e = 0; e < n; e++) {
            struct conn *c = events[e].data.ptr;
            ssize_t got = recv(c->fd, buffer, size - c->received, MSG_DONTWAIT);
            if (got <= 0) {
                if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                fprintf(stderr, "connection closed by the server\n");
                return 1;
            }
            if (memcmp(buffer, message + c->received, got) != 0) {
                fprintf(stderr, "echo mismatch\n");
                return 1;
            }
            c->received += got;
            verified += got;
            if (c->received == size) {
                c->received = 0;
                round_trips++;
                if (send(c->fd, message, size, MSG_NOSIGNAL) != (ssize_t)size) die("send");
            }
        }
    }
    printf("%lld %lld\n", round_trips, verified);
    return 0;
}
