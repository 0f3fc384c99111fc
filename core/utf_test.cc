#include "core/utf.h"

#include "gtest/gtest.h"

namespace vmi {
namespace {

TEST(Utf16ToUtf8Test, AsciiBmpAndSurrogates) {
  EXPECT_EQ(Utf16ToUtf8(u"notepad.exe"), "notepad.exe");
  EXPECT_EQ(Utf16ToUtf8(u"\u00e9\u4e2d"), "\xc3\xa9\xe4\xb8\xad");
  EXPECT_EQ(Utf16ToUtf8(u"\U0001F600"), "\xf0\x9f\x98\x80");
  std::u16string lone = {0xd800, u'a'};
  EXPECT_EQ(Utf16ToUtf8(lone), "\xef\xbf\xbd" "a");
  std::u16string low_first = {0xdc00};
  EXPECT_EQ(Utf16ToUtf8(low_first), "\xef\xbf\xbd");
  EXPECT_EQ(Utf16ToUtf8(u""), "");
}

}  // namespace
}  // namespace vmi
