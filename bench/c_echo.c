/*
 * c_echo: a raw TCP echo server in C on epoll, one thread: the physical ceiling of the
 * benchmark's echo rows (no WebSocket work, no interpreter), beside the Python raw TCP echo
 * of bench/servers.py. bench/cpu_per_message.py builds it with the system compiler.
 *
 *     c_echo PORT        listens on 127.0.0.1:PORT until killed
 *
 * What a read brings is written back at once; what the socket does not take is kept, and
 * reading from that connection stops until it is written (as asyncio's flow control does).
 */

#define _GNU_SOURCE
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

#define READ_SIZE (256 * 1024)

typedef struct {
    int fd;
    char *pending; /* bytes the socket did not take */
    size_t len;
} conn_t;

static char buffer[READ_SIZE];

static void
drop(int ep, conn_t *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->pending);
    free(c);
}

/* Write what is pending; return -1 on error, else whether some is still pending. */
static int
flush_pending(conn_t *c)
{
    while (c->len) {
        ssize_t n = send(c->fd, c->pending, c->len, MSG_NOSIGNAL);
        if (n < 0) {
            return errno == EAGAIN ? 1 : -1;
        }
        memmove(c->pending, c->pending + n, c->len - (size_t)n);
        c->len -= (size_t)n;
    }
    return 0;
}

static int
echo(conn_t *c, const char *data, size_t len)
{
    size_t off = 0;
    while (off < len && c->len == 0) {
        ssize_t n = send(c->fd, data + off, len - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno != EAGAIN) {
                return -1;
            }
            break;
        }
        off += (size_t)n;
    }
    if (off < len) {
        char *p = realloc(c->pending, c->len + len - off);
        if (p == NULL) {
            return -1;
        }
        memcpy(p + c->len, data + off, len - off);
        c->pending = p;
        c->len += len - off;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: c_echo PORT\n");
        return 2;
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 1024) < 0) {
        perror("bind/listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    struct epoll_event events[256];
    for (;;) {
        int ready = epoll_wait(ep, events, 256, -1);
        if (ready < 0 && errno != EINTR) {
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < ready; i++) {
            conn_t *c = events[i].data.ptr;
            if (c == NULL) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conn_t *nc = calloc(1, sizeof *nc);
                    nc->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            if (events[i].events & EPOLLOUT) {
                int left = flush_pending(c);
                if (left < 0) {
                    drop(ep, c);
                    continue;
                }
                if (left == 0) {
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &cev);
                }
                continue;
            }
            ssize_t n = recv(c->fd, buffer, sizeof buffer, 0);
            if (n == 0 || (n < 0 && errno != EAGAIN)) {
                drop(ep, c);
                continue;
            }
            if (n < 0) {
                continue;
            }
            if (echo(c, buffer, (size_t)n) < 0) {
                drop(ep, c);
                continue;
            }
            if (c->len) {
                /* Stop reading until the peer has taken what it was sent. */
                struct epoll_event cev = {.events = EPOLLOUT, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &cev);
            }
        }
    }
}
