"""Extracted-corpus fixtures (DESIGN.md step 1 schema) written directly with pyarrow.

Paragraphs are written in a tiny wiki-like markup: ``[[Target|anchor]]`` or ``[[Target]]`` becomes the
anchor text with a link ``{start, end, title}`` whose span is exactly the anchor. All fixture text was
written for these tests.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.entities.vocab_file import EntityEntry, special_entries, write_entity_vocab

LINK = pa.struct([("start", pa.int32()), ("end", pa.int32()), ("title", pa.string())])
PARAGRAPH = pa.struct([("text", pa.string()), ("links", pa.list_(LINK))])
PAGE_SCHEMA = pa.schema([("page_id", pa.int64()), ("title", pa.string()), ("paragraphs", pa.list_(PARAGRAPH))])

_MARKUP = re.compile(r"\[\[([^\]|]+)(?:\|([^\]]+))?\]\]")


def para(markup: str) -> dict:
    """``"I saw [[Paris]] and [[Berlin|the capital]]."`` -> {"text": ..., "links": [...]}."""
    text, links, pos = [], [], 0
    length = 0
    for m in _MARKUP.finditer(markup):
        before = markup[pos : m.start()]
        text.append(before)
        length += len(before)
        anchor = m.group(2) if m.group(2) is not None else m.group(1)
        links.append({"start": length, "end": length + len(anchor), "title": m.group(1)})
        text.append(anchor)
        length += len(anchor)
        pos = m.end()
    text.append(markup[pos:])
    return {"text": "".join(text), "links": links}


def write_corpus(
    directory: Path,
    lang: str,
    pages: list[tuple[int, str, list[str | dict]]],
    redirects: dict[str, str] | None = None,
    pages_per_file: int = 1000,
) -> Path:
    """Write DIR/pages-NNNNN.parquet, redirects.parquet and siteinfo.json; paragraphs are markup or dicts."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = [
        {"page_id": pid, "title": title, "paragraphs": [p if isinstance(p, dict) else para(p) for p in paras]}
        for pid, title, paras in pages
    ]
    for i in range(0, max(len(rows), 1), pages_per_file):
        chunk = rows[i : i + pages_per_file]
        pq.write_table(pa.Table.from_pylist(chunk, schema=PAGE_SCHEMA), directory / f"pages-{i // pages_per_file:05d}.parquet")
    redirects = redirects or {}
    pq.write_table(
        pa.table({"title": list(redirects), "target": list(redirects.values())}, schema=pa.schema([("title", pa.string()), ("target", pa.string())])),
        directory / "redirects.parquet",
    )
    (directory / "siteinfo.json").write_text(json.dumps({"lang": lang, "dbname": f"{lang}wiki", "case": "first-letter"}))
    return directory


def write_vocab(path: Path, entities: list[tuple[str | None, list[tuple[str, str]]]]) -> Path:
    """Entities get ids 4, 5, ... in the given order; each is (qid, [(title, lang), ...])."""
    entries = special_entries() + [
        EntityEntry(4 + i, qid, tuple(names), 100 - i) for i, (qid, names) in enumerate(entities)
    ]
    write_entity_vocab(path, entries)
    return path


# ---------------------------------------------------------------- a multilingual fixture
# (lang, pages); every page is (page_id, title, paragraphs) in markup. Scripts: Latin (en, de), Cyrillic
# (ru), Greek (el), Arabic (ar), Devanagari (hi), Japanese (ja), Chinese (zh), Thai (th).
MULTILINGUAL: dict[str, list[tuple[int, str, list[str]]]] = {
    "en": [
        (1, "Harbour town", [
            "The [[Harbour town]] lies on a quiet [[Bay|bay]] near [[Old Mill]]. Dr. Rowe built its first [[Lighthouse|lighthouses]] in 1821.",
            "Fishing boats leave at dawn, e.g. in the spring. The [[Grey River]]'s mouth is 3.5 km away!",
            "Visitors come for the [[Salt Festival]]; the [[Old Mill|mill]] is now a museum 😀 with [[Rare Bird|rare birds]].",
        ]),
        (2, "Grey River", [
            "The [[Grey River]] rises in the [[North Hills]] and flows past [[Harbour town]]. It is slow and wide.",
            "[[Otters]] live along its banks. Non-[[Native plants|native]] reeds and half-[[Rare Bird|bird]]s grow there too. See also [[Loop A]].",
        ]),
        (3, "Empty page", ["No links at all in this paragraph. Just words."]),
    ],
    "de": [
        (10, "Hafenstadt", [
            "Die [[Hafenstadt]] liegt an einer ruhigen [[Bucht]]. Am 3. Oktober 1990 wurde der [[Leuchtturm]] erneuert.",
            "Viele [[Fischerboot]]e fahren z.B. im Frühling hinaus. Der [[Graue Fluss]] mündet hier.",
        ]),
    ],
    "ru": [
        (20, "Портовый город", [
            "[[Портовый город]] стоит на берегу тихого [[Залив|залива]]. В 1821 г. здесь построили [[Маяк|маяк]].",
            "Рыбаки выходят в море на рассвете. [[Серая река]] впадает в залив неподалёку!",
        ]),
    ],
    "el": [
        (25, "Λιμάνι", [
            "Το [[Λιμάνι|λιμάνι]] βρίσκεται σε έναν ήσυχο [[Κόλπος|κόλπο]]. Πού είναι ο [[Φάρος|φάρος]]; Κοντά στο νερό.",
        ]),
    ],
    "ar": [
        (30, "مدينة الميناء", [
            "تقع [[مدينة الميناء]] على [[خليج]] هادئ. هل تعرف [[المنارة]]؟ بنيت في عام 1821.",
            "يخرج الصيادون عند الفجر۔ يصب [[النهر الرمادي]] في الخليج.",
            # a right-to-left mark and a zero-width space before links: the model reads both as a gap
            "انظر أيضا\u200f[[المنارة]] و\u200b[[مدينة الميناء]].",
        ]),
    ],
    "hi": [
        (35, "बंदरगाह नगर", [
            "[[बंदरगाह नगर]] एक शांत [[खाड़ी]] के किनारे है। यहाँ एक [[प्रकाशस्तंभ]] भी है॥ मछुआरे सुबह निकलते हैं।",
        ]),
    ],
    "ja": [
        (40, "港町", [
            "[[港町]]は静かな[[湾]]のほとりにある。[[灯台]]は1821年に建てられた！[[灰色川]]が湾に注ぐ。",
            "漁師は夜明けに[[漁船|船]]で出る。「[[塩祭り]]」には多くの人が来る。珍しい字の𠮷野家もある。",
        ]),
    ],
    "zh": [
        (50, "港口城市", [
            "[[港口城市]]位于一个安静的[[海湾]]旁边。[[灯塔]]建于1821年！[[灰河]]流入海湾。",
            "渔民在黎明时出海。你见过[[稀有鸟类|珍稀的鸟]]吗？罕见字䶮也在这里。",
        ]),
    ],
    "th": [
        (60, "เมืองท่า", [
            "[[เมืองท่า]]ตั้งอยู่ริม[[อ่าว]]ที่เงียบสงบ [[ประภาคาร]]สร้างขึ้นเมื่อปี 1821 ชาวประมงออกเรือตอนรุ่งเช้า",
            "[[แม่น้ำสีเทา]]ไหลลงสู่อ่าว มีนกหายากอาศัยอยู่ที่นี่",
        ]),
    ],
}

# redirects per language (title -> target), to check redirect resolution
MULTILINGUAL_REDIRECTS: dict[str, dict[str, str]] = {
    "en": {"Old Mill": "Old Mill (museum)", "Otters": "Otter", "Loop A": "Loop B", "Loop B": "Loop A"},
    "ja": {"灰色川": "灰色川 (河川)"},
}

# entity vocabulary: (qid, [(title, lang)...]); titles are final (redirect-resolved) ones. Deliberately
# missing: "Salt Festival", "North Hills", "Native plants", "Bucht", "خليج", "漁船" (-> not in vocab).
MULTILINGUAL_ENTITIES: list[tuple[str | None, list[tuple[str, str]]]] = [
    ("Q1", [("Harbour town", "en"), ("Hafenstadt", "de"), ("Портовый город", "ru"), ("Λιμάνι", "el"),
            ("مدينة الميناء", "ar"), ("बंदरगाह नगर", "hi"), ("港町", "ja"), ("港口城市", "zh"), ("เมืองท่า", "th")]),
    ("Q2", [("Bay", "en"), ("Залив", "ru"), ("Κόλπος", "el"), ("湾", "ja"), ("海湾", "zh"), ("อ่าว", "th"),
            ("खाड़ी", "hi")]),
    ("Q3", [("Lighthouse", "en"), ("Leuchtturm", "de"), ("Маяк", "ru"), ("Φάρος", "el"), ("المنارة", "ar"),
            ("प्रकाशस्तंभ", "hi"), ("灯台", "ja"), ("灯塔", "zh"), ("ประภาคาร", "th")]),
    ("Q4", [("Grey River", "en"), ("Graue Fluss", "de"), ("Серая река", "ru"), ("النهر الرمادي", "ar"),
            ("灰色川 (河川)", "ja"), ("灰河", "zh"), ("แม่น้ำสีเทา", "th")]),
    ("Q5", [("Old Mill (museum)", "en")]),
    ("Q6", [("Otter", "en")]),
    ("Q7", [("Rare Bird", "en"), ("稀有鸟类", "zh")]),
    ("Q8", [("Fischerboot", "de"), ("塩祭り", "ja")]),
]


def write_multilingual(root: Path, langs: list[str] | None = None) -> tuple[list[Path], Path]:
    """Corpora for ``langs`` (default all) under root/corpora/{lang} and the vocabulary root/vocab.jsonl."""
    dirs = []
    for lang in langs or list(MULTILINGUAL):
        dirs.append(write_corpus(root / "corpora" / lang, lang, MULTILINGUAL[lang], MULTILINGUAL_REDIRECTS.get(lang)))
    return dirs, write_vocab(root / "vocab.jsonl", MULTILINGUAL_ENTITIES)
