// common/threads.h: how many OpenMP threads to compute with, decided again between steps, so that a run stays steady
// when other programs share its cores.
//
// Why: OpenMP threads wait for each other at the end of every parallel loop, and libgomp waits by spinning. Alone on
// its cores that is the fastest way to wait. With another busy program on the same cores it is the slowest: the
// kernel gives a spinning thread the time its partner needs to finish, and every loop waits for its last thread. Two
// 2-thread runs on 2 cores each ran 3 to 4.6 times slower than alone; two 1-thread runs each about 2.1 times slower,
// the fair share. Results never depend on the thread count (every output element is summed in the same order by
// whichever thread computes it), so the count can change at any step boundary.
//
// How: between steps, at most every half second, the busy time of the cores this process may run on (from
// /proc/stat, Linux) minus this process's own CPU time gives how many cores other programs kept busy; the thread
// count follows the cores left to us, between 1 and the OpenMP default (OMP_NUM_THREADS or the number of cores),
// moving only when the estimate is half a core or more away. At start, before there is a window to measure, the
// count of other runnable threads (/proc/loadavg, the least of three looks) decides. --threads N fixes the count at N instead. Elsewhere than
// Linux the count stays at the OpenMP default.
#pragma once
#include <omp.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <string>

struct ThreadGovernor {
    bool adaptive = false;
    int max_threads = 1, threads = 1;
    double others = 0;          // cores other programs kept busy over the last window (an estimate)
    double window_start_ms = 0, own_cpu_ms = 0;
    uint64_t busy_ticks = 0;
    bool have_window = false;

    static double wall_ms() {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
    }
    static double process_cpu_ms() {
        struct timespec ts;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
    }
    // busy clock ticks (all but idle and iowait) of the CPUs in this process's affinity mask; false if unreadable
    static bool read_busy_ticks(uint64_t* busy) {
#ifdef __linux__
        cpu_set_t mask;
        if (sched_getaffinity(0, sizeof mask, &mask) != 0) return false;
        FILE* f = fopen("/proc/stat", "r");
        if (!f) return false;
        char line[512];
        uint64_t sum = 0;
        int seen = 0;
        while (fgets(line, sizeof line, f)) {
            int cpu;
            unsigned long long v[8] = {0};
            if (sscanf(line, "cpu%d %llu %llu %llu %llu %llu %llu %llu %llu", &cpu, &v[0], &v[1], &v[2], &v[3], &v[4],
                       &v[5], &v[6], &v[7]) < 5)
                continue;
            if (cpu < 0 || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &mask)) continue;
            sum += v[0] + v[1] + v[2] + v[5] + v[6] + v[7];  // user nice system irq softirq steal
            seen++;
        }
        fclose(f);
        *busy = sum;
        return seen > 0;
#else
        (void)busy;
        return false;
#endif
    }
    static int runnable_others() {  // threads ready to run right now, this one excepted; -1 if unknown
        FILE* f = fopen("/proc/loadavg", "r");
        if (!f) return -1;
        double a, b, c;
        int running = 0, total = 0;
        int n = fscanf(f, "%lf %lf %lf %d/%d", &a, &b, &c, &running, &total);
        fclose(f);
        return n == 5 ? running - 1 : -1;
    }
    static int clamp(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }
    // The rule: keep `threads` while the free cores are within half a core of it, else the free cores rounded
    // (between 1 and max_threads).
    static int choose(int threads, int max_threads, double free_cores) {
        if (free_cores >= threads - 0.5 && free_cores <= threads + 0.5) return threads;
        return clamp((int)(free_cores + 0.5 > 0 ? free_cores + 0.5 : 0), 1, max_threads);
    }

    // fixed > 0: that many threads, always. 0: the OpenMP default, fewer while other programs use the cores.
    void start(int fixed) {
        if (fixed > 0) {
            omp_set_num_threads(fixed);
            max_threads = threads = fixed;
            return;
        }
        max_threads = threads = omp_get_max_threads();
        uint64_t t;
        adaptive = max_threads > 1 && read_busy_ticks(&t);
        if (!adaptive) return;
        int busy = runnable_others();  // the least of three looks 2 ms apart: a passing process is not a busy core
        for (int i = 0; i < 2 && busy > 0; i++) {
            usleep(2000);
            int again = runnable_others();
            busy = again < busy ? again : busy;
        }
        if (busy > 0) set(clamp(max_threads - busy, 1, max_threads));
        begin_window();
    }
    void set(int n) {
        threads = n;
        omp_set_num_threads(n);
    }
    void begin_window() {
        window_start_ms = wall_ms();
        own_cpu_ms = process_cpu_ms();
        have_window = read_busy_ticks(&busy_ticks);
    }
    // Between steps. Returns true when the thread count changed; *why then says why, for the console.
    bool update(std::string* why) {
        if (!adaptive) return false;
        double now = wall_ms();
        if (!have_window) {
            begin_window();
            return false;
        }
        if (now - window_start_ms < 500) return false;
        uint64_t busy;
        if (!read_busy_ticks(&busy)) return false;
        double ticks_per_ms = sysconf(_SC_CLK_TCK) / 1e3;
        double busy_ms = (busy - busy_ticks) / ticks_per_ms, own = process_cpu_ms() - own_cpu_ms;
        others = (busy_ms - own) / (now - window_start_ms);
        if (others < 0) others = 0;
        begin_window();
        int want = choose(threads, max_threads, omp_get_num_procs() - others);
        if (want == threads) return false;
        char text[160];
        snprintf(text, sizeof text, "other programs kept %.1f of %d cores busy: %d thread%s now (%d before)", others,
                 omp_get_num_procs(), want, want == 1 ? "" : "s", threads);
        *why = text;
        set(want);
        return true;
    }
};

static inline ThreadGovernor& thread_governor() {
    static ThreadGovernor g;
    return g;
}
