// Runs a libFuzzer target without libFuzzer: every file of the corpus directories,
// then deterministic mutations of them (bit flips, truncations, splices, random
// bytes) for --iterations rounds. Used as a smoke test in ordinary (gcc, ASan) builds;
// `./cove.sh fuzz` uses real coverage-guided libFuzzer.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {
using bytes = std::vector<uint8_t>;

void run(const bytes& b) {
  // Copy into an exactly sized heap buffer so ASan catches reads past the end.
  auto* p = static_cast<uint8_t*>(std::malloc(b.empty() ? 1 : b.size()));
  if (!b.empty()) std::copy(b.begin(), b.end(), p);
  LLVMFuzzerTestOneInput(p, b.size());
  std::free(p);
}

bytes mutate(const bytes& in, std::mt19937_64& rng) {
  bytes b = in;
  switch (rng() % 6) {
    case 0:
      if (!b.empty()) b[rng() % b.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
      break;
    case 1:
      if (!b.empty()) b.resize(rng() % b.size());
      break;
    case 2:
      for (int i = 0, n = static_cast<int>(rng() % 8) + 1; i < n && !b.empty(); ++i)
        b[rng() % b.size()] = static_cast<uint8_t>(rng());
      break;
    case 3: {
      bytes extra(rng() % 64);
      for (auto& x : extra) x = static_cast<uint8_t>(rng());
      b.insert(b.begin() + static_cast<long>(b.empty() ? 0 : rng() % b.size()), extra.begin(), extra.end());
      break;
    }
    case 4:
      if (b.size() > 4) {
        auto at = rng() % (b.size() - 4);
        uint32_t v = static_cast<uint32_t>(rng() % 3 == 0 ? 0xffffffffu : rng() % 1024);
        std::copy_n(reinterpret_cast<uint8_t*>(&v), 4, b.begin() + static_cast<long>(at));
      }
      break;
    default: {
      b.resize(rng() % 512);
      for (auto& x : b) x = static_cast<uint8_t>(rng());
    }
  }
  return b;
}
}  // namespace

int main(int argc, char** argv) {
  long iterations = 10000;
  std::vector<bytes> corpus;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--iterations" && i + 1 < argc) {
      iterations = std::strtol(argv[++i], nullptr, 10);
      continue;
    }
    std::error_code ec;
    if (!std::filesystem::is_directory(a, ec)) continue;
    for (const auto& e : std::filesystem::recursive_directory_iterator(a)) {
      if (!e.is_regular_file()) continue;
      std::ifstream f(e.path(), std::ios::binary);
      corpus.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    }
  }
  if (corpus.empty()) corpus.emplace_back();
  for (const auto& c : corpus) run(c);
  std::mt19937_64 rng(0xC0FE);
  for (long i = 0; i < iterations; ++i) run(mutate(corpus[rng() % corpus.size()], rng));
  std::printf("fuzz replay: %zu corpus inputs, %ld mutations, no crash\n", corpus.size(), iterations);
  return 0;
}
