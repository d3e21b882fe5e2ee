"""Page titles as MediaWiki sees them: normalisation, namespaces, interwiki prefixes, link trails.

A link target ``[[ target ]]`` is classified with :class:`TitleParser`, which knows

* the namespaces of the wiki (from the dump's ``<siteinfo>``) plus the canonical English names and the
  usual localised aliases (``Image:`` / ``Bild:`` / ``画像:`` for File, ``WP:`` for Project, ...) for the
  24 mLUKE languages, because article text uses the aliases freely and ``<siteinfo>`` does not list them;
* the interlanguage prefixes (Wikipedia language codes: ``[[fr:Paris]]``) and the common interwiki
  prefixes (``wikt:``, ``commons:``, ...);
* the wiki's ``<case>`` setting (first-letter vs case-sensitive) and the language's upper-casing rule
  (Turkish / Azeri dotted ``i`` -> ``İ``);
* the language's link trail (``[[dog]]s`` -> "dogs"), following MediaWiki's ``$linkTrail`` per language.

Normalisation follows MediaWiki's ``Title`` class: percent-encoding and HTML entities decoded, underscores
and Unicode spaces -> space, runs collapsed, bidi marks removed, ``#fragment`` dropped, leading ``:``
dropped, namespace prefix canonicalised, first letter upper-cased where ``case`` is ``first-letter``.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass, field
from urllib.parse import unquote

# --- namespaces -------------------------------------------------------------------------------------

NS_MEDIA, NS_SPECIAL, NS_MAIN, NS_FILE, NS_CATEGORY = -2, -1, 0, 6, 14

# Canonical (English) names: valid on every wiki whatever its language.
CANONICAL_NAMESPACES: dict[int, list[str]] = {
    -2: ["Media"],
    -1: ["Special"],
    1: ["Talk"],
    2: ["User"],
    3: ["User talk"],
    4: ["Project", "Wikipedia"],
    5: ["Project talk", "Wikipedia talk"],
    6: ["File", "Image"],
    7: ["File talk", "Image talk"],
    8: ["MediaWiki"],
    9: ["MediaWiki talk"],
    10: ["Template"],
    11: ["Template talk"],
    12: ["Help"],
    13: ["Help talk"],
    14: ["Category"],
    15: ["Category talk"],
    # Extension namespaces present on (nearly) all Wikipedias under their English name.
    100: ["Portal"],
    118: ["Draft"],
    710: ["TimedText"],
    828: ["Module"],
}

# Localised names and aliases per language, for the namespaces that matter in article text
# (first name = the wiki's own name; the rest are aliases the parser also accepts).
LOCAL_NAMESPACES: dict[str, dict[int, list[str]]] = {
    "ar": {-2: ["ميديا"], -1: ["خاص"], 1: ["نقاش"], 2: ["مستخدم", "مستخدمة"], 4: ["ويكيبيديا", "وب"],
           6: ["ملف", "صورة"], 8: ["ميدياويكي"], 10: ["قالب"], 12: ["مساعدة"], 14: ["تصنيف"], 100: ["بوابة"]},
    "bn": {-2: ["মিডিয়া"], -1: ["বিশেষ"], 1: ["আলাপ"], 2: ["ব্যবহারকারী"], 4: ["উইকিপিডিয়া"],
           6: ["চিত্র", "ফাইল"], 8: ["মিডিয়াউইকি"], 10: ["টেমপ্লেট", "টেমপ্লেইট"], 12: ["সাহায্য"],
           14: ["বিষয়শ্রেণী"], 100: ["প্রবেশদ্বার"]},
    "de": {-2: ["Medium"], -1: ["Spezial"], 1: ["Diskussion"], 2: ["Benutzer", "Benutzerin"],
           4: ["Wikipedia", "WP"], 6: ["Datei", "Bild"], 8: ["MediaWiki"], 10: ["Vorlage"], 12: ["Hilfe"],
           14: ["Kategorie"], 100: ["Portal"]},
    "el": {-2: ["Μέσο", "Μέσον"], -1: ["Ειδικό"], 1: ["Συζήτηση"], 2: ["Χρήστης", "Χρήστρια"],
           4: ["Βικιπαίδεια", "ΒΠ"], 6: ["Αρχείο", "Εικόνα"], 8: ["MediaWiki"], 10: ["Πρότυπο"],
           12: ["Βοήθεια"], 14: ["Κατηγορία"], 100: ["Πύλη"]},
    "en": {4: ["Wikipedia", "WP"], 5: ["Wikipedia talk", "WT"], 6: ["File", "Image"]},
    "es": {-2: ["Medio"], -1: ["Especial"], 1: ["Discusión"], 2: ["Usuario", "Usuaria"],
           4: ["Wikipedia", "WP"], 6: ["Archivo", "Imagen"], 8: ["MediaWiki"], 10: ["Plantilla"],
           12: ["Ayuda"], 14: ["Categoría"], 100: ["Portal"], 102: ["Wikiproyecto"], 104: ["Anexo"]},
    "fi": {-2: ["Media"], -1: ["Toiminnot"], 1: ["Keskustelu"], 2: ["Käyttäjä"], 4: ["Wikipedia", "WP"],
           6: ["Tiedosto", "Kuva"], 8: ["Järjestelmäviesti"], 10: ["Malline"], 12: ["Ohje"], 14: ["Luokka"],
           100: ["Teemasivu"]},
    "fr": {-2: ["Média"], -1: ["Spécial"], 1: ["Discussion"], 2: ["Utilisateur", "Utilisatrice"],
           4: ["Wikipédia", "WP"], 6: ["Fichier", "Image"], 8: ["MediaWiki"], 10: ["Modèle"], 12: ["Aide"],
           14: ["Catégorie"], 100: ["Portail"], 102: ["Projet"], 104: ["Référence"]},
    "hi": {-2: ["मीडिया"], -1: ["विशेष"], 1: ["वार्ता"], 2: ["सदस्य"], 4: ["विकिपीडिया", "वि"],
           6: ["चित्र", "फ़ाइल"], 8: ["मीडियाविकि"], 10: ["साँचा"], 12: ["सहायता"], 14: ["श्रेणी"],
           100: ["प्रवेशद्वार"]},
    "id": {-2: ["Media"], -1: ["Istimewa"], 1: ["Pembicaraan"], 2: ["Pengguna"], 4: ["Wikipedia", "WP"],
           6: ["Berkas", "Gambar", "File"], 8: ["MediaWiki"], 10: ["Templat"], 12: ["Bantuan"],
           14: ["Kategori"], 100: ["Portal"]},
    "it": {-2: ["Media"], -1: ["Speciale"], 1: ["Discussione"], 2: ["Utente"], 4: ["Wikipedia", "WP"],
           6: ["File", "Immagine"], 8: ["MediaWiki"], 10: ["Template"], 12: ["Aiuto"], 14: ["Categoria"],
           100: ["Portale"], 102: ["Progetto"]},
    "ja": {-2: ["メディア"], -1: ["特別"], 1: ["ノート"], 2: ["利用者"], 4: ["Wikipedia", "WP", "ウィキペディア"],
           6: ["ファイル", "画像"], 8: ["MediaWiki"], 10: ["Template", "テンプレート"], 12: ["Help", "ヘルプ"],
           14: ["Category", "カテゴリ"], 100: ["Portal", "ポータル"], 102: ["プロジェクト"]},
    "ko": {-2: ["미디어"], -1: ["특수"], 1: ["토론"], 2: ["사용자"], 4: ["위키백과", "백"],
           6: ["파일", "그림"], 8: ["미디어위키"], 10: ["틀"], 12: ["도움말"], 14: ["분류"], 100: ["포털"]},
    "nl": {-2: ["Media"], -1: ["Speciaal"], 1: ["Overleg"], 2: ["Gebruiker"], 4: ["Wikipedia", "WP"],
           6: ["Bestand", "Afbeelding"], 8: ["MediaWiki"], 10: ["Sjabloon"], 12: ["Help"],
           14: ["Categorie"], 100: ["Portaal"]},
    "pl": {-2: ["Media"], -1: ["Specjalna"], 1: ["Dyskusja"], 2: ["Wikipedysta", "Wikipedystka"],
           4: ["Wikipedia", "WP"], 6: ["Plik", "Grafika"], 8: ["MediaWiki"], 10: ["Szablon"],
           12: ["Pomoc"], 14: ["Kategoria"], 100: ["Portal"]},
    "pt": {-2: ["Multimédia", "Media"], -1: ["Especial"], 1: ["Discussão"],
           2: ["Utilizador", "Usuário", "Usuária", "Utilizadora"], 4: ["Wikipédia", "WP"],
           6: ["Ficheiro", "Arquivo", "Imagem"], 8: ["MediaWiki"], 10: ["Predefinição"], 12: ["Ajuda"],
           14: ["Categoria"], 100: ["Portal"], 102: ["Anexo"]},
    "ru": {-2: ["Медиа"], -1: ["Служебная"], 1: ["Обсуждение"], 2: ["Участник", "Участница"],
           4: ["Википедия", "ВП"], 6: ["Файл", "Изображение"], 8: ["MediaWiki"], 10: ["Шаблон"],
           12: ["Справка"], 14: ["Категория"], 100: ["Портал"], 104: ["Проект"]},
    "sv": {-2: ["Media"], -1: ["Special"], 1: ["Diskussion"], 2: ["Användare"], 4: ["Wikipedia", "WP"],
           6: ["Fil", "Bild"], 8: ["MediaWiki"], 10: ["Mall"], 12: ["Hjälp"], 14: ["Kategori"],
           100: ["Portal"]},
    "sw": {-2: ["Media"], -1: ["Maalum"], 1: ["Majadiliano"], 2: ["Mtumiaji"], 4: ["Wikipedia"],
           6: ["Faili", "Picha"], 8: ["MediaWiki"], 10: ["Kigezo"], 12: ["Msaada"], 14: ["Jamii"],
           100: ["Lango"]},
    "te": {-2: ["మీడియా"], -1: ["ప్రత్యేక"], 1: ["చర్చ"], 2: ["వాడుకరి", "సభ్యుడు"], 4: ["వికీపీడియా"],
           6: ["దస్త్రం", "ఫైలు", "బొమ్మ"], 8: ["మీడియావికీ"], 10: ["మూస"], 12: ["సహాయం"], 14: ["వర్గం"],
           100: ["వేదిక"]},
    "th": {-2: ["สื่อ"], -1: ["พิเศษ"], 1: ["พูดคุย"], 2: ["ผู้ใช้"], 4: ["วิกิพีเดีย", "วพ"],
           6: ["ไฟล์", "ภาพ"], 8: ["มีเดียวิกิ"], 10: ["แม่แบบ"], 12: ["วิธีใช้"], 14: ["หมวดหมู่"],
           100: ["สถานีย่อย"]},
    "tr": {-2: ["Ortam"], -1: ["Özel"], 1: ["Tartışma"], 2: ["Kullanıcı"], 4: ["Vikipedi", "VP"],
           6: ["Dosya", "Resim"], 8: ["MediaWiki"], 10: ["Şablon"], 12: ["Yardım"], 14: ["Kategori"],
           100: ["Portal"]},
    "vi": {-2: ["Phương tiện"], -1: ["Đặc biệt"], 1: ["Thảo luận"], 2: ["Thành viên"], 4: ["Wikipedia"],
           6: ["Tập tin", "Hình", "Tệp tin", "Tệp"], 8: ["MediaWiki"], 10: ["Bản mẫu"], 12: ["Trợ giúp"],
           14: ["Thể loại"], 100: ["Chủ đề"]},
    "zh": {-2: ["Media", "媒体", "媒體"], -1: ["Special", "特殊"], 1: ["Talk", "讨论", "討論"],
           2: ["User", "用户", "用戶"], 4: ["Wikipedia", "WP", "维基百科", "維基百科"],
           6: ["File", "文件", "檔案", "图像", "圖像", "档案", "图片", "圖片"], 8: ["MediaWiki"],
           10: ["Template", "模板", "样板", "樣板"], 12: ["Help", "帮助", "幫助"],
           14: ["Category", "分类", "分類"], 100: ["Portal", "主题", "主題", "门户", "門戶"]},
}

LANGUAGES: tuple[str, ...] = tuple(sorted(LOCAL_NAMESPACES))

# Wikipedia language codes: ``[[xx:Title]]`` with one of these prefixes is an interlanguage link.
INTERLANGUAGE_CODES: frozenset[str] = frozenset("""
aa ab ace ady af ak als alt am ami an ang anp ar arc ary arz as ast atj av avk awa ay az azb ba ban bar
bat-smg bcl be be-tarask be-x-old bg bh bi bjn blk bm bn bo bpy br bs bug bxr ca cbk-zam cdo ce ceb ch cho
chr chy ckb co cr crh cs csb cu cv cy da dag de din diq dsb dty dv dz ee el eml en eo es et eu ext fa fat
ff fi fiu-vro fj fo fon fr frp frr fur fy ga gag gan gcr gd gl glk gn gom gor got gpe gu guc gur guw gv ha
hak haw he hi hif ho hr hsb ht hu hy hyw hz ia id ie ig ii ik ilo inh io is it iu ja jam jbo jv ka kaa kab
kbd kbp kcg kg ki kj kk kl km kn ko koi kr krc ks ksh ku kv kw ky la lad lb lbe lez lfn lg li lij lld lmo
ln lo lrc lt ltg lv mad mai map-bms mdf mg mh mhr mi min mk ml mn mni mnw mo mr mrj ms mt mus mwl my myv
mzn na nah nan nap nds nds-nl ne new ng nia nl nn no nov nqo nrm nso nv ny oc olo om or os pa pag pam pap
pcd pcm pdc pfl pi pih pl pms pnb pnt ps pt pwn qu rm rmy rn ro roa-rup roa-tara ru rue rup rw sa sah sat
sc scn sco sd se sg sgs sh shi shn si simple sk skr sl sm smn sn so sq sr srn ss st stq su sv sw szl szy
ta tay tcy te tet tg th ti tk tl tly tn to tpi tr trv ts tt tum tw ty tyv udm ug uk ur uz ve vec vep vi
vls vo vro wa war wo wuu xal xh xmf yi yo yue za zea zgh zh zh-classical zh-min-nan zh-yue zu
""".split())

# Interwiki prefixes to sister projects and common external wikis (never entity links).
INTERWIKI_PREFIXES: frozenset[str] = frozenset("""
w wikipedia wikt wiktionary q wikiquote s wikisource b wikibooks n wikinews v wikiversity voy wikivoyage
species wikispecies c commons m meta metawikimedia metawikipedia mw mediawikiwiki d wikidata f
wikifunctions phab phabricator foundation wmf wikimedia incubator outreach mediazilla bugzilla gerrit
toollabs wikitech translatewiki betawiki iarchive google googlegroups imdb wikia fandom
""".split())

# --- link trails (MediaWiki's $linkTrail per language) ---------------------------------------------

_DEFAULT_TRAIL = "a-z"
LINK_TRAIL_CHARS: dict[str, str] = {
    "ar": "a-zء-ي",
    "bn": "\u0980-\u09ff",
    "de": "äöüßa-z",
    "el": "a-zαβγδεζηθικλμνξοπρστυφχψωςΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩάέήίόύώϊϋΐΰΆΈΉΊΌΎΏΪΫ",
    "en": _DEFAULT_TRAIL,
    "es": "a-zàáâäçèéêëìíîïñòóôöùúûüº",
    "fi": "a-zäö",
    "fr": "a-zàâçéèêîôûäëïöüùÇÉÂÊÎÔÛÄËÏÖÜÀÈÙ",
    "hi": "a-z\u0900-\u0963\u0966-\u097f",
    "id": _DEFAULT_TRAIL,
    "it": "a-zàéèíîìóòúù",
    "ja": "",  # no trail: the next character is never part of the anchor
    "ko": _DEFAULT_TRAIL,
    "nl": "a-zäöüïëéèà",
    "pl": "a-zęóąśłżźćńĘÓĄŚŁŻŹĆŃ",
    "pt": "a-záâãàéêẽçíòóôõúüűũ",
    "ru": "a-zабвгдеёжзийклмнопрстуфхцчшщъыьэюя",
    "sv": "a-zåäöéÅÄÖÉ",
    "sw": _DEFAULT_TRAIL,
    "te": "\u0c00-\u0c7f",
    "th": "",
    "tr": "a-zÇĞçğİıÖöŞşÜüâîû",
    "vi": "a-zàáâãèéêìíòóôõùúýăđĩũơưạ-ỹ",
    "zh": "",
}


def link_trail_re(lang: str) -> re.Pattern[str] | None:
    """The regex matching a link trail at the start of the following text, or None for no trail."""
    chars = LINK_TRAIL_CHARS.get(lang, _DEFAULT_TRAIL)
    return re.compile(f"[{chars}]+") if chars else None


# --- case -------------------------------------------------------------------------------------------

_DOTTED_I_LANGS = frozenset({"tr", "az", "kaa", "crh", "gag"})


def ucfirst(s: str, lang: str = "en") -> str:
    """Upper-case the first character as MediaWiki does for first-letter wikis.

    Turkic languages map dotted ``i`` to ``İ``; characters whose upper case is several characters
    (``ß`` -> ``SS``) are left as they are, as MediaWiki does, so a title never grows.
    """
    if not s:
        return s
    c = s[0]
    if c == "i" and lang in _DOTTED_I_LANGS:
        return "İ" + s[1:]
    u = c.upper()
    if len(u) != 1 or u == c:
        return s
    return u + s[1:]


# --- normalisation ----------------------------------------------------------------------------------

# Characters MediaWiki turns into a space/underscore in titles (Title::secureAndSplit / TitleCodec).
_SPACES_RE = re.compile("[ _\u00a0\u1680\u180e\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")
_BIDI_RE = re.compile("[\u200e\u200f\u202a-\u202e]")
_PERCENT_RE = re.compile(r"%[0-9A-Fa-f]{2}")
# Characters that can never occur in a title (MediaWiki's $wgLegalTitleChars complement).
_ILLEGAL_RE = re.compile(r"[\[\]{}|<>\x00-\x1f\x7f\ufffd]|~{3}")


def clean_title_text(raw: str) -> str:
    """Decode percent-encoding and HTML entities, map spaces/underscores, collapse, strip, NFC."""
    s = raw
    if "%" in s and _PERCENT_RE.search(s):
        decoded = unquote(s, errors="replace")
        if "\ufffd" not in decoded:  # MediaWiki keeps the raw text when the bytes are not UTF-8
            s = decoded
    if "&" in s:
        s = html.unescape(s)
    s = _BIDI_RE.sub("", s)
    s = _SPACES_RE.sub(" ", s).strip()
    if not s.isascii():
        s = unicodedata.normalize("NFC", s)
    return s


@dataclass(frozen=True)
class LinkTarget:
    """What a ``[[target]]`` points at.

    kind: ``article`` (namespace 0: an entity link), ``category``, ``file``, ``media``, ``namespace`` (any
    other namespace), ``interlanguage``, ``interwiki``, ``section`` (``[[#Section]]``) or ``invalid``.
    ``colon`` is True for a leading-colon link (``[[:Category:X]]``), which is displayed, not applied.
    """

    kind: str
    title: str
    ns: int = 0
    colon: bool = False


@dataclass
class TitleParser:
    """Classifies and normalises link targets and page titles for one wiki."""

    lang: str = "en"
    case: str = "first-letter"
    # namespace id -> the wiki's own name (from <siteinfo>); merged with canonical names and aliases.
    namespaces: dict[int, str] = field(default_factory=dict)
    _prefixes: dict[str, int] = field(init=False, repr=False)
    _names: dict[int, str] = field(init=False, repr=False)
    # Link targets are Zipf-distributed (a few titles are linked from everywhere): memoise.
    _cache: dict[str, LinkTarget] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        local = LOCAL_NAMESPACES.get(self.lang, {})
        names: dict[int, str] = {}
        prefixes: dict[str, int] = {}

        def add(ns: int, name: str) -> None:
            key = clean_title_text(name).casefold()
            if key:
                prefixes.setdefault(key, ns)

        for ns, name in self.namespaces.items():  # the dump's own names win
            if ns != 0 and name:
                names[ns] = name
                add(ns, name)
        for table in (local, CANONICAL_NAMESPACES):
            for ns, aliases in table.items():
                names.setdefault(ns, aliases[0])
                for name in aliases:
                    add(ns, name)
        self._prefixes = prefixes
        self._names = names

    @property
    def namespace_names(self) -> dict[int, str]:
        return dict(self._names)

    def namespace_of(self, prefix: str) -> int | None:
        return self._prefixes.get(_SPACES_RE.sub(" ", prefix).strip().casefold())

    def _capitalise(self, s: str) -> str:
        return ucfirst(s, self.lang) if self.case == "first-letter" else s

    def parse(self, raw: str) -> LinkTarget:
        """Classify the target of a wikilink (the part before ``|``)."""
        hit = self._cache.get(raw)
        if hit is None:
            if len(self._cache) >= 1 << 17:
                self._cache.clear()
            hit = self._cache[raw] = self._parse(raw)
        return hit

    def _parse(self, raw: str) -> LinkTarget:
        s = clean_title_text(raw)
        colon = False
        if s.startswith(":"):
            colon = True
            s = s[1:].lstrip()
        if s.startswith("#") or not s:
            return LinkTarget("section" if s else "invalid", "", colon=colon)
        hash_pos = s.find("#")
        if hash_pos > 0:
            s = s[:hash_pos].rstrip()
        if _ILLEGAL_RE.search(s):
            return LinkTarget("invalid", "", colon=colon)
        colon_pos = s.find(":")
        if colon_pos > 0:
            prefix = s[:colon_pos]
            rest = s[colon_pos + 1 :].lstrip()
            ns = self.namespace_of(prefix)
            if ns is not None:
                if not rest:
                    return LinkTarget("invalid", "", ns=ns, colon=colon)
                title = f"{self._names[ns]}:{self._capitalise(rest)}"
                if ns == NS_CATEGORY:
                    kind = "category"
                elif ns == NS_FILE:
                    kind = "file"
                elif ns == NS_MEDIA:
                    kind = "media"
                else:
                    kind = "namespace"
                return LinkTarget(kind, title, ns=ns, colon=colon)
            code = prefix.strip().lower()
            if code in INTERLANGUAGE_CODES:
                # [[fr:Paris]] is an interlanguage link; [[:fr:Paris]] an inline interwiki link.
                return LinkTarget("interwiki" if colon else "interlanguage", rest, colon=colon)
            if code in INTERWIKI_PREFIXES:
                return LinkTarget("interwiki", rest, colon=colon)
        if len(s.encode("utf-8")) > 255:
            return LinkTarget("invalid", "", colon=colon)
        return LinkTarget("article", self._capitalise(s), colon=colon)

    def normalize(self, raw: str) -> str:
        """Normalised title of an article / redirect target (empty string when it is not one)."""
        t = self.parse(raw)
        return t.title if t.kind == "article" else ""

    def normalize_any(self, raw: str) -> str:
        """Normalised title in any namespace (used for redirect targets outside namespace 0)."""
        t = self.parse(raw)
        return t.title
