// ptguard_bench: the benchmark set in one binary, with the physical limit measured first
// in the same run.
//
// Every row's `ratio` counter (its ns per page, per block or per call over the limit's median
// ns per page) is added by RatioReporter, which sits in front of both the console reporter and
// the JSON file reporter: the limit runs first, its median is noted when its results pass
// through, and every later run gets `ratio` before it is printed or written. So ratio is in
// build/bench.json like any other counter (for the mean, median and stddev rows: that
// statistic's ns over the limit's median ns; for the cv row: the cv). After the run, the final
// table (medians of the repetitions) is printed.
//
// Defaults: 5 repetitions unless --benchmark_repetitions is given.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "harness.hpp"

namespace {

using benchmark::BenchmarkReporter;

constexpr const char* kLimit = "limit_1g_pages";

struct RowSpec {
  const char* name;
  const char* per;  // page, block, call
  double target;    // ratio target (0: none)
  double linux;     // Linux's ratio measured the same way (0: not given)
};

// The rows, in its order (and the arch/ check at the end).
constexpr RowSpec kRows[] = {
    {"stage2_map_1g_pages", "page", 5, 30},
    {"stage2_map_1g_page_calls", "page", 25, 122},
    {"stage2_map_1g_block", "call", 0, 0},
    {"stage2_map_1g_2m_blocks", "block", 5, 28},
    {"stage2_unmap_1g_pages", "page", 5, 17},
    {"walk_1g_pages", "page", 2, 7},
    {"stage2_wrprotect_1g_pages", "page", 3, 11},
    {"stage2_set_owner_1g_pages", "page", 5, 28},
    {"stage2_set_owner_1g_blocks", "block", 0, 0},
    {"hyp_map_256m_pages", "page", 5, 12},
    {"hyp_map_256m_page_calls", "page", 25, 0},
    {"share_hyp_1g_page_calls", "page", 100, 0},
    {"share_hyp_1g_range", "page", 15, 0},
    {"unshare_hyp_1g_range", "page", 15, 0},
    {"donate_guest_1g", "page", 15, 0},
    {"host_fault_1g", "call", 40, 0},
    {"reclaim_guest_1g_page_calls", "page", 40, 0},
    {"reclaim_guest_1g", "page", 0, 0},
    {"limit_1g_pages", "page", 0, 0},
    {"arch_build_1g_page_descriptors", "page", 0, 0},
};

struct Measured {
  double ns = 0;  // per page, block or call
  double ratio = NAN;
  double tlbi = 0;
  double table_bytes = 0;
  double cv = NAN;  // of the ns figure, across repetitions
  int64_t repetitions = 1;
  std::string error;
};

// What both reporters share: the limit's median, and (collected once) every row's medians.
struct Shared {
  std::optional<double> limit_ns;
  std::map<std::string, Measured> rows;
};

const char* unit_counter(const BenchmarkReporter::Run& r) {
  for (const char* c : {"ns_per_page", "ns_per_block", "ns_per_call"})
    if (r.counters.count(c) != 0) return c;
  return nullptr;
}

bool is_median(const BenchmarkReporter::Run& r, bool has_aggregates) {
  return has_aggregates ? (r.run_type == BenchmarkReporter::Run::RT_Aggregate && r.aggregate_name == "median")
                        : r.run_type == BenchmarkReporter::Run::RT_Iteration;
}

class RatioReporter : public BenchmarkReporter {
 public:
  RatioReporter(std::unique_ptr<BenchmarkReporter> inner, Shared& shared, bool collect)
      : inner_(std::move(inner)), shared_(shared), collect_(collect) {}

  bool ReportContext(const Context& context) override {
    inner_->SetOutputStream(&GetOutputStream());
    inner_->SetErrorStream(&GetErrorStream());
    return inner_->ReportContext(context);
  }

  void ReportRuns(const std::vector<Run>& runs) override {
    std::vector<Run> out(runs);
    bool has_aggregates = false;
    for (const Run& r : out) has_aggregates |= r.run_type == Run::RT_Aggregate;
    for (const Run& r : out) {
      if (r.error_occurred || r.run_name.function_name != kLimit || !is_median(r, has_aggregates)) continue;
      const auto it = r.counters.find("ns_per_page");
      if (it != r.counters.end()) shared_.limit_ns = it->second.value;
    }
    for (Run& r : out) {
      const char* c = unit_counter(r);
      if (r.error_occurred || c == nullptr || !shared_.limit_ns) continue;
      const double v = r.counters.at(c).value;
      r.counters["ratio"] = benchmark::Counter(r.aggregate_name == "cv" ? v : v / *shared_.limit_ns);
    }
    if (collect_) collect(out, has_aggregates);
    inner_->ReportRuns(out);
  }

  void Finalize() override { inner_->Finalize(); }

 private:
  void collect(const std::vector<Run>& runs, bool has_aggregates) {
    for (const Run& r : runs) {
      Measured& m = shared_.rows[r.run_name.function_name];
      if (r.error_occurred) {
        m.error = r.error_message;
        continue;
      }
      const char* c = unit_counter(r);
      if (c == nullptr) continue;
      if (r.aggregate_name == "cv") m.cv = r.counters.at(c).value;
      if (!is_median(r, has_aggregates)) continue;
      m.ns = r.counters.at(c).value;
      if (r.counters.count("ratio") != 0) m.ratio = r.counters.at("ratio").value;
      if (r.counters.count("tlbi") != 0) m.tlbi = r.counters.at("tlbi").value;
      if (r.counters.count("table_bytes") != 0) m.table_bytes = r.counters.at("table_bytes").value;
      m.repetitions = r.repetitions;
    }
  }

  std::unique_ptr<BenchmarkReporter> inner_;
  Shared& shared_;
  bool collect_;
};

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown CPU";
}

void print_table(const Shared& s) {
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d", std::localtime(&now));
  std::printf("\nptguard benchmarks, %s, %s, %ld CPUs; medians of the repetitions; ratio = ns per unit over "
              "the limit's ns per page\n\n",
              date, cpu_model().c_str(), sysconf(_SC_NPROCESSORS_ONLN));
  std::printf("| %-30s | %-5s | %10s | %8s | %6s | %5s | %6s | %5s | %11s | %4s |\n", "benchmark", "per",
              "ns/unit", "ratio", "target", "met", "Linux", "tlbi", "table_bytes", "cv%");
  std::printf("|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n", "--------------------------------", "-------",
              "-----------:", "---------:", "-------:", ":-----:", "-------:", "------:", "------------:",
              "-----:");
  for (const RowSpec& row : kRows) {
    const auto it = s.rows.find(row.name);
    if (it == s.rows.end()) continue;
    const Measured& m = it->second;
    if (!m.error.empty()) {
      std::printf("| %-30s | error: %s\n", row.name, m.error.c_str());
      continue;
    }
    char ratio[16] = "n/a", target[16] = "-", met[8] = "-", lx[16] = "-", cv[16] = "-";
    if (!std::isnan(m.ratio)) std::snprintf(ratio, sizeof ratio, "%.2fx", m.ratio);
    if (row.target > 0) {
      std::snprintf(target, sizeof target, "<=%gx", row.target);
      if (!std::isnan(m.ratio)) std::snprintf(met, sizeof met, "%s", m.ratio <= row.target ? "yes" : "NO");
    }
    if (row.linux > 0) std::snprintf(lx, sizeof lx, "~%gx", row.linux);
    if (!std::isnan(m.cv)) std::snprintf(cv, sizeof cv, "%.1f", m.cv * 100);
    std::printf("| %-30s | %-5s | %10.3f | %8s | %6s | %5s | %6s | %5.0f | %11.0f | %4s |\n", row.name, row.per, m.ns,
                ratio, target, met, lx, m.tlbi, m.table_bytes, cv);
  }
  if (s.limit_ns) std::printf("\nlimit: %.3f ns per page (median)\n", *s.limit_ns);
  else std::printf("\nlimit_1g_pages did not run: no ratios\n");
}

std::optional<std::string> flag(int argc, char** argv, const char* name) {
  const std::size_t n = std::strlen(name);
  std::optional<std::string> v;
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], name, n) == 0 && argv[i][n] == '=') v = std::string(argv[i] + n + 1);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args(argv, argv + argc);
  static char default_reps[] = "--benchmark_repetitions=5";
  if (!flag(argc, argv, "--benchmark_repetitions")) args.push_back(default_reps);
  const std::optional<std::string> out = flag(argc, argv, "--benchmark_out");
  const std::string out_format = flag(argc, argv, "--benchmark_out_format").value_or("json");
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;

  // Registration order is run order: the limit first, so every later row gets its ratio.
  ptguard::bench::register_limit_benchmarks();
  ptguard::bench::register_stage2_benchmarks();
  ptguard::bench::register_hyp_benchmarks();
  ptguard::bench::register_ownership_benchmarks();

  Shared shared;
  const auto console_opts = isatty(STDOUT_FILENO) ? benchmark::ConsoleReporter::OO_ColorTabular
                                                  : benchmark::ConsoleReporter::OO_Tabular;
  RatioReporter display(std::make_unique<benchmark::ConsoleReporter>(console_opts), shared, true);
  std::unique_ptr<RatioReporter> file;
  if (out && !out->empty() && out_format == "json")
    file = std::make_unique<RatioReporter>(std::make_unique<benchmark::JSONReporter>(), shared, false);
  benchmark::RunSpecifiedBenchmarks(&display, file.get());
  print_table(shared);
  benchmark::Shutdown();
  return 0;
}
