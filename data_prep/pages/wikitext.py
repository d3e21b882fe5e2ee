"""Wikitext -> the paragraphs a reader sees, with exact link spans (on mwparserfromhell).

Rendering rules (the contract the tests and later stages rely on):

* **Paragraphs.** A paragraph ends at a blank line, a heading, a list item, a horizontal rule (``----``)
  or a block element (table, ``<div>``, ``<p>``, ``<blockquote>``...). A single newline inside a
  paragraph reads as a space. **Headings** start a new paragraph and their own text is not emitted.
  **Lists**: every item (``*``, ``#``, ``;``, ``:``) is its own paragraph, marker removed; a ``;term : def``
  line gives two paragraphs.
* **Whitespace**: runs of whitespace and single newlines/tabs collapse to one space; a lone
  ``&nbsp;`` (U+00A0) or other single Unicode space is kept as it is; paragraphs are stripped;
  empty paragraphs are dropped. Link spans are moved accordingly and trimmed to non-space characters.
* **Links**: ``[[T]]`` shows ``T`` as written, ``[[T|x]]`` shows ``x``; the link trail of the language
  (``[[dog]]s`` -> "dogs") is part of the anchor. Only namespace-0 targets are entity links (title
  normalised, fragment dropped). Category, file and interlanguage links are removed entirely (no caption
  text). Links to other namespaces, leading-colon links (``[[:Category:X|x]]``), interwiki
  links (``[[wikt:x|y]]``), section links (``[[#S|x]]``) and invalid targets show their text but are not
  entity links. External links ``[http://u label]`` show the label; bare URLs and unlabelled ones are dropped.
* **Templates** are removed, except the inline ones in :data:`INLINE_TEMPLATES` / :data:`SYMBOL_TEMPLATES`,
  whose visible parameter is rendered (links inside it included), and ``{{convert}}``, which shows
  its value and unit (``{{convert|5|km|mi}}`` -> "5 km").
* **Tags**: references, tables, galleries, math, code blocks and the like (:data:`DROP_TAGS`) are removed
  with their content; other tags (``<span>``, ``<small>``, ``<b>``...) are removed but their content
  kept; ``<br>`` reads as a space; ``<nowiki>`` content is literal text. Comments, bold/italic marks,
  behaviour switches (``__TOC__``) are removed; HTML entities are unescaped.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

from mwparserfromhell.parser import tokens as T

try:  # the C tokenizer; the pure-Python one gives the same tokens, slower
    from mwparserfromhell.parser._tokenizer import CTokenizer as _Tokenizer
except ImportError:  # pragma: no cover
    from mwparserfromhell.parser.tokenizer import Tokenizer as _Tokenizer

from data_prep.pages.titles import TitleParser, clean_title_text, link_trail_re

# Paragraph break marker inside the raw rendering (never occurs in wikitext after cleaning).
BREAK = "\x00"

# Tags removed together with their content.
DROP_TAGS = frozenset({
    "ref", "references", "math", "chem", "ce", "gallery", "timeline", "imagemap", "syntaxhighlight",
    "source", "pre", "score", "graph", "templatedata", "mapframe", "maplink", "inputbox", "categorytree",
    "hiero", "table", "tr", "td", "th", "caption", "includeonly", "style", "script",
    "indicator", "templatestyles", "section", "charinsert", "ref-list", "referencelist", "img", "sup-ref",
})
# Tags whose content is kept but which form a block of their own (a paragraph break around them).
BLOCK_TAGS = frozenset({"div", "p", "blockquote", "center", "ul", "ol", "dl", "li", "dd", "dt", "poem"})
# HTML headings: like wikitext headings, a break and no text.
HEADING_TAGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})

# Inline templates whose visible text is kept: normalised name -> which positional parameter is shown
# ("first" or "last").  Everything else ({{cite ...}}, infoboxes, navboxes, {{convert}}, parser
# functions and magic words) is removed.
INLINE_TEMPLATES: dict[str, str] = {
    "nowrap": "first", "nobr": "first", "nowraplinks": "first", "j": "first", "small": "first",
    "smaller": "first", "big": "first", "larger": "first", "sc": "first", "smallcaps": "first",
    "abbr": "first", "em": "first", "strong": "first", "var": "first", "mvar": "first", "sic": "first",
    "nobold": "first", "noitalic": "first", "ill": "first", "interlanguage link": "first",
    "lang": "last", "transl": "last", "translit": "last", "transliteration": "last", "script": "last",
}
# {{convert|value|unit|...}} shows "value unit" (the converted value in brackets is left out).
CONVERT_TEMPLATES = frozenset({"convert", "cvt"})
_CONVERT_RANGES = {"-": "–", "–": "–", "to": " to ", "and": " and ", "or": " or ", "by": " by ", "x": " × ",
                   "×": " × ", "+": " + ", "to(-)": " to ", "and(-)": " and "}
# {{lang-xx|text}} (one template per language) shows its first parameter.
_LANG_XX_RE = re.compile(r"lang-[a-z]{2,3}(?:-[a-z0-9]+)*$")
# Templates that stand for a symbol.
SYMBOL_TEMPLATES: dict[str, str] = {
    "'": "'", "!": "|", "=": "=", "·": " · ", "•": " • ", "nbsp": " ", "ndash": "–", "mdash": "—",
    "snd": " – ", "spnd": " – ", "spaced ndash": " – ", "spaced en dash": " – ", "dash": " – ",
    "en dash": "–", "em dash": "—",
}

# Disambiguation templates (normalised, casefolded names) across the 24 languages.
DISAMBIGUATION_TEMPLATES = frozenset(s.casefold() for s in [
    # en & generic
    "Disambiguation", "Disambig", "Dab", "Disamb", "Dp", "Hndis", "Geodis", "Numberdis", "Letter-NumberCombDisambig",
    "Human name disambiguation", "Place name disambiguation", "Disambiguation page",
    # ar bn de el es fi fr hi id it ja ko nl pl pt ru sv sw te th tr vi zh
    "توضيح", "صفحة توضيح", "দ্ব্যর্থতা নিরসন", "Begriffsklärung", "Αποσαφήνιση", "Desambiguación", "Desambig",
    "Täsmennyssivu", "Täsmennys", "Homonymie", "Bandeau standard pour page d'homonymie", "Patronymie",
    "बहुविकल्पी शब्द", "बहुविकल्पी", "Disambiguasi", "Disambigua", "Aimai", "曖昧さ回避", "人名の曖昧さ回避",
    "地名の曖昧さ回避", "동음이의", "동음이의어", "Dpintro", "Ujednoznacznienie", "Desambiguação",
    "Неоднозначность", "Многозначность", "Значения", "Förgreningssida", "Förgrening", "Gren", "Maana",
    "అయోమయ నివృత్తి", "แก้ความกำกวม", "แก้กำกวม", "Anlam ayrımı", "Trang định hướng", "Định hướng", "消歧义", "消歧義",
    "消歧义页", "Dab页",
])
_DISAMBIG_MAGIC = "__DISAMBIG__"

# Regex pre-pass: content that is never visible and is costly to tokenise (comments, references) is
# cut before mwparserfromhell sees the page.  It is invisible either way, so spans are unaffected.
_PREPASS_RE = re.compile(r"<!--.*?(?:-->|\Z)|<ref\b[^>]*?/>|<ref\b[^>]*>.*?</ref\s*>", re.IGNORECASE | re.DOTALL)
_SWITCH_RE = re.compile(r"__[A-ZÀ-Ý_]{3,}__")
_BLANK_LINE_RE = re.compile(r"\n[^\S\n]*\n")
# Whitespace that collapses to one space: any run of 2+ whitespace characters, and single line breaks /
# tabs / control spaces.  A lone U+00A0 (&nbsp;), U+3000 or thin space is kept: the reader sees it.
_LINE_WS = "\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\u2028\u2029"
_WS_RE = re.compile(r"\s{2,}|[" + _LINE_WS + "]")
_ODD_WS_RE = re.compile(r"\s\s|[^\S \u00a0]")  # anything beyond single spaces / single NBSPs
_PAREN_RE = re.compile(r"\s*\([^()]*\)\s*$")


@dataclass
class Paragraph:
    text: str
    links: list[tuple[int, int, str]] = field(default_factory=list)  # (start, end, title)


@dataclass
class ParsedPage:
    paragraphs: list[Paragraph]
    disambiguation: bool = False


def template_key(name: str) -> str:
    """Normalised, casefolded template name (``Template:`` prefix and underscores ignored)."""
    s = clean_title_text(name)
    colon = s.find(":")
    if colon > 0 and s[:colon].strip().casefold() in ("template", "vorlage", "modèle", "plantilla", "шаблон",
                                                       "predefinição", "sjabloon", "szablon", "mall", "malline",
                                                       "şablon", "قالب", "模板", "テンプレート", "틀"):
        s = s[colon + 1 :].strip()
    return s.casefold()


# --- token kinds -------------------------------------------------------------------------------------
# The renderer walks mwparserfromhell's token stream directly: building its node tree (Python objects
# for every node, SmartLists, Wikicode wrappers) costs several times more than tokenising (C) and than
# this walk, and the tree is thrown away right after.  One pass matches every open token with its close
# and records the separators at its own nesting level; handlers then jump by index.
(
    K_TEXT, K_TEMPLATE, K_ARGUMENT, K_WIKILINK, K_EXTLINK, K_ENTITY, K_HEADING, K_COMMENT, K_TAG,
    K_CLOSE, K_SELFCLOSE, K_SEP, K_PARAM_SEP, K_PARAM_EQ, K_WIKILINK_SEP, K_EXTLINK_SEP, K_TAG_CLOSE_OPEN,
    K_TAG_OPEN_CLOSE, K_ATTR, K_ENTITY_NUMERIC, K_ENTITY_HEX,
) = range(21)
_KIND = {
    T.Text: K_TEXT,
    T.TemplateOpen: K_TEMPLATE, T.ArgumentOpen: K_ARGUMENT, T.WikilinkOpen: K_WIKILINK,
    T.ExternalLinkOpen: K_EXTLINK, T.HTMLEntityStart: K_ENTITY, T.HeadingStart: K_HEADING,
    T.CommentStart: K_COMMENT, T.TagOpenOpen: K_TAG,
    T.TemplateClose: K_CLOSE, T.ArgumentClose: K_CLOSE, T.WikilinkClose: K_CLOSE, T.ExternalLinkClose: K_CLOSE,
    T.HTMLEntityEnd: K_CLOSE, T.HeadingEnd: K_CLOSE, T.CommentEnd: K_CLOSE, T.TagCloseClose: K_CLOSE,
    T.TagCloseSelfclose: K_SELFCLOSE,
    T.TemplateParamSeparator: K_PARAM_SEP, T.TemplateParamEquals: K_PARAM_EQ,
    T.WikilinkSeparator: K_WIKILINK_SEP, T.ExternalLinkSeparator: K_EXTLINK_SEP,
    T.TagCloseOpen: K_TAG_CLOSE_OPEN, T.TagOpenClose: K_TAG_OPEN_CLOSE,
    T.ArgumentSeparator: K_SEP, T.TagAttrStart: K_ATTR, T.TagAttrEquals: K_SEP, T.TagAttrQuote: K_SEP,
    T.HTMLEntityNumeric: K_ENTITY_NUMERIC, T.HTMLEntityHex: K_ENTITY_HEX,
}
_OPENERS = frozenset({K_TEMPLATE, K_ARGUMENT, K_WIKILINK, K_EXTLINK, K_ENTITY, K_HEADING, K_COMMENT, K_TAG})


def _tokenize(wikitext: str) -> list:
    # A fresh tokenizer per page (a few microseconds): an exception raised inside the C tokenizer (the
    # page time limit's signal) must not leave state behind for the next page.
    return _Tokenizer().tokenize(wikitext, 0, False)


class _Renderer:
    """Walks the token list once, appending visible text to ``parts`` and links to ``links``."""

    __slots__ = ("parser", "trail_re", "parts", "pos", "links", "pending", "list_line", "disambiguation",
                 "toks", "kinds", "match", "seps")

    def __init__(self, parser: TitleParser, trail_re: re.Pattern[str] | None, toks: list) -> None:
        self.parser = parser
        self.trail_re = trail_re
        self.parts: list[str] = []
        self.pos = 0
        self.links: list[list] = []  # [start, end, title or None]
        self.pending: list | None = None  # the link a following link trail extends
        self.list_line = False
        self.disambiguation = False
        self.toks = toks
        n = len(toks)
        kinds = [_KIND.get(type(t), K_SEP) for t in toks]
        match = [0] * n
        seps: dict[int, list[int]] = {}
        stack: list[int] = []
        openers = _OPENERS
        for i, k in enumerate(kinds):
            if k == K_TEXT:
                continue
            if k in openers:
                stack.append(i)
            elif k == K_CLOSE or k == K_SELFCLOSE:
                if stack:
                    match[stack.pop()] = i
            elif stack:
                o = stack[-1]
                lst = seps.get(o)
                if lst is None:
                    seps[o] = [i]
                else:
                    lst.append(i)
        if stack:  # the tokenizer always balances; be safe anyway
            raise ValueError("unbalanced token stream")
        self.kinds = kinds
        self.match = match
        self.seps = seps

    # --- output ---

    def out(self, s: str) -> None:
        if s:
            self.parts.append(s)
            self.pos += len(s)

    def brk(self) -> None:
        self.parts.append(BREAK)
        self.pos += 1
        self.list_line = False

    def text(self, s: str) -> None:
        pending = self.pending
        self.pending = None
        if pending is not None and self.trail_re is not None:
            m = self.trail_re.match(s)
            if m:
                pending[1] += m.end()
        if "__" in s:
            if _DISAMBIG_MAGIC in s:
                self.disambiguation = True
            s = _SWITCH_RE.sub("", s)
        if self.list_line:
            nl = s.find("\n")
            if nl >= 0:  # a list item ends at the end of its line
                self.out(s[:nl])
                self.brk()
                s = s[nl + 1 :]
        self.out(s)

    # --- helpers over token ranges ---

    def plain(self, i: int, j: int) -> str | None:
        """The text of tokens [i, j) if they are only text, HTML entities (decoded) and comments, else None."""
        toks, kinds = self.toks, self.kinds
        out = []
        while i < j:
            k = kinds[i]
            if k == K_TEXT:
                out.append(toks[i]["text"])
                i += 1
            elif k == K_ENTITY:
                out.append(self.entity(i))
                i = self.match[i] + 1
            elif k == K_COMMENT:
                i = self.match[i] + 1
            else:
                return None
        return "".join(out)

    def entity(self, i: int) -> str:
        toks, kinds = self.toks, self.kinds
        i += 1
        if kinds[i] == K_ENTITY_NUMERIC:
            i += 1
            if kinds[i] == K_ENTITY_HEX:
                return html.unescape(f"&#x{toks[i + 1]['text']};")
            return html.unescape(f"&#{toks[i]['text']};")
        return html.unescape(f"&{toks[i]['text']};")

    # --- the walk ---

    def render(self, i: int, j: int) -> None:
        toks, kinds, match = self.toks, self.kinds, self.match
        while i < j:
            k = kinds[i]
            if k == K_TEXT:
                self.text(toks[i]["text"])
                i += 1
                continue
            if k == K_COMMENT:  # comments vanish before MediaWiki applies link trails
                i = match[i] + 1
                continue
            self.pending = None
            if k == K_WIKILINK:
                self.wikilink(i)
            elif k == K_TEMPLATE:
                self.template(i)
            elif k == K_TAG:
                self.tag(i)
            elif k == K_ENTITY:
                self.out(self.entity(i))
            elif k == K_HEADING:
                self.brk()
                self.brk()
            elif k == K_EXTLINK:
                seps = self.seps.get(i)
                if toks[i].get("brackets") and seps:
                    self.render(seps[0] + 1, match[i])
                    self.pending = None
            # arguments ({{{x}}}), stray separators: nothing visible in an article
            i = match[i] + 1 if k in _OPENERS else i + 1

    def wikilink(self, i: int) -> None:
        close = self.match[i]
        seps = self.seps.get(i)
        sep = seps[0] if seps else None
        title_end = sep if sep is not None else close
        raw_title = self.plain(i + 1, title_end)
        target = self.parser.parse(raw_title) if raw_title is not None else None
        kind = target.kind if target is not None else "invalid"
        if (target is None or not target.colon) and kind in ("category", "file", "interlanguage"):
            return  # not displayed at all (category/file captions leak no text)
        start = self.pos
        if sep is None:
            shown = (raw_title if raw_title is not None else "").strip()
            if shown.startswith(":"):
                shown = shown[1:].lstrip()
            self.out(shown)
        else:
            label = self.plain(sep + 1, close)
            if label is not None and not label.strip():
                # pipe trick [[Foo (bar)|]] -> "Foo"
                shown = (raw_title or "").strip().lstrip(":")
                if target is not None and target.kind != "article" and ":" in shown:
                    shown = shown.split(":", 1)[1]
                self.out(_PAREN_RE.sub("", shown).split(",")[0].strip())
            else:
                self.render(sep + 1, close)
        link = [start, self.pos, target.title if kind == "article" else None]
        self.links.append(link)
        self.pending = link

    def template(self, i: int) -> None:
        close = self.match[i]
        seps = [s for s in self.seps.get(i, ()) if self.kinds[s] in (K_PARAM_SEP, K_PARAM_EQ)]
        name = self.plain(i + 1, seps[0] if seps else close)
        if name is None or name.lstrip().startswith("#"):
            return  # parser function or computed name: nothing we can render
        key = template_key(name)
        if key in DISAMBIGUATION_TEMPLATES:
            self.disambiguation = True
            return
        symbol = SYMBOL_TEMPLATES.get(key)
        if symbol is not None:
            self.out(symbol)
            return
        which = INLINE_TEMPLATES.get(key)
        if which is None:
            if _LANG_XX_RE.match(key):
                which = "first"
            elif key not in CONVERT_TEMPLATES:
                return
        # positional parameters: (start, end) ranges of parameters with no '=' of their own
        positional: list[tuple[int, int]] = []
        kinds = self.kinds
        n = len(seps)
        for a, s in enumerate(seps):
            if kinds[s] != K_PARAM_SEP:
                continue
            nxt = seps[a + 1] if a + 1 < n else close
            if a + 1 < n and kinds[nxt] == K_PARAM_EQ:
                continue  # named parameter
            positional.append((s + 1, nxt))
        if not positional:
            return
        if which is None:  # {{convert|5|km|mi}} -> "5 km"; {{convert|5|to|8|km}} -> "5 to 8 km"
            vals = [self.plain(a, b) for a, b in positional[:4]]
            if len(vals) < 2 or any(v is None for v in vals):
                return
            vals = [v.strip() for v in vals]
            if len(vals) >= 4 and vals[1] in _CONVERT_RANGES:
                sep = _CONVERT_RANGES[vals[1]]
                self.out(f"{vals[0]}{sep}{vals[2]} {vals[3]}")
            else:
                self.out(f"{vals[0]} {vals[1]}")
            return
        a, b = positional[0] if which == "first" else positional[-1]
        self.render(a, b)
        self.pending = None

    def tag(self, i: int) -> None:
        toks, kinds = self.toks, self.kinds
        close = self.match[i]
        markup = toks[i].get("wiki_markup")
        # the tag name: the text tokens right after TagOpenOpen
        j = i + 1
        name_parts = []
        while j < close and kinds[j] == K_TEXT:
            name_parts.append(toks[j]["text"])
            j += 1
        name = "".join(name_parts).strip().lower()
        self_closing = kinds[close] == K_SELFCLOSE
        contents: tuple[int, int] | None = None
        if not self_closing:
            co = oc = None
            for s in self.seps.get(i, ()):
                if kinds[s] == K_TAG_CLOSE_OPEN and co is None:
                    co = s
                elif kinds[s] == K_TAG_OPEN_CLOSE:
                    oc = s
            if co is not None and oc is not None:
                contents = (co + 1, oc)
        if markup:
            if name in ("b", "i"):
                if contents:
                    self.render(*contents)
                    self.pending = None
            elif name in ("li", "dt", "dd"):
                self.brk()
                self.list_line = True
            else:  # tables, hr and anything else with wiki markup
                self.brk()
            return
        if name in DROP_TAGS:
            if name == "table":
                self.brk()
            return
        if name == "br":
            self.out(" ")
            return
        if name == "nowiki":
            if contents:
                text = "".join(toks[k]["text"] for k in range(*contents) if kinds[k] == K_TEXT)
                self.out(html.unescape(text))
            return
        if name in HEADING_TAGS:
            self.brk()
            self.brk()
            return
        block = name in BLOCK_TAGS
        if block:
            self.brk()
        if contents:
            self.render(*contents)
            self.pending = None
        if block:
            self.brk()


def _as_breaks(m: re.Match) -> str:
    return BREAK * (m.end() - m.start())


def _finish(raw: str, links: list[list]) -> list[Paragraph]:
    """Split the raw rendering into paragraphs, collapse whitespace and move link spans along."""
    paragraphs: list[Paragraph] = []
    links = [lk for lk in links if lk[2] is not None and lk[1] > lk[0]]
    li = 0
    n_links = len(links)
    # Blank lines become BREAK characters of the same length, so offsets stay valid and one
    # str.split finds every paragraph.
    if "\n" in raw:
        raw = _BLANK_LINE_RE.sub(_as_breaks, raw)
    base = 0
    for seg in raw.split(BREAK):
        seg_start = base
        seg_end = base + len(seg)
        base = seg_end + 1
        if not seg:
            continue
        # links of this segment (links crossing a paragraph break are dropped)
        seg_links = []
        while li < n_links and links[li][0] < seg_end:
            s, e, title = links[li]
            li += 1
            if s >= seg_start and e <= seg_end:
                seg_links.append((s - seg_start, e - seg_start, title))
        if not seg or seg.isspace():
            continue
        if not seg_links:
            text = _WS_RE.sub(" ", seg).strip()
            if text:
                paragraphs.append(Paragraph(text))
            continue
        # Trim anchors to non-space characters; then no whitespace run crosses a link boundary, so the
        # pieces between boundaries collapse independently and a boundary's new offset is the length
        # of the collapsed text before it.
        trimmed = []
        for s, e, title in seg_links:
            while s < e and seg[s].isspace():
                s += 1
            while e > s and seg[e - 1].isspace():
                e -= 1
            if s < e:
                trimmed.append((s, e, title))
        if _ODD_WS_RE.search(seg) is None:
            # fast path (most paragraphs): only single spaces, so only a leading one moves offsets
            text = seg.strip()
            lead = len(seg) - len(seg.lstrip())
            new_pos = None
        else:
            points = sorted({p for s, e, _ in trimmed for p in (s, e)})
            new_pos = {}
            pieces: list[str] = []
            length = 0
            prev = 0
            for p in points:
                piece = _WS_RE.sub(" ", seg[prev:p])
                pieces.append(piece)
                length += len(piece)
                new_pos[p] = length
                prev = p
            pieces.append(_WS_RE.sub(" ", seg[prev:]))
            text = "".join(pieces)
            lead = len(text) - len(text.lstrip())
            text = text.strip()
        para_links = []
        prev_end = -1
        for s, e, title in trimmed:
            if new_pos is None:
                ns, ne = s - lead, e - lead
            else:
                ns, ne = new_pos[s] - lead, new_pos[e] - lead
            if ns < prev_end:  # overlapping (nested) links: keep the first
                continue
            para_links.append((ns, ne, title))
            prev_end = ne
        paragraphs.append(Paragraph(text, para_links))
    return paragraphs


def parse_wikitext(wikitext: str, parser: TitleParser, trail_re: re.Pattern[str] | None = ...) -> ParsedPage:
    """Render one page's wikitext into paragraphs with exact link spans."""
    if trail_re is ...:
        trail_re = link_trail_re(parser.lang)
    if BREAK in wikitext:
        wikitext = wikitext.replace(BREAK, "")
    disamb = _DISAMBIG_MAGIC in wikitext
    wikitext = _PREPASS_RE.sub("", wikitext)
    toks = _tokenize(wikitext)
    r = _Renderer(parser, trail_re, toks)
    r.render(0, len(toks))
    return ParsedPage(_finish("".join(r.parts), r.links), disambiguation=disamb or r.disambiguation)
