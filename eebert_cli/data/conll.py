"""CoNLL-style text files: one ``word<TAB>tag`` line per word, a blank line between sentences.

The word is the first field, the tag the last (CoNLL-2003's ``word POS chunk tag`` reads
the same way); a file of one field per line is words without tags. Lines of whitespace
only end a sentence too (some exports write a lone tab), and ``-DOCSTART-`` lines are
skipped. The result is a `datasets.Dataset` with a words column and a tags column, named
as the data config names them, so it is checked and split like any other table.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import EebertError

SUFFIXES = (".conll", ".txt")


def read_conll(path: Path, tokens_column: str = "tokens", tags_column: str = "ner_tags"):
    """The sentences of ``path`` as a Dataset (tags column only when the file has tags)."""
    import datasets

    words: list[list[str]] = []
    tags: list[list[str]] = []
    cur_w: list[str] = []
    cur_t: list[str] = []
    widths: set[int] = set()

    def close() -> None:
        if cur_w:
            words.append(list(cur_w)), tags.append(list(cur_t))
            cur_w.clear(), cur_t.clear()

    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[:e.start].count(b"\n") + 1
        raise EebertError(f"{path}:{line} is not UTF-8 text", "re-save the file as UTF-8") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            close()
            continue
        fields = line.rstrip("\r\n").split("\t") if "\t" in line else line.split()
        fields = [f.strip() for f in fields if f.strip()]
        if fields[0] == "-DOCSTART-":
            continue
        widths.add(min(len(fields), 2))
        if len(widths) > 1:
            raise EebertError(f"{path}:{n} has {len(fields)} field(s) where earlier lines had "
                              f"{'one' if 1 in widths and len(fields) > 1 else 'two or more'}",
                              "write every line as word<TAB>tag (or every line as a word alone, for untagged text)")
        cur_w.append(fields[0])
        cur_t.append(fields[-1])
    close()
    if not words:
        raise EebertError(f"data file {path} holds no sentences", "write word<TAB>tag lines, a blank line between sentences")
    cols = {tokens_column: words}
    if widths == {2}:
        cols[tags_column] = tags
    return datasets.Dataset.from_dict(cols)
