/* The load client of the benchmarks, in C with epoll and threads so that the client is not
 * what is measured.
 *
 *     load_client echo ADDRESS CONNECTIONS SIZE SECONDS THREADS
 *     load_client http ADDRESS CONNECTIONS URLPATH SECONDS THREADS
 *     load_client idle ADDRESS CONNECTIONS
 *
 * ADDRESS is HOST:PORT (an IPv4 literal) or unix:PATH (a Unix stream socket).
 *
 * echo and http connect all CONNECTIONS first (blocking connects), deal them round-robin to
 * THREADS threads, each with its own epoll set, then start the clock. Every connection runs a
 * closed loop: one request, wait for the whole response, check it, the next request. After
 * SECONDS the client prints one line, "REQUESTS BYTES_VERIFIED": the request/response pairs
 * completed and the bytes of their responses, over all threads. A response that fails its
 * check, a connection the server closes, any error: a message on stderr, exit status 1.
 *
 *   echo: the request is SIZE bytes of a fixed pattern; the response must be the same bytes.
 *         A request larger than the socket buffers goes out in pieces while the connection
 *         keeps reading (the server echoes as it receives: a client that only sent would
 *         deadlock with it).
 *   http: the request is "GET URLPATH HTTP/1.1" with a Host header; the response must have
 *         the status line "HTTP/1.1 200" and a Content-Length (chunked is refused), and ends
 *         after that many body bytes. Its bytes (head and body) are what is counted.
 *
 * idle opens CONNECTIONS connections and makes one round trip of one byte on each (so the
 * server has surely accepted and set up every one), prints "ready", and holds them open until
 * its stdin reaches end of file: the server's memory per idle connection is then measurable.
 */
#define _GNU_SOURCE /* memmem */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h> /* isfinite: a macro, no -lm */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define SCRATCH (256 * 1024) /* per thread: where response bytes are read to be checked */
#define HEAD_MAX 8192        /* http: the largest response head accepted */
#define MAX_EVENTS 256
#define TICK_MS 100 /* the clock is looked at least this often */

enum mode { ECHO, HTTP, IDLE };

struct conn {
    int fd;
    int writing;      /* EPOLLOUT is in the interest set */
    size_t sent;      /* bytes of the current request sent */
    size_t got;       /* echo: response bytes received; http: bytes held in head */
    size_t head_len;  /* http: length of the response head, 0 until it is complete */
    size_t body_len;  /* http: its Content-Length */
    size_t body_left; /* http: body bytes still to come */
    char *head;       /* http: the response head as it arrives (HEAD_MAX bytes) */
};

struct worker {
    pthread_t thread;
    int ep;
    struct conn *conns;
    int count;
    long long requests, bytes;
    char *scratch;
};

static enum mode mode;
static const char *request; /* what each connection sends, again and again */
static size_t request_len;
static double deadline; /* CLOCK_MONOTONIC seconds; written before the start barrier */
static pthread_barrier_t start;


static void fail(const char *message) {
    fprintf(stderr, "load_client: %s\n", message);
    exit(1);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long number(const char *text, long min, long max, const char *what) {
    char *rest;
    errno = 0;
    long value = strtol(text, &rest, 10);
    if (errno != 0 || rest == text || *rest != '\0' || value < min || value > max) {
        fprintf(stderr, "load_client: %s must be an integer from %ld to %ld, not %s\n", what,
                min, max, text);
        exit(2);
    }
    return value;
}


/* -- the address ---------------------------------------------------------------------- */

static struct sockaddr_storage address;
static socklen_t address_len;
static int tcp;

static void parse_address(const char *text) {
    memset(&address, 0, sizeof address);
    if (strncmp(text, "unix:", 5) == 0) {
        struct sockaddr_un *un = (struct sockaddr_un *)&address;
        const char *path = text + 5;
        if (*path == '\0' || strlen(path) >= sizeof un->sun_path) {
            fprintf(stderr, "load_client: %s: bad Unix socket path\n", text);
            exit(2);
        }
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, path);
        address_len = sizeof *un;
        tcp = 0;
        return;
    }
    struct sockaddr_in *in = (struct sockaddr_in *)&address;
    char host[64];
    const char *colon = strrchr(text, ':');
    if (colon == NULL || (size_t)(colon - text) >= sizeof host) {
        fprintf(stderr, "load_client: %s: not HOST:PORT or unix:PATH\n", text);
        exit(2);
    }
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = '\0';
    in->sin_family = AF_INET;
    in->sin_port = htons((unsigned short)number(colon + 1, 1, 65535, "PORT"));
    if (inet_pton(AF_INET, host, &in->sin_addr) != 1) {
        fprintf(stderr, "load_client: %s: HOST must be an IPv4 address\n", text);
        exit(2);
    }
    address_len = sizeof *in;
    tcp = 1;
}

/* Loopback gives each source address ~28,000 ephemeral ports toward one server port: spread
 * the connections over 16 source addresses in 127/8 (the port is still picked at connect,
 * IP_BIND_ADDRESS_NO_PORT), so that 50,000 and more fit. */
static void spread_source(int fd, int index) {
    const struct sockaddr_in *to = (const struct sockaddr_in *)&address;
    if (!tcp || ntohl(to->sin_addr.s_addr) >> 24 != 127) return;
    struct sockaddr_in from = {.sin_family = AF_INET};
    from.sin_addr.s_addr = htonl(0x7f000001u + (unsigned)(index % 16));
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&from, sizeof from) < 0) die("bind (source address)");
}

/* A blocking connect; the message says which connection failed and the likely reason. */
static int open_connection(int index) {
    int fd = socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        struct rlimit limit;
        getrlimit(RLIMIT_NOFILE, &limit);
        fprintf(stderr, "load_client: socket for connection %d: %s (open files limit %lld)\n",
                index + 1, strerror(errno), (long long)limit.rlim_cur);
        exit(1);
    }
    spread_source(fd, index);
    /* A server that stopped accepting leaves connect() waiting on a full listen queue: give
     * up after a while (Linux applies SO_SNDTIMEO to a blocking connect) instead of hanging. */
    struct timeval patience = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &patience, sizeof patience);
    if (connect(fd, (struct sockaddr *)&address, address_len) < 0) {
        int error = errno;
        fprintf(stderr, "load_client: connect for connection %d: %s%s\n", index + 1,
                strerror(error),
                error == EADDRNOTAVAIL ? " (out of local ports? see "
                                         "net.ipv4.ip_local_port_range)"
                : error == EAGAIN      ? " (the Unix socket's backlog is full)"
                : error == EINPROGRESS ? " (no answer in 10 s: did the server stop accepting?)"
                                       : "");
        exit(1);
    }
    if (tcp) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

/* -- echo and http -------------------------------------------------------------------- */

/* Send more of the request; watch for EPOLLOUT only while some of it is left. */
static void send_more(struct worker *w, struct conn *c) {
    while (c->sent < request_len) {
        ssize_t sent = send(c->fd, request + c->sent, request_len - c->sent, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            die("send");
        }
        c->sent += (size_t)sent;
    }
    int writing = c->sent < request_len;
    if (writing != c->writing) {
        struct epoll_event ev = {.events = EPOLLIN | (writing ? EPOLLOUT : 0), .data.ptr = c};
        if (epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl");
        c->writing = writing;
    }
}

/* The response is complete: count it, and start the next request. */
static void completed(struct worker *w, struct conn *c, size_t bytes) {
    if (c->sent < request_len) fail("a response came before its request was sent");
    w->requests++;
    w->bytes += (long long)bytes;
    c->sent = c->got = c->head_len = c->body_len = c->body_left = 0;
    send_more(w, c);
}

/* recv, with the errors of a benchmark: > 0 bytes, or 0 for EAGAIN. */
static size_t receive(struct conn *c, char *into, size_t len) {
    for (;;) {
        ssize_t got = recv(c->fd, into, len, 0);
        if (got > 0) return (size_t)got;
        if (got == 0) fail("connection closed by the server");
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        die("recv");
    }
}

static void read_echo(struct worker *w, struct conn *c) {
    for (;;) {
        size_t want = request_len - c->got;
        size_t got = receive(c, w->scratch, want < SCRATCH ? want : SCRATCH);
        if (got == 0) return;
        if (c->got + got > c->sent) fail("echo: the server sent bytes before they were sent");
        if (memcmp(w->scratch, request + c->got, got) != 0) fail("echo: mismatch");
        c->got += got;
        if (c->got == request_len) {
            completed(w, c, request_len);
            return; /* the next response cannot be here yet */
        }
    }
}

/* The head is complete (head_len bytes, ending in the blank line): check the status line,
 * find the Content-Length. */
static void parse_head(struct conn *c) {
    const char *p = c->head, *end = c->head + c->head_len - 2; /* stop at the blank line */
    if (memcmp(p, "HTTP/1.1 200", 12) != 0 || (p[12] != ' ' && p[12] != '\r')) {
        int len = (int)((const char *)memchr(p, '\r', c->head_len) - p); /* the first line */
        fprintf(stderr, "load_client: http: the status line is not HTTP/1.1 200: %.*s\n",
                len < 80 ? len : 80, p);
        exit(1);
    }
    int have_length = 0;
    size_t length = 0;
    p = memchr(p, '\n', (size_t)(end - p)) + 1;
    while (p < end) {
        const char *eol = memchr(p, '\r', (size_t)(end - p)); /* every line ends in \r\n */
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon != NULL && colon - p == 14 && strncasecmp(p, "content-length", 14) == 0) {
            const char *v = colon + 1, *v_end = eol;
            while (v < v_end && (*v == ' ' || *v == '\t')) v++;
            while (v_end > v && (v_end[-1] == ' ' || v_end[-1] == '\t')) v_end--;
            if (v == v_end) fail("http: empty Content-Length");
            size_t value = 0;
            for (; v < v_end; v++) {
                if (*v < '0' || *v > '9' || value > ((size_t)-1 - 9) / 10)
                    fail("http: bad Content-Length");
                value = value * 10 + (size_t)(*v - '0');
            }
            if (have_length && value != length) fail("http: two different Content-Lengths");
            have_length = 1;
            length = value;
        } else if (colon != NULL && colon - p == 17 &&
                   strncasecmp(p, "transfer-encoding", 17) == 0) {
            fail("http: Transfer-Encoding (chunked) is not supported");
        }
        p = eol + 2;
    }
    if (!have_length) fail("http: the response has no Content-Length");
    c->body_len = c->body_left = length;
}

static void read_http(struct worker *w, struct conn *c) {
    for (;;) {
        if (c->head_len == 0) { /* the head: into the connection's own buffer */
            if (c->got == HEAD_MAX) fail("http: the response head is too large");
            size_t got = receive(c, c->head + c->got, HEAD_MAX - c->got);
            if (got == 0) return;
            size_t from = c->got > 3 ? c->got - 3 : 0;
            c->got += got;
            char *blank = memmem(c->head + from, c->got - from, "\r\n\r\n", 4);
            if (blank == NULL) continue;
            c->head_len = (size_t)(blank + 4 - c->head);
            parse_head(c);
            size_t extra = c->got - c->head_len; /* body bytes read with the head */
            if (extra > c->body_left) fail("http: more bytes than the response");
            c->body_left -= extra;
        } else { /* the body: read and counted, not kept */
            size_t want = c->body_left < SCRATCH ? c->body_left : SCRATCH;
            size_t got = receive(c, w->scratch, want);
            if (got == 0) return;
            c->body_left -= got;
        }
        if (c->body_left == 0) {
            completed(w, c, c->head_len + c->body_len);
            return;
        }
    }
}

static void *run(void *arg) {
    struct worker *w = arg;
    struct epoll_event events[MAX_EVENTS];
    pthread_barrier_wait(&start);
    double end = deadline;
    for (int i = 0; i < w->count; i++) send_more(w, &w->conns[i]);
    for (;;) {
        double left = end - now();
        if (left <= 0) break;
        int timeout = left * 1000 < TICK_MS ? (int)(left * 1000) + 1 : TICK_MS;
        int n = epoll_wait(w->ep, events, MAX_EVENTS, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int e = 0; e < n; e++) {
            struct conn *c = events[e].data.ptr;
            if (events[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                if (mode == ECHO)
                    read_echo(w, c);
                else
                    read_http(w, c);
            }
            if ((events[e].events & EPOLLOUT) && c->sent < request_len) send_more(w, c);
        }
    }
    return NULL;
}

static int load(int connections, double seconds, int threads) {
    if (threads > connections) threads = connections;
    struct worker *workers = calloc((size_t)threads, sizeof *workers);
    if (workers == NULL) die("calloc");
    for (int t = 0; t < threads; t++) {
        struct worker *w = &workers[t];
        w->conns = calloc((size_t)(connections / threads + 1), sizeof *w->conns);
        w->scratch = malloc(SCRATCH);
        w->ep = epoll_create1(EPOLL_CLOEXEC);
        if (w->conns == NULL || w->scratch == NULL) die("malloc");
        if (w->ep < 0) die("epoll_create1");
    }
    for (int i = 0; i < connections; i++) {
        struct worker *w = &workers[i % threads];
        struct conn *c = &w->conns[w->count++];
        c->fd = open_connection(i);
        if (fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) < 0) die("fcntl");
        if (mode == HTTP && (c->head = malloc(HEAD_MAX)) == NULL) die("malloc");
    }
    /* Registered only now: the conns arrays no longer move. */
    for (int t = 0; t < threads; t++) {
        for (int i = 0; i < workers[t].count; i++) {
            struct conn *c = &workers[t].conns[i];
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
            if (epoll_ctl(workers[t].ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
        }
    }
    if (pthread_barrier_init(&start, NULL, (unsigned)threads + 1) != 0) fail("barrier");
    for (int t = 0; t < threads; t++) {
        int error = pthread_create(&workers[t].thread, NULL, run, &workers[t]);
        if (error) {
            errno = error;
            die("pthread_create");
        }
    }
    deadline = now() + seconds; /* the clock starts with every connection open */
    pthread_barrier_wait(&start);
    long long requests = 0, bytes = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(workers[t].thread, NULL);
        requests += workers[t].requests;
        bytes += workers[t].bytes;
    }
    printf("%lld %lld\n", requests, bytes);
    if (fflush(stdout) != 0) die("stdout");
    for (int t = 0; t < threads; t++) {
        for (int i = 0; i < workers[t].count; i++) {
            close(workers[t].conns[i].fd);
            free(workers[t].conns[i].head);
        }
        close(workers[t].ep);
        free(workers[t].conns);
        free(workers[t].scratch);
    }
    free(workers);
    return 0;
}

/* -- idle ----------------------------------------------------------------------------- */

static int idle(int connections) {
    int *fds = malloc((size_t)connections * sizeof *fds);
    if (fds == NULL) die("malloc");
    for (int i = 0; i < connections; i++) {
        fds[i] = open_connection(i);
        char byte = 'x';
        ssize_t done;
        while ((done = send(fds[i], &byte, 1, MSG_NOSIGNAL)) < 0 && errno == EINTR) {}
        if (done != 1) die("send");
        while ((done = recv(fds[i], &byte, 1, 0)) < 0 && errno == EINTR) {}
        if (done < 0) die("recv");
        if (done == 0) fail("idle: connection closed by the server");
        if (byte != 'x') fail("idle: the server did not echo the byte");
    }
    printf("ready\n");
    if (fflush(stdout) != 0) die("stdout");
    char scrap[512];
    for (;;) { /* until the end of stdin */
        ssize_t got = read(STDIN_FILENO, scrap, sizeof scrap);
        if (got == 0 || (got < 0 && errno != EINTR)) break;
    }
    for (int i = 0; i < connections; i++) close(fds[i]);
    free(fds);
    return 0;
}

static void usage(const char *program) {
    fprintf(stderr,
            "usage: %s echo ADDRESS CONNECTIONS SIZE SECONDS THREADS\n"
            "       %s http ADDRESS CONNECTIONS URLPATH SECONDS THREADS\n"
            "       %s idle ADDRESS CONNECTIONS\n"
            "ADDRESS: HOST:PORT (IPv4) or unix:PATH\n",
            program, program, program);
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 2) usage(argv[0]);
    if (strcmp(argv[1], "echo") == 0 && argc == 7)
        mode = ECHO;
    else if (strcmp(argv[1], "http") == 0 && argc == 7)
        mode = HTTP;
    else if (strcmp(argv[1], "idle") == 0 && argc == 4)
        mode = IDLE;
    else
        usage(argv[0]);
    signal(SIGPIPE, SIG_IGN);
    raise_file_limit();
    parse_address(argv[2]);
    int connections = (int)number(argv[3], 1, 10000000, "CONNECTIONS");
    if (mode == IDLE) return idle(connections);

    char *rest;
    double seconds = strtod(argv[5], &rest);
    if (rest == argv[5] || *rest != '\0' || !(seconds > 0) || !isfinite(seconds)) {
        fprintf(stderr, "load_client: SECONDS must be a positive number, not %s\n", argv[5]);
        return 2;
    }
    int threads = (int)number(argv[6], 1, 1024, "THREADS");
    if (mode == ECHO) {
        size_t size = (size_t)number(argv[4], 1, 1L << 30, "SIZE");
        char *message = malloc(size);
        if (message == NULL) die("malloc");
        for (size_t i = 0; i < size; i++) message[i] = (char)('a' + i % 26);
        request = message;
        request_len = size;
    } else {
        const char *path = argv[4];
        if (*path == '\0' || strpbrk(path, " \r\n") != NULL) {
            fprintf(stderr, "load_client: URLPATH must be non-empty, without spaces or "
                            "line breaks\n");
            return 2;
        }
        size_t len = strlen(path) + 64;
        char *text = malloc(len);
        if (text == NULL) die("malloc");
        request_len = (size_t)snprintf(text, len, "GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n",
                                       path);
        request = text;
    }
    return load(connections, seconds, threads);
}
