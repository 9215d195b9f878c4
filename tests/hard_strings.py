"""Hard strings for tokenizer parity with open_clip's SimpleTokenizer."""

LONG_CAPTION = " ".join(["a very long caption about a red bicycle leaning against a brick wall"] * 12)

HARD_STRINGS = [
    # empty, whitespace, control characters
    "", " ", "   \t\n  ", "\n", "\r\n", "\x00", "a\x00b", "bell\x07char", "esc\x1b[31mred\x1b[0m", "del\x7fete",
    "zero\u200bwidth\u200cjoin\u200dx", "\ufeffbom at start", "soft\u00adhyphen", "line\u2028separator", "nbsp\u00a0space",
    "tab\tseparated\tvalues", "form\x0cfeed", "\x1c\x1d\x1e\x1f separators",
    # plain English, case, contractions, punctuation, numbers
    "a photo of a cat", "A PHOTO OF A CAT", "Don't STOP believin'", "I'M here, you'LL see, we'D go, they'VE been",
    "it's what's", "hello!!! ??? ...", "e-mail: someone@example.com", "https://example.com/a?b=c&d=e#frag",
    "3.14159 and 2,718 and 1e-9", "1234567890", "$100 + 20% = €120", "C++ / C# / F#", "snake_case and camelCase",
    "#hashtag @mention", "(parentheses) [brackets] {braces} <angles>", "tl;dr: it works...",
    "  leading and trailing spaces  ", "multiple     internal     spaces", "UPPER lower MiXeD",
    # HTML entities (unescaped twice), tags
    "fish &amp; chips", "fish &amp;amp; chips", "&lt;b&gt;bold&lt;/b&gt;", "&quot;quoted&quot;", "it&#39;s", "it&#x27;s",
    "&nbsp;&nbsp;indent", "&copy; 2024 &mdash; rights", "<p>paragraph</p>", "5 &lt; 6 &gt; 4", "&unknownentity; stays",
    # curly quotes, dashes, ligatures, fullwidth, math
    "\u201ccurly double\u201d", "\u2018curly single\u2019", "it\u2019s curly", "en\u2013dash em\u2014dash", "\ufb01ne \ufb02ow \ufb03ce",
    "\uff21\uff22\uff23 fullwidth \uff11\uff12\uff13", "\u2460\u2461\u2462 circled", "x\u00b2 + y\u00b3 = z\u2074",
    "\u221a\u221e\u2211\u222b\u2248\u2260", "\u00bd \u00bc \u00be fractions", "\u2122 \u00ae \u00a9", "\u2026 ellipsis",
    # accents, combining, casing edge cases
    "caf\u00e9", "cafe\u0301 combining", "na\u00efve r\u00e9sum\u00e9", "\u0130stanbul", "STRASSE stra\u00dfe \u1e9e",
    "\u00c5ngstr\u00f6m", "\u01c5 titlecase digraph", "\u03a3\u03bf\u03c6\u03af\u03b1 \u03a3", "Z\u0351\u036b\u0343a\u0352l\u0350g\u0344o zalgo",
    # mojibake (ftfy fixes it)
    "caf\u00c3\u00a9", "\u00e2\u20ac\u0153mojibake\u00e2\u20ac\u009d", "The Mona Lisa doesn\u00e2\u20ac\u2122t have eyebrows.",
    # scripts
    "\u4e00\u53ea\u732b\u5750\u5728\u6c99\u53d1\u4e0a", "\u732b\u306e\u5199\u771f\u3067\u3059", "\u30ab\u30bf\u30ab\u30ca \u30c6\u30b9\u30c8",
    "\uace0\uc591\uc774 \uc0ac\uc9c4", "\u0635\u0648\u0631\u0629 \u0642\u0637\u0629", "\u05ea\u05de\u05d5\u05e0\u05d4 \u05e9\u05dc \u05d7\u05ea\u05d5\u05dc",
    "\u092c\u093f\u0932\u094d\u0932\u0940 \u0915\u0940 \u0924\u0938\u094d\u0935\u0940\u0930", "\u0e23\u0e39\u0e1b\u0e41\u0e21\u0e27",
    "\u0444\u043e\u0442\u043e \u043a\u043e\u0448\u043a\u0438", "\u03c6\u03c9\u03c4\u03bf\u03b3\u03c1\u03b1\u03c6\u03af\u03b1 \u03b3\u03ac\u03c4\u03b1\u03c2",
    "\u10e4\u10dd\u10e2\u10dd", "\u0561\u0580\u0565\u0582", "\u09ac\u09bf\u09dc\u09be\u09b2", "\u0baa\u0bc2\u0ba9\u0bc8",
    "\u1290\u1265\u1235", "\u1780\u17d2\u1798\u17c2\u179a", "\u0f56\u0f7c\u0f51", "mixed \u732b and cat and \u043a\u043e\u0448\u043a\u0430",
    # emoji
    "\U0001f431", "cat \U0001f431 dog \U0001f436", "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 family",
    "\U0001f44d\U0001f3fd thumbs", "\U0001f1fa\U0001f1f8 \U0001f1ef\U0001f1f5 flags", "\u2764\ufe0f heart", "\U0001f600\U0001f601\U0001f602\U0001f923",
    "emoji\U0001f525in\U0001f525words", "\u263a\ufe0e text style",
    # special-token look-alikes (see ACCEPTED_MISMATCHES)
    "<|startoftext|>", "<|endoftext|> inside text", "</w> suffix lookalike",
    # long texts: truncation to 77 with EOT last
    LONG_CAPTION, "word " * 200, "\U0001f431" * 100, "\u4e00" * 150, "a" * 3000, "supercalifragilisticexpialidocious " * 10,
    # misc
    "\\n literal backslash n", "quote \" and ' and `", "\u00a0\u2002\u2003\u2009 unicode spaces", "A\u0300\u0301\u0302 stacked",
    "\ud7ff\ue000\uf8ff private use", "\U0001d400\U0001d401 math bold", "a\u0000\u0000\u0000b nuls", "   ",
]

# open_clip (3.x) treats the literal strings "<start_of_text>" and "<end_of_text>" inside user
# text as its control tokens, so a user could end a text early by typing them. This tokenizer
# keeps all user text as text. (OpenAI CLIP's "<|startoftext|>"/"<|endoftext|>" are plain text in
# open_clip 3.x and here alike.)
ACCEPTED_MISMATCHES = {
    "<start_of_text> typed by a user": "open_clip maps it to its start token id; here it stays text",
    "text with <end_of_text> inside": "open_clip maps it to EOT (ending the text); here it stays text",
}
