// Test-only: encodes a symbol list into the kernel's compressed kallsyms
// tables (scripts/kallsyms.c's format), so decoders can be tested on tables
// whose content is known. Tokens: every printable ASCII character stands for
// itself; the other 161 token numbers stand for common multi-character
// fragments, used greedily (longest first).
//
// Thread-safety: stateless functions; thread-safe.

#ifndef VMI_OS_LINUX_TESTING_KALLSYMS_ENCODER_H_
#define VMI_OS_LINUX_TESTING_KALLSYMS_ENCODER_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace vmi::os_linux::testing {

struct PlainSymbol {
  uint64_t address;
  char type;
  std::string name;
};

enum class AddressScheme {
  kRelative,         // CONFIG_KALLSYMS_BASE_RELATIVE without ABSOLUTE_PERCPU
  kAbsolutePercpu,   // ... with CONFIG_KALLSYMS_ABSOLUTE_PERCPU
  kAbsoluteAddresses,  // no BASE_RELATIVE: kallsyms_addresses
};

struct KallsymsImage {
  uint32_t num_syms = 0;
  std::vector<uint8_t> names;
  std::vector<uint8_t> token_table;
  std::vector<uint16_t> token_index;  // 256 entries
  std::vector<int32_t> offsets;       // kRelative / kAbsolutePercpu
  uint64_t relative_base = 0;
  std::vector<uint64_t> addresses;    // kAbsoluteAddresses
};

inline std::vector<std::string> KallsymsTokens() {
  static const char* const kFragments[] = {
      "__", "_t", "init", "_s", "ka", "ll", "sym", "st", "ex", "it", "ta", "sk", "_ops", "er",
      "re", "on", "in", "de", "ma", "ge", "_p", "tr", "pr", "ca", "ch", "ct", "le", "te", "ad",
      "ss", "Tk", "tk", "Dd", "dd", "Bb", "bb", "__ksymtab_", "_entry", "_exit", "handler"};
  std::vector<std::string> tokens(256);
  size_t next = 0;
  const size_t fragments = sizeof(kFragments) / sizeof(kFragments[0]);
  for (int t = 0; t < 256; ++t) {
    if (t >= 0x21 && t <= 0x7e) {
      tokens[t] = std::string(1, static_cast<char>(t));
    } else {
      // Unused slots repeat a fragment with a distinguishing suffix.
      tokens[t] = next < fragments ? kFragments[next] : std::string(kFragments[next % fragments]) + "x";
      ++next;
    }
  }
  return tokens;
}

inline KallsymsImage EncodeKallsyms(std::vector<PlainSymbol> symbols, AddressScheme scheme) {
  std::stable_sort(symbols.begin(), symbols.end(),
                   [](const PlainSymbol& a, const PlainSymbol& b) { return a.address < b.address; });
  KallsymsImage image;
  image.num_syms = static_cast<uint32_t>(symbols.size());
  const std::vector<std::string> tokens = KallsymsTokens();
  for (const std::string& t : tokens) {
    image.token_index.push_back(static_cast<uint16_t>(image.token_table.size()));
    image.token_table.insert(image.token_table.end(), t.begin(), t.end());
    image.token_table.push_back(0);
  }
  // Longest fragments first for the greedy encoding.
  std::vector<int> order(256);
  for (int i = 0; i < 256; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return tokens[a].size() > tokens[b].size(); });
  for (const PlainSymbol& s : symbols) {
    const std::string full = std::string(1, s.type) + s.name;
    std::vector<uint8_t> encoded;
    for (size_t at = 0; at < full.size();) {
      for (int t : order) {
        if (full.compare(at, tokens[t].size(), tokens[t]) == 0) {
          encoded.push_back(static_cast<uint8_t>(t));
          at += tokens[t].size();
          break;
        }
      }
    }
    const size_t length = encoded.size();
    if (length < 0x80) {
      image.names.push_back(static_cast<uint8_t>(length));
    } else {
      image.names.push_back(static_cast<uint8_t>(0x80 | (length & 0x7f)));
      image.names.push_back(static_cast<uint8_t>(length >> 7));
    }
    image.names.insert(image.names.end(), encoded.begin(), encoded.end());
  }
  switch (scheme) {
    case AddressScheme::kAbsoluteAddresses:
      for (const PlainSymbol& s : symbols) image.addresses.push_back(s.address);
      break;
    case AddressScheme::kRelative:
      image.relative_base = symbols.empty() ? 0 : symbols.front().address;
      for (const PlainSymbol& s : symbols) {
        image.offsets.push_back(static_cast<int32_t>(s.address - image.relative_base));
      }
      break;
    case AddressScheme::kAbsolutePercpu: {
      // Absolute symbols (small values) are stored as themselves; the rest
      // as base - 1 - offset with the lowest of them as base.
      image.relative_base = 0;
      for (const PlainSymbol& s : symbols) {
        if (s.type != 'A' && s.type != 'a') {
          image.relative_base = s.address;
          break;
        }
      }
      for (const PlainSymbol& s : symbols) {
        if (s.type == 'A' || s.type == 'a') {
          image.offsets.push_back(static_cast<int32_t>(s.address));
        } else {
          image.offsets.push_back(static_cast<int32_t>(image.relative_base - 1 - s.address));
        }
      }
      break;
    }
  }
  return image;
}

}  // namespace vmi::os_linux::testing

#endif  // VMI_OS_LINUX_TESTING_KALLSYMS_ENCODER_H_
