// test/test_docs.cpp: the manuals against the code they describe. docs/flags.md must hold exactly the trainer's
// --help (it is generated from the flag table: make docs), and every link between README.md and docs/ must lead to
// a file of the repository (none outside it). The results tables must be what docs/results.tsv says
// (make results-table), and every SK_* environment variable the sources read must be in docs/flags.md. Also the
// regular-expression helpers these checks use (test_util.h).
#include "test_helpers.h"


// The usage text as --help prints it (the defaults of the default preset).
static std::string usage_text() {
    CommandLine cl;
    cl.model = presets[0].cfg;
    char* buf = nullptr;
    size_t len = 0;
    FILE* f = open_memstream(&buf, &len);
    REQUIRE(f != nullptr);
    print_usage(f, &cl);
    fclose(f);
    std::string s(buf, len);
    free(buf);
    return s;
}

TEST_CASE("every environment variable the sources read is in docs/flags.md's table", "[docs]") {
    std::string doc = slurp("docs/flags.md");
    int found = 0;
    std::vector<std::string> files;
    for (const char* dir : {".", "common", "cpu", "kernels"}) {
        DIR* d = opendir(dir);
        REQUIRE(d != nullptr);
        while (struct dirent* e = readdir(d)) {
            std::string name = e->d_name;
            for (const char* ext : {".h", ".cuh", ".cpp", ".cu"})
                if (name.size() > strlen(ext) && name.compare(name.size() - strlen(ext), strlen(ext), ext) == 0)
                    files.push_back(std::string(dir) + "/" + name);
        }
        closedir(d);
    }
    for (const std::string& f : files) {
        std::string src = slurp(f);
        for (const std::vector<std::string>& m : regex_all("getenv\\(\"(SK_[A-Z_]+)\"\\)", src)) {
            INFO(f << " reads " << m[1]);
            CHECK(doc.find("| `" + m[1]) != std::string::npos);
            found++;
        }
    }
    CHECK(found >= 5);
}

TEST_CASE("docs/flags.md holds the --help text of the flag table", "[docs]") {
    std::string doc = slurp("docs/flags.md");
    REQUIRE(!doc.empty());
    const std::string open = "```text\n", close = "\n```";
    size_t a = doc.find(open);
    REQUIRE(a != std::string::npos);
    a += open.size();
    size_t b = doc.find(close, a);
    REQUIRE(b != std::string::npos);
    std::string in_doc = doc.substr(a, b - a + 1), help = usage_text();
    INFO("regenerate docs/flags.md with `make docs`");
    CHECK(in_doc == help);
    // the help fits 100 columns
    size_t start = 0, widest = 0;
    while (start < help.size()) {
        size_t end = help.find('\n', start);
        widest = std::max(widest, end - start);
        start = end + 1;
    }
    CHECK(widest <= 100);
}

TEST_CASE("README.md and docs/ link only to files of the repository", "[docs]") {
    std::vector<std::string> pages = {"README.md"};
    for (const std::string& p : expand_glob("docs/*.md", "docs")) pages.push_back(p);
    CHECK(pages.size() >= 10);
    int links = 0;
    for (const std::string& page : pages) {
        std::string text = slurp(page), dir = page.find('/') == std::string::npos ? "." : "docs";
        INFO("page " << page);
        CHECK(text.find("../shared") == std::string::npos);
        CHECK(text.find("paper.md") == std::string::npos);
        for (const std::vector<std::string>& m : regex_all(R"(\]\(([^)#\s]+)(#[^)]*)?\))", text)) {
            const std::string& target = m[1];
            if (target.rfind("http", 0) == 0) continue;
            INFO("link " << target);
            struct stat st;
            CHECK(stat((dir + "/" + target).c_str(), &st) == 0);
            links++;
        }
    }
    CHECK(links >= 20);
}

TEST_CASE("the results tables of README.md and docs/results.md are what docs/results.tsv says (make results-table)",
          "[docs]") {
    for (const char* which : {"", " --summary"}) {
        std::string table;
        REQUIRE(run_command(std::string("/usr/bin/python3 dev/experiments/run.py report") + which, &table) == 0);
        INFO(table);
        REQUIRE(table.size() > 200);
        CHECK(slurp(*which ? "README.md" : "docs/results.md").find(table) != std::string::npos);
    }
}

TEST_CASE("the tests' regular expressions (test_util.h): every match with its groups, and erasing them", "[docs]") {
    std::vector<std::vector<std::string>> m = regex_all("(a+)(x)?", "caaab a ax");
    REQUIRE(m.size() == 3);
    CHECK(m[0] == std::vector<std::string>{"aaa", "aaa", ""});  // an unset group is ""
    CHECK(m[1] == std::vector<std::string>{"a", "a", ""});
    CHECK(m[2] == std::vector<std::string>{"ax", "a", "x"});
    CHECK(regex_all("z", "abc").empty());
    CHECK(regex_all("b*", "abc").size() == 4);  // empty matches move on: "", "b", "", ""
    CHECK(regex_erase(R"({"type":"train","ms":12.5,"loss":2,"run":"x1"})", R"re(,"(ms|run)":("[^"]*"|[^,}]*))re") ==
          R"({"type":"train","loss":2})");
    CHECK(regex_erase("abcabc", "b") == "acac");
    CHECK(regex_erase("abc", "z") == "abc");
}
