// dev/experiments/plot.py: a small run's log turned into figures. What a figure shows is checked through the series
// the script also writes (--data), against the log's own records; the PNGs must exist and be PNGs. And
// dev/experiments/run.py: its catalogue's runs start (check) and its results rows are what the runs' logs say.
#include "test_helpers.h"

#include <sstream>

// the numbers of "key": [a, b, ...] in a JSON text (the first such key)
static std::vector<double> json_array(const std::string& text, const std::string& key) {
    std::vector<double> v;
    size_t at = text.find("\"" + key + "\": [");
    if (at == std::string::npos) return v;
    const char* p = text.c_str() + at + key.size() + 5;
    while (*p && *p != ']') {
        char* end;
        double x = strtod(p, &end);
        if (end == p) break;
        v.push_back(x);
        p = end;
        while (*p == ',' || *p == ' ') p++;
    }
    return v;
}

static std::string run_plot(const std::string& args, const std::string& log, int* rc) {
    *rc = system(("/usr/bin/python3 dev/experiments/plot.py " + args + " > " + log + " 2>&1").c_str());
    return slurp(log);
}

TEST_CASE("plot.py draws Sink_1, losses, norm ratios and alpha_1 heatmaps from a run's log", "[plots]") {
    if (system("/usr/bin/python3 -c 'import matplotlib' 2>/dev/null") != 0)
        FAIL("python3-matplotlib is missing: `bash dev/setup.sh test` installs it");
    TinyRun r = tiny_run(6);  // sink metrics at steps 0, 2, 4, 6; 128 tokens per step
    REQUIRE(train(&r.cl) == 0);
    std::string out = r.dir + "/figs", data = r.dir + "/series.json";
    int rc;
    std::string said = run_plot(r.dir + "/run --out " + out + " --data " + data + " --title test", r.dir + "/p.txt", &rc);
    INFO(said);
    REQUIRE(rc == 0);
    for (const char* name :
         {"sink_and_loss.png", "norm_ratio_runs.png", "norm_ratio_run.png", "alpha1_run.png", "sink_profile.png"}) {
        std::string png = slurp(out + "/" + name);
        INFO(name);
        CHECK(png.size() > 2000);
        CHECK(png.substr(0, 8) == std::string("\x89PNG\r\n\x1a\n", 8));
        CHECK(slurp(out + "/index.html").find(name) != std::string::npos);
    }
    // the series against the log: every sink record's step (as tokens) and Sink_1, in order
    std::string log = slurp(r.dir + "/run/log.jsonl"), series = slurp(data);
    std::vector<double> steps, sink1;
    size_t at = 0;
    while ((at = log.find("\"type\":\"sink\"", at)) != std::string::npos) {
        size_t s = log.find("\"step\":", at), k = log.find("\"sink\":[", at);
        steps.push_back(atof(log.c_str() + s + 7));
        sink1.push_back(atof(log.c_str() + k + 8));
        at = k;
    }
    REQUIRE(steps.size() == 4);
    std::vector<double> tokens = json_array(series, "tokens_m"), sinks = json_array(series, "sink1");
    REQUIRE(tokens.size() == steps.size());
    REQUIRE(sinks.size() == steps.size());
    for (size_t i = 0; i < steps.size(); i++) {
        CHECK(tokens[i] == Approx(steps[i] * 128 / 1e6).epsilon(1e-12));
        CHECK(sinks[i] == Approx(sink1[i]).epsilon(1e-12));
    }
    INFO(series);
    CHECK(series.find("\"val_loss\": [") != std::string::npos);

    // a directory without a log, and a torn log: a clear error naming the file, no figure
    said = run_plot(r.dir + " --out " + out, r.dir + "/p2.txt", &rc);
    CHECK(rc != 0);
    CHECK(said.find("has no log.jsonl") != std::string::npos);
    FILE* f = fopen((r.dir + "/run/log.jsonl").c_str(), "a");
    REQUIRE(f);
    fputs("{\"type\":\"sink\",\"st", f);
    fclose(f);
    said = run_plot(r.dir + "/run --out " + out, r.dir + "/p3.txt", &rc);
    CHECK(rc != 0);
    CHECK(said.find("log.jsonl line") != std::string::npos);
}

// dev/experiments/run.py: an experiment's runs trained, measured into the results file, and judged
static std::string run_py(const std::string& args, const std::string& log, int* rc) {
    *rc = system(("/usr/bin/python3 dev/experiments/run.py " + args + " > " + log + " 2>&1").c_str());
    return slurp(log);
}

TEST_CASE("run.py trains an experiment, appends rows that match the logs, reuses finished runs, judges directions",
          "[plots][experiments]") {
    std::string dir = temp_dir(), tsv = dir + "/results.tsv";
    // a large learning rate, so that Sink_1 is not zero after 4 steps and a row that read another column would show
    std::string cmd = "run sink-token --steps 4 --extra '--batch 4 --seq-len 16 --sink-every 2 --val-every 2 "
                      "--save-every 2 --probe-seqs 4 --probe-len 16 --lr 0.02 --warmup 1' --results " + tsv +
                      " --runs " + dir + "/runs --no-plots";
    // a results file of the previous version (no directions column) keeps its row and gains the column
    std::string old_head = "date\tcommit\texperiment\trun\tdevice\tseed\ttokens_M\tsink1\tsink_k\tsink_star\t"
                           "alpha1_top\tnorm_ratio\tnorm_layer\tproxy\trow_mass\tval_loss\tpaper\tagrees\tdir\tflags\n";
    write_bytes(tsv, old_head + "d\tc\told-exp\tr\tcpu\t1337\t6.1\t0.50\t\t\t0.2\t2.0\t1\tno\t1\t1.6\tp\tyes\tx\tf\n");
    int rc;
    std::string said = run_py(cmd, dir + "/o1.txt", &rc);
    INFO(said);
    REQUIRE(rc == 0);
    CHECK(said.find("sink-token < softmax on sink1") != std::string::npos);
    // one header and one row per run; each row's numbers are its run's last sink and validation records
    std::vector<std::vector<std::string>> rows;
    std::istringstream in(slurp(tsv));
    for (std::string line; std::getline(in, line);) {
        std::vector<std::string> cells;
        std::istringstream cs(line);
        for (std::string c; std::getline(cs, c, '\t');) cells.push_back(c);
        rows.push_back(cells);
    }
    REQUIRE(rows.size() == 4);
    REQUIRE(rows[0].size() == 21);
    CHECK(rows[0][7] == "sink1");
    CHECK(rows[0][20] == "directions");
    REQUIRE(rows[1].size() == 20);  // the old row, its new last cell empty
    CHECK(rows[1][2] == "old-exp");
    CHECK(rows[1][7] == "0.50");
    rows.erase(rows.begin() + 1);
    for (int i = 1; i <= 2; i++) {
        INFO(rows[i][3]);
        CHECK(rows[i][2] == "sink-token");
        CHECK(rows[i][6] == "0.0");  // 4 steps of 4 x 16 tokens
        std::string log = slurp(std::string("") + rows[i][18].insert(0, "./") + "/log.jsonl");
        size_t s = log.rfind("\"type\":\"sink\""), v = log.rfind("\"type\":\"val\"");
        REQUIRE(s != std::string::npos);
        REQUIRE(v != std::string::npos);
        char want[32];
        snprintf(want, sizeof want, "%.2f", atof(log.c_str() + log.find("\"sink\":[", s) + 8));
        CHECK(rows[i][7] == want);
        // the largest alpha_1 of the layer x head table, the largest norm ratio after a block (not the embedding's)
        double top = 0, ratio = 0;
        size_t a = log.find("\"alpha1\":[[", s) + 10, a_end = log.find("]]", a);
        for (const char* p = log.c_str() + a; p < log.c_str() + a_end; p++)
            if (*p == '[' || *p == ',') top = std::max(top, atof(p + 1));
        size_t n = log.find("\"norm_ratio\":[", s) + 14, n_end = log.find("]", n);
        for (const char* p = log.c_str() + log.find(",", n); p < log.c_str() + n_end; p = strchr(p + 1, ','))
            ratio = std::max(ratio, atof(p + 1));
        snprintf(want, sizeof want, "%.3f", top);
        CHECK(rows[i][10] == want);
        snprintf(want, sizeof want, "%.2f", ratio);
        CHECK(rows[i][11] == want);
        snprintf(want, sizeof want, "%.4f", atof(log.c_str() + log.find("\"val_loss\":", v) + 11));
        CHECK(rows[i][15] == want);
        CHECK(rows[i][8] == "");                                     // no fixed position in focus
        CHECK((rows[i][9] != "") == (rows[i][3] == "sink-token"));  // Sink_* only with the sink token
        CHECK(rows[i][19].find("--steps 4") != std::string::npos);
        REQUIRE(rows[i].size() == 21);
        CHECK(rows[i][20].find("sink-token < softmax (sink1): ") == 0);  // every direction of the experiment
    }
    // again: both runs are done and reused, two more rows, and the report shows the newest row of each run
    said = run_py(cmd, dir + "/o2.txt", &rc);
    REQUIRE(rc == 0);
    CHECK(said.find("is done, reused") != std::string::npos);
    CHECK(said.find("./train_gpt_cpu") == std::string::npos);
    said = run_py("report --results " + tsv, dir + "/o3.txt", &rc);
    REQUIRE(rc == 0);
    CHECK(said.find("| sink-token | sink-token | cpu | 1 | 0.0M |") != std::string::npos);
    CHECK(said.find("| sink-token | softmax | cpu | 1 | 0.0M |") != std::string::npos);
    // an unknown experiment and a results file that does not exist: errors that say what to do
    said = run_py("run no-such-thing --results " + tsv, dir + "/o4.txt", &rc);
    CHECK(rc != 0);
    CHECK(said.find("no experiment named 'no-such-thing'") != std::string::npos);
    said = run_py("report --results " + dir + "/none.tsv", dir + "/o5.txt", &rc);
    CHECK(rc != 0);
    CHECK(said.find("no results file") != std::string::npos);
    // the verdicts: a clear difference agrees or disagrees, one inside twice the noise is "within noise"
    std::string py = "import sys; sys.path.insert(0, 'dev/experiments'); import run; "
                     "m = lambda *v: [{'recent': [{'sink1': x} for x in v]}]; "
                     "print(run.judge([('a', '>', 'b', 'sink1')], {'a': m(5, 5.2, 4.8), 'b': m(1, 1.1, 0.9)})[1]['a'], "
                     "run.judge([('a', '<', 'b', 'sink1')], {'a': m(5, 5.2, 4.8), 'b': m(1, 1.1, 0.9)})[1]['a'], "
                     "run.judge([('a', '>', 'b', 'sink1')], {'a': m(1.2, 0.2, 2.2), 'b': m(1, 1.1, 0.9)})[1]['a'], "
                     "run.judge([('a', '~', 'b', 'sink1')], {'a': m(1.2, 0.2, 2.2), 'b': m(1, 1.1, 0.9)})[1]['a'], "
                     "run.judge([('a', '>', 'b', 'sink1')], {'a': m(0, 0, 0), 'b': m(0, 0, 0)})[1]['a'], sep='|')";
    rc = system(("/usr/bin/python3 -c \"" + py + "\" > " + dir + "/o6.txt 2>&1").c_str());
    said = slurp(dir + "/o6.txt");
    INFO(said);
    CHECK(rc == 0);
    CHECK(said == "yes|no|within noise|yes|within noise\n");
}

// Every run of the catalogue's GPU configuration (the 60M recipe, which this machine cannot train) must be accepted by
// the trainer, so a borrowed GPU is never spent on a flag error: run.py check runs each for 2 steps at a small width
// on the CPU trainer. A flag the trainer refuses must fail the check, naming the run.
TEST_CASE("run.py check: every run of the GPU configuration is accepted by the trainer", "[plots][experiments]") {
    std::string dir = temp_dir();
    int rc;
    std::string said = run_py("check --device gpu", dir + "/o1.txt", &rc);
    INFO(said);
    CHECK(rc == 0);
    CHECK(said.find("FAILED") == std::string::npos);
    size_t at = said.find("check: ");
    REQUIRE(at != std::string::npos);
    int ok = 0, all = 0;
    CHECK(sscanf(said.c_str() + at, "check: %d of %d gpu runs accepted", &ok, &all) == 2);
    CHECK(all >= 70);
    CHECK(ok == all);
    said = run_py("check kv-bias --extra '--heads 7'", dir + "/o2.txt", &rc);
    CHECK(rc != 0);
    CHECK(said.find("kv-bias/kv-slot FAILED") != std::string::npos);
    CHECK(said.find("not divisible by --heads 7") != std::string::npos);
}
