// test/test_runs.cpp: training runs that are interrupted, resumed, shared, starved of disk and watched, as a user
// meets them: every one must end in a saved, resumable state and say what happened; none may exit 0 having lost work.
//
// What it is: in-process runs (train(), with the log's simulated full disk) and runs of the ./train_gpt_cpu binary
// (signals, a closed stdout, two runs in one directory). Needs ./train_gpt_cpu (make test builds it first).
#include "test_helpers.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>

#include <set>
#include <sstream>

// A child process running a shell command, its stdout and stderr on one pipe.
struct Child {
    pid_t pid = -1;
    int out = -1;
    std::string text;  // what it printed so far
};

static Child spawn(const std::string& cmd) {
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    Child c;
    c.pid = fork();
    REQUIRE(c.pid >= 0);
    if (c.pid == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), (char*)nullptr);
        _exit(127);
    }
    close(fds[1]);
    c.out = fds[0];
    return c;
}

// Reads the child's output until `needle` appears or `seconds` pass; true when it appeared.
static bool wait_for_output(Child* c, const std::string& needle, double seconds) {
    for (int waited = 0; waited < seconds * 100; waited++) {
        if (c->text.find(needle) != std::string::npos) return true;
        struct pollfd p = {c->out, POLLIN, 0};
        if (poll(&p, 1, 10) > 0) {
            char buf[4096];
            ssize_t n = read(c->out, buf, sizeof buf);
            if (n <= 0) return c->text.find(needle) != std::string::npos;
            c->text.append(buf, n);
        }
    }
    return c->text.find(needle) != std::string::npos;
}

// Waits for the child to end (reading the rest of its output); its exit status, or -signal.
static int finish(Child* c) {
    char buf[4096];
    ssize_t n;
    while ((n = read(c->out, buf, sizeof buf)) > 0) c->text.append(buf, n);
    close(c->out);
    int status = 0;
    waitpid(c->pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

// The flags of a small run on tiny_run's shards, for the binary.
static std::string tiny_flags(const TinyRun& r, int steps) {
    return " --train " + r.dir + "/train.bin --val " + r.dir + "/val.bin --vocab 32 --max-seq-len 16 --layers 2 "
           "--heads 4 --channels 16 --ffn-hidden 32 --batch 4 --seq-len 16 --total-batch 128 --warmup 2 "
           "--val-every 2 --val-batches 2 --sink-every 4 --probe-len 16 --steps " + std::to_string(steps);
}

// A run slow enough to be caught in the middle of a step (about a second per step on 2 cores).
static std::string slow_flags(const TinyRun& r, int steps) {
    return " --train " + r.dir + "/train.bin --val " + r.dir + "/val.bin --vocab 32 --max-seq-len 128 --layers 4 "
           "--heads 8 --channels 384 --ffn-hidden 1536 --batch 16 --seq-len 128 --val-every 0 --sink-every 0 "
           "--sample-len 0 --save-every 0 --print-every 1 --probe-seqs 2 --probe-len 16 --steps " +
           std::to_string(steps);
}

// Every line of a log is one whole JSON record.
static void check_log_lines_whole(const std::string& log) {
    size_t pos = 0;
    int lines = 0;
    while (pos < log.size()) {
        size_t end = log.find('\n', pos);
        REQUIRE(end != std::string::npos);  // the last line ends too
        std::string line = log.substr(pos, end - pos);
        INFO("line " << lines << ": " << line);
        CHECK(line.front() == '{');
        CHECK(line.back() == '}');
        CHECK(std::count(line.begin(), line.end(), '{') == 1);
        pos = end + 1;
        lines++;
    }
}

// A run whose log's disk fills after `budget` bytes, or after `writes` records (-1: no such limit): the error it
// stops with.
static std::string train_on_a_full_disk(CommandLine* cl, long long budget, int writes = -1) {
    log_write_budget = budget;
    log_writes_left = writes;
    std::string msg;
    try {
        train(cl);
    } catch (const SkError& e) {
        msg = e.what();
    }
    log_write_budget = -1;
    log_writes_left = -1;
    return msg;
}

// Resumes the run of cl in dir with --resume alone (the flags come from its checkpoint): train()'s status.
static int resume_run(const CommandLine& cl, const std::string& dir) {
    CommandLine again = cl;
    again.train.resume_dir = dir;
    again.given = {"--resume"};
    return train(&again);
}

TEST_CASE("a log that cannot be written stops the run with a checkpoint, no torn record, and it resumes",
          "[runs][disk-full]") {
    TinyRun straight = tiny_run(6);
    REQUIRE(train(&straight.cl) == 0);
    long long size = (long long)slurp(straight.dir + "/run/log.jsonl").size();
    for (long long budget : {1000LL, size / 2, size - 40}) {  // inside the config record, a middle one, the last
        INFO("log bytes before the disk fills: " << budget);
        TinyRun r = tiny_run(6);
        r.cl.train.save_every = 0;
        std::string msg = train_on_a_full_disk(&r.cl, budget);
        CHECK(msg.find("could not be written") != std::string::npos);
        CHECK(msg.find("--resume " + r.dir + "/run") != std::string::npos);
        std::string log = slurp(r.dir + "/run/log.jsonl");
        check_log_lines_whole(log);
        int saved = latest_checkpoint(r.dir + "/run");
        REQUIRE(saved >= 0);
        CHECK(saved <= 6);  // the last budget fails at the done record, after the final checkpoint
        CHECK(!file_exists(r.dir + "/run/run.lock"));  // released by the failed run
        REQUIRE(resume_run(r.cl, r.dir + "/run") == 0);
        CHECK(slurp(r.dir + "/run/model_00000006.bin") == slurp(straight.dir + "/run/model_00000006.bin"));
    }
}

TEST_CASE("Ctrl-C saves a checkpoint at the end of the step, says how to continue, exits 130; resume finishes the "
          "same run", "[runs][signal]") {
    REQUIRE(file_exists("./train_gpt_cpu"));
    TinyRun r = tiny_run(0);
    std::string out;
    REQUIRE(run_command("./train_gpt_cpu" + tiny_flags(r, 1500) + " --save-every 0 --out " + r.dir + "/straight",
                        &out) == 0);
    Child c = spawn("./train_gpt_cpu" + tiny_flags(r, 1500) + " --save-every 0 --out " + r.dir + "/run");
    REQUIRE(wait_for_output(&c, "step     20/1500", 30));
    kill(c.pid, SIGINT);
    int status = finish(&c);
    INFO(c.text);
    CHECK(status == 130);
    CHECK(c.text.find("stopped by SIGINT (Ctrl-C) at step") != std::string::npos);
    CHECK(c.text.find("--resume " + r.dir + "/run") != std::string::npos);
    int saved = latest_checkpoint(r.dir + "/run");
    CHECK(saved >= 20);
    CHECK(saved < 1500);
    std::string log = slurp(r.dir + "/run/log.jsonl");
    check_log_lines_whole(log);
    CHECK(log.find("\"type\":\"stopped\",\"step\":" + std::to_string(saved)) != std::string::npos);
    CHECK(!file_exists(r.dir + "/run/run.lock"));
    // the flags come back from the checkpoint: --resume alone finishes the run, bit for bit the uninterrupted one
    REQUIRE(run_command("./train_gpt_cpu --resume " + r.dir + "/run", &out) == 0);
    CHECK(out.find("resuming " + r.dir + "/run at step " + std::to_string(saved)) != std::string::npos);
    CHECK(slurp(r.dir + "/run/model_00001500.bin") == slurp(r.dir + "/straight/model_00001500.bin"));
}

TEST_CASE("a second Ctrl-C stops at once, without waiting for the step", "[runs][signal]") {
    TinyRun r = tiny_run(0);
    Child c = spawn("./train_gpt_cpu" + slow_flags(r, 1000) + " --out " + r.dir + "/run");
    REQUIRE(wait_for_output(&c, "step      1/1000", 120));  // the first step is done; the second is running
    usleep(100000);
    kill(c.pid, SIGTERM);
    usleep(50000);
    kill(c.pid, SIGTERM);
    int status = finish(&c);
    INFO(c.text);
    CHECK(status == 143);
    CHECK(c.text.find("stopped by") == std::string::npos);  // it did not wait to save
    CHECK(latest_checkpoint(r.dir + "/run") < 2);
}

TEST_CASE("a closed stdout (| head) saves and stops the run instead of killing it", "[runs][signal]") {
    TinyRun r = tiny_run(0);
    std::string out;
    int status = run_command("bash -c './train_gpt_cpu" + tiny_flags(r, 1000) + " --out " + r.dir +
                                 "/run 2>" + r.dir + "/err.txt | head -n 4; echo exit=${PIPESTATUS[0]}'",
                             &out);
    INFO(out << slurp(r.dir + "/err.txt"));
    CHECK(status == 0);
    CHECK(out.find("exit=141") != std::string::npos);
    CHECK(slurp(r.dir + "/err.txt").find("stopped by closed stdout") != std::string::npos);
    int saved = latest_checkpoint(r.dir + "/run");
    CHECK(saved >= 0);  // a checkpoint (step 0's when the console closes during its measurements)
    CHECK(saved < 1000);
}

TEST_CASE("a run directory belongs to one run: a lock, a refusal of another run's directory, --overwrite",
          "[runs][lock]") {
    TinyRun r = tiny_run(0);
    std::string dir = r.dir + "/run", out;
    Child a = spawn("./train_gpt_cpu" + slow_flags(r, 1000) + " --out " + dir);
    REQUIRE(wait_for_output(&a, "train:", 60));
    CHECK(slurp(dir + "/run.lock") == std::to_string(a.pid) + "\n");
    // a second run in the same directory is refused at once, naming the holder
    CHECK(run_command("./train_gpt_cpu" + tiny_flags(r, 4) + " --out " + dir, &out) == 1);
    CHECK(out.find("in use by another run (process " + std::to_string(a.pid)) != std::string::npos);
    kill(a.pid, SIGTERM);
    CHECK(finish(&a) == 143);
    CHECK(!file_exists(dir + "/run.lock"));
    // a fresh run does not mix into a finished one: refused, unless resumed or overwritten
    REQUIRE(run_command("./train_gpt_cpu" + tiny_flags(r, 4) + " --out " + r.dir + "/done", &out) == 0);
    CHECK(run_command("./train_gpt_cpu" + tiny_flags(r, 4) + " --out " + r.dir + "/done", &out) == 1);
    CHECK(out.find("already holds a run (log.jsonl, checkpoints up to step 4)") != std::string::npos);
    REQUIRE(run_command("./train_gpt_cpu" + tiny_flags(r, 2) + " --overwrite --out " + r.dir + "/done", &out) == 0);
    CHECK(latest_checkpoint(r.dir + "/done") == 2);
    CHECK(!file_exists(r.dir + "/done/model_00000004.bin"));
    std::string log = slurp(r.dir + "/done/log.jsonl");
    CHECK(std::count(log.begin(), log.end(), '\n') > 2);
    CHECK(log.find("\"type\":\"config\"") == log.rfind("\"type\":\"config\""));  // one run in the log
    // an output directory that cannot hold files is noticed before any training
    write_bytes(r.dir + "/file", "x");
    CHECK(run_command("./train_gpt_cpu" + tiny_flags(r, 4) + " --out " + r.dir + "/file/run", &out) == 1);
    CHECK(out.find("cannot create output directory") != std::string::npos);
    CHECK(out.find("step ") == std::string::npos);
}

// The sink records of a log, in log order: each one's step and its line without what differs from run to run (the
// times, the thread's time, the run's id).
static std::vector<std::pair<int, std::string>> sink_records(const std::string& log) {
    std::vector<std::pair<int, std::string>> out;
    std::istringstream in(log);
    std::string line;
    while (std::getline(in, line)) {
        if (line.find("\"type\":\"sink\"") == std::string::npos) continue;
        size_t at = line.find("\"step\":");
        REQUIRE(at != std::string::npos);
        out.push_back({atoi(line.c_str() + at + 7), regex_erase(line, ",\"(ms|thread_ms|run)\":[^,}]*")});
    }
    return out;
}

TEST_CASE("sink metrics on a host thread beside training: the same records under their steps, the same checkpoints, "
          "each record before the next probe, a checkpoint and the end", "[runs][sink-thread]") {
    TinyRun at_step = tiny_run(9), beside = tiny_run(9);
    for (TinyRun* r : {&at_step, &beside}) {
        r->cl.train.sink_every = 2;
        r->cl.train.save_every = 3;
        r->cl.train.probe_seqs = 20;  // three chunks
        SinkThreadEnv env(r == &beside ? "1" : "0");
        sink_thread_delay_ms = 300;  // each measurement still under way at the next steps' turns
        REQUIRE(train(&r->cl) == 0);
        sink_thread_delay_ms = 0;
    }
    std::string log0 = slurp(at_step.dir + "/run/log.jsonl"), log1 = slurp(beside.dir + "/run/log.jsonl");
    check_log_lines_whole(log1);
    auto a = sink_records(log0), b = sink_records(log1);
    REQUIRE(a.size() == 6);  // steps 0, 2, 4, 6, 8 and the last, 9
    REQUIRE(b.size() == a.size());
    for (size_t i = 0; i < a.size(); i++) {
        INFO("record " << i);
        CHECK(a[i].first == (int)std::min<size_t>(2 * i, 9));
        CHECK(b[i].first == a[i].first);  // in step order: each waited for before the next probe
        CHECK(b[i].second == a[i].second);
    }
    // the thread measured all but the last (which comes before the summary); the records at their step say nothing
    // of a thread
    size_t with_thread = 0;
    for (size_t p = log1.find("\"thread_ms\":"); p != std::string::npos; p = log1.find("\"thread_ms\":", p + 1))
        with_thread++;
    CHECK(with_thread == a.size() - 1);
    CHECK(log0.find("\"thread_ms\":") == std::string::npos);
    // a record before the checkpoint after its step: the sink record of step 2 before the train record of step 4
    // (the checkpoint of step 3 is written before step 4 trains), and all before the done record
    size_t sink2 = log1.find("\"type\":\"sink\",\"step\":2,"), train4 = log1.find("\"type\":\"train\",\"step\":4,");
    REQUIRE(sink2 != std::string::npos);
    REQUIRE(train4 != std::string::npos);
    CHECK(sink2 < train4);
    // and measured beside training: step 0's record comes after step 1 trained (at step 0's turn, at its step)
    size_t sink0 = log1.find("\"type\":\"sink\",\"step\":0,"), train1 = log1.find("\"type\":\"train\",\"step\":1,");
    CHECK(sink0 > train1);
    CHECK(log0.find("\"type\":\"sink\",\"step\":0,") < log0.find("\"type\":\"train\",\"step\":1,"));
    CHECK(log1.rfind("\"type\":\"sink\"") < log1.find("\"type\":\"done\""));
    for (int step : {3, 6, 9})
        CHECK(slurp(ckpt_path(at_step.dir + "/run", "model", step)) ==
              slurp(ckpt_path(beside.dir + "/run", "model", step)));
    // a value that is not 1, 0 or auto is refused, naming the variable
    SinkThreadEnv bad("yes");
    TinyRun r = tiny_run(2);
    std::string msg;
    try {
        train(&r.cl);
    } catch (const SkError& e) {
        msg = e.what();
    }
    CHECK(msg.find("SK_SINK_THREAD 'yes' is not 1, 0 or auto") != std::string::npos);
}

TEST_CASE("a log that cannot be written while the thread still measures: the checkpoint keeps that measurement's "
          "record, and the resumed run logs it once", "[runs][sink-thread][disk-full]") {
    // sink metrics every 3 steps, checkpoints every 2: the measurement of step 3 is still on the thread (it waits
    // 300 ms) when the record of step 4's training is written; that write fails, or the sink record's own (logged
    // when the checkpoint of step 4 waits for it)
    auto setup = [](TinyRun* r) {
        r->cl.train.sink_every = 3;
        r->cl.train.save_every = 2;
        r->cl.train.val_every = 0;
    };
    SinkThreadEnv env("1");
    sink_thread_delay_ms = 300;
    TinyRun straight = tiny_run(8);
    setup(&straight);
    REQUIRE(train(&straight.cl) == 0);
    std::string full = slurp(straight.dir + "/run/log.jsonl");
    size_t train4 = full.find("\"type\":\"train\",\"step\":4,"), sink3 = full.find("\"type\":\"sink\",\"step\":3,");
    REQUIRE(train4 != std::string::npos);
    REQUIRE(sink3 != std::string::npos);
    REQUIRE(sink3 > train4);  // step 3's record came after: still measuring
    for (size_t at : {train4, sink3}) {
        INFO("the write that fails: " << (at == train4 ? "step 4's train record" : "step 3's sink record"));
        TinyRun r = tiny_run(8);
        setup(&r);
        sink_thread_delay_ms = 300;
        std::string msg = train_on_a_full_disk(&r.cl, (long long)at + 60);  // inside that record
        sink_thread_delay_ms = 0;
        CHECK(msg.find("could not be written") != std::string::npos);
        REQUIRE(latest_checkpoint(r.dir + "/run") == 4);  // the newest step: its state holds step 3's record
        Checkpoint ck = read_checkpoint(r.dir + "/run", 4);
        CHECK(ck.state.unlogged.find("\"type\":\"sink\",\"step\":3,") != std::string::npos);
        CHECK(slurp(r.dir + "/run/log.jsonl").find("\"type\":\"sink\",\"step\":3,") == std::string::npos);
        REQUIRE(resume_run(r.cl, r.dir + "/run") == 0);
        std::vector<int> steps;
        for (auto& rec : sink_records(slurp(r.dir + "/run/log.jsonl"))) steps.push_back(rec.first);
        CHECK(steps == std::vector<int>({0, 3, 6, 8}));
        CHECK(slurp(r.dir + "/run/model_00000008.bin") == slurp(straight.dir + "/run/model_00000008.bin"));
    }
    sink_thread_delay_ms = 0;
}

// A log's records without what differs between two runs that computed the same (timings, thread counts, the run's
// id), and without the records of an invocation (config, done, stopped): one line each, in order.
static std::vector<std::string> computed_records(const std::string& log) {
    std::vector<std::string> out;
    std::istringstream in(log);
    for (std::string line; std::getline(in, line);) {
        bool invocation = false;
        for (const char* t : {"config", "done", "stopped"})
            invocation |= line.find("\"type\":\"" + std::string(t) + "\"") != std::string::npos;
        if (invocation) continue;
        out.push_back(
            regex_erase(line, ",\"(ms|tok_per_s|flops_per_s|mfu|threads|thread_ms|run)\":(\"[^\"]*\"|[^,}]*)"));
    }
    return out;
}

TEST_CASE("wherever the log's disk fills, the failed run and the run that resumes it log every record exactly once",
          "[runs][disk-full]") {
    auto setup = [](TinyRun* r) {
        r->cl.train.save_every = 3;
        r->cl.train.sample_every = 2;
        r->cl.train.sample_len = 6;
    };
    TinyRun straight = tiny_run(6);
    setup(&straight);
    REQUIRE(train(&straight.cl) == 0);
    std::string full = slurp(straight.dir + "/run/log.jsonl");
    std::vector<std::string> want = computed_records(full);
    int lines = (int)std::count(full.begin(), full.end(), '\n');
    std::set<std::string> failed_types;
    for (int k = 0; k < lines; k++) {  // write k + 1 fails, and every one after it would
        std::istringstream in(full);
        std::string line;
        for (int i = 0; i <= k; i++) std::getline(in, line);
        std::vector<std::vector<std::string>> types = regex_all("\"type\":\"([a-z]+)\"", line);
        REQUIRE(!types.empty());
        INFO("the first write that fails: record " << k << ", " << types[0][1]);
        failed_types.insert(types[0][1]);
        TinyRun r = tiny_run(6);
        setup(&r);
        std::string msg = train_on_a_full_disk(&r.cl, -1, k);
        INFO(msg);
        CHECK(msg.find("could not be written") != std::string::npos);
        CHECK(msg.find("--resume " + r.dir + "/run") != std::string::npos);
        std::string log = slurp(r.dir + "/run/log.jsonl");
        CHECK((int)std::count(log.begin(), log.end(), '\n') == k);  // the records before it, whole
        int saved = latest_checkpoint(r.dir + "/run");
        REQUIRE(saved >= 0);
        REQUIRE(resume_run(r.cl, r.dir + "/run") == 0);
        CHECK(!file_exists(r.dir + "/run/run.lock"));
        log = slurp(r.dir + "/run/log.jsonl");
        check_log_lines_whole(log);
        CHECK(computed_records(log) == want);  // every record of the straight run, once each, in its order
        size_t done = 0;
        for (size_t p = log.find("\"type\":\"done\""); p != std::string::npos; p = log.find("\"type\":\"done\"", p + 1))
            done++;
        CHECK(done == 1);
        CHECK(slurp(r.dir + "/run/model_00000006.bin") == slurp(straight.dir + "/run/model_00000006.bin"));
        // a second resume of the same checkpoint writes nothing twice
        if (saved < 6) {
            std::string before = slurp(r.dir + "/run/log.jsonl");
            CommandLine third = r.cl;
            third.train.resume_dir = r.dir + "/run";
            third.train.from_step = saved;
            third.given = {"--resume", "--from-step", "--steps"};
            third.train.steps = saved;
            REQUIRE(train(&third) == 0);
            std::string after = slurp(r.dir + "/run/log.jsonl");
            CHECK(computed_records(after) == computed_records(before));
        }
    }
    for (const char* t : {"config", "train", "val", "sink", "sample", "done"}) CHECK(failed_types.count(t) == 1);
}

TEST_CASE("a stop request in the step whose log write fails: its stopped record is kept with the other records",
          "[runs][disk-full][signal]") {
    TinyRun r = tiny_run(6);
    stop_requested = SIGINT;  // as if Ctrl-C came during step 0's measurements
    std::string msg = train_on_a_full_disk(&r.cl, -1, 1);  // the config record is written, step 0's validation not
    stop_requested = 0;
    CHECK(msg.find("could not be written") != std::string::npos);
    REQUIRE(latest_checkpoint(r.dir + "/run") == 0);
    Checkpoint ck = read_checkpoint(r.dir + "/run", 0);
    CHECK(ck.state.version == 3);
    CHECK(ck.state.unlogged.find("{\"type\":\"val\",\"step\":0,") == 0);  // the first record it kept
    CHECK(ck.state.unlogged.find("\"type\":\"stopped\",\"step\":0,\"reason\":\"SIGINT (Ctrl-C)\"") !=
          std::string::npos);
    REQUIRE(resume_run(r.cl, r.dir + "/run") == 0);
    std::string log = slurp(r.dir + "/run/log.jsonl");
    check_log_lines_whole(log);
    CHECK(log.find("\"type\":\"stopped\"") < log.find("\"type\":\"train\",\"step\":1,"));
    CHECK(read_checkpoint(r.dir + "/run", 6).state.version == 2);  // no unlogged records: the old format
}

TEST_CASE("a log that takes the done record but not the profile record after it says only that", "[runs][disk-full]") {
    TinyRun straight = tiny_run(2);
    REQUIRE(train(&straight.cl) == 0);
    std::string full = slurp(straight.dir + "/run/log.jsonl");
    int lines = (int)std::count(full.begin(), full.end(), '\n');  // through the done record
    TinyRun r = tiny_run(2);
    profile().on = true;  // SK_PROFILE=1: a profile record follows the done record
    std::string msg = train_on_a_full_disk(&r.cl, -1, lines);
    profile().on = false;
    CHECK(msg.find("its log holds its summary, but the profile record could not be written") != std::string::npos);
    std::string log = slurp(r.dir + "/run/log.jsonl");
    CHECK((int)std::count(log.begin(), log.end(), '\n') == lines);
    CHECK(log.find("\"type\":\"done\"") != std::string::npos);
}

TEST_CASE("the sink thread's keep arena is sized only where a step before the last measures beside training",
          "[runs][sink-thread]") {
    TrainConfig t;
    t.steps = 6;
    t.sink_every = 3;
    CHECK(sink_thread_steps(t, 0));   // steps 0 and 3
    CHECK(!sink_thread_steps(t, 4));  // only 6, the last, measured at once
    t.steps = 7;
    CHECK(sink_thread_steps(t, 4));  // 6
    t.steps = 3;
    CHECK(sink_thread_steps(t, 0));
    CHECK(!sink_thread_steps(t, 1));
    t.sink_every = 0;
    CHECK(!sink_thread_steps(t, 0));
    // the console's note gives the arena's size: the probe's two chunks (8 and 4 sequences of 16 positions)
    TinyRun r = tiny_run(1);
    char expect[64];
    snprintf(expect, sizeof expect, "the probe's copies %.1f MB;",
             (HeldProbeChunk::bytes(r.cl.model, 8, 16) + HeldProbeChunk::bytes(r.cl.model, 4, 16)) / 1e6);
    for (int every : {3, 0}) {
        std::string out, cmd = "env SK_SINK_THREAD=1 ./train_gpt_cpu" + tiny_run_flags(r, every) + " --steps 4 --out " +
                               r.dir + "/run" + std::to_string(every);
        int rc = run_command(cmd, &out);
        INFO(cmd << "\n" << out);
        REQUIRE(rc == 0);
        CHECK((out.find(expect) != std::string::npos) == (every == 3));
        CHECK((out.find("note: sink metrics on a host thread") != std::string::npos) == (every == 3));
    }
}

TEST_CASE("Ctrl-C with sink metrics on the thread: the measurement under way is logged before the checkpoint",
          "[runs][sink-thread][signal]") {
    REQUIRE(file_exists("./train_gpt_cpu"));
    TinyRun r = tiny_run(0);
    std::string flags = tiny_flags(r, 1500);
    REQUIRE(flags.find("--sink-every 4") != std::string::npos);
    flags.replace(flags.find("--sink-every 4"), 14, "--sink-every 1");
    Child c = spawn("env SK_SINK_THREAD=1 ./train_gpt_cpu" + flags + " --save-every 0 --out " + r.dir + "/run");
    bool reached = wait_for_output(&c, "step     20/1500", 60);
    INFO(c.text);
    REQUIRE(reached);
    kill(c.pid, SIGINT);
    int status = finish(&c);
    INFO(c.text);
    CHECK(status == 130);
    CHECK(c.text.find("beside training") != std::string::npos);
    int saved = latest_checkpoint(r.dir + "/run");
    REQUIRE(saved >= 20);
    std::string log = slurp(r.dir + "/run/log.jsonl");
    check_log_lines_whole(log);
    auto sinks = sink_records(log);
    // one record for every step up to the checkpoint's, in order: none lost to the stop, and the checkpoint's own
    // step measured before it was saved (the run that resumes it does not measure it again)
    REQUIRE((int)sinks.size() == saved + 1);
    for (int i = 0; i <= saved; i++) CHECK(sinks[i].first == i);
    std::string out;
    REQUIRE(run_command("env SK_SINK_THREAD=1 ./train_gpt_cpu --resume " + r.dir + "/run --steps " +
                            std::to_string(saved + 3), &out) == 0);
    sinks = sink_records(slurp(r.dir + "/run/log.jsonl"));
    REQUIRE((int)sinks.size() == saved + 4);
    for (int i = 0; i <= saved + 3; i++) CHECK(sinks[i].first == i);  // each step once, across the two runs
}

TEST_CASE("every log record names its run; the console shows progress, saves and a summary", "[runs][console]") {
    TinyRun r = tiny_run(0);
    std::string out;
    REQUIRE(run_command("./train_gpt_cpu" + tiny_flags(r, 12) + " --print-every 5 --save-every 4 --keep-last 2 --out " +
                            r.dir + "/run",
                        &out) == 0);
    INFO(out);
    // progress lines every 5 steps (and the first and last), each with the elapsed time and what is left
    CHECK(out.find("step      1/12 |") != std::string::npos);
    CHECK(out.find("step      5/12 |") != std::string::npos);
    CHECK(out.find("step      4/12 |") == std::string::npos);
    CHECK(out.find("step     12/12 |") != std::string::npos);
    CHECK(out.find("| elapsed 0:00:") != std::string::npos);
    CHECK(out.find("| eta 0:00:") != std::string::npos);
    // the header gives the model's flops a token, and every progress line their rate: tokens/s times that (to the
    // three figures printed); no MFU on the CPU, whose peak is not known
    double per_token = model_flops_per_seq(r.cl.model, 16) / 16;
    CHECK(out.find("parameters, " + flops_text(per_token) + " a token |") != std::string::npos);
    auto rates = regex_all("\\| +(\\d+) tok/s \\| ([0-9.]+) ([kMGT]?)FLOP/s \\| elapsed", out);
    CHECK(rates.size() == 4);  // steps 1, 5, 10 and 12
    for (const auto& m : rates) {
        double scale = m[3].empty() ? 1 : pow(1000, 1 + std::string("kMGT").find(m[3]));
        INFO(m[0]);
        CHECK(std::stod(m[2]) * scale == Approx(std::stod(m[1]) * per_token).epsilon(0.01));
    }
    CHECK(out.find("MFU") == std::string::npos);
    // and every train record of the log the same rate: its tokens/s times the flops a token, with no mfu on the CPU
    std::string log = slurp(r.dir + "/run/log.jsonl");
    auto recs = regex_all("\"type\":\"train\",\"step\":\\d+,[^}]*\"tok_per_s\":([0-9.e+]+),\"flops_per_s\":([0-9.e+]+),"
                          "\"threads\"",
                          log);
    CHECK(recs.size() == 12);
    for (const auto& m : recs) {
        INFO(m[0]);
        CHECK(std::stod(m[2]) == Approx(std::stod(m[1]) * per_token).epsilon(0.002));
    }
    CHECK(log.find("\"mfu\"") == std::string::npos);
    CHECK(out.find("saved " + r.dir + "/run/model_00000008.bin") != std::string::npos);
    CHECK(out.find("done: 12 steps, 0.00154M tokens") != std::string::npos);
    CHECK(out.find("best ") != std::string::npos);
    CHECK(out.find("0 updates skipped") != std::string::npos);
    // --keep-last 2: the checkpoints of steps 8 and 12 remain
    std::vector<int> steps = checkpoint_steps(r.dir + "/run");
    CHECK(steps == std::vector<int>({8, 12}));
    size_t lines = std::count(log.begin(), log.end(), '\n');
    size_t at = log.find("\"run\":\"");
    REQUIRE(at != std::string::npos);
    std::string id = log.substr(at, 7 + 16 + 1);
    size_t named = 0;
    for (size_t p = log.find(id); p != std::string::npos; p = log.find(id, p + 1)) named++;
    CHECK(named == lines);
}

// The model flops the console reports (model_flops_per_seq), against counts written out by hand from each
// architecture: 6 a position per weight in a product, 12 C a layer per key seen, the classifier over the T positions
// that predict a token.
TEST_CASE("the model's flops a sequence: GPT-2 124M, llama-60m and each attention design's extra work, counted by hand",
          "[runs][flops]") {
    auto attention = [](double L, double C, double keys) { return 12 * L * C * keys; };
    {   // GPT-2 124M at T 1024: a layer's qkv, projection and two FFN matrices, the tied classifier; causal keys
        const ModelConfig& g = presets[3].cfg;
        REQUIRE(std::string(presets[3].name) == "gpt2");
        double L = 12, C = 768, FF = 3072, V = 50257, T = 1024;
        double want = 6 * T * (L * (4 * C * C + 2 * C * FF) + V * C) + attention(L, C, T * (T + 1) / 2);
        CHECK(want == 817019486208.0);
        CHECK(model_flops_per_seq(g, 1024) == Approx(want).epsilon(1e-12));
    }
    {   // llama-60m at T 2048: a gated FFN has three matrices
        const ModelConfig& m = presets[2].cfg;
        REQUIRE(std::string(presets[2].name) == "llama-60m");
        double L = 10, C = 768, FF = 1536, V = 50432, T = 2048;
        double want = 6 * T * (L * (4 * C * C + 3 * C * FF) + V * C) + attention(L, C, T * (T + 1) / 2);
        CHECK(model_flops_per_seq(m, 2048) == Approx(want).epsilon(1e-12));
    }
    // the attention designs on a small model: L 2, C 32, 4 heads of 8, FFN 64 (SwiGLU), V 50, T 24
    const double L = 2, C = 32, NH = 4, hs = 8, FF = 64, V = 50, T = 24;
    const ModelConfig small =
        make_config(64, 50, 2, 4, 32, 64, NORM_RMSNORM, PLACE_PRE, FFN_SWIGLU, POS_ROPE, 0, 0, INIT_LLAMA);
    const double layer = 4 * C * C + 3 * C * FF, causal = T * (T + 1) / 2;
    auto plain = [&](double extra_layer, double keys) {
        return 6 * T * (L * (layer + extra_layer) + V * C) + attention(L, C, keys);
    };
    ModelConfig c = small;
    CHECK(model_flops_per_seq(c, 24) == Approx(plain(0, causal)).epsilon(1e-12));
    c = small;
    c.attn.mask = MASK_WINDOW;  // w 5: position t sees min(t + 1, 5) keys
    c.attn.mask_param = 5;
    CHECK(model_flops_per_seq(c, 24) == Approx(plain(0, (1 + 2 + 3 + 4) + 5 * (T - 4))).epsilon(1e-12));
    c = small;
    c.attn.mask = MASK_PREFIX;  // p 6: the first 6 positions see the 6 prefix keys, the rest t + 1
    c.attn.mask_param = 6;
    CHECK(model_flops_per_seq(c, 24) == Approx(plain(0, 6 * 6 + (causal - 21))).epsilon(1e-12));
    c = small;
    c.attn.slot = SLOT_KV;  // one more key for every position
    CHECK(model_flops_per_seq(c, 24) == Approx(plain(0, causal + T)).epsilon(1e-12));
    c.attn.vstar = VSTAR_FIXED;  // v* fixed: its score (6 C) and value without dv* (4 C)
    CHECK(model_flops_per_seq(c, 24) == Approx(plain(0, causal) + L * 10 * C * T).epsilon(1e-12));
    c.attn.vstar = VSTAR_ZERO;  // v* = 0: its score only
    CHECK(model_flops_per_seq(c, 24) == Approx(plain(0, causal) + L * 6 * C * T).epsilon(1e-12));
    c = small;
    c.attn.slot = SLOT_LOGIT;  // a logit, no product
    CHECK(model_flops_per_seq(c, 24) == Approx(plain(0, causal)).epsilon(1e-12));
    c = small;
    c.attn.gate = GATE_ELEMENTWISE;  // a C x C gate
    CHECK(model_flops_per_seq(c, 24) == Approx(plain(C * C, causal)).epsilon(1e-12));
    c = small;
    c.attn.gate = GATE_HEADWISE;  // a gate per head: NH x C
    CHECK(model_flops_per_seq(c, 24) == Approx(plain(NH * C, causal)).epsilon(1e-12));
    c = small;
    c.attn.phi = PHI_MLP;  // two hs x hs matrices on q and on k of every head
    CHECK(model_flops_per_seq(c, 24) == Approx(plain(2 * 2 * NH * hs * hs, causal)).epsilon(1e-12));
    c = small;
    c.attn.sink_token = 1;  // the blocks run over T + 1 positions, the classifier over T
    double P = T + 1;
    CHECK(model_flops_per_seq(c, 24) ==
          Approx(6 * (P * L * layer + T * V * C) + attention(L, C, P * (P + 1) / 2)).epsilon(1e-12));
    // and as the console writes them: three significant figures and a metric prefix
    CHECK(flops_text(797870592) == "798 MFLOP");
    CHECK(flops_text(2.2619e6) == "2.26 MFLOP");
    CHECK(flops_text(94.04e9) == "94.0 GFLOP");
    CHECK(flops_text(999.6e9) == "1.00 TFLOP");
    CHECK(flops_text(12) == "12.0 FLOP");
}

TEST_CASE("--resume restores the run's flags, names what a flag changed, and refuses another model", "[runs][resume]") {
    TinyRun a = tiny_run(0);
    std::string out, flags = tiny_flags(a, 8) + " --lr 0.004 --schedule linear --min-lr-frac 0.25 --seed 7";
    REQUIRE(run_command("./train_gpt_cpu" + flags + " --out " + a.dir + "/straight", &out) == 0);
    REQUIRE(run_command("./train_gpt_cpu" + flags + " --save-every 5 --out " + a.dir + "/run", &out) == 0);
    // resume from step 5 with nothing but the directory: batch, schedule, lr, seed and data come from the checkpoint
    REQUIRE(run_command("rm " + a.dir + "/run/model_00000008.bin " + a.dir + "/run/state_00000008.bin", &out) == 0);
    REQUIRE(run_command("./train_gpt_cpu --resume " + a.dir + "/run --val-every 4", &out) == 0);
    INFO(out);
    CHECK(out.find("resuming " + a.dir + "/run at step 5: restored") != std::string::npos);
    CHECK(out.find("--lr 0.004") != std::string::npos);
    CHECK(out.find("changed on this command line: --val-every 2 -> 4") != std::string::npos);
    CHECK(slurp(a.dir + "/run/model_00000008.bin") == slurp(a.dir + "/straight/model_00000008.bin"));
    CHECK(run_command("./train_gpt_cpu --resume " + a.dir + "/run --preset gpt2", &out) == 1);
    CHECK(out.find("flag --preset: --resume reads the architecture") != std::string::npos);
    CHECK(run_command("./train_gpt_cpu --resume " + a.dir + "/run --seq-len 8", &out) == 1);
    CHECK(out.find("decide its data stream") != std::string::npos);
}

TEST_CASE("a damaged checkpoint is named with the newest good one, and --from-step resumes that", "[runs][resume]") {
    TinyRun r = tiny_run(0);
    std::string out, dir = r.dir + "/run";
    REQUIRE(run_command("./train_gpt_cpu" + tiny_flags(r, 6) + " --save-every 2 --out " + dir, &out) == 0);
    // one flipped bit in a weight of the latest model file: still a finite number, found only by the checksum
    std::string model = slurp(dir + "/model_00000006.bin");
    model[1024 + 4 * 100] ^= 0x01;
    write_bytes(dir + "/model_00000006.bin", model);
    CHECK(run_command("./train_gpt_cpu --resume " + dir + " --steps 8", &out) == 1);
    INFO(out);
    CHECK(out.find("does not match the checksum") != std::string::npos);
    CHECK(out.find("The newest good one is step 4: continue from it with --resume " + dir + " --from-step 4") !=
          std::string::npos);
    REQUIRE(run_command("./train_gpt_cpu --resume " + dir + " --from-step 4 --steps 8", &out) == 0);
    CHECK(latest_checkpoint(dir) == 8);
    CHECK(run_command("./train_gpt_cpu --resume " + dir + " --from-step 3", &out) == 1);
    CHECK(out.find("holds no checkpoint of step 3") != std::string::npos);
}

TEST_CASE("vocabulary, tokenizer, data and prompt agree, or the run says so before it trains", "[runs][vocab]") {
    TinyRun r = tiny_run(0);
    std::string out;
    // a prompt without a tokenizer is an error, never token 0
    CHECK(run_command("./train_gpt_cpu" + tiny_flags(r, 2) + " --sample-len 8 --prompt hello --out " + r.dir + "/a",
                      &out) == 1);
    CHECK(out.find("flag --prompt: no tokenizer") != std::string::npos);
    CHECK(!file_exists(r.dir + "/a/log.jsonl"));
    // a tokenizer of another size is refused
    write_tokenizer_file(r.dir + "/bytes.bin", byte_tokenizer_tokens(), 10);
    CHECK(run_command("./train_gpt_cpu" + tiny_flags(r, 2) + " --tokenizer " + r.dir + "/bytes.bin --out " + r.dir +
                          "/b", &out) == 1);
    CHECK(out.find("has 256 tokens, but the model's vocabulary has 32") != std::string::npos);
    // byte-level data for a large vocabulary: said before training
    REQUIRE(run_command("./train_gpt_cpu --train data/brown/brown_val.bin --val data/brown/brown_val.bin --vocab 1024 "
                        "--layers 1 --channels 16 --heads 2 --ffn-hidden 16 --batch 2 --seq-len 16 --steps 1 "
                        "--val-batches 1 --probe-seqs 2 --probe-len 16 --sample-len 4 --out " + r.dir + "/c", &out) == 0);
    CHECK(out.find("warning: the training data uses token ids up to") != std::string::npos);
    CHECK(out.find("samples are logged as token ids") != std::string::npos);
    CHECK(out.find("warning") < out.find("step      1/1"));
}

TEST_CASE("a small probe shard lowers --probe-seqs with a note; --eval-sink finds its probe and speaks plainly",
          "[runs][probe]") {
    TinyRun r = tiny_run(0);
    std::string out;
    std::vector<uint16_t> few(100, 3);
    write_shard(r.dir + "/small_val.bin", few);
    REQUIRE(run_command("./train_gpt_cpu" + tiny_flags(r, 2) + " --probe " + r.dir + "/small_val.bin --probe-seqs 100 "
                        "--out " + r.dir + "/run", &out) == 0);
    CHECK(out.find("holds 6 windows of 16 tokens, fewer than --probe-seqs 100: measuring on 6") != std::string::npos);
    CHECK(slurp(r.dir + "/run/log.jsonl").find("\"probe_seqs\":6") != std::string::npos);
    // --eval-sink without --probe reads the first shard of --val, and prints a summary before the JSON line
    std::string model = r.dir + "/run/model_00000002.bin";
    REQUIRE(run_command("./train_gpt_cpu --load " + model + " --eval-sink --val " + r.dir + "/val.bin --probe-len 16 "
                        "--probe-seqs 4", &out) == 0);
    CHECK(out.find("Sink_1..3") != std::string::npos);
    CHECK(out.find("first-token norm ratio by layer") != std::string::npos);
    CHECK(out.find("\"probe\":\"" + r.dir + "/val.bin\"") != std::string::npos);
    REQUIRE(run_command("./train_gpt_cpu --load " + model + " --eval-sink --json --val " + r.dir + "/val.bin "
                        "--probe-len 16 --probe-seqs 4", &out) == 0);
    CHECK(out.rfind("{\"checkpoint\":", 0) == 0);
    CHECK(std::count(out.begin(), out.end(), '\n') == 1);
}

TEST_CASE("a run whose updates were mostly skipped exits 1 and says so; a few skips are a warning", "[runs][nonfinite]") {
    TinyRun r = tiny_run(4);
    // embeddings of 3e38: LayerNorm's mean overflows, and every step's loss is NaN
    r.cl.model.norm = NORM_LAYERNORM;
    Model<float> m;
    model_build(&m, r.cl.model);
    model_init(&m, 1);
    for (size_t i = 0; i < m.sizes[P_WTE]; i++) m.p[P_WTE][i] = 3e38f;
    write_model_file(r.dir + "/poison.bin", r.cl.model, m.params.data());
    r.cl.train.load_path = r.dir + "/poison.bin";
    r.cl.train.on_nonfinite = NONFINITE_SKIP;
    r.cl.train.val_every = 0;
    r.cl.train.sink_every = 0;
    r.cl.train.sample_len = 0;
    CHECK(train(&r.cl) == 1);
    CHECK(slurp(r.dir + "/run/log.jsonl").find("\"skipped_steps\":4") != std::string::npos);
}

// common/threads.h: the rule that turns free cores into a thread count, and the estimate of how many cores other
// programs keep busy, against a child process that spins on one core.
TEST_CASE("the thread governor follows the cores other programs leave free", "[runs]") {
    CHECK(ThreadGovernor::choose(2, 2, 2.0) == 2);
    CHECK(ThreadGovernor::choose(2, 2, 1.0) == 1);   // another program keeps a core busy: one thread
    CHECK(ThreadGovernor::choose(2, 2, 1.6) == 2);   // within half a core: no change
    CHECK(ThreadGovernor::choose(1, 2, 1.4) == 1);
    CHECK(ThreadGovernor::choose(1, 2, 2.0) == 2);   // the other program ended
    CHECK(ThreadGovernor::choose(2, 2, -3.0) == 1);  // never below one
    CHECK(ThreadGovernor::choose(4, 8, 7.9) == 8);
    CHECK(ThreadGovernor::choose(8, 8, 5.2) == 5);

    ThreadGovernor g;
    uint64_t ticks;
    if (!ThreadGovernor::read_busy_ticks(&ticks) || omp_get_num_procs() < 2) return;  // not Linux, or one core
    g.adaptive = true;
    g.max_threads = g.threads = omp_get_num_procs();
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {  // one core kept busy for 3 seconds at most
        double end = ThreadGovernor::wall_ms() + 3000;
        volatile double x = 0;
        while (ThreadGovernor::wall_ms() < end) x = x + 1;
        _exit(0);
    }
    usleep(100 * 1000);
    g.begin_window();
    usleep(800 * 1000);  // this process sleeps: the busy time is the child's (and whatever else runs here)
    std::string why;
    bool changed = g.update(&why);
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    INFO("others " << g.others << " threads " << g.threads << " " << why);
    CHECK(g.others > 0.6);  // the child's core
    CHECK(g.others <= omp_get_num_procs() + 0.1);
    CHECK(g.threads < omp_get_num_procs());
    CHECK(changed);
    CHECK(why.find("other programs kept") != std::string::npos);
    omp_set_num_threads(omp_get_num_procs());
}

TEST_CASE("log strings are valid UTF-8: every byte outside a well-formed character becomes U+FFFD", "[runs][json]") {
    const std::string bad = "\\ufffd";
    // well-formed characters are kept: 2, 3 and 4 bytes, the largest code point, the last before the surrogates
    for (const char* ok : {"\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80", "\xF4\x8F\xBF\xBF", "\xED\x9F\xBF"})
        CHECK(json_escape(ok) == ok);
    // overlong forms, surrogates, code points above U+10FFFF, stray continuation bytes and cut characters are not
    // (Python's json module, and every strict reader, refuse them): one U+FFFD per byte
    CHECK(json_escape("\xC0\x80") == bad + bad);
    CHECK(json_escape("\xE0\x92\x92W") == bad + bad + bad + "W");  // an overlong 3-byte form a sample produced
    CHECK(json_escape("\xED\xA0\x80") == bad + bad + bad);           // the surrogate U+D800
    CHECK(json_escape("\xF4\x90\x80\x80") == bad + bad + bad + bad);  // U+110000
    CHECK(json_escape("\xF5\x80\x80\x80") == bad + bad + bad + bad);
    CHECK(json_escape("\x80" "a\xE2\x82") == bad + "a" + bad + bad);
    CHECK(json_escape("\"\\\x01") == "\\\"\\\\\\u0001");
}
