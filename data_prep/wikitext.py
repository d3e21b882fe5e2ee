"""Wikitext -> the paragraphs a reader sees, with exact link spans (on mwparserfromhell).

Rendering rules (the contract the tests and later stages rely on):

* **Paragraphs.** A paragraph ends at a blank line, a heading, a list item, a horizontal rule (``----``)
  or a block element (table, ``<div>``, ``<p>``, ``<blockquote>``...). A single newline inside a
  paragraph reads as a space. **Headings** start a new paragraph and their own text is not emitted.
  **Lists**: every item (``*``, ``#``, ``;``, ``:``) is its own paragraph, marker removed; a ``;term : def``
  line gives two paragraphs.
* **Whitespace**: runs of whitespace (incl. ``&nbsp;``) collapse to one space; paragraphs are stripped;
  empty paragraphs are dropped. Link spans are moved accordingly and trimmed to non-space characters.
* **Links**: ``[[T]]`` shows ``T`` as written, ``[[T|x]]`` shows ``x``; the link trail of the language
  (``[[dog]]s`` -> "dogs") is part of the anchor. Only namespace-0 targets are entity links (title
  normalised, fragment dropped). Category, file and interlanguage links are removed entirely (no caption
  text). Links to other namespaces, leading-colon links (``[[:Category:X|x]]``), interwiki
  links (``[[wikt:x|y]]``), section links (``[[#S|x]]``) and invalid targets show their text but are not
  entity links. External links ``[http://u label]`` show the label; bare URLs and unlabelled ones are dropped.
* **Templates** are removed, except the inline ones in :data:`INLINE_TEMPLATES` / :data:`SYMBOL_TEMPLATES`,
  whose visible parameter is rendered (links inside it included).
* **Tags**: references, tables, galleries, math, code blocks and the like (:data:`DROP_TAGS`) are removed
  with their content; other tags (``<span>``, ``<small>``, ``<b>``...) are removed but their content
  kept; ``<br>`` reads as a space; ``<nowiki>`` content is literal text. Comments, bold/italic marks,
  behaviour switches (``__TOC__``) are removed; HTML entities are unescaped.
"""

from __future__ import annotations

import html
import re
from bisect import bisect_right
from dataclasses import dataclass, field

import mwparserfromhell
from mwparserfromhell.nodes import (
    Comment,
    ExternalLink,
    Heading,
    HTMLEntity,
    Tag,
    Template,
    Text,
    Wikilink,
)

from data_prep.titles import TitleParser, clean_title_text, link_trail_re

# Paragraph break marker inside the raw rendering (never occurs in wikitext after cleaning).
BREAK = "\x00"

# Tags removed together with their content.
DROP_TAGS = frozenset({
    "ref", "references", "math", "chem", "ce", "gallery", "timeline", "imagemap", "syntaxhighlight",
    "source", "pre", "score", "graph", "templatedata", "mapframe", "maplink", "inputbox", "categorytree",
    "hiero", "table", "tr", "td", "th", "caption", "includeonly", "noinclude", "style", "script",
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
    "అయోమయ నివృత్తి", "แก้ความกำกวม", "Anlam ayrımı", "Trang định hướng", "Định hướng", "消歧义", "消歧義",
    "消歧义页", "Dab页",
])
_DISAMBIG_MAGIC = "__DISAMBIG__"

# Regex pre-pass: content that is never visible and is costly to tokenise (comments, references) is
# cut before mwparserfromhell sees the page.  It is invisible either way, so spans are unaffected.
_PREPASS_RE = re.compile(r"<!--.*?(?:-->|\Z)|<ref\b[^>]*?/>|<ref\b[^>]*>.*?</ref\s*>", re.IGNORECASE | re.DOTALL)
_SWITCH_RE = re.compile(r"__[A-ZÀ-Ý_]{3,}__")
_BLANK_LINE_RE = re.compile(r"\n[^\S\n]*\n")
_SPLIT_RE = re.compile(BREAK + r"|\n[^\S\n]*\n")
_WS_RE = re.compile(r"\s+")
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


class _Renderer:
    """Walks the node tree once, appending visible text to ``parts`` and links to ``links``."""

    __slots__ = ("parser", "trail_re", "parts", "pos", "links", "pending", "list_line", "disambiguation", "lang")

    def __init__(self, parser: TitleParser, trail_re: re.Pattern[str] | None) -> None:
        self.parser = parser
        self.lang = parser.lang
        self.trail_re = trail_re
        self.parts: list[str] = []
        self.pos = 0
        self.links: list[list] = []  # [start, end, title or None]
        self.pending: list | None = None  # the link a following link trail extends
        self.list_line = False
        self.disambiguation = False

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

    def nodes(self, nodes) -> None:
        for node in nodes:
            cls = type(node)
            if cls is Text:
                self.text(node.value)
                continue
            if cls is Comment:
                continue  # comments vanish before MediaWiki applies link trails
            self.pending = None
            if cls is Wikilink:
                self.wikilink(node)
            elif cls is Template:
                self.template(node)
            elif cls is Tag:
                self.tag(node)
            elif cls is HTMLEntity:
                self.out(node.normalize())
            elif cls is Heading:
                self.brk()
                self.brk()
            elif cls is ExternalLink:
                if node.brackets and node.title is not None:
                    self.nodes(node.title.nodes)
                    self.pending = None
            # Argument ({{{x}}}) and anything else: nothing visible in an article.

    def wikilink(self, node: Wikilink) -> None:
        raw_title = str(node.title)
        target = self.parser.parse(raw_title) if "{" not in raw_title else None
        kind = target.kind if target is not None else "invalid"
        if not target or not target.colon:
            if kind in ("category", "file", "interlanguage"):
                return  # not displayed at all (category/file captions leak no text)
        start = self.pos
        if node.text is None:
            shown = html.unescape(raw_title).strip()
            if shown.startswith(":"):
                shown = shown[1:].lstrip()
            self.out(shown)
        elif not node.text.nodes or (len(node.text.nodes) == 1 and not str(node.text).strip()):
            # pipe trick [[Foo (bar)|]] -> "Foo"
            shown = html.unescape(raw_title).strip().lstrip(":")
            shown = shown.split(":", 1)[1] if target and target.kind != "article" and ":" in shown else shown
            self.out(_PAREN_RE.sub("", shown).split(",")[0].strip())
        else:
            self.nodes(node.text.nodes)
        link = [start, self.pos, target.title if kind == "article" else None]
        self.links.append(link)
        self.pending = link

    def template(self, node: Template) -> None:
        name = str(node.name)
        if "{" in name or "#" in name[:2]:
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
            else:
                return
        positional = [p for p in node.params if not p.showkey]
        if not positional:
            return
        param = positional[0] if which == "first" else positional[-1]
        self.nodes(param.value.nodes)
        self.pending = None

    def tag(self, node: Tag) -> None:
        markup = node.wiki_markup
        name = str(node.tag).strip().lower()
        if markup:
            if name in ("b", "i"):
                if node.contents is not None:
                    self.nodes(node.contents.nodes)
                    self.pending = None
            elif name in ("li", "dt", "dd"):
                self.brk()
                self.list_line = True
            elif name == "table":
                self.brk()
            else:  # hr and anything else with wiki markup
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
            if node.contents is not None:
                self.out(html.unescape(str(node.contents)))
            return
        if name in HEADING_TAGS:
            self.brk()
            self.brk()
            return
        block = name in BLOCK_TAGS
        if block:
            self.brk()
        if node.contents is not None and not node.self_closing:
            self.nodes(node.contents.nodes)
            self.pending = None
        if block:
            self.brk()


def _finish(raw: str, links: list[list]) -> list[Paragraph]:
    """Split the raw rendering into paragraphs, collapse whitespace and move link spans along."""
    paragraphs: list[Paragraph] = []
    links = [lk for lk in links if lk[2] is not None and lk[1] > lk[0]]
    li = 0
    n_links = len(links)
    seg_start = 0
    bounds = [(m.start(), m.end()) for m in _SPLIT_RE.finditer(raw)]
    bounds.append((len(raw), len(raw)))
    for b_start, b_end in bounds:
        seg = raw[seg_start:b_start]
        base = seg_start
        seg_start = b_end
        # links of this segment (links crossing a paragraph break are dropped)
        seg_links = []
        while li < n_links and links[li][0] < b_start:
            s, e, title = links[li]
            li += 1
            if s >= base and e <= b_start:
                seg_links.append((s - base, e - base, title))
        if not seg or seg.isspace():
            continue
        if not seg_links:
            text = " ".join(seg.split())
            if text:
                paragraphs.append(Paragraph(text))
            continue
        # Whitespace runs: each removes len-1 characters (len at the edges of the paragraph).
        starts: list[int] = []
        removed_cum: list[int] = []
        removed = 0
        out_parts: list[str] = []
        last = 0
        n = len(seg)
        for m in _WS_RE.finditer(seg):
            ms, me = m.start(), m.end()
            out_parts.append(seg[last:ms])
            if ms == 0 or me == n:
                removed += me - ms
            else:
                out_parts.append(" ")
                removed += me - ms - 1
            starts.append(ms)
            removed_cum.append(removed)
            last = me
        out_parts.append(seg[last:])
        text = "".join(out_parts)
        para_links = []
        prev_end = -1
        for s, e, title in seg_links:
            while s < e and seg[s].isspace():
                s += 1
            while e > s and seg[e - 1].isspace():
                e -= 1
            if s >= e:
                continue
            # s sits on a non-space char: every run starting before it lies wholly before it.
            i = bisect_right(starts, s) - 1
            ns = s - (removed_cum[i] if i >= 0 else 0)
            i = bisect_right(starts, e - 1) - 1
            ne = e - (removed_cum[i] if i >= 0 else 0)
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
    code = mwparserfromhell.parse(wikitext, skip_style_tags=False)
    r = _Renderer(parser, trail_re)
    r.nodes(code.nodes)
    return ParsedPage(_finish("".join(r.parts), r.links), disambiguation=disamb or r.disambiguation)
