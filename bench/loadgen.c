/*
 * loadgen: the WebSocket load generator of the shakehands benchmark harness.
 *
 * Built by bench/run.py with the system C compiler (cc -O2), into bench/build/ (gitignored).
 * One thread, epoll, non-blocking sockets: fast enough that the server under test, pinned to
 * the other core, is the bottleneck. Only loopback addresses are ever used by the harness.
 *
 * Modes (first argument):
 *
 *   echo  HOST PORT CONNS DEPTH SIZE WARMUP DURATION [raw|deflate]
 *       Open CONNS WebSocket connections (or plain TCP with "raw"), keep DEPTH binary messages
 *       of SIZE bytes in flight on each (client frames are masked, RFC 6455 §5.3), count the
 *       echoes and their latency. "deflate" negotiates permessage-deflate (as browsers offer
 *       it: context takeover, client_max_window_bits) and sends text messages of SIZE bytes
 *       that compress like chat (words, and a sequence number so that no two are alike),
 *       each compressed with the connection's own zlib stream; the echoes are inflated and
 *       their size checked (built with zlib when its header is found: see bench/run.py). After WARMUP seconds the counters are reset; DURATION
 *       seconds later one JSON line is printed: messages/s, MB/s (payload echoed, 10^6 B),
 *       latency percentiles (microseconds), errors. The line {"measuring": true} is printed
 *       (and flushed) when the measured window opens: the harness reads the server's CPU time
 *       then and when the result line comes, for the CPU it spent per message.
 *
 *   idle  HOST PORT PID BASE EXTRA [deflate|raw]
 *       Open BASE connections, read the server's VmRSS from /proc/PID/status, open EXTRA more,
 *       read it again: prints the server memory per idle connection (KiB) as the slope.
 *       "deflate" offers permessage-deflate in the handshake (the default configuration);
 *       "raw" opens plain TCP connections (the ceiling).
 *
 *   churn HOST PORT CONCURRENCY WARMUP DURATION
 *       Connect, handshake, send a close frame, wait for the server's close frame and its end
 *       of the TCP connection, repeat, CONCURRENCY at a time: prints handshakes per second
 *       (and {"measuring": true} when the measured window opens, as echo does).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#ifndef NO_ZLIB
#include <zlib.h>
#endif

#define MASK_KEY "\x12\x34\x56\x78"
#define RBUF (256 * 1024)
#define HIST_MAX 2000000 /* latency histogram: 1 us buckets up to 2 s */

static struct sockaddr_in g_addr;
static const char *g_host;
static int g_port;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* The measured window starts: say so at once on stdout (one JSON line), so that the harness can
 * read the server's CPU time at the start of the window; the result line ends it. */
static void mark_measuring(void) {
    printf("{\"measuring\": true}\n");
    fflush(stdout);
}

static void set_nonblock(int fd) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static int tcp_connect_blocking(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (int tries = 0;; tries++) {
        if (connect(fd, (struct sockaddr *)&g_addr, sizeof g_addr) == 0) return fd;
        if (tries > 50) die("connect");
        usleep(100000);
        close(fd);
        fd = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
}

/* The window the server asked us to compress with (client_max_window_bits=N in its answer). */
static int g_client_bits = 15;

static int build_request(char *buf, size_t cap, int deflate) {
    return snprintf(buf, cap,
                    "GET / HTTP/1.1\r\n"
                    "Host: %s:%d\r\n"
                    "Upgrade: websocket\r\n"
                    "Connection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n"
                    "%s"
                    "\r\n",
                    g_host, g_port,
                    deflate ? "Sec-WebSocket-Extensions: permessage-deflate; "
                              "client_max_window_bits\r\n"
                            : "");
}

/* Blocking handshake; returns 0 on a 101 answer. Any bytes after the head are an error here:
 * the server has nothing to send before we do. */
static int handshake_blocking(int fd, int deflate) {
    char req[512], resp[4096];
    int n = build_request(req, sizeof req, deflate);
    if (write(fd, req, n) != n) return -1;
    size_t have = 0;
    while (have < sizeof resp - 1) {
        ssize_t r = read(fd, resp + have, sizeof resp - 1 - have);
        if (r <= 0) return -1;
        have += r;
        resp[have] = 0;
        char *end = strstr(resp, "\r\n\r\n");
        if (end) {
            if (strncmp(resp, "HTTP/1.1 101", 12) != 0) {
                fprintf(stderr, "handshake refused: %.80s\n", resp);
                return -1;
            }
            if (deflate) {
                char *ext = strcasestr(resp, "sec-websocket-extensions:");
                if (ext == NULL || ext > end || strstr(ext, "permessage-deflate") == NULL) {
                    fprintf(stderr, "permessage-deflate not negotiated\n");
                    return -1;
                }
                char *bits = strstr(ext, "client_max_window_bits=");
                if (bits != NULL && bits < end) g_client_bits = atoi(bits + 23);
            }
            return (size_t)(end + 4 - resp) == have ? 0 : -1;
        }
    }
    return -1;
}

/* ------------------------------------------------------------------------------------------ */
/* echo mode                                                                                   */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    int fd;
    /* sending: `to_send` whole frames still owed, `sent_off` bytes of the first already out */
    long to_send;
    size_t sent_off;
    /* receiving: frame parser state */
    uint8_t hdr[14];
    int hdr_have, hdr_need;
    uint64_t payload_left;
    int frame_fin, frame_op;
    uint64_t msg_bytes;
    /* FIFO of send times, DEPTH entries */
    double *sent_at;
    int head, tail, inflight;
    /* deflate: frames built per message (out[out_off, out_len) owed), the message being read
     * (its payload in in[0, in_len), whether it is compressed), the two zlib streams */
    uint8_t *out, *in;
    size_t out_len, out_off, out_cap, in_len, in_cap;
    int msg_compressed;
    uint64_t seq;
#ifndef NO_ZLIB
    z_stream zc, zd;
#endif
} conn_t;

static uint64_t *g_hist;
static uint64_t g_msgs, g_bytes, g_errors;
static int g_measuring;

static void record(double latency) {
    if (!g_measuring) return;
    long us = (long)(latency * 1e6);
    if (us >= HIST_MAX) us = HIST_MAX - 1;
    if (us < 0) us = 0;
    g_hist[us]++;
}

static double percentile(double p) {
    uint64_t total = 0;
    for (long i = 0; i < HIST_MAX; i++) total += g_hist[i];
    if (!total) return 0;
    uint64_t want = (uint64_t)(p * total);
    if (want >= total) want = total - 1;
    uint64_t seen = 0;
    for (long i = 0; i < HIST_MAX; i++) {
        seen += g_hist[i];
        if (seen > want) return (double)i;
    }
    return HIST_MAX;
}

static uint8_t *g_frame; /* one prebuilt masked frame (or raw payload) */
static size_t g_frame_len;
static int g_depth, g_raw, g_deflate;
static uint64_t g_size;
static uint8_t *g_text; /* deflate: the message, its first digits replaced by a sequence number */

static void grow(uint8_t **buf, size_t *cap, size_t need) {
    if (need <= *cap) return;
    size_t n = *cap ? *cap : 4096;
    while (n < need) n *= 2;
    *buf = realloc(*buf, n);
    if (*buf == NULL) die("realloc");
    *cap = n;
}

#ifndef NO_ZLIB
static uint8_t *g_zbuf; /* deflate: compression and inflation output */
static size_t g_zcap;

/* Compress the next message with the connection's stream and append its masked frame. */
static void queue_compressed(conn_t *c) {
    char digits[24];
    int nd = snprintf(digits, sizeof digits, "%llu ", (unsigned long long)c->seq++);
    memcpy(g_text, digits, (size_t)nd < g_size ? (size_t)nd : g_size);
    size_t cap = g_size + g_size / 8 + 64;
    grow(&g_zbuf, &g_zcap, cap);
    c->zc.next_in = g_text;
    c->zc.avail_in = (uInt)g_size;
    c->zc.next_out = g_zbuf;
    c->zc.avail_out = (uInt)cap;
    if (deflate(&c->zc, Z_SYNC_FLUSH) != Z_OK || c->zc.avail_in != 0) die("deflate");
    size_t len = cap - c->zc.avail_out - 4; /* RFC 7692 §7.2.1: without 00 00 ff ff */
    grow(&c->out, &c->out_cap, c->out_len + len + 14);
    uint8_t *f = c->out + c->out_len;
    size_t h = 0;
    f[h++] = 0xC1; /* FIN | RSV1 | text */
    if (len < 126) f[h++] = 0x80 | (uint8_t)len;
    else if (len < 65536) {
        f[h++] = 0x80 | 126;
        f[h++] = len >> 8;
        f[h++] = len & 0xff;
    } else {
        f[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) f[h++] = ((uint64_t)len >> (8 * i)) & 0xff;
    }
    memcpy(f + h, MASK_KEY, 4);
    h += 4;
    for (size_t i = 0; i < len; i++) f[h + i] = g_zbuf[i] ^ (uint8_t)MASK_KEY[i & 3];
    c->out_len += h + len;
}

/* The inflated size of the message in c->in (compressed), or (uint64_t)-1. */
static uint64_t inflated_size(conn_t *c) {
    static const uint8_t tail[4] = {0, 0, 0xff, 0xff};
    grow(&c->in, &c->in_cap, c->in_len + 4);
    memcpy(c->in + c->in_len, tail, 4);
    c->zd.next_in = c->in;
    c->zd.avail_in = (uInt)(c->in_len + 4);
    uint64_t total = 0;
    grow(&g_zbuf, &g_zcap, 65536);
    do {
        c->zd.next_out = g_zbuf;
        c->zd.avail_out = (uInt)g_zcap;
        int r = inflate(&c->zd, Z_SYNC_FLUSH);
        if (r != Z_OK && r != Z_BUF_ERROR) return (uint64_t)-1;
        total += g_zcap - c->zd.avail_out;
    } while (c->zd.avail_in > 0 || c->zd.avail_out == 0);
    return total;
}
#else
static void queue_compressed(conn_t *c) {
    (void)c;
    fprintf(stderr, "loadgen was built without zlib: no deflate mode\n");
    exit(2);
}
static uint64_t inflated_size(conn_t *c) {
    (void)c;
    return (uint64_t)-1;
}
#endif

static void queue_message(conn_t *c) {
    if (g_deflate) queue_compressed(c);
    else c->to_send++;
    c->sent_at[c->tail] = now();
    c->tail = (c->tail + 1) % g_depth;
    c->inflight++;
}

static void message_done(conn_t *c, uint64_t size) {
    if (c->inflight <= 0) {
        g_errors++;
        return;
    }
    if (size != g_size) g_errors++;
    double t = now();
    record(t - c->sent_at[c->head]);
    c->head = (c->head + 1) % g_depth;
    c->inflight--;
    if (g_measuring) {
        g_msgs++;
        g_bytes += size;
    }
    queue_message(c);
}

/* Write as many owed frames as the socket takes, up to 64 per writev. */
static int flush_conn(conn_t *c) {
    if (g_deflate) {
        while (c->out_off < c->out_len) {
            ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
            if (w < 0) return errno == EAGAIN ? 0 : -1;
            c->out_off += w;
        }
        c->out_off = c->out_len = 0;
        return 0;
    }
    while (c->to_send > 0) {
        struct iovec iov[64];
        int n = 0;
        long k = c->to_send < 64 ? c->to_send : 64;
        size_t asked = 0;
        for (long i = 0; i < k; i++) {
            size_t off = i == 0 ? c->sent_off : 0;
            iov[n].iov_base = g_frame + off;
            iov[n].iov_len = g_frame_len - off;
            asked += iov[n].iov_len;
            n++;
        }
        ssize_t w = writev(c->fd, iov, n);
        if (w < 0) {
            if (errno == EAGAIN) return 0;
            return -1;
        }
        size_t left = (size_t)w;
        while (left > 0) {
            size_t first = g_frame_len - c->sent_off;
            if (left >= first) {
                left -= first;
                c->sent_off = 0;
                c->to_send--;
            } else {
                c->sent_off += left;
                left = 0;
            }
        }
        if ((size_t)w < asked) return 0; /* short write: the socket buffer is full */
    }
    return 0;
}

/* A whole message was read: its size (inflated when compressed) is checked. */
static void message_end(conn_t *c) {
    uint64_t size = c->msg_bytes;
    if (g_deflate && c->msg_compressed) size = inflated_size(c);
    c->in_len = 0;
    c->msg_bytes = 0;
    message_done(c, size);
}

static int on_bytes(conn_t *c, const uint8_t *p, size_t n) {
    if (g_raw) {
        while (n > 0) {
            uint64_t need = g_size - c->msg_bytes;
            uint64_t take = n < need ? n : need;
            c->msg_bytes += take;
            p += take;
            n -= take;
            if (c->msg_bytes == g_size) {
                c->msg_bytes = 0;
                message_done(c, g_size);
            }
        }
        return 0;
    }
    while (n > 0) {
        if (c->payload_left == 0 && c->hdr_need) {
            /* reading a header */
            c->hdr[c->hdr_have++] = *p++;
            n--;
            if (c->hdr_have == 2) {
                int len7 = c->hdr[1] & 0x7f;
                if (c->hdr[1] & 0x80) return -1; /* masked frame from a server */
                c->hdr_need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);
            }
            if (c->hdr_have >= 2 && c->hdr_have == c->hdr_need) {
                int len7 = c->hdr[1] & 0x7f;
                uint64_t len = len7;
                if (len7 == 126) len = ((uint64_t)c->hdr[2] << 8) | c->hdr[3];
                else if (len7 == 127) {
                    len = 0;
                    for (int i = 2; i < 10; i++) len = (len << 8) | c->hdr[i];
                }
                c->frame_fin = c->hdr[0] & 0x80;
                c->frame_op = c->hdr[0] & 0x0f;
                if (c->frame_op >= 8) return -1; /* a close or ping in the middle of a run */
                if (c->frame_op != 0) c->msg_compressed = c->hdr[0] & 0x40;
                c->hdr_have = 0;
                c->hdr_need = 2;
                c->payload_left = len;
                if (len == 0 && c->frame_fin) {
                    message_end(c);
                }
                if (len == 0) continue;
                c->hdr_need = 0; /* now in payload */
            }
            continue;
        }
        uint64_t take = n < c->payload_left ? n : c->payload_left;
        if (g_deflate) {
            grow(&c->in, &c->in_cap, c->in_len + take);
            memcpy(c->in + c->in_len, p, take);
            c->in_len += take;
        }
        c->payload_left -= take;
        c->msg_bytes += take;
        p += take;
        n -= take;
        if (c->payload_left == 0) {
            c->hdr_need = 2;
            if (c->frame_fin) {
                message_end(c);
            }
        }
    }
    return 0;
}

static int mode_echo(int argc, char **argv) {
    if (argc < 9) {
        fprintf(stderr,
                "usage: loadgen echo HOST PORT CONNS DEPTH SIZE WARMUP DURATION [raw|deflate]\n");
        return 2;
    }
    int conns = atoi(argv[4]);
    g_depth = atoi(argv[5]);
    g_size = strtoull(argv[6], NULL, 10);
    double warmup = atof(argv[7]), duration = atof(argv[8]);
    g_raw = argc > 9 && strcmp(argv[9], "raw") == 0;
    g_deflate = argc > 9 && strcmp(argv[9], "deflate") == 0;
    if (g_deflate) {
        static const char *words[] = {"the", "quick", "brown", "fox", "jumps",
                                      "over", "a", "lazy", "dog", "while"};
        g_text = malloc(g_size + 32);
        size_t at = 0;
        for (int w = 0; at < g_size; w = (w + 1) % 10) {
            at += snprintf((char *)g_text + at, g_size + 32 - at, "%s ", words[w]);
        }
    }
    g_hist = calloc(HIST_MAX, sizeof *g_hist);

    /* the frame: header, mask key, masked payload (a fixed pattern) */
    g_frame = malloc(g_size + 14);
    size_t h = 0;
    if (!g_raw) {
        g_frame[h++] = 0x82; /* FIN | binary */
        if (g_size < 126) g_frame[h++] = 0x80 | (uint8_t)g_size;
        else if (g_size < 65536) {
            g_frame[h++] = 0x80 | 126;
            g_frame[h++] = g_size >> 8;
            g_frame[h++] = g_size & 0xff;
        } else {
            g_frame[h++] = 0x80 | 127;
            for (int i = 7; i >= 0; i--) g_frame[h++] = (g_size >> (8 * i)) & 0xff;
        }
        memcpy(g_frame + h, MASK_KEY, 4);
        h += 4;
    }
    for (uint64_t i = 0; i < g_size; i++) {
        uint8_t b = (uint8_t)('a' + i % 26);
        g_frame[h + i] = g_raw ? b : b ^ (uint8_t)MASK_KEY[i & 3];
    }
    g_frame_len = h + g_size;

    int ep = epoll_create1(0);
    conn_t *cs = calloc(conns, sizeof *cs);
    for (int i = 0; i < conns; i++) {
        conn_t *c = &cs[i];
        c->fd = tcp_connect_blocking();
        if (!g_raw && handshake_blocking(c->fd, g_deflate) != 0) {
            fprintf(stderr, "handshake failed\n");
            return 1;
        }
#ifndef NO_ZLIB
        if (g_deflate && (deflateInit2(&c->zc, 6, Z_DEFLATED, -g_client_bits, 8,
                                       Z_DEFAULT_STRATEGY) != Z_OK ||
                          inflateInit2(&c->zd, -15) != Z_OK)) {
            die("zlib");
        }
#endif
        set_nonblock(c->fd);
        c->hdr_need = 2;
        c->sent_at = calloc(g_depth, sizeof(double));
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    }
    for (int i = 0; i < conns; i++) {
        for (int d = 0; d < g_depth; d++) queue_message(&cs[i]);
        flush_conn(&cs[i]);
    }

    uint8_t *rbuf = malloc(RBUF);
    struct epoll_event evs[256];
    double start = now(), t0 = start + warmup, t_end = t0 + duration;
    double measured_from = 0;
    for (;;) {
        double t = now();
        if (!g_measuring && t >= t0) {
            g_measuring = 1;
            measured_from = t;
            mark_measuring();
        }
        if (t >= t_end) break;
        int n = epoll_wait(ep, evs, 256, 50);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                for (;;) {
                    ssize_t r = read(c->fd, rbuf, RBUF);
                    if (r > 0) {
                        if (on_bytes(c, rbuf, r) != 0) {
                            fprintf(stderr, "unexpected frame from the server\n");
                            return 1;
                        }
                        if (r < RBUF) break;
                        continue;
                    }
                    if (r < 0 && errno == EAGAIN) break;
                    fprintf(stderr, "server closed the connection\n");
                    return 1;
                }
            }
            if (flush_conn(c) != 0) {
                fprintf(stderr, "write failed\n");
                return 1;
            }
        }
    }
    double elapsed = now() - measured_from;
    printf("{\"msg_per_s\": %.1f, \"mb_per_s\": %.2f, \"p50_us\": %.0f, \"p99_us\": %.0f, "
           "\"messages\": %llu, \"seconds\": %.3f, \"errors\": %llu}\n",
           g_msgs / elapsed, g_bytes / elapsed / 1e6, percentile(0.5), percentile(0.99),
           (unsigned long long)g_msgs, elapsed, (unsigned long long)g_errors);
    fflush(stdout); /* the end of the window, before the connections are torn down */
    return g_errors ? 1 : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* idle mode                                                                                   */
/* ------------------------------------------------------------------------------------------ */

static long rss_kib(int pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) die("open /proc/PID/status");
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kib = atol(line + 6);
    fclose(f);
    return kib;
}

static void open_idle(int count, int deflate, int raw) {
    for (int i = 0; i < count; i++) {
        int fd = tcp_connect_blocking();
        if (!raw && handshake_blocking(fd, deflate) != 0) {
            fprintf(stderr, "handshake failed\n");
            exit(1);
        }
    }
}

static int mode_idle(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: loadgen idle HOST PORT PID BASE EXTRA [deflate|raw]\n");
        return 2;
    }
    int pid = atoi(argv[4]), base = atoi(argv[5]), extra = atoi(argv[6]);
    int deflate = argc > 7 && strcmp(argv[7], "deflate") == 0;
    int raw = argc > 7 && strcmp(argv[7], "raw") == 0;
    open_idle(base, deflate, raw);
    usleep(500000);
    long before = rss_kib(pid);
    open_idle(extra, deflate, raw);
    usleep(1000000);
    long after = rss_kib(pid);
    printf("{\"kib_per_conn\": %.2f, \"rss_before_kib\": %ld, \"rss_after_kib\": %ld, "
           "\"connections\": %d}\n",
           (double)(after - before) / extra, before, after, base + extra);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* churn mode                                                                                  */
/* ------------------------------------------------------------------------------------------ */

enum { C_CONNECTING, C_HANDSHAKE, C_CLOSING };

typedef struct {
    int fd, state;
    char buf[1024];
    size_t have;
} churn_t;

static const uint8_t CLOSE_FRAME[] = {0x88, 0x82, 0x12, 0x34, 0x56, 0x78, 0x03 ^ 0x12, 0xe8 ^ 0x34};
static char g_req[512];
static int g_req_len;

static void churn_start(int ep, churn_t *c) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->have = 0;
    c->state = C_CONNECTING;
    int r = connect(c->fd, (struct sockaddr *)&g_addr, sizeof g_addr);
    if (r < 0 && errno != EINPROGRESS) die("connect");
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

/* Returns 1 when the connection is done (closed by the server after the closing handshake). */
static int churn_step(int ep, churn_t *c, uint32_t events) {
    if (c->state == C_CONNECTING) {
        if (!(events & EPOLLOUT)) return 0;
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            errno = err;
            die("connect");
        }
        if (write(c->fd, g_req, g_req_len) != g_req_len) die("write request");
        c->state = C_HANDSHAKE;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        return 0;
    }
    for (;;) {
        ssize_t r = read(c->fd, c->buf + c->have, sizeof c->buf - 1 - c->have);
        if (r < 0) {
            if (errno == EAGAIN) return 0;
            return 1; /* reset: count it done, the handshake was made */
        }
        if (r == 0) {
            if (c->state != C_CLOSING) {
                fprintf(stderr, "server closed during the handshake\n");
                exit(1);
            }
            return 1;
        }
        c->have += r;
        c->buf[c->have] = 0;
        if (c->state == C_HANDSHAKE) {
            char *end = strstr(c->buf, "\r\n\r\n");
            if (!end) continue;
            if (strncmp(c->buf, "HTTP/1.1 101", 12) != 0) {
                fprintf(stderr, "handshake refused: %.80s\n", c->buf);
                exit(1);
            }
            size_t rest = c->have - (end + 4 - c->buf);
            memmove(c->buf, end + 4, rest);
            c->have = rest;
            if (write(c->fd, CLOSE_FRAME, sizeof CLOSE_FRAME) != sizeof CLOSE_FRAME)
                die("write close");
            c->state = C_CLOSING;
        }
        if (c->have > sizeof c->buf / 2) c->have = 0; /* the server's close frame: drop it */
    }
}

static void churn_finish(churn_t *c) {
    /* The closing handshake is over and the server closed its side: drop ours with a reset so
     * that no TIME_WAIT socket holds a port (thousands of connections per second). */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(c->fd);
}

static int mode_churn(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: loadgen churn HOST PORT CONCURRENCY WARMUP DURATION\n");
        return 2;
    }
    int conc = atoi(argv[4]);
    double warmup = atof(argv[5]), duration = atof(argv[6]);
    g_req_len = build_request(g_req, sizeof g_req, 0);
    int ep = epoll_create1(0);
    churn_t *cs = calloc(conc, sizeof *cs);
    for (int i = 0; i < conc; i++) churn_start(ep, &cs[i]);
    struct epoll_event evs[256];
    double t0 = now() + warmup, t_end = t0 + duration, measured_from = 0;
    uint64_t done = 0;
    int measuring = 0;
    for (;;) {
        double t = now();
        if (!measuring && t >= t0) {
            measuring = 1;
            measured_from = t;
            done = 0;
            mark_measuring();
        }
        if (t >= t_end) break;
        int n = epoll_wait(ep, evs, 256, 50);
        for (int i = 0; i < n; i++) {
            churn_t *c = evs[i].data.ptr;
            if (churn_step(ep, c, evs[i].events)) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                churn_finish(c);
                done++;
                churn_start(ep, c);
            }
        }
    }
    double elapsed = now() - measured_from;
    printf("{\"handshakes_per_s\": %.1f, \"handshakes\": %llu, \"seconds\": %.3f}\n",
           done / elapsed, (unsigned long long)done, elapsed);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: loadgen echo|idle|churn HOST PORT ...\n");
        return 2;
    }
    raise_nofile();
    g_host = argv[2];
    g_port = atoi(argv[3]);
    memset(&g_addr, 0, sizeof g_addr);
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons(g_port);
    if (inet_pton(AF_INET, g_host, &g_addr.sin_addr) != 1) {
        fprintf(stderr, "HOST must be an IPv4 address\n");
        return 2;
    }
    if (strcmp(argv[1], "echo") == 0) return mode_echo(argc, argv);
    if (strcmp(argv[1], "idle") == 0) return mode_idle(argc, argv);
    if (strcmp(argv[1], "churn") == 0) return mode_churn(argc, argv);
    fprintf(stderr, "unknown mode %s\n", argv[1]);
    return 2;
}
