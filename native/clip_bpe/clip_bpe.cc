// clip_bpe's core: see clip_bpe.h for what it does and why it is exact.

#include "clip_bpe.h"

#include <rapidjson/document.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <sstream>

namespace clip_bpe {

bool
CodePointSet::Parse(const std::string& text, CodePointSet* out, std::string* error)
{
  out->ranges_.clear();
  std::istringstream items(text);
  std::string item;
  while (items >> item) {
    const size_t dash = item.find('-');
    const std::string low = item.substr(0, dash), high = dash == std::string::npos ? low : item.substr(dash + 1);
    size_t used_low = 0, used_high = 0;
    unsigned long first = 0, last = 0;
    bool parsed = !low.empty() && !high.empty();
    try {
      first = parsed ? std::stoul(low, &used_low, 16) : 0;
      last = parsed ? std::stoul(high, &used_high, 16) : 0;
    }
    catch (const std::exception&) {
      parsed = false;
    }
    if (!parsed || used_low != low.size() || used_high != high.size() || first < 0x80 || first > last ||
        last > 0x10ffff || (!out->ranges_.empty() && first <= out->ranges_.back().second)) {
      *error = "'" + item + "' is not a non-ASCII code point or range above the previous one";
      return false;
    }
    out->ranges_.emplace_back(first, last);
  }
  return true;
}

bool
CodePointSet::Contains(uint32_t point) const
{
  const auto after = std::upper_bound(
      ranges_.begin(), ranges_.end(), point,
      [](uint32_t p, const std::pair<uint32_t, uint32_t>& range) { return p < range.first; });
  return after != ranges_.begin() && std::prev(after)->second >= point;
}

size_t
InvalidUtf8At(const unsigned char* text, size_t size)
{
  size_t i = 0;
  while (i < size) {
    const unsigned char c = text[i];
    size_t n;
    unsigned char low = 0x80, high = 0xbf;  // the range of the second byte
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      n = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      if (c == 0xe0) low = 0xa0;
      if (c == 0xed) high = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      if (c == 0xf0) low = 0x90;
      if (c == 0xf4) high = 0x8f;
    } else {
      return i;
    }
    if (i + n >= size) {  // the sequence runs past the end
      return i;
    }
    for (size_t k = 1; k <= n; ++k) {
      const unsigned char b = text[i + k];
      if (k == 1 ? (b < low || b > high) : (b < 0x80 || b > 0xbf)) {
        return i;
      }
    }
    i += n + 1;
  }
  return size;
}

size_t
PlainPrefix(const char* text, size_t size, const CodePointSet& symbols)
{
  const auto* bytes = reinterpret_cast<const unsigned char*>(text);
  for (size_t i = 0; i < size;) {
    const unsigned char c = bytes[i];
    if (c < 0x80) {
      const bool printable = c >= 0x20 && c <= 0x7e && c != '&';
      if (!printable && c != '\t' && c != '\n') {
        return i;
      }
      ++i;
      continue;
    }
    const size_t n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
    uint32_t point = c & (0x7f >> n);
    for (size_t k = 1; k < n; ++k) {
      point = (point << 6) | (bytes[i + k] & 0x3f);
    }
    if (!symbols.Contains(point)) {
      return i;
    }
    i += n;
  }
  return size;
}

std::vector<std::string>
ByteSymbols()
{
  // A byte is one character: the printable Latin-1 bytes ('!'-'~', U+00A1-U+00AC, U+00AE-U+00FF)
  // themselves and every other byte U+0100 + n, n counting those bytes in order.
  std::vector<std::string> symbols(256);
  uint32_t next = 0x100;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    const uint32_t point = printable ? b : next++;
    if (point < 0x80) {
      symbols[b] = std::string(1, static_cast<char>(point));
    } else {  // every point here is below U+0800: two bytes
      symbols[b] = {static_cast<char>(0xc0 | (point >> 6)), static_cast<char>(0x80 | (point & 0x3f))};
    }
  }
  return symbols;
}

bool
Vocabulary::FromJson(
    const std::string& json, const std::string& sot, const std::string& eot, Vocabulary* out, std::string* error)
{
  rapidjson::Document tokenizer;
  tokenizer.Parse(json.c_str(), json.size());
  if (tokenizer.HasParseError() || !tokenizer.IsObject() || !tokenizer.HasMember("model") ||
      !tokenizer["model"].IsObject()) {
    *error = "not a tokenizers JSON file";
    return false;
  }
  const auto& bpe = tokenizer["model"];
  if (!bpe.HasMember("end_of_word_suffix") || !bpe["end_of_word_suffix"].IsString() ||
      std::string(bpe["end_of_word_suffix"].GetString()) != "</w>" || !bpe.HasMember("vocab") ||
      !bpe["vocab"].IsObject() || !bpe.HasMember("merges") || !bpe["merges"].IsArray()) {
    *error = "expected CLIP's BPE (end_of_word_suffix </w>, a vocab and merges)";
    return false;
  }
  out->vocab_.clear();
  out->ranks_.clear();
  for (const auto& entry : bpe["vocab"].GetObject()) {
    out->vocab_[entry.name.GetString()] = entry.value.GetInt64();
  }
  int rank = 0;
  for (const auto& merge : bpe["merges"].GetArray()) {
    // "left right" (tokenizers < 0.20) or ["left", "right"] (later)
    const std::string pair = merge.IsString() ? std::string(merge.GetString())
                                              : std::string(merge[0].GetString()) + " " + merge[1].GetString();
    out->ranks_.emplace(pair, rank++);
  }
  const auto sot_it = out->vocab_.find(sot), eot_it = out->vocab_.find(eot);
  if (sot_it == out->vocab_.end() || eot_it == out->vocab_.end()) {
    *error = "lacks the start or end token";
    return false;
  }
  out->sot_id_ = sot_it->second;
  out->eot_id_ = eot_it->second;
  return true;
}

bool
Vocabulary::WordIds(const std::string& word, std::vector<int64_t>* ids) const
{
  // Each byte is one symbol; the last one carries the end-of-word suffix. Merge the best-ranked
  // adjacent pair, every occurrence left to right, until no pair merges (open_clip's
  // SimpleTokenizer.bpe).
  std::vector<std::string> symbols;
  symbols.reserve(word.size());
  for (unsigned char c : word) {
    symbols.push_back(byte_symbols_[c]);
  }
  symbols.back() += "</w>";
  std::string key;
  while (symbols.size() > 1) {
    int best = -1;
    size_t best_at = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      key.assign(symbols[i]).append(" ").append(symbols[i + 1]);
      const auto it = ranks_.find(key);
      if (it != ranks_.end() && (best < 0 || it->second < best)) {
        best = it->second;
        best_at = i;
      }
    }
    if (best < 0) {
      break;
    }
    const std::string left = symbols[best_at], right = symbols[best_at + 1];
    std::vector<std::string> merged;
    merged.reserve(symbols.size());
    for (size_t i = 0; i < symbols.size();) {
      if (i + 1 < symbols.size() && symbols[i] == left && symbols[i + 1] == right) {
        merged.push_back(left + right);
        i += 2;
      } else {
        merged.push_back(std::move(symbols[i]));
        i += 1;
      }
    }
    symbols.swap(merged);
  }
  for (const auto& symbol : symbols) {
    const auto it = vocab_.find(symbol);
    if (it == vocab_.end()) {
      return false;
    }
    ids->push_back(it->second);
  }
  return true;
}

Tokenizer::Tokenizer(const Vocabulary* vocab, const CodePointSet* symbols, size_t max_tokens)
    : vocab_(vocab), symbols_(symbols), max_tokens_(max_tokens)
{
}

const std::vector<int64_t>*
Tokenizer::CachedWord(const std::string& word)
{
  const auto it = words_.find(word);
  if (it != words_.end()) {
    return &it->second;
  }
  std::vector<int64_t> ids;
  if (!vocab_->WordIds(word, &ids)) {
    return nullptr;
  }
  if (words_.size() >= kWordCacheCapacity) {
    words_.clear();
  }
  return &words_.emplace(word, std::move(ids)).first->second;
}

namespace {

char
Lower(char c)
{
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}
bool
IsSpace(char c)
{
  return c == ' ' || c == '\t' || c == '\n';
}
bool
IsLetter(char c)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool
IsDigit(char c)
{
  return c >= '0' && c <= '9';
}

const char* const kContractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};

}  // namespace

bool
Tokenizer::Ids(const char* text, size_t size, size_t plain, std::vector<int64_t>* ids)
{
  // CLIP's word split on the lower-cased plain prefix, its alternatives tried in order at each
  // position; whitespace belongs to no word, so runs of it and the ends split as open_clip's
  // collapsed text does. A plain text's letters (\p{L}) and numbers (\p{N}) are ASCII: its other
  // characters, the plain symbols, are neither, nor whitespace, so their bytes (>= 0x80) join the
  // runs of the last alternative, as ASCII punctuation does.
  const bool whole = plain == size;
  ids->clear();
  std::string word;
  size_t i = 0;
  while (i < plain && ids->size() < max_tokens_) {
    const char c = Lower(text[i]);
    if (IsSpace(c)) {
      ++i;
      continue;
    }
    size_t end = i + 1;
    bool contraction = false;
    if (c == '\'') {
      if (!whole && i + 3 > plain) {
        return false;  // which contraction, if any, depends on what follows the plain prefix
      }
      for (const char* form : kContractions) {
        const size_t n = std::strlen(form);
        size_t k = 1;
        while (k < n && i + k < plain && Lower(text[i + k]) == form[k]) ++k;
        if (k == n) {
          end = i + n;
          contraction = true;
          break;
        }
      }
    }
    if (!contraction) {
      if (IsLetter(c)) {
        while (end < plain && IsLetter(text[end])) ++end;
      } else if (!IsDigit(c)) {
        while (end < plain && !IsSpace(text[end]) && !IsLetter(text[end]) && !IsDigit(text[end])) ++end;
      }
    }
    if ((!whole && end >= plain) || end - i > kMaxWordBytes) {
      return false;  // the word's extent depends on what follows, or it is longer than this splits
    }
    word.assign(text + i, end - i);
    std::transform(word.begin(), word.end(), word.begin(), Lower);
    const std::vector<int64_t>* word_ids = CachedWord(word);
    if (word_ids == nullptr) {
      return false;
    }
    ids->insert(ids->end(), word_ids->begin(), word_ids->end());
    i = end;
  }
  if (ids->size() < max_tokens_ && !whole) {
    return false;  // the plain prefix ran out first: the rest of the text has tokens to give
  }
  if (ids->size() > max_tokens_) {
    ids->resize(max_tokens_);
  }
  return true;
}

}  // namespace clip_bpe
