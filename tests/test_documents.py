"""Documents translated with their structure kept: each format's round trip, sentences,
placeholders, and ``nmt translate`` on files through the reverse-task model."""

import subprocess
import sys

import polib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nmt.documents import format_of, read_document
from nmt.documents.subtitles import spread
from nmt.documents.units import (
    PLACEHOLDER,
    Document,
    SentenceSplitter,
    Unit,
    placeholders,
    translate_document,
)
from nmt.errors import ConfigError, DataError

PO = b'''# German translation of Foo.
msgid ""
msgstr ""
"Project-Id-Version: foo 1.0\\n"
"Content-Type: text/plain; charset=UTF-8\\n"
"Plural-Forms: nplurals=3; plural=(n==1 ? 0 : n%10>=2 && n%10<=4 ? 1 : 2);\\n"

#. Extracted comment
#: src/main.c:12 src/main.c:40
#, c-format
msgid "Open %s"
msgstr ""

#: src/main.c:50
msgctxt "menu"
msgid "File"
msgstr "Datei"

#: src/main.c:55
#, fuzzy
msgid "Close"
msgstr "Schlie\xc3\x9fen?"

#: src/main.c:60
msgid "One file"
msgid_plural "%d files"
msgstr[0] ""
msgstr[1] ""
msgstr[2] ""

#: src/long.c:1
msgid ""
"A very long message that goes over several lines because it is long and the "
"tools wrap it at seventy-nine columns."
msgstr ""

#~ msgid "Old"
#~ msgstr "Alt"
'''

XLIFF12 = b'''<?xml version="1.0" encoding="UTF-8"?>
<xliff version="1.2" xmlns="urn:oasis:names:tc:xliff:document:1.2">
  <!-- a comment -->
  <file source-language="en" target-language="de" datatype="plaintext" original="ui.txt">
    <body>
      <trans-unit id="1">
        <source>Open the <g id="1">File</g> menu &amp; click <x id="2"/> Save.</source>
      </trans-unit>
      <trans-unit id="2">
        <source>Hello %s</source>
        <target>Hallo %s</target>
      </trans-unit>
      <trans-unit id="3" translate='no'>
        <source>Keep me</source>
      </trans-unit>
      <trans-unit id="4">
        <source>Press <bpt id="1">&lt;b&gt;</bpt>Enter<ept id="1">&lt;/b&gt;</ept> now.</source>
        <target/>
        <alt-trans><source>Press Enter</source><target>Eingabe</target></alt-trans>
      </trans-unit>
    </body>
  </file>
</xliff>
'''

XLIFF20 = b'''<?xml version="1.0" encoding="UTF-8"?>
<xliff xmlns="urn:oasis:names:tc:xliff:document:2.0" version="2.0" srcLang="en" trgLang="de">
 <file id="f1">
  <unit id="u1">
   <segment id="s1" canResegment='no'>
    <source>Click <pc id="1">Save</pc> to store <ph id="2"/> files.</source>
   </segment>
   <ignorable><source> </source></ignorable>
   <segment id="s2" state="final">
    <source>Done.</source>
    <target>Fertig.</target>
   </segment>
  </unit>
 </file>
</xliff>
'''

MARKDOWN = b'''# Getting started

Click **Save** to store the file, see [the docs](https://example.com/a_b) and `code_here`.

```python
print("keep me")
```

- Item one with <b>html</b> and a \\* star.
- Item two: visit <https://example.org>.

> Quoted text.

| Name | Value |
|------|-------|
| Size | Large |

![alt text](img.png) After image.
'''

SRT = b'''1
00:00:01,000 --> 00:00:02,500
I told you

2
00:00:02,600 --> 00:00:04,000
to wait here.

3
00:00:05,000 --> 00:00:07,000 X1:40
<i>Where were you?</i>

4
00:00:08,000 --> 00:00:09,000
Nowhere.
'''

VTT = b'''WEBVTT - a header

STYLE
::cue { color: yellow }

NOTE written by hand

intro
00:00:01.000 --> 00:00:02.000 align:start line:0
Hello there,

00:00:02.500 --> 00:00:04.000
my friend.
'''

HTML = b'''<!DOCTYPE html>
<html><head><title>Help</title><style>p { color: red }</style></head>
<body><p class="x">Click <b>Save</b> &amp; close.</p><pre>keep  this</pre></body></html>
'''


def copy(lines):
    return list(lines)


def upper(lines):
    """Upper case, placeholders (``%s`` ...) kept as they are."""
    def shout(line):
        kept = PLACEHOLDER.findall(line)
        parts = [part.upper() for part in PLACEHOLDER.split(line)]
        return "".join(p + (kept[i] if i < len(kept) else "") for i, p in enumerate(parts))
    return [shout(line) for line in lines]


@pytest.mark.parametrize("fmt,data", [("po", PO), ("xliff", XLIFF12), ("xliff", XLIFF20),
                                      ("md", MARKDOWN), ("srt", SRT), ("vtt", VTT),
                                      ("html", HTML)])
def test_nothing_translated_gives_the_input_back_byte_for_byte(fmt, data):
    document = read_document(data, fmt, "in")
    assert document.units
    assert document.render([None] * len(document.units)) == data


@pytest.mark.parametrize("fmt,data", [("xliff", XLIFF12), ("md", MARKDOWN), ("html", HTML),
                                      ("srt", SRT), ("vtt", VTT)])
def test_a_copying_model_changes_only_the_target_fields(fmt, data):
    """With a model that copies, markup formats come back byte for byte (XLIFF gains its
    targets); a translation that changes the text changes nothing else."""
    document = read_document(data, fmt, "in")
    translations, report = translate_document(document, copy, "en")
    assert report.translated == report.units == len(document.units)
    out = document.render(translations)
    if fmt == "xliff":  # every source now has a target; read again, nothing is left to do
        assert read_document(out, fmt, "out").units == []
        assert out.count(b"<source") == data.count(b"<source")
    else:
        assert out == data


def test_po_fills_empty_entries_plurals_included_and_flags_them_fuzzy():
    document = read_document(PO, "po", "in.po")
    assert [u.text for u in document.units] == ["Open %s", "One file", "%d files",
                                               document.units[3].text]
    assert [u.where for u in document.units][:3] == ["line 8", "line 24", "line 24 (plural)"]
    translations, _ = translate_document(document, upper, "en")
    out = document.render(translations).decode()
    po = polib.pofile(out)
    entries = {e.msgid: e for e in po}
    assert entries["Open %s"].msgstr == "OPEN %s" and entries["Open %s"].flags == ["fuzzy",
                                                                                  "c-format"]
    assert entries["One file"].msgstr_plural == {0: "ONE FILE", 1: "%d FILES", 2: "%d FILES"}
    assert entries["File"].msgstr == "Datei" and entries["File"].msgctxt == "menu"
    assert entries["Close"].msgstr == "Schließen?"  # fuzzy but translated: left alone
    assert [e.msgid for e in po.obsolete_entries()] == ["Old"]
    assert entries["Open %s"].occurrences == [("src/main.c", "12"), ("src/main.c", "40")]
    assert entries["Open %s"].comment == "Extracted comment"
    # a copying model with fuzzy off changes nothing but the msgstr blocks
    plain = read_document(PO, "po", "in.po", fuzzy=False)
    out = plain.render(translate_document(plain, copy, "en")[0]).decode()
    assert _without_msgstr(out) == _without_msgstr(PO.decode()) and out != PO.decode()


def _without_msgstr(text: str) -> list[str]:
    """The lines of a PO file less its msgstr blocks (with their continuation lines)."""
    out, in_msgstr = [], False
    for line in text.splitlines():
        in_msgstr = line.startswith("msgstr") or (in_msgstr and line.startswith('"'))
        if not in_msgstr:
            out.append(line)
    return out


def test_po_with_crlf_lines_and_no_final_newline_keeps_them():
    data = PO.replace(b"\n", b"\r\n").rstrip(b"\r\n")
    document = read_document(data, "po", "in.po")
    out = document.render(translate_document(document, upper, "en")[0])
    assert b"\n" not in out.replace(b"\r\n", b"") and not out.endswith(b"\n")
    assert b'#, fuzzy, c-format\r\nmsgid "Open %s"\r\nmsgstr "OPEN %s"\r\n' in out
    assert document.render([None] * len(document.units)) == data


def test_po_retranslate_and_placeholder_loss_are_reported():
    document = read_document(PO, "po", "in.po", retranslate=True)
    assert "File" in [u.text for u in document.units] and "Close" in [
        u.text for u in document.units]
    translations, report = translate_document(document, lambda xs: [x.replace("%s", "")
                                                                    for x in xs], "en")
    assert report.placeholder_errors == ["line 8: missing %s"]
    assert translations[0] is None
    entries = {e.msgid: e for e in polib.pofile(document.render(translations).decode())}
    assert entries["Open %s"].msgstr == "" and "fuzzy" not in entries["Open %s"].flags


def test_xliff_targets_are_written_after_their_sources_with_inline_codes_kept():
    document = read_document(XLIFF12, "xliff", "in.xlf")
    assert [u.text for u in document.units] == ["Open the ", "File", " menu & click ",
                                               " Save.", "Press ", "Enter", " now."]
    assert document.units[0].where == "line 6 (unit 1)"
    out = document.render(translate_document(document, upper, "en")[0]).decode()
    assert ('<source>Open the <g id="1">File</g> menu &amp; click <x id="2"/> Save.</source>\n'
            '        <target state="needs-review-translation" state-qualifier="mt-suggestion">'
            'OPEN THE <g id="1">FILE</g> MENU &amp; CLICK <x id="2"/> SAVE.</target>\n'
            '      </trans-unit>') in out
    assert ('<target state="needs-review-translation" state-qualifier="mt-suggestion">PRESS '
            '<bpt id="1">&lt;b&gt;</bpt>ENTER<ept id="1">&lt;/b&gt;</ept> NOW.</target>\n'
            '        <alt-trans><source>Press Enter</source><target>Eingabe</target>') in out
    assert "<target>Hallo %s</target>" in out and "KEEP ME" not in out


def test_xliff2_segment_state_says_a_machine_wrote_it():
    document = read_document(XLIFF20, "xliff", "in.xlf")
    out = document.render(translate_document(document, upper, "en")[0]).decode()
    assert ('<segment id="s1" canResegment="no" state="initial" subState="nmt:mt">\n'
            '    <source>Click <pc id="1">Save</pc> to store <ph id="2"/> files.</source>\n'
            '    <target>CLICK <pc id="1">SAVE</pc> TO STORE <ph id="2"/> FILES.</target>\n'
            '   </segment>') in out
    assert '<segment id="s2" state="final">' in out and "<target>Fertig.</target>" in out


@pytest.mark.parametrize("data,message", [
    (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><xliff version="1.2" '
     b'xmlns="urn:oasis:names:tc:xliff:document:1.2"><file><body/></file></xliff>', "refused"),
    (b"<xliff version='1.2'><file>", "not well-formed"),
    (b"<html><body>hi</body></html>", "not XLIFF"),
    (b"\xff\xfe<", "not UTF-8")])
def test_bad_xliff_is_refused_with_a_reason(data, message):
    with pytest.raises(DataError, match=message):
        read_document(data, "xliff", "in.xlf")


def test_markdown_keeps_code_link_targets_and_escapes():
    document = read_document(MARKDOWN, "md", "in.md")
    texts = [u.text for u in document.units]
    assert "Getting started" in texts and "the docs" in texts and "Size" in texts
    assert not any("keep me" in t or "code_here" in t or "example" in t for t in texts)
    out = document.render(translate_document(document, upper, "en")[0]).decode()
    assert '```python\nprint("keep me")\n```' in out and "`code_here`" in out
    assert "[THE DOCS](https://example.com/a_b)" in out and "<https://example.org>" in out
    assert "# GETTING STARTED" in out and "**SAVE**" in out and "| SIZE | LARGE |" in out
    assert "A \\* STAR." in out and "![alt text](img.png) AFTER IMAGE." in out


def test_markdown_reference_links_keep_their_labels():
    """A link written [text] or [text][] takes its text as its label: the text stays, so the
    link still finds its definition; [text][label] and inline links are translated."""
    from markdown_it import MarkdownIt

    data = (b"Read [The Book] or [the book][], see [other words][The Book] and "
            b"[inline](https://a.example).\n\n[The Book]: https://b.example\n")
    document = read_document(data, "md", "in.md")
    out = document.render(translate_document(document, upper, "en")[0]).decode()
    assert "[The Book] OR [the book][], SEE [OTHER WORDS][The Book] AND" in out
    assert "[INLINE](https://a.example)" in out and "[The Book]: https://b.example" in out
    html = MarkdownIt("commonmark").render(out)
    assert html.count('href="https://b.example"') == 3 and 'href="https://a.example"' in html


def test_markdown_translation_cannot_turn_into_markup():
    document = read_document(b"Intro\n\nWord here\n", "md", "in.md")
    out = document.render(["Intro", "# not a heading"]).decode()
    assert out == "Intro\n\n\\# not a heading\n"


def test_subtitles_translate_a_sentence_across_cues_and_spread_it_back():
    document = read_document(SRT, "srt", "in.srt")
    assert [(u.text, u.where) for u in document.units] == [
        ("I told you to wait here.", "cue 1-2"), ("<i>Where were you?</i>", "cue 3"),
        ("Nowhere.", "cue 4")]
    sentence = "Ich habe dir doch gesagt, dass du hier warten sollst."
    out = document.render([sentence, "<i>Wo warst du?</i>", "Nirgends."]).decode()
    cues = out.split("\n\n")
    first, second = (cue.split("\n", 2)[2] for cue in cues[:2])
    assert f"{first} {second}" == sentence and len(first) < len(second)  # 10 : 13 characters
    assert [cue.split("\n")[:2] for cue in cues] == [cue.split("\n")[:2]
                                                    for cue in SRT.decode().split("\n\n")]
    assert cues[2].endswith("<i>Wo warst du?</i>") and cues[3] == "4\n00:00:08,000 --> " \
        "00:00:09,000\nNirgends.\n"
    short = document.render(["Ja.", None, None]).decode()
    assert "2,500\nJa.\n" in short and "4,000\n\u2026\n" in short  # one word, two cues


def test_webvtt_keeps_header_style_note_identifiers_and_settings():
    document = read_document(VTT, "vtt", "in.vtt")
    assert [u.text for u in document.units] == ["Hello there, my friend."]
    out = document.render(["Hallo, mein lieber Freund."]).decode()
    assert out == VTT.decode().replace("Hello there,", "Hallo, mein").replace(
        "my friend.", "lieber Freund.")


@pytest.mark.parametrize("n_words,weights", [(7, [10, 3]), (2, [1, 1, 1]), (12, [5, 5, 5, 5]),
                                             (1, [4]), (30, [1, 20])])
def test_spread_keeps_every_word_in_order_and_no_part_empty_when_it_can(n_words, weights):
    words = [f"w{i}" for i in range(n_words)]
    parts = spread(words, weights)
    assert len(parts) == len(weights) and sum(parts, []) == words
    if n_words >= len(weights):
        assert all(parts)


def test_html_file_keeps_markup_and_translates_text():
    document = read_document(HTML, "html", "in.html")
    assert [u.text for u in document.units] == ["Help", "Click", "Save", "& close."]
    out = document.render(translate_document(document, upper, "en")[0]).decode()
    assert "<title>HELP</title>" in out and "<b>SAVE</b> &amp; CLOSE.</p>" in out
    assert "<pre>keep  this</pre>" in out and "p { color: red }" in out


@pytest.mark.parametrize("language", ["en", "xx", None])
def test_sentences_put_together_give_the_text_back(language):
    split = SentenceSplitter(language)
    for text in ["Click Save. Then e.g. the menu opens!  Use Dr. Smith's tool… See Fig. 3.\n"
                 "New line here.", "  lead and trail  ", "One", ""]:
        assert "".join(split(text)) == text
    assert len(split("First one. Second one! Third?")) == 3


class _Lines(Document):
    """A document of plain units, for the sentence and placeholder logic alone."""

    def __init__(self, texts):
        self.name = "lines"
        self.units = [Unit(text, f"line {i + 1}") for i, text in enumerate(texts)]

    def render(self, translations):
        return "\n".join(t if t is not None else u.text
                         for t, u in zip(translations, self.units, strict=True)).encode()


def test_units_are_split_into_sentences_translated_once_and_joined_with_their_whitespace():
    calls = []

    def model(lines):
        calls.append(list(lines))
        return [f"[{line}]" if "%" not in line else line.replace("%s", "") for line in lines]

    document = _Lines(["One.  Two.\n Three.", "One.", "Keep %s here.", "   "])
    translations, report = translate_document(document, model, "en")
    assert translations[:2] == ["[One.]  [Two.]\n [Three.]", "[One.]"]
    assert translations[2] is None and translations[3] == "   "
    assert report.placeholder_errors == ["line 3: missing %s"]
    assert len(calls) == 1 and sorted(calls[0]) == ["Keep %s here.", "One.", "Three.", "Two."]
    whole, _ = translate_document(document, lambda xs: [f"[{x}]" for x in xs], "en",
                                  sentences=False)
    assert whole[0] == "[One. Two. Three.]"


def test_placeholders_are_counted_not_ordered():
    found = placeholders("Open %s in {0}: %(name)s, <b>%1</b> &amp; https://x.org/a. 50% off")
    assert found == placeholders("https://x.org/a &amp; <b>%1</b> %(name)s {0} %s")
    assert set(found) == {"%s", "{0}", "%(name)s", "<b>", "</b>", "%1", "&amp;",
                          "https://x.org/a"}


def test_format_from_suffix_or_flag():
    assert [format_of(p) for p in ("a.po", "b.XLF", "c.xliff", "d.htm", "e.md", "f.srt",
                                   "g.vtt", "h.txt", None)] == [
        "po", "xliff", "xliff", "html", "md", "srt", "vtt", "text", "text"]
    assert format_of("a.txt", "po") == "po"
    with pytest.raises(ConfigError, match="choose one of"):
        format_of("a.txt", "docx")


def nmt(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "nmt", *args], input=stdin,
                          capture_output=True, timeout=120)


def test_nmt_translate_fills_a_po_file_and_reports_lost_placeholders(trained_reverse, tmp_path):
    """The reverse model: 'a b c' -> 'c b a'; '%s' is outside its vocabulary, so the entry
    that has one is left empty and named with its line."""
    po = (b'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n'
          b'#: x.c:1\nmsgid "a b c"\nmsgstr ""\n\nmsgid "d e %s"\nmsgstr ""\n\n'
          b'msgid "h g"\nmsgstr "done"\n')
    (tmp_path / "in.po").write_bytes(po)
    proc = nmt("translate", "-m", str(trained_reverse), "-i", str(tmp_path / "in.po"), "-o",
               str(tmp_path / "out.po"))
    assert proc.returncode == 0, proc.stderr
    assert b"in.po: line 9: missing %s: placeholders changed, left untranslated" in proc.stderr
    assert b"1 of 2 units translated" in proc.stderr
    entries = {e.msgid: e for e in polib.pofile(str(tmp_path / "out.po"))}
    assert entries["a b c"].msgstr == "c b a" and entries["a b c"].fuzzy
    assert entries["d e %s"].msgstr == "" and entries["h g"].msgstr == "done"
    proc = nmt("translate", "-m", str(trained_reverse), "--format", "srt",
               stdin=b"1\n00:00:01,000 --> 00:00:02,000\na b c d\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"1\n00:00:01,000 --> 00:00:02,000\nd c b a\n"


def test_nmt_translate_refuses_line_options_and_bad_documents(trained_reverse, tmp_path):
    (tmp_path / "bad.xlf").write_bytes(b"<xliff version='1.2'><file>")
    proc = nmt("translate", "-m", str(trained_reverse), "-i", str(tmp_path / "bad.xlf"),
               "-o", str(tmp_path / "out.xlf"))
    assert proc.returncode == 2 and b"not well-formed" in proc.stderr
    assert b"Traceback" not in proc.stderr and not (tmp_path / "out.xlf").exists()
    proc = nmt("translate", "-m", str(trained_reverse), "--format", "po", "--n-best", "2",
               stdin=b"")
    assert proc.returncode == 2 and b"--n-best works on lines" in proc.stderr


# --------------------------------------------------------------------------- property tests

WORDS = st.sampled_from(["Open", "the", "file", "menu", "Save", "%s", "{0}", "now.", "Click",
                         "here!", "a", "b", "ça", "über", "日本", "50%", "<b>", "&amp;"])
TEXT = st.lists(WORDS, min_size=1, max_size=12).map(" ".join)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(TEXT, st.booleans(), st.booleans()), min_size=1, max_size=8,
                unique_by=lambda e: e[0]))
def test_po_files_from_polib_round_trip(entries):
    """Any PO file polib writes: nothing translated gives it back; a copying model fills
    every empty entry and changes nothing but msgstr blocks."""
    po = polib.POFile(wrapwidth=79)
    po.metadata = {"Content-Type": "text/plain; charset=UTF-8"}
    for msgid, translated, commented in entries:
        po.append(polib.POEntry(msgid=msgid, msgstr=msgid.upper() if translated else "",
                                comment="note" if commented else "",
                                occurrences=[("a.c", "1")] if commented else []))
    data = str(po).encode("utf-8")
    document = read_document(data, "po", "in.po", fuzzy=False)
    assert document.render([None] * len(document.units)) == data
    out = document.render(translate_document(document, copy, "en")[0]).decode()
    assert _without_msgstr(out) == _without_msgstr(data.decode())
    for entry in polib.pofile(out):
        assert entry.msgstr in (entry.msgid, entry.msgid.upper())


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(TEXT, st.integers(1, 2)), min_size=1, max_size=8))
def test_subtitles_round_trip_whatever_the_cues(cues):
    """Random cues of one or two lines: nothing translated gives the file back; a copying
    model keeps every timing line and every word, in order."""
    blocks = []
    for index, (text, lines) in enumerate(cues):
        words = text.split()
        body = " ".join(words) if lines == 1 or len(words) < 2 else \
            " ".join(words[:len(words) // 2]) + "\n" + " ".join(words[len(words) // 2:])
        blocks.append(f"{index + 1}\n00:00:{index:02d},000 --> 00:00:{index:02d},900\n{body}\n")
    data = "\n".join(blocks).encode("utf-8")
    document = read_document(data, "srt", "in.srt")
    assert document.render([None] * len(document.units)) == data
    out = document.render(translate_document(document, copy, "en")[0]).decode()
    assert [b.split("\n")[:2] for b in out.split("\n\n")] == \
        [b.split("\n")[:2] for b in data.decode().split("\n\n")]
    assert out.split() == data.decode().split()


def test_markdown_runs_are_found_where_they_are_written():
    """Equal cells of a table row, a word that is also in an attribute or an image's alt text,
    text after a code span that holds it: each run is replaced where it stands."""
    data = (b"| yes | yes |\n|---|---|\n| no | no |\n\n"
            b'See <a href="#setup">setup</a> and ![Logo](l.png)\nLogo here.\n\n'
            b"Use `a b` b now, [b](http://x/b) b.\n")
    document = read_document(data, "md", "in.md")
    out = document.render(translate_document(document, upper, "en")[0]).decode()
    assert out.startswith("| YES | YES |\n|---|---|\n| NO | NO |\n")
    assert 'SEE <a href="#setup">SETUP</a> AND ![Logo](l.png)\nLOGO HERE.' in out
    assert "USE `a b` B NOW, [B](http://x/b) B." in out


def test_markdown_escapes_a_line_that_would_start_a_list():
    document = read_document(b"Intro\n\nWord here\n", "md", "in.md")
    assert document.render(["Intro", "1. Januar"]).decode() == "Intro\n\n1\\. Januar\n"
    assert document.render(["Intro", "- x"]).decode() == "Intro\n\n\\- x\n"


def test_po_content_is_never_taken_for_a_path_and_a_bom_is_kept(tmp_path):
    secret = tmp_path / "secret.po"
    secret.write_bytes(PO)
    with pytest.raises(DataError, match="cannot read the PO file: Syntax error"):
        read_document(str(secret).encode(), "po", "x.po")  # read as text, never opened
    data = b"\xef\xbb\xbfmsgid \"a b\"\nmsgstr \"\"\n\nmsgid \"c\"\nmsgstr \"\"\n"
    document = read_document(data, "po", "x.po")
    assert [u.where for u in document.units] == ["line 1", "line 4"]
    out = document.render(["A B", "C"])
    assert out == (b"\xef\xbb\xbf#, fuzzy\nmsgid \"a b\"\nmsgstr \"A B\"\n\n"
                   b"#, fuzzy\nmsgid \"c\"\nmsgstr \"C\"\n")


@pytest.mark.parametrize("fmt,data", [("srt", SRT), ("vtt", VTT)])
def test_subtitles_with_crlf_lines(fmt, data):
    crlf = data.replace(b"\n", b"\r\n")
    document = read_document(crlf, fmt, "in")
    assert document.render([None] * len(document.units)) == crlf
    out = document.render(translate_document(document, copy, "en")[0])
    assert b"\n" not in out.replace(b"\r\n", b"") and out.split() == crlf.split()


def test_xliff_cdata_groups_that_say_no_and_an_empty_targets_attributes():
    data = b'''<?xml version="1.0" encoding="UTF-8"?>\r
<xliff version="1.2" xmlns="urn:oasis:names:tc:xliff:document:1.2">\r
 <file source-language="en" datatype="plaintext" original="x">\r
  <body>\r
   <group id="g" translate="no"><trans-unit id="1"><source>Keep</source></trans-unit></group>\r
   <trans-unit id="2"><source>Say <![CDATA[Hello <b>]]> now</source>\r
    <target xml:lang="de" state="new"/>\r
   </trans-unit>\r
   <trans-unit id="3">\r
    <source>Plain</source>\r
   </trans-unit>\r
  </body>\r
 </file>\r
</xliff>\r
'''
    document = read_document(data, "xliff", "in.xlf")
    assert [u.text for u in document.units] == ["Say ", "Hello <b>", " now", "Plain"]
    out = document.render(translate_document(document, upper, "en")[0])
    assert (b'<target xml:lang="de" state="needs-review-translation" '
            b'state-qualifier="mt-suggestion">SAY HELLO &lt;b&gt; NOW</target>') in out
    assert b"<source>Plain</source>\r\n    <target state=" in out and b"KEEP" not in out
    assert read_document(out, "xliff", "out.xlf").units == []
