// dev/experiments/plot.py: a small run's log turned into figures. What a figure shows is checked through the series
// the script also writes (--data), against the log's own records; the PNGs must exist and be PNGs.
#include "test_helpers.h"

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
    for (const char* name : {"sink_and_loss.png", "norm_ratio_run.png", "alpha1_run.png", "sink_profile.png"}) {
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
