// bench/recv_into_map.c: is a mirror fill cheaper if the origin's body is received straight
// into the store's segment (a shared mapping of its file), or spliced from the socket into the
// file, or written around the page cache (O_DIRECT), instead of received into a buffer that is
// then written to the file? (bench/RESULTS.md, "Issue 14, sixteenth pass", "seventeenth pass"
// and "eighteenth pass")
//
//   gcc -O2 -pthread -o /tmp/recv_into_map bench/recv_into_map.c
//   head -c 1048576 /dev/urandom > /tmp/recv_into_map.src
//   for m in 0 1 2 3 4 5 6 7 8 9; do rm -f /tmp/recv_into_map.seg
//       SYNC_MS=1000 /tmp/recv_into_map $m 2048 /tmp/recv_into_map.seg; done
//
// Add -DREAD_KIB=1024 (or 64, 512) to read, and write, in other sizes than 256 KiB.
//
// A child process on core 1 sends OBJECTS objects of 1 MiB over loopback TCP with sendfile (as
// the bench's nginx origin does); the parent, on core 0, receives them in reads of up to 256 KiB
// (the node's origin reads) and stores them back to back in 256 MiB segments, preallocated
// with fallocate as the node's are. Segments follow each other in one file, so no written byte
// is dropped before the kernel writes it back (the sixteenth and seventeenth passes' version
// emptied and reused one 256 MiB file, which dropped the dirty pages before their writeback and
// measured 396-429 µs per MiB for mode 0; this layout, 618-1,086 µs). Modes:
//   0  recv into one reused 256 KiB buffer, then pwrite it to the segment (the node's way)
//   1  recv straight into a MAP_SHARED mapping of the segment (one copy fewer)
//   2  as 1, each object's 1 MiB populated first (MADV_POPULATE_WRITE)
//   3  as 1, the whole mapping populated when it is made (MAP_POPULATE)
//   4  recv only, nothing stored (the floor)
//   5  as 0, then the buffer read once (what the MD5 and CRC of the body read)
//   6  splice from the socket into a pipe, then from the pipe into the segment file (no copy
//      through user memory), then the bytes read once through a read-only shared mapping of
//      the segment (where the hasher and the clients would have to take them from)
//   7  as 6, the bytes not read (the floor of splicing)
//   8  as 0, the buffer written through a second descriptor of the segment opened with
//      O_DIRECT (no page-cache copy; the device takes the bytes from the buffer)
//   9  as 8, then the buffer read once (as 5)
// Prints the receiving process's CPU time (user + system) per MiB, its wall time per MiB, its
// minor faults, and the busy time of every core per MiB (/proc/stat: the sender's, the kernel's
// writeback threads' and the interrupts' too, which the process's own times leave out; sampled
// at the clock tick, so rougher). Before it stops the clock, the process fdatasyncs the file, so
// the writeback of the buffered modes is in its times (NOSYNC=1: not).
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define OBJECT (1L << 20)
#define SEGMENT (256L << 20)
#ifndef READ_KIB
#define READ_KIB 256
#endif
#define READ (READ_KIB * 1024L)

static void pin(int core) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(core, &set);
    sched_setaffinity(0, sizeof set, &set);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

// Busy jiffies of all cores (user, nice, system, irq, softirq, steal), from /proc/stat's "cpu".
static long long busy_jiffies(void) {
    FILE *f = fopen("/proc/stat", "r");
    long long v[8] = {0};
    if (!f || fscanf(f, "cpu %lld %lld %lld %lld %lld %lld %lld %lld", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                     &v[6], &v[7]) != 8) {
        perror("/proc/stat");
        exit(1);
    }
    fclose(f);
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
}

// With SYNC_MS set: a thread of the receiving process fdatasyncs the segment file that often,
// as the node's store does (store.sync, every second by default), so the writeback of buffered
// modes is done while the bytes are written, and its CPU counted in the process's times.
static int sync_fd = -1;
static volatile int sync_stop;
static void *syncer(void *arg) {
    long ms = (long)arg;
    while (!sync_stop) {
        usleep(ms * 1000);
        fdatasync(sync_fd);
    }
    return 0;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static double secs(struct timeval a, struct timeval b) {
    return (b.tv_sec - a.tv_sec) + (b.tv_usec - a.tv_usec) / 1e6;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODE(0-9) OBJECTS SEGMENT_FILE\n", argv[0]);
        return 2;
    }
    int mode = atoi(argv[1]);
    long objects = atol(argv[2]);
    const char *path = argv[3];
    int mapped = (mode >= 1 && mode <= 3) || mode == 6;
    int spliced = mode == 6 || mode == 7;
    int direct = mode == 8 || mode == 9;
    int pipefd[2];
    if (spliced) {
        if (pipe(pipefd)) die("pipe");
        if (fcntl(pipefd[0], F_SETPIPE_SZ, READ) < 0) die("F_SETPIPE_SZ");
    }
    unsigned long sum = 0;

    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    socklen_t len = sizeof addr;
    if (bind(listener, (void *)&addr, sizeof addr) || getsockname(listener, (void *)&addr, &len) ||
        listen(listener, 1))
        die("listen");
    pid_t sender = fork();
    if (sender == 0) {
        pin(1);
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(s, (void *)&addr, sizeof addr)) die("connect");
        int src = open("/tmp/recv_into_map.src", O_RDONLY);
        if (src < 0) die("open /tmp/recv_into_map.src (1 MiB of anything)");
        for (long i = 0; i < objects; i++) {
            off_t off = 0;
            for (long left = OBJECT; left > 0;) {
                ssize_t n = sendfile(s, src, &off, left);
                if (n <= 0) die("sendfile");
                left -= n;
            }
        }
        close(s);
        exit(0);
    }
    pin(0);
    int conn = accept(listener, 0, 0);
    int fd = open(path, O_RDWR | O_CREAT | (getenv("KEEP") ? 0 : O_TRUNC), 0644);
    if (conn < 0 || fd < 0) die("accept/open");
    int dfd = direct ? open(path, O_RDWR | O_DIRECT) : fd;
    if (dfd < 0) die("open O_DIRECT");
    char *buf = aligned_alloc(4096, READ);
    memset(buf, 1, READ);
    char *map = NULL;
    long at = SEGMENT; // where the next object goes in the segment
    long base = -SEGMENT; // where the segment starts in the file (segments are never reused, so
                          // no dirty page is dropped by a truncate before it is written back)

    struct rusage r0, r1;
    pthread_t sync_thread;
    if (getenv("SYNC_MS")) {
        sync_fd = fd;
        pthread_create(&sync_thread, 0, syncer, (void *)atol(getenv("SYNC_MS")));
    }
    getrusage(RUSAGE_SELF, &r0);
    long long j0 = busy_jiffies();
    double t0 = now();
    for (long i = 0; i < objects; i++) {
        if (at + OBJECT > SEGMENT) { // the next segment: the next 256 MiB of the file
            if (map) munmap(map, SEGMENT);
            base += SEGMENT;
            if (fallocate(fd, FALLOC_FL_KEEP_SIZE, base, SEGMENT)) die("fallocate");
            if (mapped) {
                if (ftruncate(fd, base + SEGMENT)) die("ftruncate");
                map = mmap(0, SEGMENT, mode == 6 ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED | (mode == 3 ? MAP_POPULATE : 0), fd, base);
                if (map == MAP_FAILED) die("mmap");
            }
            at = 0;
        }
        if (mode == 2 && madvise(map + at, OBJECT, MADV_POPULATE_WRITE)) die("madvise");
        for (long got = 0; got < OBJECT;) {
            long want = OBJECT - got < READ ? OBJECT - got : READ;
            ssize_t n;
            if (spliced) {
                n = splice(conn, NULL, pipefd[1], NULL, want, SPLICE_F_MOVE);
                if (n <= 0) die("splice in");
                loff_t off = base + at + got;
                for (ssize_t left = n; left > 0;) {
                    ssize_t w = splice(pipefd[0], NULL, fd, &off, left, SPLICE_F_MOVE);
                    if (w <= 0) die("splice out");
                    left -= w;
                }
                if (mode == 6)
                    for (long k = 0; k + 8 <= n; k += 8) sum += *(unsigned long *)(map + at + got + k);
            } else {
                n = recv(conn, mapped ? map + at + got : buf, want, MSG_WAITALL);
                if (n <= 0) die("recv");
                if ((mode == 0 || mode == 5 || direct) && pwrite(dfd, buf, n, base + at + got) != n) die("pwrite");
                if (mode == 5 || mode == 9)
                    for (long k = 0; k + 8 <= n; k += 8) sum += *(unsigned long *)(buf + k);
            }
            got += n;
        }
        at += OBJECT;
    }
    if (getenv("SYNC_MS")) {
        sync_stop = 1;
        pthread_join(sync_thread, 0);
    }
    if (!getenv("NOSYNC") && fdatasync(fd)) die("fdatasync"); // the writeback of buffered modes is counted too
    double t1 = now();
    getrusage(RUSAGE_SELF, &r1);
    long long j1 = busy_jiffies();
    double user = secs(r0.ru_utime, r1.ru_utime), sys = secs(r0.ru_stime, r1.ru_stime);
    // The sum is printed, so the reads of modes 5 and 6 are kept by the compiler.
    double all = (j1 - j0) / (double)sysconf(_SC_CLK_TCK);
    printf("mode %d: %.0f us CPU per MiB (user %.0f, system %.0f), %.0f us wall per MiB, %ld minor faults, "
           "%.0f us of all cores busy per MiB, sum %lx\n",
           mode, (user + sys) * 1e6 / objects, user * 1e6 / objects, sys * 1e6 / objects, (t1 - t0) * 1e6 / objects,
           r1.ru_minflt - r0.ru_minflt, all * 1e6 / objects, sum);
    waitpid(sender, NULL, 0);
    return 0;
}
