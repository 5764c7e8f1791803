/*
 * Closed-loop socketmap load generator for benchmarks/bench_policyd.py.
 *
 * C connections to 127.0.0.1:PORT; each sends "postfix d<i>.bench.example" as a
 * netstring for a random i < N, waits for the whole reply, checks it against the
 * expected answer "OK secure match=mx<i>.bench.example servername=hostname", records
 * the latency and sends the next request. Runs WARMUP ms unmeasured, then DURATION ms
 * measured, and prints one line:
 *
 *     requests=<n> seconds=<s> errors=<e> p50_us=<x> p99_us=<y> mean_us=<z>
 *
 * Written in C so the load generator is never the bottleneck of the measurement.
 * With a sixth argument, the measured latencies are also written there as float32
 * microseconds. Build: cc -O2 -o socketmap_load socketmap_load.c
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

#define MAXC 1024
#define BUF 512
#define MAXLAT 20000000

struct conn {
    int fd;
    int idx;
    double sent;
    char buf[BUF];
    int len;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static unsigned long long rng = 88172645463325252ULL;
static unsigned long long xorshift(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static char req[BUF], want[BUF];

static int build(char *out, const char *text) {
    return sprintf(out, "%zu:%s,", strlen(text), text);
}

static void send_req(struct conn *c, int n) {
    char text[BUF];
    c->idx = (int)(xorshift() % (unsigned long long)n);
    snprintf(text, sizeof text, "postfix d%d.bench.example", c->idx);
    int len = build(req, text);
    c->sent = now();
    c->len = 0;
    if (send(c->fd, req, len, 0) != len) {
        perror("send");
        exit(2);
    }
}

int main(int argc, char **argv) {
    if (argc != 6 && argc != 7) {
        fprintf(stderr, "usage: %s PORT CONNS DURATION_MS WARMUP_MS N [LATENCY_FILE]\n",
                argv[0]);
        return 2;
    }
    int port = atoi(argv[1]), nc = atoi(argv[2]), n = atoi(argv[5]);
    double duration = atof(argv[3]) / 1000.0, warmup = atof(argv[4]) / 1000.0;
    if (nc < 1 || nc > MAXC || n < 1) return 2;
    float *lat = malloc(sizeof(float) * MAXLAT);
    struct conn *conns = calloc(nc, sizeof(struct conn));
    int ep = epoll_create1(0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    for (int i = 0; i < nc; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
            perror("connect");
            return 2;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conns[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    for (int i = 0; i < nc; i++) send_req(&conns[i], n);
    double start = now(), measure_from = start + warmup, end = measure_from + duration;
    long count = 0, errors = 0;
    int measuring = 0;
    struct epoll_event events[MAXC];
    for (;;) {
        double t = now();
        if (t >= end) break;
        if (!measuring && t >= measure_from) {
            measuring = 1;
            count = 0;
            errors = 0;
        }
        int k = epoll_wait(ep, events, MAXC, 1000);
        for (int e = 0; e < k; e++) {
            struct conn *c = events[e].data.ptr;
            ssize_t r = recv(c->fd, c->buf + c->len, BUF - c->len, 0);
            if (r <= 0) {
                fprintf(stderr, "server closed a connection\n");
                return 2;
            }
            c->len += (int)r;
            char text[BUF];
            snprintf(text, sizeof text, "OK secure match=mx%d.bench.example servername=hostname",
                     c->idx);
            int wl = build(want, text);
            if (c->len < wl && c->buf[c->len - 1] != ',') continue;
            double done = now();
            if (c->len != wl || memcmp(c->buf, want, wl) != 0) errors++;
            if (count < MAXLAT) lat[count] = (float)((done - c->sent) * 1e6);
            count++;
            send_req(c, n);
        }
    }
    double elapsed = now() - measure_from;
    long m = count < MAXLAT ? count : MAXLAT;
    double sum = 0;
    for (long i = 0; i < m; i++) sum += lat[i];
    if (argc == 7) { /* raw latencies (float32 microseconds) for aggregation across runs */
        FILE *f = fopen(argv[6], "wb");
        if (f == NULL || fwrite(lat, sizeof(float), m, f) != (size_t)m) return 2;
        fclose(f);
    }
    qsort(lat, m, sizeof(float), cmp);
    printf("requests=%ld seconds=%.4f errors=%ld p50_us=%.1f p99_us=%.1f mean_us=%.1f\n", count,
           elapsed, errors, m ? lat[m / 2] : 0.0, m ? lat[(long)(m * 0.99)] : 0.0,
           m ? sum / m : 0.0);
    return 0;
}
