// main() for the fuzz regression tests: runs the linked
// LLVMFuzzerTestOneInput over every file of the corpus directory given as
// argv[1] (relative to the runfiles root), each from an exactly-sized heap
// copy so that a sanitizer catches a read one byte past the end. Fails when
// the directory holds no file.

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  int files = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(argv[1], ec)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                                  std::istreambuf_iterator<char>());
    auto copy = std::make_unique<uint8_t[]>(bytes.size());
    if (!bytes.empty()) std::memcpy(copy.get(), bytes.data(), bytes.size());
    LLVMFuzzerTestOneInput(copy.get(), bytes.size());
    // Truncations: densely through the headers, then around the middle and
    // the end, where data and trailing tables are cut.
    std::vector<size_t> cuts;
    for (size_t cut = 0; cut < bytes.size() && cut < 1024; cut += 7) cuts.push_back(cut);
    for (size_t back : {size_t{1}, size_t{9}, size_t{100}, size_t{4096}, bytes.size() / 2}) {
      if (back <= bytes.size()) cuts.push_back(bytes.size() - back);
    }
    for (const size_t cut : cuts) {
      auto prefix = std::make_unique<uint8_t[]>(cut);
      std::memcpy(prefix.get(), bytes.data(), cut);
      LLVMFuzzerTestOneInput(prefix.get(), cut);
    }
    ++files;
  }
  if (ec || files == 0) {
    std::fprintf(stderr, "no corpus files in %s: %s\n", argv[1], ec.message().c_str());
    return 1;
  }
  std::printf("ran %d corpus files without a finding\n", files);
  return 0;
}
