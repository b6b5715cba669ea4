/*
 * The receive side of the fan-out benchmark, in C so that reading is never the
 * bottleneck. bench.py compiles this file on first use (gcc -O2 -shared) and
 * drives it through ctypes; without a compiler it falls back to a Python loop
 * doing the same thing.
 *
 * pump_run() waits once in epoll, reads every ready socket, walks the WebSocket
 * frames (server-to-client, so normally unmasked) and for each text frame that
 * starts with the broadcast prefix: finds "#<8 digits>" (the sequence number),
 * counts the copy, adds its latency (now - sent_at[seq], both CLOCK_MONOTONIC,
 * which is Python's perf_counter) to a histogram, and reports the sequence
 * number once all clients have it. Every other frame, and end-of-stream, is
 * copied to a side buffer for Python to handle (joins, pings, heartbeats).
 *
 * State lives in globals: one benchmark runs at a time in one thread.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 4096
#define READ_SIZE 65536

typedef struct {
    unsigned char *buf; /* bytes of an incomplete frame */
    int64_t len, cap;
    int active;
} conn_t;

static int epfd = -1;
static conn_t *conns;
static int nconns;
static int64_t nclients;
static unsigned char prefix[256];
static int plen;
static int32_t *counts;
static const double *sent_at;
static const int8_t *rec;
static int64_t seq_cap;
static int64_t *hist;
static int64_t nbuckets;
static double bucket_s;

static int64_t st_delivered, st_reads, st_polls, st_eofs, st_side_dropped, st_bad_seq;

static int32_t *done_out;
static int64_t done_cap, done_n;
static unsigned char *side;
static int64_t side_cap, side_n;

static unsigned char rbuf[READ_SIZE];

static double now_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int pump_init(int64_t n_clients, const unsigned char *pfx, int pfx_len, int32_t *counts_,
              const double *sent_at_, const int8_t *rec_, int64_t seq_cap_, int64_t *hist_,
              int64_t nbuckets_, double bucket_s_, int max_fd) {
    if (pfx_len < 0 || pfx_len > (int)sizeof(prefix)) return -1;
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) return -1;
    nconns = max_fd + 1;
    conns = calloc((size_t)nconns, sizeof(conn_t));
    if (!conns) return -1;
    nclients = n_clients;
    memcpy(prefix, pfx, (size_t)pfx_len);
    plen = pfx_len;
    counts = counts_;
    sent_at = sent_at_;
    rec = rec_;
    seq_cap = seq_cap_;
    hist = hist_;
    nbuckets = nbuckets_;
    bucket_s = bucket_s_;
    st_delivered = st_reads = st_polls = st_eofs = st_side_dropped = st_bad_seq = 0;
    return 0;
}

int pump_add(int fd) {
    if (fd < 0 || fd >= nconns) return -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) return -1;
    conns[fd].active = 1;
    return 0;
}

static void side_record(int fd, unsigned char b0, const unsigned char *p, int64_t n) {
    int64_t need = 4 + 1 + 4 + n;
    if (side_n + need > side_cap) {
        st_side_dropped++;
        return;
    }
    int32_t fd32 = fd;
    uint32_t n32 = (uint32_t)n;
    memcpy(side + side_n, &fd32, 4);
    side[side_n + 4] = b0;
    memcpy(side + side_n + 5, &n32, 4);
    if (n) memcpy(side + side_n + 9, p, (size_t)n);
    side_n += need;
}

static void on_broadcast(const unsigned char *p, int64_t n, double now) {
    const unsigned char *hash = memchr(p + plen, '#', (size_t)(n - plen));
    if (!hash || hash + 9 > p + n) {
        st_bad_seq++;
        return;
    }
    int64_t seq = 0;
    for (int k = 1; k <= 8; k++) {
        unsigned d = (unsigned)hash[k] - '0';
        if (d > 9) {
            st_bad_seq++;
            return;
        }
        seq = seq * 10 + d;
    }
    if (seq >= seq_cap) {
        st_bad_seq++;
        return;
    }
    int32_t c = ++counts[seq];
    st_delivered++;
    double lat = now - sent_at[seq];
    int64_t b = lat <= 0 ? 0 : (int64_t)(lat / bucket_s);
    if (b >= nbuckets) b = nbuckets - 1;
    hist[(int64_t)rec[seq] * nbuckets + b]++;
    if (c == nclients && done_n < done_cap) done_out[done_n++] = (int32_t)seq;
}

/* Walk complete frames in buf[0:len]; return how many bytes were consumed. */
static int64_t parse(int fd, unsigned char *buf, int64_t len, double now) {
    int64_t i = 0;
    while (len - i >= 2) {
        unsigned char b0 = buf[i], b1 = buf[i + 1];
        int64_t n = b1 & 0x7F, h = i + 2;
        if (n == 126) {
            if (len - i < 4) break;
            n = ((int64_t)buf[i + 2] << 8) | buf[i + 3];
            h = i + 4;
        } else if (n == 127) {
            if (len - i < 10) break;
            n = 0;
            for (int k = 2; k < 10; k++) n = (n << 8) | buf[i + k];
            h = i + 10;
        }
        unsigned char *key = NULL;
        if (b1 & 0x80) {
            key = buf + h;
            h += 4;
        }
        if (h > len || n > len - h) break;
        unsigned char *p = buf + h;
        if (key)
            for (int64_t k = 0; k < n; k++) p[k] ^= key[k & 3];
        if (b0 == 0x81 && n >= plen && memcmp(p, prefix, (size_t)plen) == 0)
            on_broadcast(p, n, now);
        else
            side_record(fd, b0, p, n);
        i = h + n;
    }
    return i;
}

static void keep(conn_t *c, const unsigned char *p, int64_t n) {
    if (n > c->cap) {
        int64_t cap = n < 4096 ? 4096 : n * 2;
        unsigned char *nb = realloc(c->buf, (size_t)cap);
        if (!nb) abort();
        c->buf = nb;
        c->cap = cap;
    }
    memmove(c->buf, p, (size_t)n);
    c->len = n;
}

static void on_readable(int fd, double now) {
    conn_t *c = &conns[fd];
    ssize_t r = read(fd, rbuf, READ_SIZE);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
    st_reads++;
    if (r <= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
        c->active = 0;
        st_eofs++;
        side_record(fd, 0xFF, NULL, 0);
        return;
    }
    if (c->len == 0) {
        int64_t used = parse(fd, rbuf, r, now);
        if (used < r) keep(c, rbuf + used, r - used);
    } else {
        if (c->len + r > c->cap) {
            int64_t cap = (c->len + r) * 2;
            unsigned char *nb = realloc(c->buf, (size_t)cap);
            if (!nb) abort();
            c->buf = nb;
            c->cap = cap;
        }
        memcpy(c->buf + c->len, rbuf, (size_t)r);
        int64_t total = c->len + r;
        int64_t used = parse(fd, c->buf, total, now);
        c->len = 0;
        if (used < total) keep(c, c->buf + used, total - used);
    }
}

/* Feed bytes that were read before the socket was handed over. */
void pump_feed(int fd, const unsigned char *data, int64_t n) {
    if (fd < 0 || fd >= nconns || n <= 0) return;
    conn_t *c = &conns[fd];
    unsigned char *tmp = malloc((size_t)n);
    if (!tmp) abort();
    memcpy(tmp, data, (size_t)n);
    int64_t used = parse(fd, tmp, n, now_mono());
    if (used < n) keep(c, tmp + used, n - used);
    free(tmp);
}

/* One epoll round. Returns the number of ready sockets, or -1 on error.
 * done: sequence numbers that reached all clients; side: other frames, as
 * records [int32 fd][uint8 first header byte, 0xFF = end of stream][uint32 n][n bytes]. */
int pump_run(int timeout_ms, int32_t *done, int64_t done_cap_, int64_t *done_n_,
             unsigned char *side_, int64_t side_cap_, int64_t *side_n_, double *now_out) {
    static struct epoll_event events[MAX_EVENTS];
    done_out = done;
    done_cap = done_cap_;
    done_n = 0;
    side = side_;
    side_cap = side_cap_;
    side_n = 0;
    int k = epoll_wait(epfd, events, MAX_EVENTS, timeout_ms);
    double now = now_mono();
    st_polls++;
    if (k < 0 && errno != EINTR) return -1;
    for (int e = 0; e < k; e++) on_readable(events[e].data.fd, now);
    *done_n_ = done_n;
    *side_n_ = side_n;
    *now_out = now;
    return k < 0 ? 0 : k;
}

void pump_stats(int64_t *out) {
    out[0] = st_delivered;
    out[1] = st_reads;
    out[2] = st_polls;
    out[3] = st_eofs;
    out[4] = st_side_dropped;
    out[5] = st_bad_seq;
}

void pump_close(void) {
    if (epfd >= 0) close(epfd);
    epfd = -1;
    if (conns) {
        for (int i = 0; i < nconns; i++) free(conns[i].buf);
        free(conns);
    }
    conns = NULL;
    nconns = 0;
}
