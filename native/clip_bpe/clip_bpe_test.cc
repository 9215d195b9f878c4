// Unit tests of the tokenizer core (clip_bpe.h), no Triton in sight. Built and run by
// tests/unit/build_scripts/test_tokenizer_core.py, which hands over through the environment:
//   CLIP_BPE_TOKENIZER  the build's tokenizer.json
//   CLIP_BPE_SYMBOLS    the config's plain_symbols
//   CLIP_BPE_CASES      texts with open_clip's ids: one a line, "<text as hex>\t<plain 0|1>\t<ids>"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "clip_bpe.h"

namespace {

std::string
Env(const char* name)
{
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

std::string
ReadFile(const std::string& path)
{
  std::ifstream file(path, std::ios::binary);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

constexpr size_t kTokens = 75;  // CLIP's 77 positions less the start and end tokens

class Core : public ::testing::Test {
 protected:
  static void SetUpTestSuite()
  {
    std::string error;
    vocab_ = new clip_bpe::Vocabulary();
    symbols_ = new clip_bpe::CodePointSet();
    ASSERT_TRUE(clip_bpe::Vocabulary::FromJson(
        ReadFile(Env("CLIP_BPE_TOKENIZER")), "<|startoftext|>", "<|endoftext|>", vocab_, &error))
        << error;
    ASSERT_TRUE(clip_bpe::CodePointSet::Parse(Env("CLIP_BPE_SYMBOLS"), symbols_, &error)) << error;
  }

  // Ids of `text` and whether the core could prove them
  bool Ids(const std::string& text, std::vector<int64_t>* ids)
  {
    clip_bpe::Tokenizer tokenizer(vocab_, symbols_, kTokens);
    const size_t plain = clip_bpe::PlainPrefix(text.data(), text.size(), *symbols_);
    return tokenizer.Ids(text.data(), text.size(), plain, ids);
  }

  static clip_bpe::Vocabulary* vocab_;
  static clip_bpe::CodePointSet* symbols_;
};

clip_bpe::Vocabulary* Core::vocab_ = nullptr;
clip_bpe::CodePointSet* Core::symbols_ = nullptr;

// "cat cat ... " : `n` words of one token each
std::string
Cats(int n)
{
  std::string words;
  for (int i = 0; i < n; ++i) words += "cat ";
  return words;
}

std::string
Hex(const std::string& hex)
{
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

TEST(CodePointSet, ParsesCodePointsAndRanges)
{
  clip_bpe::CodePointSet set;
  std::string error;
  ASSERT_TRUE(clip_bpe::CodePointSet::Parse("200D FE0E-FE0F 1F300-1F6D7", &set, &error)) << error;
  EXPECT_EQ(set.size(), 3u);
  EXPECT_TRUE(set.Contains(0x200d));
  EXPECT_TRUE(set.Contains(0xfe0f));
  EXPECT_TRUE(set.Contains(0x1f431));
  EXPECT_FALSE(set.Contains(0x200c));
  EXPECT_FALSE(set.Contains(0x1f6d8));
  EXPECT_FALSE(set.Contains('a'));
  ASSERT_TRUE(clip_bpe::CodePointSet::Parse("", &set, &error));
  EXPECT_EQ(set.size(), 0u);
}

TEST(CodePointSet, RefusesWhatIsNotAscendingNonAsciiHexAndNamesTheItem)
{
  for (const char* bad : {"FE0F-FE0E", "2600 200D", "41", "zz", "1F300-", "110000", "200D 200D", "-200D"}) {
    clip_bpe::CodePointSet set;
    std::string error;
    EXPECT_FALSE(clip_bpe::CodePointSet::Parse(bad, &set, &error)) << bad;
    EXPECT_NE(error.find("is not a non-ASCII code point"), std::string::npos) << bad << ": " << error;
  }
  clip_bpe::CodePointSet set;
  std::string error;
  EXPECT_FALSE(clip_bpe::CodePointSet::Parse("200D FE0F-FE0E", &set, &error));
  EXPECT_NE(error.find("'FE0F-FE0E'"), std::string::npos) << error;
}

TEST(Utf8, FindsTheFirstByteThatBreaksStrictUtf8)
{
  auto at = [](const std::string& s) {
    return clip_bpe::InvalidUtf8At(reinterpret_cast<const unsigned char*>(s.data()), s.size());
  };
  EXPECT_EQ(at("plain"), 5u);
  EXPECT_EQ(at("caf\xc3\xa9"), 5u);                   // é
  EXPECT_EQ(at("\xf0\x9f\x90\xb1!"), 5u);             // 🐱
  EXPECT_EQ(at("ab\xc3"), 2u);                        // cut short
  EXPECT_EQ(at("a\x80"), 1u);                         // lone continuation byte
  EXPECT_EQ(at("\xc0\xaf"), 0u);                      // overlong '/'
  EXPECT_EQ(at("x\xe0\x80\xaf"), 1u);                 // overlong three-byte form
  EXPECT_EQ(at("\xed\xa0\x80"), 0u);                  // a surrogate
  EXPECT_EQ(at("ok\xf4\x90\x80\x80"), 2u);            // past U+10FFFF
  EXPECT_EQ(at("\xff"), 0u);
  EXPECT_EQ(at(std::string("nul\0ok", 6)), 6u);       // NUL is valid UTF-8 (it is not plain)
}

TEST_F(Core, PlainPrefixStopsAtTheFirstCharacterThatNeedsCleaning)
{
  auto plain = [&](const std::string& s) { return clip_bpe::PlainPrefix(s.data(), s.size(), *symbols_); };
  EXPECT_EQ(plain("a photo of a cat\tand\na dog"), 26u);
  EXPECT_EQ(plain("fish &amp; chips"), 5u);  // '&': HTML entities
  EXPECT_EQ(plain("line\rbreak"), 4u);       // control characters
  EXPECT_EQ(plain("caf\xc3\xa9"), 3u);       // é: not in the set
  EXPECT_EQ(plain("cat \xf0\x9f\x90\xb1"), 8u);  // 🐱: in the set
}

TEST_F(Core, IdsOfEveryCaseEqualOpenClipsWheneverTheCoreClaimsThem)
{
  std::ifstream cases(Env("CLIP_BPE_CASES"));
  ASSERT_TRUE(cases) << "CLIP_BPE_CASES is not a readable file";
  std::string line;
  size_t count = 0, claimed = 0;
  while (std::getline(cases, line)) {
    std::istringstream fields(line);
    std::string hex, plain_flag, id;
    std::getline(fields, hex, '\t');
    std::getline(fields, plain_flag, '\t');
    std::vector<int64_t> expected;
    while (fields >> id) {
      expected.push_back(std::stoll(id));
    }
    const std::string text = Hex(hex);
    std::vector<int64_t> ids;
    const bool ok = Ids(text, &ids);
    if (plain_flag == "1") {
      EXPECT_TRUE(ok) << "a plain text went to the fallback: " << text.substr(0, 80);
    }
    if (ok) {
      ++claimed;
      EXPECT_EQ(ids, expected) << text.substr(0, 200);
    }
    ++count;
  }
  EXPECT_GT(count, 100u);
  EXPECT_GT(claimed, 50u);
}

TEST_F(Core, APlainTextOfAnyLengthGivesItsFirst75Tokens)
{
  std::string words;
  while (words.size() < 300000) {
    words += "a photo of a cat ";
  }
  std::vector<int64_t> ids;
  ASSERT_TRUE(Ids(words, &ids));
  EXPECT_EQ(ids.size(), kTokens);
  std::vector<int64_t> head;
  ASSERT_TRUE(Ids(words.substr(0, 2000), &head));
  EXPECT_EQ(ids, head);
}

TEST_F(Core, AWordLongerThanTheCoreSplitsGoesToTheFallback)
{
  std::vector<int64_t> ids;
  EXPECT_TRUE(Ids(std::string(clip_bpe::kMaxWordBytes, 'a'), &ids));
  EXPECT_FALSE(Ids(std::string(clip_bpe::kMaxWordBytes + 1, 'a'), &ids));
  // the word limit counts bytes of one word, not of the text
  EXPECT_TRUE(Ids(std::string(clip_bpe::kMaxWordBytes, 'a') + " " + std::string(clip_bpe::kMaxWordBytes, 'b'), &ids));
}

TEST_F(Core, ATextWhoseTokensAllComeBeforeItsFirstUncleanCharacterStaysHere)
{
  const std::string prefix = Cats(80);
  std::vector<int64_t> ids, plain_ids;
  ASSERT_TRUE(Ids(prefix, &plain_ids));
  ASSERT_TRUE(Ids(prefix + "caf\xc3\xa9 &amp;", &ids));
  EXPECT_EQ(ids, plain_ids);
}

TEST_F(Core, AWordThatTouchesTheFirstUncleanCharacterGoesToTheFallback)
{
  std::vector<int64_t> ids;
  const std::string seventy_four = Cats(74);
  // the 75th token's word runs into é: its extent depends on ftfy's output
  EXPECT_FALSE(Ids(seventy_four + "caf\xc3\xa9", &ids));
  // ... and a combining mark could compose with the word's last letter
  EXPECT_FALSE(Ids(seventy_four + "cafe\xcc\x81", &ids));
  // one plain character after the 75th word decides it
  EXPECT_TRUE(Ids(seventy_four + "cafe \xcc\x81", &ids));
  // fewer than 75 tokens before the first unclean character: the rest has tokens to give
  EXPECT_FALSE(Ids("a photo of a caf\xc3\xa9", &ids));
}

TEST_F(Core, AContractionIsDecidedOnlyByPlainCharacters)
{
  std::vector<int64_t> ids;
  const std::string seventy_four = Cats(74);
  // "'r" then a character ftfy may turn into 'e' (fullwidth): 're or ' + r
  EXPECT_FALSE(Ids(seventy_four + "'r\xef\xbd\x85", &ids));
  EXPECT_TRUE(Ids(seventy_four + "'re \xef\xbd\x85", &ids));
}

}  // namespace
