// UTF-16 to UTF-8 conversion for guest strings (Windows UNICODE_STRING,
// wide C strings). Unpaired surrogates become U+FFFD.
//
// Thread-safety: stateless; thread-safe.

#ifndef VMI_CORE_UTF_H_
#define VMI_CORE_UTF_H_

#include <string>

namespace vmi {

std::string Utf16ToUtf8(const std::u16string& units);

}  // namespace vmi

#endif  // VMI_CORE_UTF_H_
