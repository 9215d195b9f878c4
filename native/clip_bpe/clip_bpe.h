// clip_bpe: CLIP's tokenization of plain text, as open_clip's SimpleTokenizer gives it, in C++.
//
// The Triton backend (clip_bpe_backend.cc) is the glue around this core; nothing here knows
// Triton, so the core is unit-tested on its own (clip_bpe_test.cc, googletest).
//
// CLIP cleans a text before its BPE: ftfy.fix_text, HTML unescape twice, whitespace collapse,
// str.lower(). On a *plain* text that cleaning is whitespace collapse and lower-casing alone, and
// this core does it. Plain: printable ASCII, space, tab and newline, but no '&', plus the
// non-ASCII characters a CodePointSet lists (the backend's config lists emoji, their joiner,
// variation selectors and keycap: model_repository/clip_tokenizer/config.pbtxt says why each is
// safe). On such characters no ftfy fix applies (every fix needs another non-ASCII character, a
// control character or '&'), html.unescape needs '&', NFC and lower-casing keep them as they are,
// and none is a letter, number or space to CLIP's word split.
//
// A text need not be plain all through: CLIP reads its first context_length - 2 tokens. When a
// text's plain prefix already holds them, what follows cannot change them, provided each word
// that gave them ends on a plain character (Tokenizer::Ids states the rule and why it is exact).
// So a long plain document costs what its first 75 tokens do, and a text goes to ftfy (the
// backend's fallback model) only when its tokens depend on a character that is not plain.
//
// Then CLIP's word split, `'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`, and its
// byte-level BPE (tokenizer.json's vocabulary and merges, each UTF-8 byte one symbol of GPT-2's
// byte alphabet, the last symbol of a word with the suffix </w>).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace clip_bpe {

// A set of code points as inclusive ranges, ascending and disjoint: the non-ASCII characters a
// plain text may hold.
class CodePointSet {
 public:
  // "200D FE0E-FE0F 1F300-1F6D7 ...": hexadecimal code points and ranges above U+007F, ascending,
  // disjoint. False, with `error` naming the item, for anything else.
  static bool Parse(const std::string& text, CodePointSet* out, std::string* error);

  bool Contains(uint32_t point) const;
  size_t size() const { return ranges_.size(); }

 private:
  std::vector<std::pair<uint32_t, uint32_t>> ranges_;
};

// The offset of the first byte that breaks UTF-8 (strict, as Python decodes: no overlong forms,
// no surrogates, nothing past U+10FFFF), or `size` when the text is valid.
size_t InvalidUtf8At(const unsigned char* text, size_t size);

// How many bytes at the start of `text` (valid UTF-8) are plain, as the header says: `size` when
// all of it is, else the offset of the first character that is not.
size_t PlainPrefix(const char* text, size_t size, const CodePointSet& symbols);

// GPT-2's bytes_to_unicode, in which CLIP's tokenizer.json spells its symbols, each as UTF-8.
std::vector<std::string> ByteSymbols();

// tokenizer.json's BPE: the vocabulary, the merge ranks and the start and end tokens' ids.
class Vocabulary {
 public:
  // Reads a `tokenizers` JSON file's text. False, with `error`, when it is not CLIP's BPE
  // (end_of_word_suffix </w>) or lacks `sot` or `eot`.
  static bool FromJson(
      const std::string& json, const std::string& sot, const std::string& eot, Vocabulary* out,
      std::string* error);

  // The BPE ids of one word (its bytes), appended to `ids`. False when a symbol is not in the
  // vocabulary, which never happens with CLIP's: it holds every byte, with and without </w>.
  bool WordIds(const std::string& word, std::vector<int64_t>* ids) const;

  int64_t sot_id() const { return sot_id_; }
  int64_t eot_id() const { return eot_id_; }

 private:
  std::unordered_map<std::string, int64_t> vocab_;
  std::unordered_map<std::string, int> ranks_;  // "left right" -> merge rank
  std::vector<std::string> byte_symbols_ = ByteSymbols();
  int64_t sot_id_ = 0, eot_id_ = 0;
};

// A word longer than this is not split here: its text goes to the fallback, which bounds it.
constexpr size_t kMaxWordBytes = 8192;

// The tokenizer of one thread: the vocabulary (shared, read-only), the plain symbols, and a cache
// of the words it has seen (cleared when it reaches its capacity).
class Tokenizer {
 public:
  Tokenizer(const Vocabulary* vocab, const CodePointSet* symbols, size_t max_tokens);

  // The first `max_tokens` BPE ids of `text` (valid UTF-8) as open_clip gives them, without
  // start and end tokens, when they can be proven without CLIP's cleaning: true and the ids in
  // `ids`; false when the text needs ftfy. `plain` is PlainPrefix(text, size).
  //
  // The rule, when the text is not plain all through (plain < size): every word that gives the
  // ids must end before `plain`, on a plain character, and a word starting with ' must have its
  // next two characters plain. Why that is exact: each of CLIP's cleaning steps maps the text
  // after `plain` without reading what comes before, except NFC, which can compose a combining
  // mark with the character before it, here the plain character after the last word. That
  // character ends its word as a space, digit, punctuation or letter, and stays one after
  // composing (no ASCII character composes across those classes), so every word before it keeps
  // its extent and bytes; and a contraction ('s, 're, ...) is decided by its next two characters.
  bool Ids(const char* text, size_t size, size_t plain, std::vector<int64_t>* ids);

  size_t max_tokens() const { return max_tokens_; }

 private:
  const std::vector<int64_t>* CachedWord(const std::string& word);

  const Vocabulary* vocab_;
  const CodePointSet* symbols_;
  size_t max_tokens_;
  std::unordered_map<std::string, std::vector<int64_t>> words_;
  static constexpr size_t kWordCacheCapacity = 100000;
};

}  // namespace clip_bpe
