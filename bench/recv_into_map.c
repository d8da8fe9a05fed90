// bench/recv_into_map.c: is a mirror fill cheaper if the origin's body is received straight
// into the store's segment (a shared mapping of its file), or spliced from the socket into the
// file, instead of received into a buffer that is then written to the file? (bench/RESULTS.md,
// "Issue 14, sixteenth pass" and "seventeenth pass")
//
//   gcc -O2 -o /tmp/recv_into_map bench/recv_into_map.c
//   head -c 1048576 /dev/urandom > /tmp/recv_into_map.src
//   for m in 0 1 2 3 4 5 6 7; do /tmp/recv_into_map $m 2048 /tmp/recv_into_map.seg; done
//
// A child process on core 1 sends OBJECTS objects of 1 MiB over loopback TCP with sendfile (as
// the bench's nginx origin does); the parent, on core 0, receives them in reads of up to 256 KiB
// (the node's origin reads) and stores them back to back in 256 MiB segments, preallocated
// with fallocate as the node's are. Modes:
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
// Prints the receiving process's CPU time (user + system) per MiB, its wall time per MiB, and
// its minor faults.
#define _GNU_SOURCE
#include <fcntl.h>
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
#define READ (256L << 10)

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

static void die(const char *what) {
    perror(what);
    exit(1);
}

static double secs(struct timeval a, struct timeval b) {
    return (b.tv_sec - a.tv_sec) + (b.tv_usec - a.tv_usec) / 1e6;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODE(0-7) OBJECTS SEGMENT_FILE\n", argv[0]);
        return 2;
    }
    int mode = atoi(argv[1]);
    long objects = atol(argv[2]);
    const char *path = argv[3];
    int mapped = (mode >= 1 && mode <= 3) || mode == 6;
    int spliced = mode == 6 || mode == 7;
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
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (conn < 0 || fd < 0) die("accept/open");
    char *buf = aligned_alloc(4096, READ);
    memset(buf, 1, READ);
    char *map = NULL;
    long at = SEGMENT; // where the next object goes in the segment

    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    double t0 = now();
    for (long i = 0; i < objects; i++) {
        if (at + OBJECT > SEGMENT) { // the next segment (the same file, emptied)
            if (map) munmap(map, SEGMENT);
            if (ftruncate(fd, 0) || fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, SEGMENT)) die("fallocate");
            if (mapped) {
                if (ftruncate(fd, SEGMENT)) die("ftruncate");
                map = mmap(0, SEGMENT, mode == 6 ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED | (mode == 3 ? MAP_POPULATE : 0), fd, 0);
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
                loff_t off = at + got;
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
                if ((mode == 0 || mode == 5) && pwrite(fd, buf, n, at + got) != n) die("pwrite");
                if (mode == 5)
                    for (long k = 0; k + 8 <= n; k += 8) sum += *(unsigned long *)(buf + k);
            }
            got += n;
        }
        at += OBJECT;
    }
    double t1 = now();
    getrusage(RUSAGE_SELF, &r1);
    double user = secs(r0.ru_utime, r1.ru_utime), sys = secs(r0.ru_stime, r1.ru_stime);
    // The sum is printed, so the reads of modes 5 and 6 are kept by the compiler.
    printf("mode %d: %.0f us CPU per MiB (user %.0f, system %.0f), %.0f us wall per MiB, %ld minor faults, sum %lx\n",
           mode, (user + sys) * 1e6 / objects, user * 1e6 / objects, sys * 1e6 / objects, (t1 - t0) * 1e6 / objects,
           r1.ru_minflt - r0.ru_minflt, sum);
    waitpid(sender, NULL, 0);
    return 0;
}
